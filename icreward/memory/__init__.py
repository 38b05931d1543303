"""Memory accounting of training recipes at the published full sizes, without a GPU (models built on ``meta``).
Names load on first access."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .accountant import (
        MemoryEstimate,
        SavedActivations,
        estimate_recipe_memory,
        format_estimate,
        lora_parameter_count,
        measure_saved_activations,
    )

__getattr__, __dir__, __all__ = lazy_package(__name__)
