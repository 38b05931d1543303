"""Offline tiny-model factories used by the tests, the examples' defaults and the benchmarks."""

from .tiny_backbones import (
    save_tiny_vision_checkpoint,
    tiny_clip_vision_config,
    tiny_dinov2_config,
    tiny_icreward_config,
    tiny_mlp_reward_config,
    tiny_siglip_vision_config,
)

__all__ = [
    "save_tiny_vision_checkpoint",
    "tiny_clip_vision_config",
    "tiny_dinov2_config",
    "tiny_icreward_config",
    "tiny_mlp_reward_config",
    "tiny_siglip_vision_config",
]
