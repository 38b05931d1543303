"""A consistency corpus made from real generated videos: the clips of ComfyUI's media wheels (MIT licence).

The photograph stress suite (:mod:`icreward.data.stress_suite`) animates still photographs with synthetic camera
moves. This corpus starts from *real* outputs of image/text-to-video models (Wan, LTX, HunyuanVideo, Kling, Vidu,
Veo, Seedance, ... found by :func:`icreward.data.generated_clips.find_generated_clips`), so its consistent videos
move the way generated videos move, and derives inconsistent variants that **keep each clip's real motion**.

For every usable clip (see :func:`select_clips` for what is dropped and why):

* the **reference** is the clip's first frame;
* **consistent videos** (``perturbation="none"``, ``score=1``): ``real`` (``num_frames`` frames spread over the
  whole clip), ``real_short`` (the same number of frames over the first third: the same motion, slower) and
  ``frozen`` (the reference held still with sub-pixel hand-held jitter);
* **inconsistent variants of the real clip** (``camera="real"``), one per perturbation kind and severity, each
  starting after the first frames (an onset frame drawn in ``[1, num_frames // 3 + 1]``, as real I2V drift does)
  and growing linearly to ``severity`` on the last frame:

  - ``identity_change``: the subject region (a soft disc at the centre) is replaced by the subject region of
    another clip of the same split, moving with that clip's own motion;
  - ``object_removal``: the subject region is inpainted away from its surroundings (normalised-convolution fill
    of every frame);
  - ``background_drift``: the surroundings turn into another clip (with its motion) while the subject stays;
  - ``color_drift``: hue rotation, saturation and contrast drift (a style drift);
  - ``temporal_flicker``: per-frame brightness and colour jitter;
  - ``blur_noise``: blur, noise and block artefacts (degradation);
  - ``unrelated_video``: the whole frame cross-fades into another clip;

* **motion-decoupled rows**: ``frozen`` inconsistent videos (``camera="frozen"``): the reference held still, with
  one of the perturbations above. A consistent real clip that moves a lot against such a nearly static
  inconsistent video is a motion-decoupled pair: pixel or global-feature distance to the reference prefers the
  wrong one. Because ``frozen`` consistent videos exist too, "static" is not a shortcut to "inconsistent".

**Labels** have the photograph suite's VBench-style semantics: ``score = 1 - severity * MAX_SCORE_DROP[kind]``
(1 for consistent videos), with :data:`MAX_SCORE_DROP` extending the suite's drops by ``unrelated_video`` (0.95).
``motion`` is measured on the frames a video was made from (perturbations excluded): the path length, in frame
widths, of the mean per-pixel optical flow between consecutive frames (:class:`icreward.metrics.LucasKanadeFlow`
at 64 px); ``motion_level`` uses the suite's thresholds.

**Splits** are by clip group (the template a clip belongs to: ``..._i2v-1`` and ``..._i2v-2`` share one), so no
clip, and no second output of the same template, straddles train and test; donors come from other clip groups of
the same split (in a split with a single group, the clip itself rotated by 180 degrees and played backwards); a
frozen video's donor is frozen too (its first frame).
Every row names its ``package`` (and the installed version in the dataset card), ``file`` and ``license``.

``comfyui-workflow-templates-media-video`` is reserved for independent evaluation and is never read.

Building writes the stress suite's layout (``build_info.json`` last, ``metadata.jsonl``, ``README.md`` = the dataset
card, ``references/``, ``videos/``), so :func:`icreward.data.stress_suite.load_stress_suite`,
:func:`~icreward.data.stress_suite.stress_suite_pairs` and :func:`~icreward.data.stress_suite.ranking_metrics`
work on it unchanged; :func:`load_generated_corpus` loads it with the extra provenance columns.

Command line: ``icreward stress-suite build --source generated --output_dir DIR [--max_clips N]``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from .generated_clips import (
    DEFAULT_MEDIA_PACKAGES,
    RESERVED_PACKAGES,
    GeneratedClip,
    ReservedPackageError,
    find_generated_clips,
    unusable_reason,
)
from .stress_suite import (
    CONSISTENT,
    MOTION_THRESHOLDS,
    _gaussian_blur,
    _hue_rotation,
    _install,
    _read_build_info,
    _single_threaded,
    _stable_hash,
    _subject_mask,
    _to_uint8,
    default_sample_dir,
    motion_level_for,
)
from .stress_suite import MAX_SCORE_DROP as _PHOTO_DROPS

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_LICENSE",
    "CORPUS_KIND",
    "DEFAULT_CORPUS_CONFIG",
    "GENERATED_CORPUS_FEATURES",
    "GENERATED_PERTURBATIONS",
    "GENERATOR_VERSION",
    "MAX_SCORE_DROP",
    "ClipSelection",
    "build_generated_corpus",
    "corpus_score",
    "default_corpus_dir",
    "load_generated_corpus",
    "load_generated_sample",
    "select_clips",
]

#: Bump whenever frames or labels change for the same arguments: it invalidates cached builds.
GENERATOR_VERSION = 1

#: ``build_info.json["kind"]`` of a generated-clip corpus (the photograph suite has no ``kind``).
CORPUS_KIND = "generated_clips"

#: Licence of the ComfyUI workflow-template media wheels.
CLIP_LICENSE = "MIT"

#: Inconsistent variant kinds, in the order they are generated.
GENERATED_PERTURBATIONS: tuple[str, ...] = (
    "identity_change",
    "object_removal",
    "background_drift",
    "color_drift",
    "temporal_flicker",
    "blur_noise",
    "unrelated_video",
)

#: Score lost at severity 1: the photograph suite's drops, plus ``unrelated_video``.
MAX_SCORE_DROP: dict[str, float] = {
    **{kind: _PHOTO_DROPS[kind] for kind in GENERATED_PERTURBATIONS if kind in _PHOTO_DROPS},
    "unrelated_video": 0.95,
}

_DONOR_KINDS = ("identity_change", "background_drift", "unrelated_video")
_SPLITS = ("train", "validation", "test")
_FILTER_FRAMES, _FILTER_SIZE = 16, 64
_MOTION_SIZE = 64

#: Arguments of the default corpus (see :func:`load_generated_sample`): what ``make demo`` trains on.
DEFAULT_CORPUS_CONFIG: dict = {
    "seed": 0,
    "num_frames": 8,
    "image_size": 128,
    "fps": 8.0,
    "severities": (0.5, 1.0),
    "frozen_inconsistent_per_clip": 2,
    "max_clips": 48,
}

GENERATED_CORPUS_FEATURES = Features(
    {
        "video_id": Value("string"),
        "source_id": Value("string"),
        "clip_group": Value("string"),
        "reference": Image(),
        "video": Value("string"),
        "score": Value("float32"),
        "perturbation": Value("string"),
        "severity": Value("float32"),
        "onset": Value("int32"),
        "motion": Value("float32"),
        "motion_level": Value("string"),
        "camera": Value("string"),
        "motion_decoupled": Value("bool"),
        "donor": Value("string"),
        "task": Value("string"),
        "package": Value("string"),
        "file": Value("string"),
        "license": Value("string"),
        "split": Value("string"),
    }
)


def corpus_score(perturbation: str, severity: float) -> float:
    """``1 - severity * MAX_SCORE_DROP[perturbation]``, and 1 for consistent videos (severity 0)."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}.")
    if perturbation == CONSISTENT:
        if severity != 0.0:
            raise ValueError(f"Consistent videos have severity 0, got {severity}.")
        return 1.0
    if perturbation not in MAX_SCORE_DROP:
        raise ValueError(
            f"Unknown perturbation {perturbation!r}; expected {CONSISTENT!r} or one of {GENERATED_PERTURBATIONS}."
        )
    return 1.0 - severity * MAX_SCORE_DROP[perturbation]


# --------------------------------------------------------------------------------------------------------------
# Selecting clips
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ClipSelection:
    """Clips kept for the corpus and, for every other clip found, why it was dropped."""

    kept: list[GeneratedClip] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # "<package>/<file>" -> reason
    missing_packages: list[str] = field(default_factory=list)
    not_examined: int = 0  # clips never looked at because ``max_clips`` were already kept

    def dropped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reason in self.dropped.values():
            counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))


def _clip_key(clip: GeneratedClip) -> str:
    return f"{clip.package}/{Path(clip.path).name}"


def clip_group(name: str) -> str:
    """The template a clip belongs to: its file stem without the trailing output index (``-1``, ``-2``)."""
    return re.sub(r"-\d+$", "", name)


def _read_frames(path: str, indices: Sequence[int], size: int) -> np.ndarray:
    """Frames ``indices`` of an animated image: centre square, resized to ``size``, on white where transparent;
    ``(T, size, size, 3)`` float32 in [0, 1]."""
    return _read_frame_sets(path, {"frames": (indices, size)})["frames"]


def _read_frame_sets(path: str, sets: dict[str, tuple[Sequence[int], int]]) -> dict[str, np.ndarray]:
    """Several ``name -> (indices, size)`` frame sets of one animated image in a single decoding pass."""
    wanted: dict[int, list[tuple[str, int, int]]] = {}
    for name, (indices, size) in sets.items():
        for slot, index in enumerate(indices):
            wanted.setdefault(int(index), []).append((name, slot, size))
    out = {name: [None] * len(indices) for name, (indices, _) in sets.items()}
    with PILImage.open(path) as image:
        for index in sorted(wanted):
            image.seek(index)
            frame = image.convert("RGBA")
            if frame.getextrema()[3][0] < 255:  # transparent pixels: composite on white
                background = PILImage.new("RGBA", frame.size, (255, 255, 255, 255))
                frame = PILImage.alpha_composite(background, frame)
            frame = frame.convert("RGB")
            width, height = frame.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            square = frame.crop((left, top, left + side, top + side))
            for name, slot, size in wanted[index]:
                resized = square if side == size else square.resize((size, size), PILImage.Resampling.BILINEAR)
                out[name][slot] = np.asarray(resized, dtype=np.float32) / 255.0
    return {name: np.stack(frames) for name, frames in out.items()}


def _spread(total: int, count: int, span: float = 1.0) -> list[int]:
    last = max(count - 1, int(round((total - 1) * span)))
    last = min(last, total - 1)
    return [int(round(i)) for i in np.linspace(0, last, count)]


def select_clips(
    packages: Sequence[str] = DEFAULT_MEDIA_PACKAGES,
    *,
    min_frames: int = 16,
    duplicate_threshold: float = 0.02,
    max_clips: int | None = None,
    seed: int = 0,
) -> ClipSelection:
    """Find the clips and drop the unusable ones, saying why.

    Reasons: the filters of :func:`~icreward.data.generated_clips.unusable_reason` (``scene_cut``,
    ``near_static``, ``text_or_ui``, ``side_by_side``, on 16 frames at 64 px), ``duplicate`` (the same clip
    already kept, e.g. shipped in two wheels or as a template's second output: mean absolute difference of 16 x 16
    thumbnails of the first, middle and last frames below ``duplicate_threshold``), and ``unreadable``. Clips with
    fewer than ``min_frames`` frames are not clips (stills, short animations) and are not listed.

    With ``max_clips``, clips are examined in a seeded order (a stable hash of ``seed`` and the file) until
    ``max_clips`` are kept; ``not_examined`` counts the rest. Kept clips are returned sorted by path.
    """
    if any(p.strip().replace("-", "_").lower() in RESERVED_PACKAGES for p in packages):
        raise ReservedPackageError(f"{sorted(RESERVED_PACKAGES)} is reserved for independent evaluation")
    search = find_generated_clips(packages, min_frames=min_frames)
    selection = ClipSelection(missing_packages=list(search.missing_packages))
    for path in search.unreadable:
        selection.dropped[path] = "unreadable"
    thumbnails: list[np.ndarray] = []
    order = search.clips
    if max_clips is not None:
        order = sorted(order, key=lambda c: zlib.crc32(f"{seed}:{_clip_key(c)}".encode()))
    for position, clip in enumerate(order):
        if max_clips is not None and len(selection.kept) >= max_clips:
            selection.not_examined = len(order) - position
            break
        try:
            frames = _read_frames(clip.path, _spread(clip.num_frames, _FILTER_FRAMES), _FILTER_SIZE)
        except (OSError, ValueError, EOFError):
            selection.dropped[_clip_key(clip)] = "unreadable"
            continue
        reason = unusable_reason(frames)
        if reason is None:
            thumb = torch.from_numpy(frames[[0, len(frames) // 2, -1]]).permute(0, 3, 1, 2)
            thumb = F.adaptive_avg_pool2d(thumb, 16).numpy()
            if any(np.abs(thumb - other).mean() < duplicate_threshold for other in thumbnails):
                reason = "duplicate"
            else:
                thumbnails.append(thumb)
        if reason is None:
            selection.kept.append(clip)
        else:
            selection.dropped[_clip_key(clip)] = reason
    selection.kept.sort(key=lambda c: c.path)
    return selection


# --------------------------------------------------------------------------------------------------------------
# Rendering variants
# --------------------------------------------------------------------------------------------------------------


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _measure_motion(frames: torch.Tensor, flow) -> float:
    """Path length, in frame widths, of the mean per-pixel optical flow between consecutive frames."""
    small = F.interpolate(frames, size=(_MOTION_SIZE, _MOTION_SIZE), mode="bilinear", antialias=True)
    with torch.no_grad():
        field = flow(small[:-1], small[1:])  # (T - 1, 2, h, w) in pixels
    return float(field.norm(dim=1).mean(dim=(1, 2)).sum() / _MOTION_SIZE)


def _frozen(reference: torch.Tensor, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
    """The reference held still with sub-pixel hand-held jitter (none on the first frame)."""
    shift = torch.zeros(num_frames, 2)
    shift[1:] = torch.from_numpy(rng.uniform(-0.004, 0.004, size=(num_frames - 1, 2))).float()
    theta = torch.zeros(num_frames, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = 2.0 * shift
    grid = F.affine_grid(theta, [num_frames, 3, *reference.shape[-2:]], align_corners=False)
    frames = reference[None].expand(num_frames, -1, -1, -1).contiguous()
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _ramp(num_frames: int, onset: int, severity: float) -> torch.Tensor:
    """Per-frame strength: 0 before ``onset``, growing linearly to ``severity`` on the last frame."""
    t = torch.arange(num_frames, dtype=torch.float32)
    return (((t - onset + 1) / max(num_frames - onset, 1)).clamp(0.0, 1.0) * severity).float()


def perturb_frames(
    frames: torch.Tensor,
    perturbation: str,
    severity: float,
    onset: int,
    *,
    donor: torch.Tensor | None = None,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Apply one inconsistent variant to float ``(T, 3, S, S)`` frames in [0, 1]; frames before ``onset`` are kept.

    ``donor`` (``(T, 3, S, S)``, another clip's frames) is needed by ``identity_change``, ``background_drift`` and
    ``unrelated_video``.
    """
    num_frames, size = frames.shape[0], frames.shape[-1]
    if not 1 <= onset < num_frames:
        raise ValueError(f"onset must be in [1, {num_frames - 1}], got {onset}.")
    corpus_score(perturbation, severity)  # validates the kind and severity
    alpha = _ramp(num_frames, onset, severity)
    a = alpha[:, None, None, None]
    mask = _subject_mask(size, size)[None, None]
    if perturbation in _DONOR_KINDS:
        if donor is None or donor.shape != frames.shape:
            raise ValueError(f"{perturbation} needs donor frames of shape {tuple(frames.shape)}.")
        region = {"identity_change": mask, "background_drift": 1 - mask, "unrelated_video": torch.ones_like(mask)}
        weight = a * region[perturbation]
        return frames * (1 - weight) + donor * weight
    if perturbation == "object_removal":
        known = (mask < 0.01).float()
        sigma = 0.15 * size
        fill = _gaussian_blur(frames * known, sigma) / _gaussian_blur(known, sigma).clamp_min(1e-4)
        return frames * (1 - a * mask) + fill * (a * mask)
    if perturbation == "color_drift":
        hue = math.radians(150.0) * rng.choice([-1.0, 1.0])
        saturation = 0.6 * rng.choice([-1.0, 1.0])
        contrast = 0.3 * rng.choice([-1.0, 1.0])
        out = []
        for t in range(num_frames):
            x = torch.einsum("ij,jhw->ihw", _hue_rotation(float(alpha[t]) * hue), frames[t])
            gray = x.mean(dim=0, keepdim=True)
            x = gray + (1.0 + float(alpha[t]) * saturation) * (x - gray)
            out.append((x - 0.5) * (1.0 + float(alpha[t]) * contrast) + 0.5)
        return torch.stack(out)
    if perturbation == "temporal_flicker":
        brightness = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 1))).float()
        tint = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 3))).float()
        on = (alpha > 0).float()[:, None] * severity
        gain = (1.0 + 0.35 * on * brightness) * (1.0 + 0.12 * on * tint)
        return frames * gain[:, :, None, None]
    # blur_noise: blur, noise and block artefacts growing over time.
    out = []
    for t in range(num_frames):
        strength = float(alpha[t])
        frame = _gaussian_blur(frames[t : t + 1], strength * 0.025 * size)
        if strength > 0.3:
            block = max(2, int(round(strength * 6)))
            coarse = F.avg_pool2d(frame, block, ceil_mode=True)
            frame = 0.5 * frame + 0.5 * F.interpolate(coarse, size=(size, size), mode="nearest")
        noise = torch.from_numpy(rng.standard_normal(frame.shape)).float()
        out.append(frame + strength * 0.1 * noise)
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


def _split_groups(groups: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, str]:
    """Group -> split, deterministic for a seed: shuffled groups, validation and test take their fraction."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {list(fractions)}.")
    ordered = sorted(set(groups))
    order = [
        ordered[i] for i in np.random.default_rng([seed, _stable_hash("generated-splits")]).permutation(len(ordered))
    ]
    counts = [0, 0]
    for k, fraction in enumerate(fractions[1:]):
        counts[k] = max(1, round(fraction * len(order))) if fraction > 0 else 0
    if sum(counts) >= len(order):
        raise ValueError(f"Splitting by clip group needs more than {sum(counts)} groups, got {len(order)}.")
    assignment = {}
    for index, group in enumerate(order):
        if index < counts[0]:
            assignment[group] = "validation"
        elif index < counts[0] + counts[1]:
            assignment[group] = "test"
        else:
            assignment[group] = "train"
    return assignment


def _package_version(package: str) -> str:
    try:
        return importlib_metadata.version(package.replace("_", "-"))
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _build_args(**kwargs) -> dict:
    return json.loads(json.dumps(kwargs))


def _matches(info: dict | None, args: dict) -> bool:
    return (
        info is not None
        and info.get("kind") == CORPUS_KIND
        and info.get("generator_version") == GENERATOR_VERSION
        and info.get("args") == args
    )


def build_generated_corpus(
    output_dir: str | Path,
    *,
    seed: int = 0,
    num_frames: int = 8,
    image_size: int = 128,
    fps: float = 8.0,
    severities: Sequence[float] = (0.5, 1.0),
    perturbations: Sequence[str] | None = None,
    frozen_inconsistent_per_clip: int = 2,
    max_clips: int | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    packages: Sequence[str] = DEFAULT_MEDIA_PACKAGES,
    overwrite: bool = False,
) -> DatasetDict:
    """Build the generated-clip consistency corpus in ``output_dir`` (reused if already built with the same
    arguments) and return it as a :class:`datasets.DatasetDict` (see the module docstring).

    Args:
        num_frames: Frames per video (>= 4).
        image_size: Side of the square references and videos (even).
        severities: Severities of every inconsistent kind on the real clip, distinct values in (0, 1].
        perturbations: Subset of :data:`GENERATED_PERTURBATIONS` (default: all).
        frozen_inconsistent_per_clip: Nearly static inconsistent videos per clip (kinds cycle through
            ``perturbations``, severities through ``severities``).
        max_clips: Use at most this many usable clips (examined in a seeded order, see :func:`select_clips`),
            e.g. for the demo.
        packages: Media wheels to read; the reserved ``-media-video`` wheel is refused.
        overwrite: Replace a non-corpus directory at ``output_dir``.
    """
    perturbations = list(GENERATED_PERTURBATIONS if perturbations is None else perturbations)
    unknown = [p for p in perturbations if p not in MAX_SCORE_DROP]
    if unknown or not perturbations or len(set(perturbations)) != len(perturbations):
        raise ValueError(f"perturbations must be distinct values of {GENERATED_PERTURBATIONS}, got {perturbations}.")
    severities = [float(s) for s in severities]
    if not severities or any(not 0.0 < s <= 1.0 for s in severities) or len(set(severities)) != len(severities):
        raise ValueError(f"severities must be distinct values in (0, 1], got {severities}.")
    if num_frames < 4:
        raise ValueError(f"num_frames must be >= 4 (onset after the first frames), got {num_frames}.")
    if image_size < 16 or image_size % 2:
        raise ValueError(f"image_size must be an even number >= 16, got {image_size}.")
    if frozen_inconsistent_per_clip < 0:
        raise ValueError(f"frozen_inconsistent_per_clip must be >= 0, got {frozen_inconsistent_per_clip}.")
    if max_clips is not None and max_clips < 3:
        raise ValueError(f"max_clips must be >= 3 (train, validation, test), got {max_clips}.")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    args = _build_args(
        seed=seed,
        num_frames=num_frames,
        image_size=image_size,
        fps=float(fps),
        severities=severities,
        perturbations=perturbations,
        frozen_inconsistent_per_clip=frozen_inconsistent_per_clip,
        max_clips=max_clips,
        split_fractions=[float(f) for f in split_fractions],
        packages=list(packages),
        # other wheel versions ship other clips: a cached build is reused only for the same versions
        package_versions={p: _package_version(p) for p in packages},
    )
    output_dir = Path(output_dir).expanduser().absolute()
    info = _read_build_info(output_dir)
    if _matches(info, args):
        logger.info("Reusing the generated-clip corpus in %s.", output_dir)
        return load_generated_corpus(output_dir)
    if output_dir.exists() and info is None and not overwrite:
        if not output_dir.is_dir() or any(output_dir.iterdir()):
            raise FileExistsError(
                f"{output_dir} exists and is not a complete corpus build (no build_info.json); "
                "pass overwrite=True (--overwrite) to replace it."
            )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        start = time.perf_counter()
        num_videos = _write_corpus(staging, args)
        _install(staging, output_dir, args, matches=_matches)
        logger.info("Built %d corpus videos in %s (%.1f s).", num_videos, output_dir, time.perf_counter() - start)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_generated_corpus(output_dir)


def _write_corpus(root: Path, args: dict) -> int:
    from ..metrics.motion import LucasKanadeFlow
    from ..video import write_video

    selection = select_clips(args["packages"], max_clips=args["max_clips"], seed=args["seed"])
    clips = selection.kept
    if len(clips) < 3:
        raise ValueError(
            f"Only {len(clips)} usable clips in {args['packages']} (missing packages: {selection.missing_packages}); "
            "install the comfyui-workflow-templates-media-* wheels (icreward depends on them)."
        )
    groups = {clip.path: clip_group(clip.name) for clip in clips}
    assignment = _split_groups(list(groups.values()), args["seed"], args["split_fractions"])
    size, num_frames, severities = args["image_size"], args["num_frames"], args["severities"]
    perturbations = args["perturbations"]
    flow = LucasKanadeFlow().eval()

    # Frames of every clip first: donors need them.
    frames_of: dict[str, torch.Tensor] = {}
    short_of: dict[str, torch.Tensor] = {}
    for clip in clips:
        sets = _read_frame_sets(
            clip.path,
            {
                "real": (_spread(clip.num_frames, num_frames), size),
                "short": (_spread(clip.num_frames, num_frames, 1 / 3), size),
            },
        )
        frames_of[clip.path], short_of[clip.path] = _to_tensor(sets["real"]), _to_tensor(sets["short"])

    source_ids = {c.path: f"{c.package.removeprefix('comfyui_workflow_templates_')}__{c.name}" for c in clips}
    (root / "references").mkdir()
    rows: list[dict] = []
    with _single_threaded():
        for clip in clips:
            split, group = assignment[groups[clip.path]], groups[clip.path]
            source_id = source_ids[clip.path]
            donors = sorted(c.path for c in clips if assignment[groups[c.path]] == split and groups[c.path] != group)
            rng = np.random.default_rng([args["seed"], _stable_hash(source_id)])
            real = frames_of[clip.path]
            reference = _to_uint8(real[0])
            reference_path = Path("references") / f"{source_id}.png"
            PILImage.fromarray(reference.permute(1, 2, 0).numpy()).save(root / reference_path)
            (root / "videos" / source_id).mkdir(parents=True)
            frozen_base = _frozen(reference.float() / 255.0, num_frames, rng)
            motion = {
                "real": _measure_motion(real, flow),
                "real_short": _measure_motion(short_of[clip.path], flow),
                "frozen": _measure_motion(frozen_base, flow),
            }
            base = {"real": real, "real_short": short_of[clip.path], "frozen": frozen_base}
            plan: list[tuple[str, str, float]] = [
                (CONSISTENT, camera, 0.0) for camera in ("real", "real_short", "frozen")
            ]
            plan += [(kind, "real", s) for kind in perturbations for s in severities]
            offset = int(rng.integers(len(perturbations)))
            for k in range(args["frozen_inconsistent_per_clip"]):
                kind = perturbations[(offset + k) % len(perturbations)]
                plan.append((kind, "frozen", severities[(offset + k) % len(severities)]))
            for index, (kind, camera, severity) in enumerate(plan):
                video_rng = np.random.default_rng([args["seed"], _stable_hash(source_id), index])
                frames, onset, donor_id = base[camera], 0, ""
                if kind != CONSISTENT:
                    onset = int(video_rng.integers(1, num_frames // 3 + 2))
                    donor = None
                    if kind in _DONOR_KINDS and donors:
                        donor_path = donors[int(video_rng.integers(len(donors)))]
                        donor, donor_id = frames_of[donor_path], source_ids[donor_path]
                    elif kind in _DONOR_KINDS:
                        # A split with a single clip group: the clip itself, rotated by 180 degrees and reversed.
                        donor, donor_id = torch.flip(real, dims=(0, 2, 3)), "self_rot180_reversed"
                    if donor is not None and camera == "frozen":
                        donor = donor[:1].expand_as(frames)  # a still donor for a still video
                    frames = perturb_frames(frames, kind, severity, onset, donor=donor, rng=video_rng)
                video_id = f"{source_id}-{index:02d}"
                video_path = Path("videos") / source_id / f"{video_id}.mp4"
                write_video(root / video_path, _to_uint8(frames), fps=args["fps"])
                level = motion_level_for(motion[camera])
                decoupled = level == "large" if kind == CONSISTENT else level == "static"
                rows.append(
                    {
                        "video_id": video_id,
                        "source_id": source_id,
                        "clip_group": group,
                        "reference": reference_path.as_posix(),
                        "video": video_path.as_posix(),
                        "score": corpus_score(kind, severity),
                        "perturbation": kind,
                        "severity": severity,
                        "onset": onset,
                        "motion": round(motion[camera], 6),
                        "motion_level": level,
                        "camera": camera,
                        "motion_decoupled": decoupled,
                        "donor": donor_id,
                        "task": clip.task,
                        "package": clip.package,
                        "file": Path(clip.path).name,
                        "license": CLIP_LICENSE,
                        "split": split,
                    }
                )
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    info = {
        "kind": CORPUS_KIND,
        "generator_version": GENERATOR_VERSION,
        "args": args,
        "num_videos": len(rows),
        "num_clips": len(clips),
        "dropped": selection.dropped,
        "dropped_counts": selection.dropped_counts(),
        "not_examined": selection.not_examined,
        "missing_packages": selection.missing_packages,
        "package_versions": {p: _package_version(p) for p in sorted({c.package for c in clips})},
        "motion_thresholds": list(MOTION_THRESHOLDS),
    }
    (root / "README.md").write_text(_dataset_card(args, info, rows), encoding="utf-8")
    with open(root / "build_info.json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return len(rows)


def _dataset_card(args: dict, info: dict, rows: list[dict]) -> str:
    def count(**where) -> int:
        return sum(all(row[k] == v for k, v in where.items()) for row in rows)

    kinds = [CONSISTENT, *args["perturbations"]]
    lines = [
        "---",
        f"license: {CLIP_LICENSE.lower()}",
        "task_categories: [video-classification]",
        "tags: [image-to-video, consistency, reward-model, synthetic-perturbations]",
        "---",
        "",
        "# icreward generated-clip consistency corpus",
        "",
        "Reference image / video pairs with known image-consistency labels, made from real outputs of image- and",
        "text-to-video models shipped in ComfyUI's workflow-template media wheels (MIT licence). The reference is a",
        "clip's first frame; the clip itself is the consistent video; inconsistent variants keep the clip's real",
        "motion and drift after the first frames with a graded severity. Built by",
        f"`icreward.data.generated_corpus.build_generated_corpus` (generator version {GENERATOR_VERSION}); load",
        "with `icreward.data.generated_corpus.load_generated_corpus(path)`.",
        "",
        "Label: `score = 1 - severity * max_drop[perturbation]` (1 for consistent videos); max_drop = "
        + ", ".join(f"{k}: {v}" for k, v in MAX_SCORE_DROP.items())
        + ".",
        "",
        "The wheel `comfyui-workflow-templates-media-video` is reserved for independent evaluation and was not read.",
        "",
        "## Counts",
        "",
        f"- clips used: {info['num_clips']}; clips not examined (max_clips reached): {info['not_examined']}",
        f"- clips dropped, by reason: {json.dumps(info['dropped_counts'])}",
        f"- videos: {len(rows)} (" + ", ".join(f"{split}: {count(split=split)}" for split in _SPLITS) + ")",
        "- videos per perturbation: " + ", ".join(f"{k}: {count(perturbation=k)}" for k in kinds),
        "- videos per camera: " + ", ".join(f"{c}: {count(camera=c)}" for c in ("real", "real_short", "frozen")),
        "- motion-decoupled videos: " + str(sum(row["motion_decoupled"] for row in rows)),
        "",
        "## Build arguments",
        "",
        "```json",
        json.dumps(args, indent=2),
        "```",
        "",
        "## Sources, licences and provenance",
        "",
        "| package | version | licence |",
        "|---|---|---|",
    ]
    for package, version in info["package_versions"].items():
        lines.append(f"| {package.replace('_', '-')} | {version} | {CLIP_LICENSE} |")
    lines += ["", "| clip (source_id) | package | file | split | task |", "|---|---|---|---|---|"]
    seen = set()
    for row in rows:
        if row["source_id"] not in seen:
            seen.add(row["source_id"])
            lines.append(f"| {row['source_id']} | {row['package']} | {row['file']} | {row['split']} | {row['task']} |")
    lines += ["", "## Dropped clips", "", "| clip | reason |", "|---|---|"]
    lines += [f"| {clip} | {reason} |" for clip, reason in sorted(info["dropped"].items())]
    return "\n".join(lines) + "\n"


def load_generated_corpus(path: str | Path) -> DatasetDict:
    """Load a corpus written by :func:`build_generated_corpus` (absolute ``video`` paths, ``reference`` images)."""
    root = Path(path).expanduser().absolute()
    info = _read_build_info(root)
    if info is None or info.get("kind") != CORPUS_KIND:
        raise FileNotFoundError(f"{root} is not a complete generated-clip corpus (no build_info.json of that kind).")
    rows = []
    with open(root / "metadata.jsonl", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                missing = [name for name in GENERATED_CORPUS_FEATURES if name not in row]
                if missing:
                    raise ValueError(f"{root / 'metadata.jsonl'} line {number}: missing field(s) {missing}")
                rows.append(row)
    splits = {}
    for split in _SPLITS:
        selected = [row for row in rows if row["split"] == split]
        columns = {name: [row[name] for row in selected] for name in GENERATED_CORPUS_FEATURES}
        columns["reference"] = [str(root / p) for p in columns["reference"]]
        columns["video"] = [str(root / p) for p in columns["video"]]
        splits[split] = Dataset.from_dict(columns, features=GENERATED_CORPUS_FEATURES, split=split)
    return DatasetDict(splits)


def default_corpus_dir() -> Path:
    """Where :func:`load_generated_sample` caches the default corpus: next to the photograph sample, in
    ``$ICREWARD_CACHE`` (default ``$XDG_CACHE_HOME/icreward`` or ``~/.cache/icreward``)."""
    return default_sample_dir().parent / f"generated_v{GENERATOR_VERSION}"


def load_generated_sample(cache_dir: str | Path | None = None, **overrides) -> DatasetDict:
    """The default generated-clip corpus (:data:`DEFAULT_CORPUS_CONFIG`), built on first use and cached.

    Needs the media wheels (installed with icreward); ``overrides`` change build arguments (e.g. ``max_clips``).
    """
    config = {**DEFAULT_CORPUS_CONFIG, **overrides}
    return build_generated_corpus(default_corpus_dir() if cache_dir is None else cache_dir, **config)
