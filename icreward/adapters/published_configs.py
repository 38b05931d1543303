"""Published full-size configurations of the supported families, in one place, with the source of every value.

These entries let the library build a family's real architecture without weights (on the ``meta`` device), e.g.
for memory accounting, without touching the Hugging Face Hub. Each :class:`PublishedConfig` names the pipeline
class, the class and config of every component, the scheduler, the default sample size and, per component, where
the values come from. Other families register their own entry with :func:`register_published_config`. The
shipped entries live in :mod:`icreward.adapters.published`, one module a family, registered when this module loads.

Sources used here:

- Wan 2.1 / 2.2 transformers and schedulers: diffusers ``scripts/convert_wan_to_diffusers.py``
  (``get_transformer_config(model_type)`` for ``"Wan-I2V-14B-480p"`` and ``"Wan2.2-I2V-14B-720p"``; the
  ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
  flow_shift=3.0)`` and ``boundary_ratio=0.9`` that its ``__main__`` saves with the I2V pipelines). The Wan 2.1
  VAE is ``AutoencoderKLWan()`` with its defaults, which is how that script's ``convert_vae()`` builds it.
- Text / image encoders: the transformers configs of ``google/umt5-xxl`` (Wan), ``google/t5-v1_1-xxl``
  (CogVideoX) and ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (Wan 2.1 I2V image encoder), which the conversion
  scripts load by those names.
- CogVideoX-5b-I2V: the published ``THUDM/CogVideoX-5b-I2V`` ``transformer/config.json``, ``vae/config.json`` and
  ``scheduler/scheduler_config.json`` (values as published; diffusers ``scripts/convert_cogvideox_to_diffusers.py``
  builds the same transformer with ``get_transformer_init_kwargs("1.0")``: patch 2, sample 49x60x90). These
  CogVideoX values were written from the published files' contents as known to the author and were NOT re-read from
  the hub in this repository's offline environment.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """One pipeline component: its class name, the library it comes from, its full config and the source."""

    class_name: str
    config: dict[str, Any]
    source: str
    library: str = "diffusers"  # "diffusers" or "transformers"


@dataclasses.dataclass(frozen=True)
class PublishedConfig:
    """A published checkpoint's architecture: what :func:`build_meta_components` needs, and where it came from."""

    hub_id: str
    pipeline_class: str
    components: dict[str, ComponentConfig]
    scheduler_class: str
    scheduler_config: dict[str, Any]
    scheduler_source: str
    height: int
    width: int
    num_frames: int
    pipeline_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""


_REGISTRY: dict[str, PublishedConfig] = {}


def register_published_config(entry: PublishedConfig, *, overwrite: bool = False) -> PublishedConfig:
    """Add a family's published configuration (keyed by ``entry.hub_id``)."""
    if not isinstance(entry, PublishedConfig):
        raise TypeError(f"expected a PublishedConfig, got {type(entry).__name__}")
    if entry.hub_id in _REGISTRY and not overwrite:
        raise ValueError(f"a published config for {entry.hub_id!r} is already registered (pass overwrite=True)")
    _REGISTRY[entry.hub_id] = entry
    return entry


def get_published_config(hub_id: str) -> PublishedConfig:
    """The registered entry for ``hub_id``; a clear error listing the known ids otherwise."""
    try:
        return _REGISTRY[hub_id]
    except KeyError:
        raise KeyError(f"no published config for {hub_id!r}; known: {sorted(_REGISTRY)}") from None


def available_published_configs() -> list[str]:
    return sorted(_REGISTRY)


def _build_one(component: ComponentConfig, dtype: torch.dtype | None) -> nn.Module:
    config = copy.deepcopy(component.config)
    if component.library == "diffusers":
        import diffusers

        if "." in component.class_name:  # a class diffusers does not export at top level (e.g. pipeline parts)
            import importlib

            module_path, _, class_name = component.class_name.rpartition(".")
            cls = getattr(importlib.import_module(module_path), class_name)
        else:
            cls = getattr(diffusers, component.class_name)
        module = cls.from_config(config)
    elif component.library == "transformers":
        import transformers

        cls = getattr(transformers, component.class_name)
        module = cls(cls.config_class(**config))
    else:
        raise ValueError(f"unknown library {component.library!r} for {component.class_name}")
    if dtype is not None:
        cast_like_from_pretrained(module, dtype, library=component.library)
    return module


def fp32_kept_modules(module: nn.Module, dtype: torch.dtype, library: str = "diffusers") -> list[str]:
    """The module names ``from_pretrained(torch_dtype=dtype)`` keeps in float32.

    diffusers keeps a model's ``_keep_in_fp32_modules`` in float32 for any ``torch_dtype``; transformers keeps
    ``_keep_in_fp32_modules`` only for float16 and ``_keep_in_fp32_modules_strict`` for float16 and bfloat16.
    """
    names: list[str] = []
    if library == "diffusers" or dtype == torch.float16:
        names += list(getattr(module, "_keep_in_fp32_modules", None) or [])
    if library == "transformers" and dtype in (torch.float16, torch.bfloat16):
        names += list(getattr(module, "_keep_in_fp32_modules_strict", None) or [])
    return names


def cast_like_from_pretrained(module: nn.Module, dtype: torch.dtype, library: str = "diffusers") -> nn.Module:
    """Cast floating parameters and buffers to ``dtype`` in place, except those of fp32-kept modules (a parameter
    or buffer whose dotted name has one of :func:`fp32_kept_modules` as a component), as ``from_pretrained`` loads
    them; ``module.to(dtype)`` would cast those too."""
    keep = set(fp32_kept_modules(module, dtype, library))
    for module_name, sub in module.named_modules():
        parts = set(module_name.split(".")) if module_name else set()
        for registry in (sub._parameters, sub._buffers):
            for name, tensor in registry.items():
                if tensor is None or not tensor.is_floating_point():
                    continue
                target = torch.float32 if keep & (parts | {name}) else dtype
                if tensor.dtype != target:
                    if isinstance(tensor, nn.Parameter):
                        tensor.data = tensor.data.to(target)
                    else:
                        registry[name] = tensor.to(target)
    return module


def build_meta_components(
    hub_id: str, *, dtype: torch.dtype | None = torch.bfloat16, components: tuple[str, ...] | None = None
) -> dict[str, nn.Module]:
    """Instantiate a published pipeline's model components on the ``meta`` device (shapes only, no weights).

    Args:
        hub_id: a registered id (see :func:`available_published_configs`).
        dtype: parameter dtype (the checkpoints are trained/served in bf16); ``None`` keeps fp32. Modules that
            ``from_pretrained(torch_dtype=dtype)`` keeps in float32 stay float32 (:func:`cast_like_from_pretrained`).
        components: restrict to these component names (default: all).
    """
    entry = get_published_config(hub_id)
    names = components if components is not None else tuple(entry.components)
    unknown = [n for n in names if n not in entry.components]
    if unknown:
        raise KeyError(f"{hub_id} has no component(s) {unknown}; it has {list(entry.components)}")
    with torch.device("meta"):
        return {name: _build_one(entry.components[name], dtype) for name in names}


def build_meta_scheduler(hub_id: str):
    """The published scheduler (schedulers hold no weights, so this is the real object)."""
    import diffusers

    entry = get_published_config(hub_id)
    return getattr(diffusers, entry.scheduler_class).from_config(copy.deepcopy(entry.scheduler_config))


# the entries, one module a family (registered on import)
from . import published  # noqa: E402, F401
