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

Command line (:mod:`icreward.cli.stress_suite`)::

    icreward stress-suite build --output_dir stress_suite --seed 0 --image_size 96
    icreward stress-suite evaluate --output_dir stress_suite --split test --baseline pixel
    icreward stress-suite sources
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features
from PIL import Image as PILImage

from icreward.cache import icreward_cache_root
from icreward.data.photos import DEFAULT_SOURCES, PHOTO_SOURCES, check_sources
from icreward.data.stress_labels import (
    CONSISTENT,
    DEFAULT_SEVERITIES,
    MAX_SCORE_DROP,
    MOTION_LEVELS,
    MOTION_THRESHOLDS,
    PERTURBATIONS,
    STRESS_SUITE_FEATURES,
    STRESS_SUITE_PAIR_FEATURES,
    motion_level_for,
    perturbation_score,
)
from icreward.data.stress_ranking import (
    evaluate_ranking,
    motion_decoupled_pairs,
    pixel_similarity_score,
    ranking_metrics,
    stress_suite_pairs,
)
from icreward.data.stress_render import (
    CAMERA_MOTIONS,
    CANVAS_FACTOR,
    StressVideo,
    check_generation_args,
    generate_source_videos,
    generate_stress_video,
    make_canvas,
    stable_hash,
)
from icreward.video import write_video

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

#: Split names, in build order.
SPLITS = _SPLITS = ("train", "validation", "test")


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
    check_sources(sources)
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
    order = [sorted(groups)[i] for i in np.random.default_rng([seed, stable_hash("splits")]).permutation(len(groups))]
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
    check_sources([source for members in resolved.values() for source in members])
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


def read_build_info(path: Path) -> dict | None:
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
    check_sources(sources)
    check_generation_args(num_frames, image_size, consistent_per_source, perturbations, severities)
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
    info = read_build_info(output_dir)
    if _matches(info, args):
        logger.info("Reusing the stress-test suite in %s.", output_dir)
        return load_stress_suite(output_dir)
    _check_replaceable(output_dir, info, overwrite)
    _build_into(output_dir, args, splits)
    return load_stress_suite(output_dir)


def _check_replaceable(output_dir: Path, info: dict | None, overwrite: bool) -> None:
    """Refuse to replace a non-empty ``output_dir`` that is not a stress-suite build, unless ``overwrite``."""
    if output_dir.exists() and info is None and not overwrite:
        if not output_dir.is_dir() or any(output_dir.iterdir()):
            raise FileExistsError(
                f"{output_dir} exists and is not a complete stress-suite build (no build_info.json); "
                "pass overwrite=True (--overwrite) to replace it."
            )


def _build_into(output_dir: Path, args: dict, splits: Mapping[str, list[str]]) -> None:
    """Render into a temporary sibling of ``output_dir`` and move it into place once complete."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        start = time.perf_counter()
        num_videos = _write_suite(staging, args, splits)
        install_build(staging, output_dir, args)
        logger.info("Built %d stress-test videos in %s (%.1f s).", num_videos, output_dir, time.perf_counter() - start)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def install_build(
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
        if not (matches or _matches)(read_build_info(output_dir), args):
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
    info = read_build_info(root)
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
    return splits_from_rows(root, rows, STRESS_SUITE_FEATURES)


def splits_from_rows(root: Path, rows: list[dict], features: Features) -> DatasetDict:
    """The train/validation/test datasets of ``metadata.jsonl`` rows, ``reference``/``video`` made absolute under
    ``root`` (the layout of a stress-suite build, shared by the generated-clip corpus)."""
    splits = {}
    for split in _SPLITS:
        selected = [row for row in rows if row["split"] == split]
        columns = {name: [row[name] for row in selected] for name in features}
        columns["reference"] = [str(root / p) for p in columns["reference"]]
        columns["video"] = [str(root / p) for p in columns["video"]]
        splits[split] = Dataset.from_dict(columns, features=features, split=split)
    return DatasetDict(splits)


def default_sample_dir() -> Path:
    """Where :func:`load_sample_dataset` caches the bundled sample: ``$ICREWARD_CACHE/sample_v1``.

    ``ICREWARD_CACHE`` defaults to ``$XDG_CACHE_HOME/icreward``, or ``~/.cache/icreward``.
    """
    return icreward_cache_root() / f"sample_v{GENERATOR_VERSION}"


def load_sample_dataset(cache_dir: PathLike | None = None) -> DatasetDict:
    """The bundled offline sample: the default stress-test suite, built on first use (well under a minute).

    13 colour sources x 36 videos (8 consistent, 7 perturbations x 4 severities) of 8 frames at 96 x 96: 468 videos,
    about 6 MB; split by photograph into 9 / 2 / 2 sources (324 / 72 / 72 videos, see :data:`SAMPLE_CONFIG`). Built under :func:`default_sample_dir` unless ``cache_dir`` is given, and reused afterwards.
    """
    return build_stress_suite(default_sample_dir() if cache_dir is None else cache_dir, **SAMPLE_CONFIG)
