"""Model-family adapters: one object per family that trainers use to encode, noise, predict and decode.

See :class:`~icreward.adapters.base.VideoModelAdapter` for the interface and how to add a family (e.g. Open-Sora).
What several families share is written once in :mod:`icreward.adapters.mixins` (the transformer as the trained
module, rectified flow, first-frame image conditioning); ``pipeline_class_name`` gives a family its ``load_pipeline``.
The package is imported eagerly (not through ``icreward._lazy``): :func:`get_adapter` lists every family, and
importing a family's module registers its memory accounting.
"""

from .base import LORA_WEIGHT_NAME, VideoModelAdapter
from .cogvideox import CogVideoXI2VAdapter
from .hunyuan_video15 import HunyuanVideo15Generator, HunyuanVideo15I2VAdapter, load_hunyuan_video15_lora
from .ltx import LTXVideoI2VAdapter
from .ltx2 import LTX2I2VAdapter, LTX2Sampler
from .opensora import OpenSoraAdapter, OpenSoraComponents
from .registry import available_adapters, get_adapter, register_adapter
from .wan import Wan22Adapter, WanI2VAdapter, load_wan22_lora
from .wan_ti2v import WanTI2VAdapter

__all__ = [
    "LORA_WEIGHT_NAME",
    "CogVideoXI2VAdapter",
    "HunyuanVideo15Generator",
    "HunyuanVideo15I2VAdapter",
    "LTX2I2VAdapter",
    "LTX2Sampler",
    "LTXVideoI2VAdapter",
    "OpenSoraAdapter",
    "OpenSoraComponents",
    "VideoModelAdapter",
    "Wan22Adapter",
    "WanI2VAdapter",
    "WanTI2VAdapter",
    "available_adapters",
    "get_adapter",
    "load_hunyuan_video15_lora",
    "load_wan22_lora",
    "register_adapter",
]
