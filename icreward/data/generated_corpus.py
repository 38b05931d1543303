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
from datasets import DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from .generated_clips import (
    DEFAULT_MEDIA_PACKAGES,
    RESERVED_PACKAGES,
    GeneratedClip,
    ReservedPackageError,
    find_generated_clips,
    unusable_reason,
)
from .generated_variants import (  # noqa: F401  (re-exported: the old import paths keep working)
    DONOR_KINDS,
    GENERATED_PERTURBATIONS,
    MAX_SCORE_DROP,
    MOTION_SIZE,
    corpus_score,
    frames_to_tensor,
    measure_motion,
    perturb_frames,
    severity_ramp,
    still_reference,
)
from .stress_render import single_threaded, stable_hash
from .stress_suite import (
    CONSISTENT,
    MOTION_THRESHOLDS,
    default_sample_dir,
    install_build,
    motion_level_for,
    read_build_info,
    splits_from_rows,
)

logger = logging.getLogger(__name__)

__all__ = [
    "clip_of_source_id",
    "source_id_of",
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

_SPLITS = ("train", "validation", "test")
_FILTER_FRAMES, _FILTER_SIZE = 16, 64

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


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


def _split_groups(groups: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, str]:
    """Group -> split, deterministic for a seed: shuffled groups, validation and test take their fraction."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {list(fractions)}.")
    ordered = sorted(set(groups))
    order = [
        ordered[i] for i in np.random.default_rng([seed, stable_hash("generated-splits")]).permutation(len(ordered))
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


def _checked_build_args(
    perturbations, severities, num_frames, image_size, frozen_inconsistent_per_clip, max_clips, fps
) -> tuple[list[str], list[float]]:
    """Validate :func:`build_generated_corpus`'s arguments; the perturbations and severities as lists."""
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
    return perturbations, severities


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
    perturbations, severities = _checked_build_args(
        perturbations, severities, num_frames, image_size, frozen_inconsistent_per_clip, max_clips, fps
    )
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
    info = read_build_info(output_dir)
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
        install_build(staging, output_dir, args, matches=_matches)
        logger.info("Built %d corpus videos in %s (%.1f s).", num_videos, output_dir, time.perf_counter() - start)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_generated_corpus(output_dir)


def _write_corpus(root: Path, args: dict) -> int:
    from ..metrics.motion import LucasKanadeFlow

    selection = select_clips(args["packages"], max_clips=args["max_clips"], seed=args["seed"])
    clips = selection.kept
    if len(clips) < 3:
        raise ValueError(
            f"Only {len(clips)} usable clips in {args['packages']} (missing packages: {selection.missing_packages}); "
            'the comfyui-workflow-templates-media-* wheels come with the `data` extra: pip install "icreward[data]".'
        )
    groups = {clip.path: clip_group(clip.name) for clip in clips}
    assignment = _split_groups(list(groups.values()), args["seed"], args["split_fractions"])
    flow = LucasKanadeFlow().eval()
    frames_of, short_of = _clip_frames(clips, args["image_size"], args["num_frames"])  # donors need every clip's
    source_ids = {c.path: source_id_of(c.package, c.name) for c in clips}
    (root / "references").mkdir()
    rows: list[dict] = []
    with single_threaded():
        for clip in clips:
            split, group = assignment[groups[clip.path]], groups[clip.path]
            donors = sorted(c.path for c in clips if assignment[groups[c.path]] == split and groups[c.path] != group)
            sources = {path: (frames_of[path], source_ids[path]) for path in donors}
            rows += _clip_videos(
                root,
                args,
                clip,
                split,
                group,
                source_ids[clip.path],
                frames_of[clip.path],
                short_of[clip.path],
                sources,
                flow,
            )
    with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    info = _build_info(args, selection, clips, rows)
    (root / "README.md").write_text(_dataset_card(args, info, rows), encoding="utf-8")
    with open(root / "build_info.json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return len(rows)


def _clip_frames(clips: Sequence[GeneratedClip], size: int, num_frames: int):
    """Every clip's ``real`` frames (spread over the whole clip) and ``short`` ones (its first third), ``path ->
    (T, 3, S, S)`` float tensors."""
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
        frames_of[clip.path], short_of[clip.path] = frames_to_tensor(sets["real"]), frames_to_tensor(sets["short"])
    return frames_of, short_of


def _video_plan(args: dict, rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """``(perturbation, camera, severity)`` of a clip's videos: the consistent ones, every inconsistent kind at
    every severity on the real clip, then the frozen inconsistent ones (kinds and severities cycled)."""
    perturbations, severities = args["perturbations"], args["severities"]
    plan: list[tuple[str, str, float]] = [(CONSISTENT, camera, 0.0) for camera in ("real", "real_short", "frozen")]
    plan += [(kind, "real", s) for kind in perturbations for s in severities]
    offset = int(rng.integers(len(perturbations)))
    for k in range(args["frozen_inconsistent_per_clip"]):
        kind = perturbations[(offset + k) % len(perturbations)]
        plan.append((kind, "frozen", severities[(offset + k) % len(severities)]))
    return plan


def _clip_videos(root, args, clip, split, group, source_id, real, short, donors, flow) -> list[dict]:
    """Write one clip's reference and videos under ``root``; their metadata rows. ``donors``: ``path -> (frames,
    source_id)`` of the clips of other groups in the same split."""
    from ..video import to_uint8, write_video

    num_frames = args["num_frames"]
    rng = np.random.default_rng([args["seed"], stable_hash(source_id)])
    reference = to_uint8(real[0])
    reference_path = Path("references") / f"{source_id}.png"
    PILImage.fromarray(reference.permute(1, 2, 0).numpy()).save(root / reference_path)
    (root / "videos" / source_id).mkdir(parents=True)
    frozen_base = still_reference(reference.float() / 255.0, num_frames, rng)
    base = {"real": real, "real_short": short, "frozen": frozen_base}
    motion = {camera: measure_motion(frames, flow) for camera, frames in base.items()}
    rows = []
    for index, (kind, camera, severity) in enumerate(_video_plan(args, rng)):
        video_rng = np.random.default_rng([args["seed"], stable_hash(source_id), index])
        frames, onset, donor_id = base[camera], 0, ""
        if kind != CONSISTENT:
            onset = int(video_rng.integers(1, num_frames // 3 + 2))
            donor = None
            if kind in DONOR_KINDS and donors:
                donor, donor_id = donors[sorted(donors)[int(video_rng.integers(len(donors)))]]
            elif kind in DONOR_KINDS:
                # A split with a single clip group: the clip itself, rotated by 180 degrees and reversed.
                donor, donor_id = torch.flip(real, dims=(0, 2, 3)), "self_rot180_reversed"
            if donor is not None and camera == "frozen":
                donor = donor[:1].expand_as(frames)  # a still donor for a still video
            frames = perturb_frames(frames, kind, severity, onset, donor=donor, rng=video_rng)
        video_id = f"{source_id}-{index:02d}"
        video_path = Path("videos") / source_id / f"{video_id}.mp4"
        write_video(root / video_path, to_uint8(frames), fps=args["fps"])
        level = motion_level_for(motion[camera])
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
                "motion_decoupled": level == "large" if kind == CONSISTENT else level == "static",
                "donor": donor_id,
                "task": clip.task,
                "package": clip.package,
                "file": Path(clip.path).name,
                "license": CLIP_LICENSE,
                "split": split,
            }
        )
    return rows


def _build_info(args: dict, selection: ClipSelection, clips: Sequence[GeneratedClip], rows: list[dict]) -> dict:
    return {
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
    info = read_build_info(root)
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
    return splits_from_rows(root, rows, GENERATED_CORPUS_FEATURES)


_PACKAGE_PREFIX = "comfyui_workflow_templates_"


def source_id_of(package: str, name: str) -> str:
    """A row's ``source_id`` / ``donor`` for clip ``name`` of wheel ``package`` (``media_api__<name>``)."""
    return f"{package.removeprefix(_PACKAGE_PREFIX)}__{name}"


def clip_of_source_id(source_id: str) -> tuple[str, str]:
    """The ``(package, name)`` a ``source_id`` was made from (the inverse of :func:`source_id_of`)."""
    short, separator, name = source_id.partition("__")
    if not separator or not name:
        raise ValueError(f"not a corpus source_id (expected '<package>__<clip name>'): {source_id!r}")
    return _PACKAGE_PREFIX + short, name


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
