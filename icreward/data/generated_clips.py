"""Find real generated video clips shipped in ComfyUI's workflow-template media wheels (MIT licence).

The wheels ``comfyui-workflow-templates-media-{api,assets-01,assets-02,image,other}`` hold animated WebP files
under ``<package>/templates/``: real outputs of image/text-to-video models. :func:`find_generated_clips` finds
them through :mod:`importlib.resources` (no hard-coded paths) and keeps animations with at least
``min_frames`` frames.

``comfyui-workflow-templates-media-video`` is reserved for independent evaluation: it is never searched, and
asking for it raises :class:`ReservedPackageError`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_MEDIA_PACKAGES",
    "ClipSearch",
    "RESERVED_PACKAGES",
    "GeneratedClip",
    "ReservedPackageError",
    "find_generated_clips",
    "load_clip_frames",
    "unusable_reason",
]

#: Import names of the media wheels used for training data.
DEFAULT_MEDIA_PACKAGES: tuple[str, ...] = (
    "comfyui_workflow_templates_media_api",
    "comfyui_workflow_templates_media_assets_01",
    "comfyui_workflow_templates_media_assets_02",
    "comfyui_workflow_templates_media_image",
    "comfyui_workflow_templates_media_other",
)

#: Reserved for independent evaluation: never read.
RESERVED_PACKAGES: frozenset[str] = frozenset({"comfyui_workflow_templates_media_video"})


class ReservedPackageError(ValueError):
    """A package reserved for independent evaluation was asked for."""


@dataclass(frozen=True)
class GeneratedClip:
    path: str
    package: str
    name: str  # file stem, e.g. "video_wan2_2_14B_i2v-1"
    num_frames: int
    width: int
    height: int
    task: str  # "i2v", "t2v" or "other", from the file name


@dataclass
class ClipSearch:
    clips: list[GeneratedClip] = field(default_factory=list)
    missing_packages: list[str] = field(default_factory=list)
    too_short: int = 0
    unreadable: list[str] = field(default_factory=list)


def _normalise(name: str) -> str:
    return name.strip().replace("-", "_").lower()


def _task(stem: str) -> str:
    lowered = stem.lower()
    for task in ("i2v", "t2v"):
        if task in lowered:
            return task
    return "other"


def find_generated_clips(
    packages: Sequence[str] = DEFAULT_MEDIA_PACKAGES, min_frames: int = 16, subdir: str = "templates"
) -> ClipSearch:
    """Animated WebP clips with ``>= min_frames`` frames in the given installed packages, sorted by path.

    Packages that are not installed are listed in ``missing_packages``; files Pillow cannot open are listed in
    ``unreadable``. Raises :class:`ReservedPackageError` if a reserved package is asked for.
    """
    names = [_normalise(p) for p in packages]
    reserved = [n for n in names if n in RESERVED_PACKAGES]
    if reserved:
        raise ReservedPackageError(f"{reserved} is reserved for independent evaluation and is never read")
    result = ClipSearch()
    for package in names:
        if importlib.util.find_spec(package) is None:
            result.missing_packages.append(package)
            continue
        root = importlib.resources.files(package) / subdir
        if not root.is_dir():
            result.missing_packages.append(package)
            continue
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if not entry.name.lower().endswith(".webp"):
                continue
            path = Path(str(entry))
            try:
                with Image.open(path) as image:
                    n_frames = int(getattr(image, "n_frames", 1))
                    width, height = image.size
            except OSError:
                result.unreadable.append(str(path))
                continue
            if n_frames < min_frames:
                result.too_short += 1
                continue
            result.clips.append(
                GeneratedClip(str(path), package, path.stem, n_frames, width, height, _task(path.stem))
            )
    result.clips.sort(key=lambda c: c.path)
    return result


def load_clip_frames(path: str, num_frames: int = 16, size: int = 64) -> np.ndarray:
    """``num_frames`` frames spread evenly over the clip, resized to ``size`` x ``size``, ``(T, H, W, 3)`` float in [0, 1]."""
    with Image.open(path) as image:
        total = int(getattr(image, "n_frames", 1))
        wanted = sorted({int(round(i)) for i in np.linspace(0, total - 1, num_frames)})
        frames = []
        for index in wanted:
            image.seek(index)
            frame = image.convert("RGB").resize((size, size), Image.BILINEAR)
            frames.append(np.asarray(frame, dtype=np.float32) / 255.0)
    return np.stack(frames)


def unusable_reason(
    frames: np.ndarray,
    static_threshold: float = 0.006,
    cut_ratio: float = 6.0,
    cut_min: float = 0.08,
    flat_fraction: float = 0.55,
    seam_ratio: float = 4.0,
) -> str | None:
    """Why a clip cannot serve as a consistent video, or ``None``.

    * ``"scene_cut"``: one consecutive-frame change is ``cut_ratio`` times the median change and above ``cut_min``;
    * ``"near_static"``: the mean absolute consecutive-frame change is below ``static_threshold``;
    * ``"text_or_ui"``: more than ``flat_fraction`` of the first frame is one flat colour (screens, slides);
    * ``"side_by_side"``: the column difference across the vertical centre line is ``seam_ratio`` times the
      typical column difference in every sampled frame (two panels).
    """
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"frames must be (T>=2, H, W, 3), got {frames.shape}")
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    median = float(np.median(steps))
    if steps.max() > cut_min and steps.max() > cut_ratio * max(median, 1e-6):
        return "scene_cut"
    if steps.mean() < static_threshold:
        return "near_static"
    first = np.round(frames[0] * 31).astype(np.int32)
    codes = first[..., 0] * 1024 + first[..., 1] * 32 + first[..., 2]
    if np.bincount(codes.ravel()).max() / codes.size > flat_fraction:
        return "text_or_ui"
    width = frames.shape[2]
    column_diff = np.abs(np.diff(frames.mean(axis=3), axis=2)).mean(axis=1)  # (T, W-1)
    centre = column_diff[:, width // 2 - 2 : width // 2 + 1].max(axis=1)
    typical = np.median(column_diff, axis=1)
    if np.all(centre > seam_ratio * np.maximum(typical, 1e-6)):
        return "side_by_side"
    return None
