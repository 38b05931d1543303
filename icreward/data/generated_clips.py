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

from PIL import Image

__all__ = [
    "DEFAULT_MEDIA_PACKAGES",
    "ClipSearch",
    "RESERVED_PACKAGES",
    "GeneratedClip",
    "ReservedPackageError",
    "find_generated_clips",
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
