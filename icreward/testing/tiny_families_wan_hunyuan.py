"""Tiny Wan 2.2 TI2V-5B-style pipeline built from the real diffusers classes, with random weights.

:func:`tiny_wan22_ti2v_pipeline` is ``WanImageToVideoPipeline(expand_timesteps=True)`` with a residual
``AutoencoderKLWan`` (``is_residual=True``, ``patch_size=2``, 48 latent channels, 16x spatial / 4x temporal
compression: the TI2V-5B VAE's layout at a tiny width), a 2-layer ``WanTransformer3DModel`` reading 48 channels
(no mask channels, no CLIP image tokens), a tiny ``UMT5EncoderModel`` and the offline tokenizer.
"""

from __future__ import annotations

import torch

from .tiny_pipelines import _TEXT_DIM, _tiny_umt5, _wan_scheduler, build_tiny_tokenizer

#: Z channels of the TI2V-5B VAE (Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json: z_dim 48).
TI2V_Z_DIM = 48
#: A size the tiny TI2V pipeline supports: latents (48, 3, 2, 2); the transformer's 2x2 patches give 3 tokens/frame.
TINY_WAN_TI2V_SIZE = {"num_frames": 9, "height": 32, "width": 32}


def _tiny_ti2v_vae(seed: int):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 100)
    return AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=TI2V_Z_DIM,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=(torch.randn(TI2V_Z_DIM, generator=g) * 0.1).tolist(),
        latents_std=(1.0 + torch.rand(TI2V_Z_DIM, generator=g)).tolist(),
    ).eval()


def _tiny_ti2v_transformer(seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=TI2V_Z_DIM,  # the latents only: the image replaces frame 0, no mask or condition channels
        out_channels=TI2V_Z_DIM,
        text_dim=_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=None,
    )


def tiny_wan22_ti2v_pipeline(seed: int = 0):
    """A tiny Wan 2.2 TI2V-5B-style ``WanImageToVideoPipeline(expand_timesteps=True)`` with random weights.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
    """
    from diffusers import WanImageToVideoPipeline

    tokenizer = build_tiny_tokenizer()
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=_tiny_umt5(seed, vocab_size=len(tokenizer)),
        vae=_tiny_ti2v_vae(seed + 1),
        scheduler=_wan_scheduler(),
        transformer=_tiny_ti2v_transformer(seed + 2),
        expand_timesteps=True,
    )
