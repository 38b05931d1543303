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

    defaults = dict(head_hidden_size=16, head_num_heads=2, head_num_layers=1, head_dropout=0.0, num_frames=4)
    defaults["image_size"] = 16
    defaults.update(kwargs)
    return ICRewardConfig(
        backbone_type="qwen2_vl", backbone_config=backbone_config or tiny_qwen2_vl_config(), **defaults
    )


def save_tiny_qwen2_vl_checkpoint(
    path: str | Path, backbone_config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """Save a random tiny ``Qwen2VLForConditionalGeneration`` to ``path``, laid out as the hub checkpoints are
    (with its LM head), to exercise :meth:`ICRewardModel.from_pretrained_backbone` on a local directory."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = dict(backbone_config or tiny_qwen2_vl_config())
    model_type = config.pop("model_type")
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **config))
    model.save_pretrained(path)
    return Path(path)
