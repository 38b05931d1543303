"""Rendering of stress-test videos (:mod:`icreward.data.stress_suite`): world canvases from photographs, camera
paths, scene and screen perturbations, and the videos of one source."""

from __future__ import annotations

import contextlib
import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from icreward.data.photos import check_sources, load_source_image
from icreward.data.stress_labels import (
    CONSISTENT,
    DEFAULT_SEVERITIES,
    MAX_SCORE_DROP,
    MOTION_LEVELS,
    PERTURBATIONS,
    is_motion_decoupled,
    motion_level_for,
    perturbation_score,
)
from icreward.video import to_uint8

__all__ = [
    "CAMERA_MOTIONS",
    "CANVAS_FACTOR",
    "StressVideo",
    "check_generation_args",
    "gaussian_blur",
    "generate_source_videos",
    "generate_stress_video",
    "hue_rotation",
    "make_canvas",
    "single_threaded",
    "stable_hash",
    "subject_mask",
]

#: Camera motion kinds drawn for each motion level. "elastic" is a smooth non-rigid sway of the whole frame.
CAMERA_MOTIONS: dict[str, tuple[str, ...]] = {
    "static": ("static",),
    "small": ("pan", "zoom_in", "zoom_out", "rotate", "elastic"),
    "large": ("pan", "zoom_in", "zoom_out", "dolly", "orbit"),
}

#: The world canvas is this many times larger than the rendered frame, so that large camera moves never leave it.
CANVAS_FACTOR = 1.75

# Subject = a soft disc at the centre of the reference; radii in fractions of the frame width.
_SUBJECT_INNER, _SUBJECT_OUTER = 0.24, 0.36
_BREATHING_PROBABILITY = 0.25


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
        return is_motion_decoupled(self.perturbation, self.motion_level)


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
    return to_uint8(crop)


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
def subject_mask(size: int, image_size: int) -> torch.Tensor:
    """Soft disc ``(size, size)`` in [0, 1] centred on the canvas, covering the centre of the reference."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    distance = torch.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2) / image_size
    t = ((_SUBJECT_OUTER - distance) / (_SUBJECT_OUTER - _SUBJECT_INNER)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
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


def hue_rotation(angle: float) -> torch.Tensor:
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
    mask = subject_mask(size, image_size)[None, None]
    if perturbation == "identity_change":
        return world * (1 - a * mask) + donor * (a * mask)
    if perturbation == "background_drift":
        return world * (1 - a * (1 - mask)) + donor * (a * (1 - mask))
    if perturbation == "object_removal":
        # Normalised convolution: a blur of the surroundings only, renormalised by the blurred support.
        known = (mask < 0.01).float()
        sigma = 0.15 * image_size
        fill = gaussian_blur(canvas[None] * known, sigma) / gaussian_blur(known, sigma).clamp_min(1e-4)
        return world * (1 - a * mask) + fill * (a * mask)
    if perturbation == "color_drift":
        hue = math.radians(150.0) * rng.choice([-1.0, 1.0])
        saturation = 0.6 * rng.choice([-1.0, 1.0])
        contrast = 0.3 * rng.choice([-1.0, 1.0])
        frames = []
        for t in range(num_frames):
            x = torch.einsum("ij,jhw->ihw", hue_rotation(float(alpha[t]) * hue), canvas)
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
            frame = gaussian_blur(frames[t : t + 1], float(alpha[t]) * 0.025 * image_size)
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
        frames=to_uint8(frames),
        perturbation=perturbation,
        severity=float(severity),
        score=score,
        motion=motion,
        motion_level=motion_level_for(motion),
        camera=camera,
        donor=donor_id if uses_donor else None,
    )


@contextlib.contextmanager
def single_threaded():
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


def stable_hash(text: str) -> int:
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
    check_sources([source_id, *donors])
    if source_id in donors:
        raise ValueError(f"A source cannot be its own donor ({source_id!r}).")
    check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities)
    canvas = _source_canvas(source_id, image_size)
    reference = _reference_from_canvas(canvas, image_size)
    plan_rng = np.random.default_rng([seed, stable_hash(source_id)])

    # Consistent videos lean towards large motion (rotation starts at "large") so that every source has some.
    plan: list[tuple[str, float, str]] = [
        (CONSISTENT, 0.0, level)
        for level in _balanced_levels(consistent_per_source, plan_rng, order=("large", "static", "small"))
    ]
    for perturbation in perturbations:
        levels = _balanced_levels(len(severities), plan_rng)
        plan.extend((perturbation, float(severity), level) for severity, level in zip(severities, levels))

    videos = []
    with single_threaded():
        for index, (perturbation, severity, level) in enumerate(plan):
            rng = np.random.default_rng([seed, stable_hash(source_id), index])
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


def check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities) -> None:
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


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (StressVideo,):
    _cls.__module__ = "icreward.data.stress_suite"
