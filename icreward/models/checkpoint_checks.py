"""Strict loading checks of saved reward models: shard index, safetensors-only files, loaded dtypes, model type."""

from __future__ import annotations

import os

import torch
from torch import nn

STRICT_KEYS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def check_shard_index(index_file: str) -> None:
    """Every shard named by a local ``model.safetensors.index.json`` must be a ``.safetensors`` file inside the
    model folder: no pickles, no ``../`` or absolute paths, no symlinks leading out."""
    import json
    import os

    folder = os.path.realpath(os.path.dirname(index_file))
    try:
        with open(index_file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = set(weight_map.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise ValueError(f"{index_file}: not a valid shard index ({type(err).__name__}: {err})") from err
    for shard in sorted(map(str, shards)):
        target = os.path.realpath(os.path.join(folder, shard))
        if (
            not shard.endswith(".safetensors")
            or os.path.isabs(shard)
            or os.path.commonpath([folder, target]) != folder
        ):
            raise ValueError(
                f"{index_file}: shard {shard!r} is refused; shards must be .safetensors files inside {folder}"
            )


def check_safetensors_files(name_or_path) -> dict[str, str]:
    """Open the header of every local weights file (``model.safetensors`` or the shards of its index): a
    truncated, empty or corrupt file is refused naming it, before anything is built. Returns each stored tensor's
    safetensors dtype (``"F32"``, ``"I64"``, ...)."""
    import json

    from safetensors import SafetensorError, safe_open

    from ..video import printable_text

    folder = os.fsdecode(name_or_path)
    if not os.path.isdir(folder):
        return {}  # a hub id: transformers resolves and checks it
    files = [os.path.join(folder, "model.safetensors")]
    index_file = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index_file):  # already confined by check_shard_index
        with open(index_file, encoding="utf-8") as f:
            files = [os.path.join(folder, shard) for shard in sorted(set(json.load(f)["weight_map"].values()))]
    dtypes: dict[str, str] = {}
    for file in files:
        if not os.path.isfile(file):
            continue  # transformers names the missing file
        try:
            with safe_open(file, framework="pt") as weights:
                for key in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                    dtypes[key] = weights.get_slice(key).get_dtype()
        except (SafetensorError, OSError, ValueError) as err:
            raise OSError(printable_text(f"{file}: not a valid safetensors file ({err})")) from err
    return dtypes


def check_loaded_weights(model: nn.Module, stored_dtypes: dict[str, str], where: str) -> None:
    """Strict loading, after the tensors matched by name and shape: a floating-point parameter must have been
    stored as floating point (an integer tensor would be silently truncated), and hold only finite values (NaN or
    inf weights give NaN scores for every input)."""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        stored = stored_dtypes.get(name)
        if stored is not None and not stored.startswith(("F", "BF")):
            raise OSError(
                f"{where}: tensor {name!r} is stored as {stored}, but {type(model).__name__} needs floating point; "
                "pass strict=False to load it anyway"
            )
        if tensor.device.type != "meta" and not torch.isfinite(tensor).all():
            raise OSError(
                f"{where}: tensor {name!r} contains NaN or inf values (a diverged or damaged checkpoint); "
                "pass strict=False to load it anyway"
            )


def check_model_type(cls, name_or_path, kwargs) -> None:
    """A local folder whose config.json names another ``model_type`` is refused (it would load with fresh weights)."""
    import json
    import os

    config_file = os.path.join(str(name_or_path), "config.json")
    if kwargs.get("config") is not None or not os.path.isfile(config_file):
        return
    try:
        with open(config_file, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError, RecursionError) as err:
        raise ValueError(f"{config_file}: not a readable JSON config ({err})") from err
    if model_type != cls.config_class.model_type:
        raise ValueError(
            f"{config_file}: model_type is {model_type!r}, but {cls.__name__} needs "
            f"{cls.config_class.model_type!r}; pass strict=False to load it anyway"
        )
