"""Conversions between the ``uint8`` frames the readers of :mod:`icreward.video` return and floats in ``[0, 1]``."""

from __future__ import annotations

import torch

__all__ = ["to_float", "to_uint8", "to_unit_float"]


def to_float(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert ``uint8`` frames or images to floats in ``[0, 1]``.

    Args:
        frames: A ``torch.uint8`` tensor of any shape.
        dtype: Floating dtype of the result.

    Returns:
        ``frames / 255`` as ``dtype``, on the same device.
    """
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        got = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"`to_float` expects a torch.uint8 tensor, got {got}")
    if not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype}")
    return frames.to(dtype).div_(255)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Convert float frames or images in ``[0, 1]`` to ``uint8``: clamped, scaled by 255 and rounded.

    ``uint8`` input is returned unchanged. NaN maps to 0. Half-precision input is computed in float32 so that every
    level of the 256 is reachable.

    Args:
        frames: A floating (or ``uint8``) tensor of any shape.

    Returns:
        A ``torch.uint8`` tensor of the same shape, on the same device.
    """
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"`to_uint8` expects a torch tensor, got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        return frames
    if not frames.is_floating_point():
        raise ValueError(f"`to_uint8` expects a floating tensor with values in [0, 1], got {frames.dtype}")
    frames = torch.nan_to_num(frames.to(torch.float32), nan=0.0)
    return frames.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def to_unit_float(
    frames: torch.Tensor, what: str = "frames", dtype: torch.dtype | None = torch.float32
) -> torch.Tensor:
    """``uint8`` frames (through :func:`to_float`) or floating frames in ``[0, 1]`` as floats in ``[0, 1]``.

    Args:
        frames: A ``torch.uint8`` or floating tensor of any shape.
        what: Name of the input in the error raised for other dtypes.
        dtype: Floating dtype of the result; ``None`` keeps floating input as it is (``uint8`` gives float32).
    """
    if frames.dtype == torch.uint8:
        return to_float(frames, dtype or torch.float32)
    if not torch.is_floating_point(frames):
        raise ValueError(f"{what} must be uint8 or floating point in [0, 1], got {frames.dtype}")
    return frames if dtype is None else frames.to(dtype)
