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
    "save_tiny_vision_checkpoint",
    "tiny_clip_vision_config",
    "tiny_dinov2_config",
    "tiny_icreward_config",
    "tiny_mlp_reward_config",
    "tiny_siglip_vision_config",
]


def tiny_clip_vision_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return {
        "model_type": "clip_vision_model",
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": hidden_size,
    }


def tiny_siglip_vision_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return {
        "model_type": "siglip_vision_model",
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }


def tiny_dinov2_config(image_size: int = 32, hidden_size: int = 32) -> dict[str, Any]:
    return {
        "model_type": "dinov2",
        "image_size": image_size,
        "patch_size": 8,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }


def tiny_icreward_config(backbone_config: dict[str, Any] | None = None, **kwargs):
    """An :class:`ICRewardConfig` with a tiny CLIP vision backbone and a tiny head."""
    from ..models import ICRewardConfig

    backbone_config = backbone_config or tiny_clip_vision_config()
    defaults = dict(head_hidden_size=16, head_num_heads=2, head_num_layers=1, head_dropout=0.0, num_frames=4)
    defaults["image_size"] = backbone_config.get("image_size", 32)
    defaults.update(kwargs)
    return ICRewardConfig(backbone_type="transformers", backbone_config=backbone_config, **defaults)


def tiny_mlp_reward_config(backbone_config: dict[str, Any] | None = None, **kwargs):
    """An :class:`MLPRewardConfig` with a tiny CLIP vision backbone."""
    from ..models import MLPRewardConfig

    backbone_config = backbone_config or tiny_clip_vision_config()
    defaults = dict(hidden_sizes=[16], dropout=0.0, num_frames=4)
    defaults["image_size"] = backbone_config.get("image_size", 32)
    defaults.update(kwargs)
    return MLPRewardConfig(backbone_type="transformers", backbone_config=backbone_config, **defaults)


def save_tiny_vision_checkpoint(
    path: str | Path, backbone_config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """Save a random tiny transformers vision model to ``path`` (as a hub checkpoint would be laid out)."""
    from transformers import AutoConfig, AutoModel

    config = dict(backbone_config or tiny_clip_vision_config())
    model_type = config.pop("model_type")
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **config))
    model.save_pretrained(path)
    return Path(path)
