"""Find the adapter for a pipeline, an adapter, a Hub id or a local diffusers directory."""

from __future__ import annotations

import os
from typing import Any

from .base import VideoModelAdapter
from .cogvideox import CogVideoXI2VAdapter
from .hunyuan_video15 import HunyuanVideo15I2VAdapter
from .ltx import LTXVideoI2VAdapter
from .ltx2 import LTX2I2VAdapter
from .opensora import OpenSoraAdapter
from .wan import Wan22Adapter, WanI2VAdapter
from .wan_ti2v import WanTI2VAdapter

# Checked in order; the first adapter whose `can_handle` accepts the pipeline wins. User adapters registered
# with `register_adapter` come first so they can override the built-in ones.
_ADAPTERS: list[type[VideoModelAdapter]] = [
    WanTI2VAdapter,  # before WanI2VAdapter: both see a single-transformer WanImageToVideoPipeline
    Wan22Adapter,
    WanI2VAdapter,
    CogVideoXI2VAdapter,
    LTXVideoI2VAdapter,
    LTX2I2VAdapter,
    HunyuanVideo15I2VAdapter,
    OpenSoraAdapter,
]


def register_adapter(adapter_cls: type[VideoModelAdapter]) -> type[VideoModelAdapter]:
    """Register a :class:`VideoModelAdapter` subclass with :func:`get_adapter` (usable as a class decorator)."""
    if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, VideoModelAdapter)):
        raise TypeError(f"expected a VideoModelAdapter subclass, got {adapter_cls!r}")
    if adapter_cls not in _ADAPTERS:
        _ADAPTERS.insert(0, adapter_cls)
    return adapter_cls


def available_adapters() -> list[type[VideoModelAdapter]]:
    """Registered adapter classes, in lookup order."""
    return list(_ADAPTERS)


def get_adapter(pipeline_or_name: Any, **kwargs: Any) -> VideoModelAdapter:
    """Return the adapter for ``pipeline_or_name``.

    Args:
        pipeline_or_name: a :class:`VideoModelAdapter` (returned as is), a loaded pipeline, or a Hub id / local
            directory in diffusers layout (its ``model_index.json`` picks the family, then the pipeline is loaded).
        kwargs: for a pipeline, adapter options (e.g. ``train_expert="low_noise"`` for Wan 2.2); for a name,
            also loading options (``torch_dtype=...``) forwarded to ``from_pretrained``.

    Raises:
        ValueError: when no registered adapter understands the pipeline.
    """
    if isinstance(pipeline_or_name, VideoModelAdapter):
        if kwargs:
            raise ValueError(f"got an adapter instance and adapter options {sorted(kwargs)}; pass one or the other")
        return pipeline_or_name
    if isinstance(pipeline_or_name, (str, os.PathLike)):
        model_index = _load_model_index(os.fspath(pipeline_or_name))
        for adapter_cls in _ADAPTERS:
            if adapter_cls.can_handle_model_index(model_index):
                return adapter_cls.from_pretrained(pipeline_or_name, **kwargs)
        raise ValueError(
            f"no adapter for {os.fspath(pipeline_or_name)!r} (pipeline class {model_index.get('_class_name')!r}); "
            f"known: {[cls.__name__ for cls in _ADAPTERS]}. Register one with icreward.adapters.register_adapter."
        )
    for adapter_cls in _ADAPTERS:
        if adapter_cls.can_handle(pipeline_or_name):
            return adapter_cls(pipeline_or_name, **kwargs)
    raise ValueError(
        f"no adapter for a {type(pipeline_or_name).__name__}; known: {[cls.__name__ for cls in _ADAPTERS]}. "
        "Register one with icreward.adapters.register_adapter."
    )


def _load_model_index(name_or_path: str) -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    # Downloads (or reads from the cache / a local directory) only model_index.json, not the weights.
    config = DiffusionPipeline.load_config(name_or_path)
    return dict(config)
