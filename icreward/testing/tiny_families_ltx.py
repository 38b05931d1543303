"""Tiny, randomly initialised LTX-Video pipelines for tests and examples (real diffusers classes, CPU, offline).

- :func:`tiny_ltx_i2v_pipeline`: LTX-Video 0.9.x image-to-video (``diffusers.LTXImageToVideoPipeline``):
  ``LTXVideoTransformer3DModel`` (1 layer, 8 latent channels), ``AutoencoderKLLTXVideo`` (4x spatial / 4x temporal
  compression, 8 latent channels, per-channel ``latents_mean`` / ``latents_std`` buffers), a tiny ``T5EncoderModel``,
  the offline tokenizer of :func:`icreward.testing.tiny_pipelines.build_tiny_tokenizer`, and a
  ``FlowMatchEulerDiscreteScheduler`` configured like the published LTX-Video scheduler (resolution-dependent
  dynamic shifting, ``shift_terminal=0.1``; see :data:`LTX_SCHEDULER_CONFIG`).

Sizes every tiny LTX pipeline accepts: :data:`TINY_LTX_DEFAULTS` (9 frames -> 3 latent frames, 32x32 px -> 8x8
latents). Weights are random: use them for shapes, gradients and plumbing only.
"""

from __future__ import annotations

from typing import Any

import torch

from .tiny_pipelines import _TINY_T5_KWARGS, _tiny_t5, build_tiny_tokenizer

__all__ = ["LTX_SCHEDULER_CONFIG", "TINY_LTX_DEFAULTS", "save_tiny_ltx_i2v_pipeline", "tiny_ltx_i2v_pipeline"]

#: 9 frames (3 latent frames with 4x temporal compression) at 32x32 pixels (8x8 latents).
TINY_LTX_DEFAULTS: dict[str, Any] = {"num_frames": 9, "height": 32, "width": 32, "guidance_scale": 1.0}

#: ``scheduler/scheduler_config.json`` of ``Lightricks/LTX-Video`` (0.9.x): Euler flow matching whose sigmas are
#: shifted by ``mu``, computed from the latent sequence length between ``base_image_seq_len`` and
#: ``max_image_seq_len``, then stretched so the last sigma is ``shift_terminal``.
LTX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


def tiny_ltx_i2v_pipeline(seed: int = 0):
    """A tiny LTX-Video image-to-video pipeline (``diffusers.LTXImageToVideoPipeline``) with random weights.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
    """
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXImageToVideoPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer = build_tiny_tokenizer(model_max_length=128)
    text_encoder = _tiny_t5(seed, vocab_size=len(tokenizer))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    # The published VAE normalises latents per channel; random statistics make the normalisation visible in tests.
    generator = torch.Generator().manual_seed(seed + 5)
    vae.latents_mean.copy_(torch.randn(8, generator=generator) * 0.1)
    vae.latents_std.copy_(torch.rand(8, generator=generator) * 0.5 + 0.75)
    torch.manual_seed(seed + 2)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=_TINY_T5_KWARGS["d_model"],
    )
    scheduler = FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER_CONFIG)
    return LTXImageToVideoPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


def save_tiny_ltx_i2v_pipeline(directory: str, seed: int = 0) -> str:
    """Save :func:`tiny_ltx_i2v_pipeline` in diffusers layout (for configs that name a local model folder).

    ``python -c "from icreward.testing.tiny_families_ltx import save_tiny_ltx_i2v_pipeline as s;
    s('outputs/tiny-ltx-video')"`` writes the folder the tiny LTX example configs point at.
    """
    tiny_ltx_i2v_pipeline(seed=seed).save_pretrained(directory)
    return directory
