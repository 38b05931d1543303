"""Model families the memory accountant knows: each family's denoiser inputs on ``meta`` at a recipe's size
(:class:`FamilyInputs`) and its default LoRA targets; Wan and CogVideoX here, the other adapters register theirs
with :func:`register_accounting_family`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .recipes import recipe_field


@dataclasses.dataclass
class FamilyInputs:
    """What the accountant needs from a model family: the denoiser's forward inputs on ``meta`` at the recipe's
    size, its checkpointable blocks, the latent shape and the VAE input shape of ``n`` decoded latent frames."""

    kwargs: dict[str, Any]
    blocks_attr: str  # the model attribute holding its ModuleList of repeated blocks
    latent_shape: tuple[int, ...]
    num_latent_frames: int
    decode_input_shape: Callable[[int], tuple[int, ...]]
    # how the adapter decodes a VAE without a chunked decode, ``decode(vae, z) -> video`` (default ``vae.decode``)
    plain_decode: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


FamilyBuilder = Callable[[nn.Module, nn.Module, dict[str, Any], int, torch.dtype, str], FamilyInputs]
FAMILY_BUILDERS: dict[str, FamilyBuilder] = {}
FAMILY_TARGETS: dict[str, Callable[[str], tuple[str, ...]]] = {}


def register_accounting_family(
    transformer_class: str, builder: FamilyBuilder, default_targets: Callable[[str], tuple[str, ...]]
) -> None:
    """Teach the accountant a model family: ``builder(model, vae, recipe, forward_batch, dtype, source)`` returns
    its :class:`FamilyInputs`; ``default_targets(hub_id)`` its adapter's default LoRA targets. With a published
    config entry (:mod:`icreward.adapters.published_configs`) that is all a family needs."""
    FAMILY_BUILDERS[transformer_class] = builder
    FAMILY_TARGETS[transformer_class] = default_targets


def _latent_family_inputs(
    kwargs: dict[str, Any],
    recipe: dict[str, Any],
    channels: int,
    latent_frames: int,
    h: int,
    w: int,
    *,
    blocks_attr: str = "transformer_blocks",
    frames_first: bool = False,
) -> FamilyInputs:
    """:class:`FamilyInputs` of latents ``(B, C, F', h, w)`` (``(B, F', C, h, w)`` with ``frames_first``) that the
    VAE decodes as ``(B, C, n, h, w)``; ``B`` is the recipe's per-device batch."""
    batch = int(recipe.get("per_device_train_batch_size", 1))
    latent_shape = (batch, latent_frames, channels, h, w) if frames_first else (batch, channels, latent_frames, h, w)
    return FamilyInputs(
        kwargs=kwargs,
        blocks_attr=blocks_attr,
        latent_shape=latent_shape,
        num_latent_frames=latent_frames,
        decode_input_shape=lambda n: (batch, channels, n, h, w),
    )


def channels_first_family_inputs(
    kwargs: dict[str, Any], recipe: dict[str, Any], vae: nn.Module, latent_frames: int, h: int, w: int
) -> FamilyInputs:
    """:class:`FamilyInputs` of a family whose latents are ``(B, C, F', h, w)`` (``C``: the VAE's
    ``latent_channels``), the VAE decodes them as they are and the repeated blocks are ``transformer_blocks``."""
    return _latent_family_inputs(kwargs, recipe, int(vae.config.latent_channels), latent_frames, h, w)


def register_adapter_accounting(transformer_class: str, builder: FamilyBuilder, adapter_cls: type) -> None:
    """:func:`register_accounting_family` with the adapter class's ``default_lora_target_modules`` as the targets."""
    register_accounting_family(
        transformer_class, builder, lambda hub_id: tuple(adapter_cls.default_lora_target_modules)
    )


def _wan_inputs(model, vae, recipe, forward_batch, dtype, source) -> FamilyInputs:
    frames, height, width = (int(recipe_field(recipe, k, source)) for k in ("num_frames", "height", "width"))
    t, s = int(vae.config.scale_factor_temporal), int(vae.config.scale_factor_spatial)
    if (frames - 1) % t or height % (2 * s) or width % (2 * s):
        raise ValueError(f"{source}: Wan needs num_frames = 4k+1 and height/width divisible by {2 * s}")
    latent_frames = (frames - 1) // t + 1
    shape = (forward_batch, int(model.config.in_channels), latent_frames, height // s, width // s)
    text_len = int(recipe.get("max_sequence_length") or 512)
    kwargs = {
        "hidden_states": torch.empty(shape, device="meta", dtype=dtype),
        "timestep": torch.empty(forward_batch, device="meta"),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, model.config.text_dim, device="meta", dtype=dtype
        ),
    }
    if model.config.image_dim is not None:
        # CLIP ViT-H/14 at 224: 16 x 16 patches + the class token
        kwargs["encoder_hidden_states_image"] = torch.empty(
            forward_batch, 257, model.config.image_dim, device="meta", dtype=dtype
        )
    z = int(vae.config.z_dim)
    return _latent_family_inputs(kwargs, recipe, z, latent_frames, height // s, width // s, blocks_attr="blocks")


def _cogvideox_inputs(model, vae, recipe, forward_batch, dtype, source) -> FamilyInputs:
    frames, height, width = (int(recipe_field(recipe, k, source)) for k in ("num_frames", "height", "width"))
    t = int(vae.config.temporal_compression_ratio)
    s = 2 ** (len(vae.config.block_out_channels) - 1)
    p = int(model.config.patch_size)
    if (frames - 1) % t or height % (s * p) or width % (s * p):
        raise ValueError(f"{source}: CogVideoX needs num_frames = 4k+1 and height/width divisible by {s * p}")
    latent_frames = (frames - 1) // t + 1
    shape = (forward_batch, latent_frames, int(model.config.in_channels), height // s, width // s)
    text_len = int(recipe.get("max_sequence_length") or model.config.max_text_seq_length)
    tokens = latent_frames * (height // s // p) * (width // s // p)
    head_dim = int(model.config.attention_head_dim)
    rotary = None
    if model.config.use_rotary_positional_embeddings:
        rotary = (torch.empty(tokens, head_dim, device="meta"), torch.empty(tokens, head_dim, device="meta"))
    kwargs = {
        "hidden_states": torch.empty(shape, device="meta", dtype=dtype),
        "timestep": torch.empty(forward_batch, device="meta"),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, model.config.text_embed_dim, device="meta", dtype=dtype
        ),
        "image_rotary_emb": rotary,
    }
    c = int(vae.config.latent_channels)
    # decode_latents permutes (B, F, C, h, w) to the VAE's (B, C, F, h, w)
    return _latent_family_inputs(kwargs, recipe, c, latent_frames, height // s, width // s, frames_first=True)


def _wan_targets(hub_id: str) -> tuple[str, ...]:
    from ..adapters.published_configs import get_published_config
    from ..adapters.wan import Wan22Adapter, WanI2VAdapter

    adapter = Wan22Adapter if "transformer_2" in get_published_config(hub_id).components else WanI2VAdapter
    return tuple(adapter.default_lora_target_modules)


def _cogvideox_targets(hub_id: str) -> tuple[str, ...]:
    from ..adapters.cogvideox import CogVideoXI2VAdapter

    return tuple(CogVideoXI2VAdapter.default_lora_target_modules)


register_accounting_family("WanTransformer3DModel", _wan_inputs, _wan_targets)
register_accounting_family("CogVideoXTransformer3DModel", _cogvideox_inputs, _cogvideox_targets)
