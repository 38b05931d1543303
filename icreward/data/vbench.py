"""Build reward-model training data from VBench++ image-to-video evaluation files.

VBench++ (``vbench2_beta_i2v``) scores generated videos against their conditioning image with two metrics that
the ICReward paper uses as labels: ``i2v_subject`` (DINO features) and ``i2v_background`` (DreamSim features).
:func:`load_vbench_i2v` reads VBench's own files, exactly as VBench writes them, and turns them into a
:class:`datasets.DatasetDict`:

* the prompt suite ``vbench2_i2v_full_info.json``: a list of ``{"prompt_en", "dimension", "image_type",
  "image_name"}`` entries;
* the cropped reference images ``vbench2_beta_i2v/data/crop/<ratio>/<image_name>``;
* one flat folder of generated videos per model, named ``f"{prompt_en}-{i}{ext}"`` (``i`` = 0..4);
* VBench's ``<name>_eval_results.json`` files, ``{dimension: [mean, [{"image_path", "video_path",
  "video_results"}, ...]]}``.

Every row of the result is one (reference image, generated video) pair with its consistency labels::

    reference      datasets.Image()   the cropped VBench image (stored by path until exported)
    video          string             absolute path of the video file (decode it with icreward.video.read_video)
    score          float32            weighted mean of the available dimension scores, in [0, 1]
    i2v_subject    float32 or None    VBench's score for the dimension (None when VBench did not score it)
    i2v_background float32 or None
    prompt         string             VBench's ``prompt_en``
    image_type     string             VBench's image category ("abstract", "architecture", ...)
    source_model   string             which generator made the video
    image_name     string             VBench's ``image_name``; the split key
    video_index    int32              the ``i`` of ``f"{prompt_en}-{i}"``
    rebalanced     bool               True for the extra low-score examples added by ``rebalance_low_scores``

Options of :func:`load_vbench_i2v` in full::

    info_json: VBench's ``vbench2_i2v_full_info.json``. Entries whose ``dimension`` list shares nothing with
        ``dimensions`` (``camera_motion`` prompts, ...) are ignored.
    image_root: folder of the reference images. With ``resolution=None`` the images are directly inside it
        (``.../data/crop/1-1``); with ``resolution="1-1"`` it is VBench's data folder and the images are read
        from ``image_root/crop/1-1`` (or ``image_root/1-1``).
    videos_dir: the flat folder of generated videos, ``f"{prompt_en}-{i}{ext}"``; or a list of such folders,
        one per generator.
    eval_results: the ``<name>_eval_results.json`` file(s) of the videos: one path, or a list of paths whose
        dimensions are merged (VBench writes one file per run). With several ``videos_dir``, a list with one
        item (a path or a list of paths) per folder.
    source_model: the generator's name, or one name per folder. Defaults to each folder's name.
    resolution: VBench crop ratio of the images (``"1-1"``, ``"8-5"``, ``"7-4"``, ``"16-9"``), see
        ``image_root``.
    dimensions: which VBench dimensions to read; each one gets a column.
    dimension_weights: how the dimensions combine into ``score``: the weighted mean of the dimensions VBench
        scored *for that video*, ``sum_d w_d s_d / sum_d w_d`` over the scored ``d``. In VBench++ each prompt
        is scored in exactly one of ``i2v_subject``/``i2v_background``, so ``score`` is that dimension's
        score unless a video has both. Defaults to equal weights; a mapping must give every dimension.
    videos_per_image: samples per prompt (VBench: 5); results naming ``-{i}`` with ``i >= videos_per_image``
        are unmatched entries.
    candidates_per_sample: how many of a prompt's videos to keep per model (the ICReward paper keeps 2 of
        5); ``None`` keeps all.
    candidate_selection: how candidates are chosen: ``"random"`` (uniformly, seeded by ``seed``) or
        ``"extremes"`` (the best and the worst by ``score``, then the second best, second worst, ...), which
        maximises the score gap of the preference pairs built from them.
    rebalance_low_scores: add up to this many extra *train* rows with ``score < low_score_threshold``, taken
        (seeded) from the videos of train images that candidate selection left out. The ICReward paper adds
        ~30 examples below 0.4 to even out the label distribution. Validation and test keep the plain
        sampling protocol. Rows added this way have ``rebalanced=True``; a shortfall is logged and reported.
    low_score_threshold: the threshold for ``rebalance_low_scores``.
    split: fractions of *reference images* (not rows) per split: 3 values give train/validation/test, 2 give
        train/test, a mapping names the splits; ``None`` puts everything in ``train``. Images are shuffled
        with ``seed`` and every video of an image, from every model, lands in that image's split, so no
        reference image is in two splits.
    seed: seed for the split, the random candidate selection and the rebalancing.
    on_missing: ``"error"`` raises :class:`VBenchFormatError` on the first problem (a missing video or image,
        a score outside [0, 1], a results entry that matches no video, a malformed entry), naming the file
        and field. ``"skip"`` skips the affected videos, logs a warning with the counts and records them in
        ``report.skipped``. Problems with the files themselves (unreadable JSON, wrong top-level layout, a
        requested dimension absent from every results file) always raise.

Videos are stored as paths, not :class:`datasets.Video`, because that feature decodes through torchcodec, which
needs a system FFmpeg; :mod:`icreward.video` decodes with PyAV instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

from icreward.data.vbench_files import (
    Problems,
    VBenchFormatError,
    VBenchVideo,
    read_info_json,
    read_source,
    resolve_image_dir,
    resolve_sources,
)
from icreward.data.vbench_hub import (
    ICREWARD_CITATION,  # noqa: F401  (re-exported: the citations were defined here)
    VBENCH_PLUS_PLUS_CITATION,  # noqa: F401
    build_vbench_dataset_card,
    export_vbench_dataset,
    load_vbench_i2v_from_hub,
    push_vbench_dataset_to_hub,
)

logger = logging.getLogger(__name__)

__all__ = [
    "I2V_DIMENSIONS",
    "VBENCH_I2V_FEATURES",
    "VBenchDatasetDict",
    "VBenchFormatError",
    "VBenchLoadReport",
    "build_vbench_dataset_card",
    "export_vbench_dataset",
    "load_vbench_i2v",
    "load_vbench_i2v_from_hub",
    "push_vbench_dataset_to_hub",
    "vbench_i2v_features",
]

#: The two VBench++ dimensions that compare a video with its conditioning image.
I2V_DIMENSIONS: tuple[str, ...] = ("i2v_subject", "i2v_background")

PathLike = str | os.PathLike

_SPLIT_NAMES = {2: ("train", "test"), 3: ("train", "validation", "test")}


def vbench_i2v_features(dimensions: Sequence[str] = I2V_DIMENSIONS) -> Features:
    """The :class:`datasets.Features` of a dataset built by :func:`load_vbench_i2v` with these dimensions."""
    columns: dict[str, Any] = {"reference": Image(), "video": Value("string"), "score": Value("float32")}
    columns.update({dim: Value("float32") for dim in dimensions})
    columns.update(
        prompt=Value("string"),
        image_type=Value("string"),
        source_model=Value("string"),
        image_name=Value("string"),
        video_index=Value("int32"),
        rebalanced=Value("bool"),
    )
    return Features(columns)


VBENCH_I2V_FEATURES = vbench_i2v_features()


@dataclass
class VBenchLoadReport:
    """What :func:`load_vbench_i2v` read, selected and skipped.

    Attributes:
        skipped: number of skipped items per problem kind. Kinds: ``"malformed_entry"`` (an info/results entry
            lacks a field or has the wrong type), ``"score_out_of_range"`` (``video_results`` is not a finite
            number in [0, 1]), ``"unmatched_entry"`` (a results entry whose file name is not
            ``f"{prompt_en}-{i}{ext}"`` for a prompt of the info JSON), ``"image_mismatch"`` (a results entry's
            ``image_path`` names another image than the info JSON), ``"missing_video"`` (a scored video that is
            not in the videos folder), ``"missing_image"`` (a reference image that is not in the image folder; all
            its videos are skipped), ``"unscored_video"`` (a video of an I2V prompt that VBench did not score),
            ``"conflicting_score"`` (two results files give one video different scores) and ``"unweighted"``
            (a video scored only in dimensions whose weight is 0).
        examples: the first messages of each kind, naming files and fields.
        num_scored_videos: videos with at least one usable score, before candidate selection.
        num_selected: rows kept by candidate selection (``candidates_per_sample`` per prompt and model).
        num_rebalanced: extra low-score rows added to the train split.
        rebalance_shortfall: how many of the requested ``rebalance_low_scores`` rows could not be found.
        incomplete_groups: (model, prompt) groups with fewer than ``videos_per_image`` usable videos.
        split_images: number of distinct reference images per split.
        split_rows: number of rows per split.
    """

    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    num_scored_videos: int = 0
    num_selected: int = 0
    num_rebalanced: int = 0
    rebalance_shortfall: int = 0
    incomplete_groups: int = 0
    split_images: dict[str, int] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "skipped": dict(self.skipped),
            "examples": list(self.examples),
            "num_scored_videos": self.num_scored_videos,
            "num_selected": self.num_selected,
            "num_rebalanced": self.num_rebalanced,
            "rebalance_shortfall": self.rebalance_shortfall,
            "incomplete_groups": self.incomplete_groups,
            "split_images": dict(self.split_images),
            "split_rows": dict(self.split_rows),
        }


class VBenchDatasetDict(DatasetDict):
    """A :class:`datasets.DatasetDict` that also carries the :class:`VBenchLoadReport` of how it was built.

    The report lives on this object only: ``DatasetDict`` methods such as ``map`` return plain ``DatasetDict``
    objects without it.
    """

    report: VBenchLoadReport

    def __init__(self, *args: Any, report: VBenchLoadReport | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = report if report is not None else VBenchLoadReport()


def load_vbench_i2v(
    info_json: PathLike,
    image_root: PathLike,
    videos_dir: PathLike | Sequence[PathLike],
    eval_results: PathLike | Sequence[PathLike] | Sequence[PathLike | Sequence[PathLike]],
    *,
    source_model: str | Sequence[str] | None = None,
    resolution: str | None = None,
    dimensions: Sequence[str] = I2V_DIMENSIONS,
    dimension_weights: Mapping[str, float] | None = None,
    videos_per_image: int = 5,
    candidates_per_sample: int | None = 2,
    candidate_selection: Literal["random", "extremes"] = "random",
    rebalance_low_scores: int = 0,
    low_score_threshold: float = 0.4,
    split: Sequence[float] | Mapping[str, float] | None = (0.8, 0.1, 0.1),
    seed: int = 0,
    on_missing: Literal["error", "skip"] = "error",
) -> VBenchDatasetDict:
    """Load VBench++ I2V evaluation results of one or more generators as a ``DatasetDict``.

    The module docstring describes every option in full; in short:

    Args:
        info_json: VBench's ``vbench2_i2v_full_info.json``; entries without one of ``dimensions`` are ignored.
        image_root: folder of the reference images (with ``resolution``: VBench's data folder).
        videos_dir: the flat folder of generated videos ``f"{prompt_en}-{i}{ext}"``, or one folder per generator.
        eval_results: the ``<name>_eval_results.json`` file(s): a path or a list of paths (merged); with several
            ``videos_dir``, one item per folder.
        source_model: the generator's name, or one per folder; defaults to each folder's name.
        resolution: VBench crop ratio of the images (``"1-1"``, ``"8-5"``, ``"7-4"``, ``"16-9"``).
        dimensions: which VBench dimensions to read; each one gets a column.
        dimension_weights: weights of the weighted mean ``score`` over the dimensions scored for a video.
        videos_per_image: samples per prompt (VBench: 5).
        candidates_per_sample: videos kept per prompt and model (the paper: 2 of 5); ``None`` keeps all.
        candidate_selection: ``"random"`` (seeded) or ``"extremes"`` (best, worst, second best, ...).
        rebalance_low_scores: extra *train* rows below ``low_score_threshold`` from the unselected videos.
        low_score_threshold: the threshold for ``rebalance_low_scores``.
        split: fractions of *reference images* per split (3 values, 2 values or a mapping); ``None``: all train.
        seed: seed of the split, the random candidate selection and the rebalancing.
        on_missing: ``"error"`` raises :class:`VBenchFormatError` on the first problem; ``"skip"`` skips, logs and
            counts them in ``report.skipped``. Problems with the files themselves always raise.

    Returns:
        A :class:`VBenchDatasetDict` (a ``DatasetDict``) with features :func:`vbench_i2v_features` and a
        ``report`` attribute (:class:`VBenchLoadReport`).
    """
    dimensions = tuple(dimensions)
    weights, split_fractions = _check_load_args(
        dimensions, dimension_weights, videos_per_image, candidates_per_sample, candidate_selection,
        rebalance_low_scores, split,
    )  # fmt: skip
    problems = Problems(on_missing)
    sources = resolve_sources(videos_dir, eval_results, source_model)
    image_dir = resolve_image_dir(Path(image_root), resolution)
    videos = _read_videos(info_json, image_dir, sources, dimensions, videos_per_image, problems)
    scored = _score_videos(videos, weights, problems)
    report = VBenchLoadReport(num_scored_videos=len(scored))
    # Independent streams, so that e.g. changing candidates_per_sample does not reshuffle the split.
    split_rng, select_rng, rebalance_rng = (np.random.default_rng([seed, stream]) for stream in range(3))
    selected, leftovers = _select_videos(
        scored, videos_per_image, candidates_per_sample, candidate_selection, select_rng, report
    )
    image_split = _split_images(
        sorted({v.prompt.image_name for v in selected + leftovers}), split_fractions, split_rng
    )
    rows_per_split: dict[str, list[tuple[VBenchVideo, bool]]] = {name: [] for name in split_fractions}
    for video in selected:
        rows_per_split[image_split[video.prompt.image_name]].append((video, False))
    if rebalance_low_scores:
        pool = [v for v in leftovers if v.score < low_score_threshold and image_split[v.prompt.image_name] == "train"]
        _rebalance(pool, rows_per_split["train"], rebalance_low_scores, low_score_threshold, rebalance_rng, report)
    splits = _build_splits(rows_per_split, image_dir, dimensions, report)
    _record_problems(report, problems)
    return VBenchDatasetDict(splits, report=report)


def _check_load_args(
    dimensions: tuple[str, ...],
    dimension_weights: Mapping[str, float] | None,
    videos_per_image: int,
    candidates_per_sample: int | None,
    candidate_selection: str,
    rebalance_low_scores: int,
    split: Sequence[float] | Mapping[str, float] | None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Validate :func:`load_vbench_i2v`'s options; return the resolved dimension weights and split fractions."""
    if not dimensions:
        raise ValueError("dimensions must name at least one VBench dimension")
    if len(set(dimensions)) != len(dimensions):
        raise ValueError(f"dimensions has duplicates: {dimensions}")
    weights = _resolve_weights(dimensions, dimension_weights)
    if videos_per_image < 1:
        raise ValueError(f"videos_per_image must be >= 1, got {videos_per_image}")
    if candidates_per_sample is not None and candidates_per_sample < 1:
        raise ValueError(f"candidates_per_sample must be >= 1 or None, got {candidates_per_sample}")
    if candidate_selection not in ("random", "extremes"):
        raise ValueError(f"candidate_selection must be 'random' or 'extremes', got {candidate_selection!r}")
    if rebalance_low_scores < 0:
        raise ValueError(f"rebalance_low_scores must be >= 0, got {rebalance_low_scores}")
    split_fractions = _resolve_split(split)
    if rebalance_low_scores and "train" not in split_fractions:
        raise ValueError(f"rebalance_low_scores adds rows to the 'train' split, but split has {list(split_fractions)}")
    return weights, split_fractions


def _read_videos(
    info_json: PathLike,
    image_dir: Path,
    sources: list[tuple[str, Path, list[Path]]],
    dimensions: tuple[str, ...],
    videos_per_image: int,
    problems: Problems,
) -> list[VBenchVideo]:
    """Every scored video of every generator whose reference image exists."""
    prompts = read_info_json(Path(info_json), dimensions, problems)
    videos: list[VBenchVideo] = []
    for name, folder, result_files in sources:
        videos.extend(read_source(name, folder, result_files, prompts, dimensions, videos_per_image, problems))

    # Reference images are checked once per image; every video of a missing image is skipped.
    missing_images: set[str] = set()
    root = image_dir.resolve()
    for image_name in sorted({v.prompt.image_name for v in videos}):
        target = (image_dir / image_name).resolve()
        if Path(image_name).is_absolute() or not target.is_relative_to(root):
            raise VBenchFormatError(
                f"{info_json}: image_name {image_name!r} points outside the reference image folder {str(image_dir)!r}"
            )
        if not (image_dir / image_name).is_file():
            missing_images.add(image_name)
            count = sum(v.prompt.image_name == image_name for v in videos)
            problems(
                "missing_image", f"reference image {str(image_dir / image_name)!r} does not exist ({count} videos)"
            )
    return [v for v in videos if v.prompt.image_name not in missing_images]


def _score_videos(videos: list[VBenchVideo], weights: dict[str, float], problems: Problems) -> list[VBenchVideo]:
    """Set every video's ``score`` (weighted mean of its dimension scores); skip videos with zero total weight."""
    scored: list[VBenchVideo] = []
    for video in videos:
        total_weight = sum(weights[d] for d in video.scores)
        if total_weight <= 0:
            problems(
                "unweighted",
                f"video {video.path!r} is scored only in {sorted(video.scores)}, whose dimension_weights are 0",
            )
            continue
        video.score = sum(weights[d] * s for d, s in video.scores.items()) / total_weight
        scored.append(video)
    return scored


def _select_videos(
    scored: list[VBenchVideo],
    videos_per_image: int,
    candidates_per_sample: int | None,
    candidate_selection: str,
    rng: np.random.Generator,
    report: VBenchLoadReport,
) -> tuple[list[VBenchVideo], list[VBenchVideo]]:
    """Candidate selection per (model, prompt) group: the selected videos and the ones left out."""
    groups: dict[tuple[str, str], list[VBenchVideo]] = defaultdict(list)
    for video in scored:
        groups[(video.source_model, video.prompt.prompt)].append(video)
    selected: list[VBenchVideo] = []
    leftovers: list[VBenchVideo] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda v: v.index)
        if len(group) < videos_per_image:
            report.incomplete_groups += 1
        keep = _select_candidates(group, candidates_per_sample, candidate_selection, rng)
        selected.extend(group[i] for i in keep)
        leftovers.extend(v for i, v in enumerate(group) if i not in keep)
    report.num_selected = len(selected)
    return selected, leftovers


def _rebalance(
    pool: list[VBenchVideo],
    train_rows: list[tuple[VBenchVideo, bool]],
    count: int,
    threshold: float,
    rng: np.random.Generator,
    report: VBenchLoadReport,
) -> None:
    """Add up to ``count`` low-score videos of ``pool`` (seeded) to the train rows, marked as rebalanced."""
    order = rng.permutation(len(pool))
    added = [pool[i] for i in order[:count]]
    train_rows.extend((v, True) for v in added)
    report.num_rebalanced = len(added)
    report.rebalance_shortfall = count - len(added)
    if report.rebalance_shortfall:
        logger.warning(
            "rebalance_low_scores=%d, but only %d unselected train videos score below %.3f; added %d.",
            count,
            len(pool),
            threshold,
            len(added),
        )


def _build_splits(
    rows_per_split: dict[str, list[tuple[VBenchVideo, bool]]],
    image_dir: Path,
    dimensions: tuple[str, ...],
    report: VBenchLoadReport,
) -> dict[str, Dataset]:
    features = vbench_i2v_features(dimensions)
    splits = {}
    for name, rows in rows_per_split.items():
        rows.sort(key=lambda r: (r[0].prompt.image_name, r[0].source_model, r[0].prompt.prompt, r[0].index))
        splits[name] = Dataset.from_dict(_to_columns(rows, image_dir, dimensions), features=features)
        report.split_rows[name] = len(rows)
        report.split_images[name] = len({r[0].prompt.image_name for r in rows})
    return splits


def _record_problems(report: VBenchLoadReport, problems: Problems) -> None:
    report.skipped = dict(problems.counts)
    report.examples = problems.examples
    if problems.counts:
        logger.warning(
            "load_vbench_i2v skipped %d item(s): %s. First problems: %s",
            sum(problems.counts.values()),
            ", ".join(f"{k}={v}" for k, v in sorted(problems.counts.items())),
            "; ".join(problems.examples[:3]),
        )


def _resolve_weights(dimensions: tuple[str, ...], dimension_weights: Mapping[str, float] | None) -> dict[str, float]:
    if dimension_weights is None:
        return dict.fromkeys(dimensions, 1.0)
    unknown = set(dimension_weights) - set(dimensions)
    missing = set(dimensions) - set(dimension_weights)
    if unknown or missing:
        raise ValueError(
            f"dimension_weights must have one weight per dimension {list(dimensions)}; "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    weights = {d: float(dimension_weights[d]) for d in dimensions}
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"dimension_weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


def _resolve_split(split: Sequence[float] | Mapping[str, float] | None) -> dict[str, float]:
    if split is None:
        return {"train": 1.0}
    if isinstance(split, Mapping):
        fractions = {str(k): float(v) for k, v in split.items()}
    else:
        values = [float(v) for v in split]
        if len(values) not in _SPLIT_NAMES:
            raise ValueError(f"split must have 2 (train, test) or 3 (train, validation, test) fractions, got {split}")
        fractions = dict(zip(_SPLIT_NAMES[len(values)], values))
    if any(not math.isfinite(v) or v < 0 for v in fractions.values()) or not math.isclose(
        sum(fractions.values()), 1.0, abs_tol=1e-6
    ):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    return {k: v for k, v in fractions.items() if v > 0}


def _split_images(images: list[str], fractions: dict[str, float], rng: np.random.Generator) -> dict[str, str]:
    """Assign whole images to splits: counts by largest remainder, then every split with a share gets >= 1."""
    n = len(images)
    names = list(fractions)
    exact = [fractions[k] * n for k in names]
    counts = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(names)), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    # Small datasets: take an image from the largest split for every empty one, while there are enough images.
    for i in range(len(names)):
        if counts[i] == 0 and n >= len(names):
            donor = max(range(len(names)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    shuffled = [images[i] for i in rng.permutation(n)]
    assignment, start = {}, 0
    for name, count in zip(names, counts):
        for image in shuffled[start : start + count]:
            assignment[image] = name
        start += count
    return assignment


def _select_candidates(group: list[VBenchVideo], k: int | None, how: str, rng: np.random.Generator) -> list[int]:
    if k is None or k >= len(group):
        return list(range(len(group)))
    if how == "random":
        return sorted(int(i) for i in rng.choice(len(group), size=k, replace=False))
    # "extremes": best, worst, second best, second worst, ...; stable on index for equal scores.
    by_score = sorted(range(len(group)), key=lambda i: (-group[i].score, group[i].index))
    picked: list[int] = []
    lo, hi = 0, len(by_score) - 1
    while len(picked) < k:
        picked.append(by_score[lo])
        lo += 1
        if len(picked) < k:
            picked.append(by_score[hi])
            hi -= 1
    return sorted(picked)


def _to_columns(
    rows: list[tuple[VBenchVideo, bool]], image_dir: Path, dimensions: tuple[str, ...]
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = defaultdict(list)
    for video, rebalanced in rows:
        columns["reference"].append(str((image_dir / video.prompt.image_name).resolve()))
        columns["video"].append(video.path)
        columns["score"].append(video.score)
        for dim in dimensions:
            columns[dim].append(video.scores.get(dim))
        columns["prompt"].append(video.prompt.prompt)
        columns["image_type"].append(video.prompt.image_type)
        columns["source_model"].append(video.source_model)
        columns["image_name"].append(video.prompt.image_name)
        columns["video_index"].append(video.index)
        columns["rebalanced"].append(rebalanced)
    if not rows:
        return {name: [] for name in vbench_i2v_features(dimensions)}
    return dict(columns)
