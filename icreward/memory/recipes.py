"""Recipes for the memory accountant: loading a YAML recipe with ``key=value`` overrides, and reading its trainer,
required fields and dtype."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


# ------------------------------------------------------------------------------------------------ recipes
def parse_override_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of fields, got {type(recipe).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--override expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        recipe[key.strip()] = parse_override_value(value)
    return recipe


def recipe_trainer(recipe: dict[str, Any], source: str) -> str:
    if "trainer" in recipe:
        return str(recipe["trainer"])
    if "num_generations" in recipe:  # before DPO: GRPO's KL weight is also called beta
        return "grpo"
    if "truncated_backprop_steps" in recipe or "kl_weight" in recipe:
        return "reward_feedback"
    if "loss_type" in recipe or "beta" in recipe:
        return "dpo"
    raise ValueError(f"{source}: cannot tell the trainer (no loss_type / truncated_backprop_steps); set trainer=")


def recipe_field(recipe: dict[str, Any], key: str, source: str) -> Any:
    if key not in recipe:
        raise ValueError(f"{source}: field {key!r} is required for memory accounting")
    return recipe[key]


def recipe_dtype(recipe: dict[str, Any], source: str, assumptions: list[str]) -> torch.dtype:
    name = recipe.get("torch_dtype") or recipe.get("dtype")
    if name in (None, "auto"):
        name = "bfloat16"
        assumptions.append("the recipe sets no torch_dtype/dtype: frozen weights assumed bfloat16")
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{source}: torch_dtype/dtype {name!r} is not a torch dtype")
    return dtype
