"""The tiny policy as a diffusers pipeline: build it (random weights), save it, load it from a folder or a training
checkpoint, and its random-weight twin (the baseline "what pretraining starts from")."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "build_policy_pipeline",
    "load_checkpoint_policy",
    "load_policy_from_folder",
    "random_policy_like",
    "save_policy",
]


def build_policy_pipeline(
    *,
    num_layers: int = 4,
    num_attention_heads: int = 4,
    attention_head_dim: int = 64,
    ffn_dim: int = 512,
    residual_scale: float = 4.0,
    conditioning: str = "ti2v",
    latents_mean: Sequence[float] | None = None,
    latents_std: Sequence[float] | None = None,
    seed: int = 0,
):
    """A randomly initialised policy: ``WanImageToVideoPipeline`` with a pixel-space transformer, the
    frame-anchored pixel codec, the offline tiny UMT5 text encoder and Wan's flow-matching scheduler (shift 3).

    ``conditioning="ti2v"`` (default) builds it as Wan 2.2 TI2V-5B is built: ``expand_timesteps=True``, the codec packs
    2x2 pixels (48 latent channels, as TI2V-5B's VAE), the transformer reads only the latents (patch 1x2x2: the
    pipeline's per-token timesteps assume a 2x2 patch). ``"i2v"`` builds the Wan 2.1/2.2 I2V layout: pixel-space
    codec (12 channels) and a transformer reading latents + 4 mask channels + image latents (patch 1x4x4)."""
    if conditioning not in ("ti2v", "i2v"):
        raise ValueError(f"conditioning must be 'ti2v' or 'i2v', got {conditioning!r}")
    ti2v = conditioning == "ti2v"
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    from ..text_encoders import build_tiny_tokenizer, tiny_umt5_encoder
    from .vae import FrameAnchoredPixelVAE

    vae = FrameAnchoredPixelVAE(
        scale_factor_temporal=4,
        scale_factor_spatial=2 if ti2v else 1,
        residual_scale=residual_scale,
        latents_mean=None if latents_mean is None else list(map(float, latents_mean)),
        latents_std=None if latents_std is None else list(map(float, latents_std)),
    )
    z_dim = vae.config.z_dim
    patch = (1, 2, 2) if ti2v else (1, 4, 4)
    token_size = z_dim * patch[0] * patch[1] * patch[2]  # values a token predicts: 192 in both layouts
    if num_attention_heads * attention_head_dim < token_size:
        # proj_out maps the hidden width to the token's values: a narrower width leaves the noise in the other
        # directions that the sampler never removes (the block noise of the first shipped policy, width 128).
        warnings.warn(
            f"policy width {num_attention_heads} x {attention_head_dim} = {num_attention_heads * attention_head_dim} "
            f"is below the {token_size} values each token predicts: samples keep noise the model cannot represent",
            stacklevel=2,
        )
    tokenizer = build_tiny_tokenizer()
    text_encoder = tiny_umt5_encoder(seed, vocab_size=len(tokenizer))
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=patch,
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        # TI2V: the latents alone (frame 0 is the reference's latent); I2V: noisy latents + mask + image latents
        in_channels=z_dim if ti2v else 2 * z_dim + vae.config.scale_factor_temporal,
        out_channels=z_dim,
        text_dim=32,
        freq_dim=256,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=256,
        image_dim=None,
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=ti2v,
    )


def save_policy(pipeline, directory: str | os.PathLike) -> Path:
    """Save the policy's components (configs as JSON, weights as safetensors) under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    pipeline.text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    pipeline.scheduler.save_pretrained(directory / "scheduler")
    (directory / "vae").mkdir(exist_ok=True)
    pipeline.vae.save_config(directory / "vae")
    return directory


def load_policy_from_folder(directory: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """Load a policy saved by :func:`save_policy` as a ``WanImageToVideoPipeline`` (safetensors only)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from ..text_encoders import build_tiny_tokenizer
    from .vae import FrameAnchoredPixelVAE

    directory = Path(directory)
    for part in ("transformer", "text_encoder", "scheduler", "vae"):
        if not (directory / part).is_dir():
            raise FileNotFoundError(f"{directory} is not a saved policy: no {part}/ folder")
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    transformer = WanTransformer3DModel.from_pretrained(directory / "transformer", use_safetensors=True, **kwargs)
    text_encoder = UMT5EncoderModel.from_pretrained(directory / "text_encoder", use_safetensors=True, **kwargs)
    vae = FrameAnchoredPixelVAE.from_config(FrameAnchoredPixelVAE.load_config(directory / "vae"))
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(directory / "scheduler")
    # TI2V-style policies read the latents alone; I2V-style ones also the mask and image-latent channels.
    ti2v = transformer.config.in_channels == vae.config.z_dim
    return WanImageToVideoPipeline(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae,
        scheduler=scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=ti2v,
    )


def load_checkpoint_policy(checkpoint: str | os.PathLike):
    """A policy from a training checkpoint folder (``checkpoint-<step>/`` of :func:`pretrain_policy`)."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a policy checkpoint: no trainer_state.json")
    state = json.loads(state_file.read_text())
    pipe = build_policy_pipeline(
        **state["config"]["architecture"],
        latents_mean=state["latents_mean"],
        latents_std=state["latents_std"],
        seed=state["config"]["seed"],
    )
    pipe.transformer.load_state_dict(load_file(checkpoint / "transformer.safetensors"))
    pipe.transformer.eval()
    return pipe


def random_policy_like(pipeline, seed: int = 0):
    """The same pipeline with a freshly initialised (random-weight) transformer: the codec, text encoder and
    scheduler are shared. The baseline "what pretraining starts from" (seeded as :func:`build_policy_pipeline`)."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel.from_config(pipeline.transformer.config).eval()
    pipe = WanImageToVideoPipeline(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        vae=pipeline.vae,
        scheduler=pipeline.scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=bool(pipeline.config.expand_timesteps),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
