"""Offline tiny-model factories used by the tests, the examples' defaults and the benchmarks. Names load on first
access."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .tiny_backbones import (
        save_tiny_qwen2_vl_checkpoint,
        save_tiny_vision_checkpoint,
        tiny_clip_vision_config,
        tiny_dinov2_config,
        tiny_icreward_config,
        tiny_mlp_reward_config,
        tiny_qwen2_vl_config,
        tiny_qwen2_vl_icreward_config,
        tiny_siglip_vision_config,
    )
    from .tiny_families_ltx import TINY_LTX_DEFAULTS, save_tiny_ltx_i2v_pipeline, tiny_ltx_i2v_pipeline
    from .tiny_pipelines import (
        TINY_DEFAULTS,
        TINY_POLICIES,
        build_tiny_tokenizer,
        load_policy_pipeline,
        lora_output_change,
        tiny_cogvideox_i2v_pipeline,
        tiny_pipeline,
        tiny_umt5_encoder,
        tiny_wan22_pipeline,
        tiny_wan_i2v_pipeline,
    )

__getattr__, __dir__, __all__ = lazy_package(__name__)
