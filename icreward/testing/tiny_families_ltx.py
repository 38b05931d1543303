"""Tiny, randomly initialised LTX-Video pipelines for tests and examples (real diffusers classes, CPU, offline).

- :func:`tiny_ltx_i2v_pipeline`: LTX-Video 0.9.x image-to-video (``diffusers.LTXImageToVideoPipeline``):
  ``LTXVideoTransformer3DModel`` (1 layer, 8 latent channels), ``AutoencoderKLLTXVideo`` (4x spatial / 4x temporal
  compression, 8 latent channels, per-channel ``latents_mean`` / ``latents_std`` buffers), a tiny ``T5EncoderModel``,
  the offline tokenizer of :func:`icreward.testing.tiny_pipelines.build_tiny_tokenizer`, and a
  ``FlowMatchEulerDiscreteScheduler`` configured like the published LTX-Video scheduler (resolution-dependent
  dynamic shifting, ``shift_terminal=0.1``; see :data:`LTX_SCHEDULER_CONFIG`).

- :func:`tiny_ltx2_i2v_pipeline`: LTX-2 image-to-video (``diffusers.LTX2ImageToVideoPipeline``) with a tiny Gemma 3
  text encoder, connectors, video and audio VAEs (2x spatial and temporal compression) and vocoder, for
  :class:`icreward.adapters.LTX2I2VAdapter` (see ``docs/families/ltx2.md``).

Sizes every tiny LTX pipeline accepts: :data:`TINY_LTX_DEFAULTS` (9 frames -> 3 latent frames, 32x32 px -> 8x8
latents). Weights are random: use them for shapes, gradients and plumbing only.
"""

from __future__ import annotations

from typing import Any

import torch

from ..adapters.published.ltx import LTX_FLOW_SCHEDULER_CONFIG
from ..text_encoders import TINY_T5_KWARGS, build_tiny_tokenizer, tiny_t5_encoder

__all__ = [
    "LTX_SCHEDULER_CONFIG",
    "TINY_LTX_DEFAULTS",
    "save_tiny_ltx2_i2v_pipeline",
    "save_tiny_ltx_i2v_pipeline",
    "tiny_ltx2_i2v_pipeline",
    "tiny_ltx_i2v_pipeline",
]

#: 9 frames (3 latent frames with 4x temporal compression) at 32x32 pixels (8x8 latents).
TINY_LTX_DEFAULTS: dict[str, Any] = {"num_frames": 9, "height": 32, "width": 32, "guidance_scale": 1.0}

#: ``scheduler/scheduler_config.json`` of ``Lightricks/LTX-Video`` (0.9.x): Euler flow matching whose sigmas are
#: shifted by ``mu``, computed from the latent sequence length between ``base_image_seq_len`` and
#: ``max_image_seq_len``, then stretched so the last sigma is ``shift_terminal``.
LTX_SCHEDULER_CONFIG: dict[str, Any] = dict(LTX_FLOW_SCHEDULER_CONFIG)


def _tiny_ltx_family_vae(vae_class, *, latent_channels: int, scaling: tuple[bool, ...], encoder_layers: int, **extra):
    """An LTX-family video VAE (``AutoencoderKLLTXVideo`` / ``AutoencoderKLLTX2Video``): one 8-channel, 1-layer block
    per entry of ``scaling`` (``True``: 2x spatial and temporal compression), mirrored in the decoder, no timestep
    conditioning, patch 1, causal encoder; encoding and decoding whole videos (not frame by frame)."""
    n = len(scaling)
    vae = vae_class(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(8,) * n,
        decoder_block_out_channels=(8,) * n,
        layers_per_block=(1,) * encoder_layers,
        decoder_layers_per_block=(1,) * (n + 1),
        spatio_temporal_scaling=scaling,
        decoder_spatio_temporal_scaling=scaling,
        decoder_inject_noise=(False,) * (n + 1),
        upsample_residual=(False,) * n,
        upsample_factor=(1,) * n,
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
        **extra,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def _tiny_ltx_family_transformer(
    transformer_class, *, channels: int, heads: int, cross_dim: int, caption: int, **extra
):
    """A 1-layer LTX-family transformer reading and predicting ``channels`` latent channels (head width 8)."""
    return transformer_class(
        in_channels=channels,
        out_channels=channels,
        num_attention_heads=heads,
        attention_head_dim=8,
        cross_attention_dim=cross_dim,
        num_layers=1,
        caption_channels=caption,
        **extra,
    )


def _tiny_ltx_vae(seed: int):
    """LTX-Video's VAE: 4x spatial / 4x temporal compression into 8 channels, with per-channel latent statistics."""
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(seed)
    vae = _tiny_ltx_family_vae(
        AutoencoderKLLTXVideo, latent_channels=8, scaling=(True, True, False, False), encoder_layers=5
    )
    # The published VAE normalises latents per channel; random statistics make the normalisation visible in tests.
    generator = torch.Generator().manual_seed(seed + 4)
    vae.latents_mean.copy_(torch.randn(8, generator=generator) * 0.1)
    vae.latents_std.copy_(torch.rand(8, generator=generator) * 0.5 + 0.75)
    return vae


def tiny_ltx_i2v_pipeline(seed: int = 0):
    """A tiny LTX-Video image-to-video pipeline (``diffusers.LTXImageToVideoPipeline``) with random weights.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline, LTXVideoTransformer3DModel

    tokenizer = build_tiny_tokenizer(model_max_length=128)
    text_encoder = tiny_t5_encoder(seed, vocab_size=len(tokenizer))
    vae = _tiny_ltx_vae(seed + 1)
    torch.manual_seed(seed + 2)
    transformer = _tiny_ltx_family_transformer(
        LTXVideoTransformer3DModel,
        channels=8,
        heads=4,
        cross_dim=32,
        caption=TINY_T5_KWARGS["d_model"],
        patch_size=1,
        patch_size_t=1,
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


def _tiny_ltx2_text_encoder(vocab_size: int, hidden: int, layers: int):
    """A 2-layer Gemma 3 (hidden size ``hidden``) with a 1-layer SigLIP vision tower the pipeline does not use."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text_config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=128,
        sliding_window=64,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=4
    )
    text_encoder = Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4)
    ).eval()
    return text_encoder


def _tiny_ltx2_transformer(hidden: int):
    """A 1-layer ``LTX2VideoTransformer3DModel`` (video and audio branches)."""
    from diffusers import LTX2VideoTransformer3DModel

    audio = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=4, cross_attention_dim=8)
    return _tiny_ltx_family_transformer(
        LTX2VideoTransformer3DModel,
        channels=4,
        heads=2,
        cross_dim=16,
        caption=hidden,
        **{f"audio_{name}": value for name, value in audio.items()},
        rope_double_precision=False,
        rope_type="split",
    )


def _tiny_ltx2_connectors(hidden: int, layers: int):
    """``LTX2TextConnectors`` over the text encoder's ``layers + 1`` stacked hidden states."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    connectors = LTX2TextConnectors(
        caption_channels=hidden,
        text_proj_in_factor=layers + 1,
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    )
    return connectors


def _tiny_ltx2_video_vae():
    """Video VAE: 2x spatial / 2x temporal compression into 4 channels."""
    from diffusers import AutoencoderKLLTX2Video

    return _tiny_ltx_family_vae(
        AutoencoderKLLTX2Video,
        latent_channels=4,
        scaling=(True,),
        encoder_layers=1,
        downsample_type=("spatiotemporal",),
    )


def _tiny_ltx2_audio_vae():
    """Audio VAE with 8 mel bins into 2 channels."""
    from diffusers import AutoencoderKLLTX2Audio

    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        mel_bins=8,
    ).eval()
    return audio_vae


def _tiny_ltx2_vocoder():
    """A tiny ``LTX2Vocoder`` matching the audio VAE (never on the training path)."""
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    vocoder = LTX2Vocoder(
        in_channels=16,  # output_channels * mel_bins of the audio VAE
        hidden_channels=16,
        out_channels=2,
        upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    ).eval()
    return vocoder


def tiny_ltx2_i2v_pipeline(seed: int = 0):
    """A tiny LTX-2 image-to-video pipeline (``diffusers.LTX2ImageToVideoPipeline``) with random weights.

    Video VAE: 2x spatial / 2x temporal compression into 4 channels; audio VAE with 8 mel bins into 2 channels; a
    1-layer ``LTX2VideoTransformer3DModel``; a 2-layer ``Gemma3ForConditionalGeneration`` (hidden size 16, a
    1-layer SigLIP vision tower that the pipeline does not use) whose stacked hidden states feed
    ``LTX2TextConnectors``; the offline tokenizer (left padding, as Gemma's); the published-style scheduler.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2ImageToVideoPipeline

    tokenizer = build_tiny_tokenizer(model_max_length=64)
    tokenizer.padding_side = "left"
    hidden, layers = 16, 2
    torch.manual_seed(seed)
    text_encoder = _tiny_ltx2_text_encoder(len(tokenizer), hidden, layers)
    torch.manual_seed(seed + 1)
    transformer = _tiny_ltx2_transformer(hidden)
    torch.manual_seed(seed + 2)
    connectors = _tiny_ltx2_connectors(hidden, layers)
    torch.manual_seed(seed + 3)
    vae = _tiny_ltx2_video_vae()
    torch.manual_seed(seed + 4)
    audio_vae = _tiny_ltx2_audio_vae()
    torch.manual_seed(seed + 5)
    vocoder = _tiny_ltx2_vocoder()
    return LTX2ImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER_CONFIG),
        vae=vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )


def save_tiny_ltx2_i2v_pipeline(directory: str, seed: int = 0) -> str:
    """Save :func:`tiny_ltx2_i2v_pipeline` in diffusers layout (the folder the tiny LTX-2 example configs name).

    ``python -c "from icreward.testing.tiny_families_ltx import save_tiny_ltx2_i2v_pipeline as s;
    s('outputs/tiny-ltx2')"``
    """
    tiny_ltx2_i2v_pipeline(seed=seed).save_pretrained(directory)
    return directory
