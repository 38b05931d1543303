"""Memory accounting of training recipes at the published full sizes, without a GPU (models built on ``meta``)."""

from .accountant import (
    MemoryEstimate,
    SavedActivations,
    estimate_recipe_memory,
    format_estimate,
    lora_parameter_count,
    measure_saved_activations,
)

__all__ = [
    "MemoryEstimate",
    "SavedActivations",
    "estimate_recipe_memory",
    "format_estimate",
    "lora_parameter_count",
    "measure_saved_activations",
]
