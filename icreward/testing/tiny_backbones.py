"""Tiny, randomly initialised backbone configs for tests, examples and benchmarks (offline, seconds on CPU).

Each function returns a transformers config dict usable as ``backbone_config`` with ``backbone_type="transformers"``;
:func:`save_tiny_vision_checkpoint` writes one as a local checkpoint so the real hub-id/local-path loading code
(:meth:`ICRewardModel.from_pretrained_backbone`) is exercised without a download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = [
    "save_tiny_qwen2_vl_checkpoint",
    "save_tiny_vision_checkpoint",
    "tiny_clip_vision_config",
    "tiny_dinov2_config",
    "tiny_icreward_config",
    "tiny_mlp_reward_config",
    "tiny_qwen2_vl_config",
    "tiny_qwen2_vl_icreward_config",
    "tiny_siglip_vision_config",
]


def _tiny_vit_config(model_type: str, image_size: int, hidden_size: int, **extra: Any) -> dict[str, Any]:
    """A 2-layer, 4-head vision transformer config dict with 8-pixel patches and an MLP twice as wide."""
    return {
        "model_type": model_type,
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        **extra,
    }


def tiny_clip_vision_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return _tiny_vit_config("clip_vision_model", image_size, hidden_size, projection_dim=hidden_size)


def tiny_siglip_vision_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return _tiny_vit_config("siglip_vision_model", image_size, hidden_size)


def tiny_dinov2_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return _tiny_vit_config("dinov2", image_size, hidden_size)


#: The tiny reward head of :func:`tiny_icreward_config` and :func:`tiny_qwen2_vl_icreward_config`.
_TINY_HEAD: dict[str, Any] = dict(
    head_hidden_size=16, head_num_heads=2, head_num_layers=1, head_dropout=0.0, num_frames=4
)


def _tiny_reward_config(config_class, backbone_type: str, backbone_config, defaults: dict[str, Any], kwargs):
    """``config_class`` over ``backbone_config`` with ``defaults`` updated by the caller's ``kwargs``."""
    defaults = {**defaults, **kwargs}
    return config_class(backbone_type=backbone_type, backbone_config=backbone_config, **defaults)


def tiny_icreward_config(backbone_config: dict[str, Any] | None = None, **kwargs):
    """An :class:`ICRewardConfig` with a tiny CLIP vision backbone and a tiny head."""
    from ..models import ICRewardConfig

    backbone_config = backbone_config or tiny_clip_vision_config()
    defaults = {**_TINY_HEAD, "image_size": backbone_config.get("image_size", 32)}
    return _tiny_reward_config(ICRewardConfig, "transformers", backbone_config, defaults, kwargs)


def tiny_mlp_reward_config(backbone_config: dict[str, Any] | None = None, **kwargs):
    """An :class:`MLPRewardConfig` with a tiny CLIP vision backbone."""
    from ..models import MLPRewardConfig

    backbone_config = backbone_config or tiny_clip_vision_config()
    defaults = dict(hidden_sizes=[16], dropout=0.0, num_frames=4, image_size=backbone_config.get("image_size", 32))
    return _tiny_reward_config(MLPRewardConfig, "transformers", backbone_config, defaults, kwargs)


def _save_random_checkpoint(path: str | Path, auto_class, config: dict[str, Any], seed: int) -> Path:
    """Build ``auto_class`` from the config dict ``config`` (``model_type`` + fields) under ``seed`` and save it."""
    from transformers import AutoConfig

    config = dict(config)
    model_type = config.pop("model_type")
    torch.manual_seed(seed)
    model = auto_class.from_config(AutoConfig.for_model(model_type, **config))
    model.save_pretrained(path)
    return Path(path)


def save_tiny_vision_checkpoint(
    path: str | Path, backbone_config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """Save a random tiny transformers vision model to ``path`` (as a hub checkpoint would be laid out)."""
    from transformers import AutoModel

    return _save_random_checkpoint(path, AutoModel, backbone_config or tiny_clip_vision_config(), seed)


def tiny_qwen2_vl_config(model_type: str = "qwen2_vl", hidden_size: int = 32) -> dict[str, Any]:
    """A tiny Qwen2-VL (or ``"qwen2_5_vl"``) config dict: 2 LM layers, a 1-block vision tower with patch 4,
    temporal patch 2 and spatial merge 2 (images must be multiples of 8 pixels), a 64-token vocabulary."""
    heads = 4
    head_dim = hidden_size // heads
    # M-RoPE splits the rotary half-dimension over (temporal, height, width)
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 4), half // 4, half // 4]
    vision = {
        "depth": 1,
        "hidden_size": hidden_size,  # the merger's output width = the LM width
        "num_heads": 2,
        "patch_size": 4,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    if model_type == "qwen2_5_vl":
        vision.update(hidden_size=hidden_size, out_hidden_size=hidden_size, intermediate_size=2 * hidden_size)
        vision.update(fullatt_block_indexes=[0], window_size=16)
    else:
        vision.update(embed_dim=hidden_size, mlp_ratio=2)
    text = {
        "vocab_size": 64,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
    }
    return {
        "model_type": model_type,
        "text_config": text,
        "vision_config": vision,
        "image_token_id": 60,
        "video_token_id": 61,
        "vision_start_token_id": 58,
        "vision_end_token_id": 59,
    }


def tiny_qwen2_vl_icreward_config(backbone_config: dict[str, Any] | None = None, **kwargs):
    """An :class:`ICRewardConfig` with a tiny Qwen2-VL backbone (``backbone_type="qwen2_vl"``), 16-pixel images."""
    from ..models import ICRewardConfig

    defaults = {**_TINY_HEAD, "image_size": 16}
    return _tiny_reward_config(ICRewardConfig, "qwen2_vl", backbone_config or tiny_qwen2_vl_config(), defaults, kwargs)


def save_tiny_qwen2_vl_checkpoint(
    path: str | Path, backbone_config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """Save a random tiny ``Qwen2VLForConditionalGeneration`` to ``path``, laid out as the hub checkpoints are
    (with its LM head), to exercise :meth:`ICRewardModel.from_pretrained_backbone` on a local directory."""
    from transformers import AutoModelForImageTextToText

    return _save_random_checkpoint(path, AutoModelForImageTextToText, backbone_config or tiny_qwen2_vl_config(), seed)
