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

Videos are stored as paths, not :class:`datasets.Video`, because that feature decodes through torchcodec, which
needs a system FFmpeg; :mod:`icreward.video` decodes with PyAV instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

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

VBENCH_PLUS_PLUS_CITATION = """@article{huang2024vbenchpp,
  title   = {VBench++: Comprehensive and Versatile Benchmark Suite for Video Generative Models},
  author  = {Huang, Ziqi and Zhang, Fan and Xu, Xiaojie and He, Yinan and Yu, Jiashuo and Dong, Ziyue and
             Ma, Qianli and Chanpaisit, Nattapol and Si, Chenyang and Jiang, Yuming and Wang, Yaohui and
             Chen, Xinyuan and Chen, Ying-Cong and Wang, Limin and Lin, Dahua and Qiao, Yu and Liu, Ziwei},
  journal = {arXiv preprint arXiv:2411.13503},
  year    = {2024}
}"""

ICREWARD_CITATION = """@misc{liang2025icreward,
  title  = {ICReward: Learning Image-to-Video Consistency Rewards},
  author = {Liang, Agnes and Zbizika, Renee},
  note   = {Stanford University},
  year   = {2025}
}"""

# Scores are sums of clamped cosines with weights summing to one, so float round-off can overshoot [0, 1] by a
# few ulps; anything further out is a genuine format error.
_SCORE_TOLERANCE = 1e-6
_MAX_EXAMPLES = 20
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


class VBenchFormatError(ValueError):
    """A VBench file does not have the layout VBench writes, or refers to a file that does not exist."""


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


class _Problems:
    """Raises on the first problem (``on_missing="error"``) or counts it (``"skip"``)."""

    def __init__(self, on_missing: str) -> None:
        if on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        self.on_missing = on_missing
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        if self.on_missing == "error":
            raise VBenchFormatError(f"{message} (pass on_missing='skip' to skip such items and count them)")
        self.counts[kind] += 1
        if sum(1 for e in self.examples if e.startswith(f"[{kind}]")) < _MAX_EXAMPLES:
            self.examples.append(f"[{kind}] {message}")


@dataclass(frozen=True)
class _PromptInfo:
    prompt: str
    image_name: str
    image_type: str
    dimensions: tuple[str, ...]


@dataclass
class _Video:
    source_model: str
    prompt: _PromptInfo
    index: int
    path: str
    scores: dict[str, float]
    score: float = 0.0


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

    Args:
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

    Returns:
        A :class:`VBenchDatasetDict` (a ``DatasetDict``) with features :func:`vbench_i2v_features` and a
        ``report`` attribute (:class:`VBenchLoadReport`).
    """
    dimensions = tuple(dimensions)
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
    problems = _Problems(on_missing)

    sources = _resolve_sources(videos_dir, eval_results, source_model)
    image_dir = _resolve_image_dir(Path(image_root), resolution)
    prompts = _read_info_json(Path(info_json), dimensions, problems)

    videos: list[_Video] = []
    for name, folder, result_files in sources:
        videos.extend(_read_source(name, folder, result_files, prompts, dimensions, videos_per_image, problems))

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
    videos = [v for v in videos if v.prompt.image_name not in missing_images]

    scored: list[_Video] = []
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

    report = VBenchLoadReport(num_scored_videos=len(scored))
    # Independent streams, so that e.g. changing candidates_per_sample does not reshuffle the split.
    split_rng, select_rng, rebalance_rng = (np.random.default_rng([seed, stream]) for stream in range(3))

    groups: dict[tuple[str, str], list[_Video]] = defaultdict(list)
    for video in scored:
        groups[(video.source_model, video.prompt.prompt)].append(video)
    selected: list[_Video] = []
    leftovers: list[_Video] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda v: v.index)
        if len(group) < videos_per_image:
            report.incomplete_groups += 1
        keep = _select_candidates(group, candidates_per_sample, candidate_selection, select_rng)
        selected.extend(group[i] for i in keep)
        leftovers.extend(v for i, v in enumerate(group) if i not in keep)
    report.num_selected = len(selected)

    image_split = _split_images(
        sorted({v.prompt.image_name for v in selected + leftovers}), split_fractions, split_rng
    )
    rows_per_split: dict[str, list[tuple[_Video, bool]]] = {name: [] for name in split_fractions}
    for video in selected:
        rows_per_split[image_split[video.prompt.image_name]].append((video, False))

    if rebalance_low_scores:
        pool = [v for v in leftovers if v.score < low_score_threshold and image_split[v.prompt.image_name] == "train"]
        order = rebalance_rng.permutation(len(pool))
        added = [pool[i] for i in order[:rebalance_low_scores]]
        rows_per_split["train"].extend((v, True) for v in added)
        report.num_rebalanced = len(added)
        report.rebalance_shortfall = rebalance_low_scores - len(added)
        if report.rebalance_shortfall:
            logger.warning(
                "rebalance_low_scores=%d, but only %d unselected train videos score below %.3f; added %d.",
                rebalance_low_scores,
                len(pool),
                low_score_threshold,
                len(added),
            )

    features = vbench_i2v_features(dimensions)
    splits = {}
    for name, rows in rows_per_split.items():
        rows.sort(key=lambda r: (r[0].prompt.image_name, r[0].source_model, r[0].prompt.prompt, r[0].index))
        splits[name] = Dataset.from_dict(_to_columns(rows, image_dir, dimensions), features=features)
        report.split_rows[name] = len(rows)
        report.split_images[name] = len({r[0].prompt.image_name for r in rows})

    report.skipped = dict(problems.counts)
    report.examples = problems.examples
    if problems.counts:
        logger.warning(
            "load_vbench_i2v skipped %d item(s): %s. First problems: %s",
            sum(problems.counts.values()),
            ", ".join(f"{k}={v}" for k, v in sorted(problems.counts.items())),
            "; ".join(problems.examples[:3]),
        )
    return VBenchDatasetDict(splits, report=report)


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


def _select_candidates(group: list[_Video], k: int | None, how: str, rng: np.random.Generator) -> list[int]:
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


def _resolve_sources(
    videos_dir: PathLike | Sequence[PathLike],
    eval_results: PathLike | Sequence[Any],
    source_model: str | Sequence[str] | None,
) -> list[tuple[str, Path, list[Path]]]:
    """Normalise the one-model and several-models call forms to ``[(name, videos folder, results files)]``."""
    if isinstance(videos_dir, str | os.PathLike):
        folders = [Path(videos_dir)]
        results = [eval_results]
        names = [source_model] if source_model is None or isinstance(source_model, str) else list(source_model)
    else:
        folders = [Path(p) for p in videos_dir]
        if isinstance(eval_results, str | os.PathLike) or len(eval_results) != len(folders):
            raise ValueError(
                f"with {len(folders)} videos folders, eval_results must be a list with one item (a path or a list "
                "of paths) per folder"
            )
        results = list(eval_results)
        if source_model is None:
            names = [None] * len(folders)
        elif isinstance(source_model, str) or len(source_model) != len(folders):
            raise ValueError(
                f"with {len(folders)} videos folders, source_model must be a list of {len(folders)} names"
            )
        else:
            names = list(source_model)
    if len(names) != len(folders):
        raise ValueError(f"source_model must be one name for videos_dir {str(folders[0])!r}, got {source_model!r}")
    sources = []
    for name, folder, result in zip(names, folders, results):
        if not folder.is_dir():
            raise VBenchFormatError(f"videos_dir {str(folder)!r} is not a directory")
        files = [Path(result)] if isinstance(result, str | os.PathLike) else [Path(p) for p in result]
        if not files:
            raise ValueError(f"no eval_results file given for videos_dir {str(folder)!r}")
        sources.append((name if name is not None else folder.resolve().name, folder, files))
    seen = Counter(name for name, _, _ in sources)
    if any(count > 1 for count in seen.values()):
        raise ValueError(f"source_model names must be unique, got {[name for name, _, _ in sources]}")
    return sources


def _resolve_image_dir(image_root: Path, resolution: str | None) -> Path:
    if resolution is None:
        candidates = [image_root]
    else:
        candidates = [image_root / "crop" / resolution, image_root / resolution]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise VBenchFormatError(f"image folder not found; looked for {[str(c) for c in candidates]}")


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise VBenchFormatError(f"VBench file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VBenchFormatError(f"VBench file {str(path)!r} is not valid JSON: {err}") from err


def _read_info_json(path: Path, dimensions: tuple[str, ...], problems: _Problems) -> dict[str, _PromptInfo]:
    """``prompt_en -> _PromptInfo`` for the info entries that use one of ``dimensions``."""
    entries = _load_json(path)
    if not isinstance(entries, list):
        raise VBenchFormatError(
            f"{str(path)!r}: expected a JSON list of prompt entries (vbench2_i2v_full_info.json), "
            f"got {type(entries).__name__}"
        )
    prompts: dict[str, _PromptInfo] = {}
    for idx, entry in enumerate(entries):
        where = f"{str(path)!r} entry {idx}"
        if not isinstance(entry, dict):
            problems("malformed_entry", f"{where}: expected an object, got {type(entry).__name__}")
            continue
        dims = entry.get("dimension")
        if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
            problems("malformed_entry", f"{where}: field 'dimension' must be a list of strings, got {dims!r}")
            continue
        used = tuple(d for d in dims if d in dimensions)
        if not used:
            continue
        prompt, image_name = entry.get("prompt_en"), entry.get("image_name")
        if not isinstance(prompt, str) or not prompt:
            problems("malformed_entry", f"{where}: field 'prompt_en' must be a non-empty string, got {prompt!r}")
            continue
        if not isinstance(image_name, str) or not image_name:
            problems(
                "malformed_entry",
                f"{where} ({prompt!r}): I2V entries need a non-empty string field 'image_name', got {image_name!r}",
            )
            continue
        image_type = entry.get("image_type", "")
        info = _PromptInfo(prompt, image_name, image_type if isinstance(image_type, str) else str(image_type), used)
        previous = prompts.get(prompt)
        if previous is not None and previous.image_name != image_name:
            raise VBenchFormatError(
                f"{where}: prompt {prompt!r} appears twice with different images "
                f"({previous.image_name!r} and {image_name!r}); videos named after it would be ambiguous"
            )
        if previous is not None:
            info = _PromptInfo(prompt, image_name, info.image_type, tuple(dict.fromkeys(previous.dimensions + used)))
        prompts[prompt] = info
    if not prompts:
        raise VBenchFormatError(f"{str(path)!r} has no entry for the dimensions {list(dimensions)}")
    return prompts


_BASENAME = re.compile(r"[^\\/]+$")


def _basename(path: str) -> str:
    """File name of a path written on any OS (VBench writes whatever path it was run with)."""
    match = _BASENAME.search(path)
    return match.group(0) if match else ""


def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_source(
    name: str,
    folder: Path,
    result_files: list[Path],
    prompts: dict[str, _PromptInfo],
    dimensions: tuple[str, ...],
    videos_per_image: int,
    problems: _Problems,
) -> list[_Video]:
    """Match one generator's results entries to its video files; return the videos with >= 1 usable score."""
    expected = {f"{p}-{i}": (info, i) for p, info in prompts.items() for i in range(videos_per_image)}
    # stem -> file name; several extensions of one stem are resolved through the results' exact basenames.
    on_disk: dict[str, list[str]] = defaultdict(list)
    for entry in os.scandir(folder):
        if entry.is_file():
            on_disk[os.path.splitext(entry.name)[0]].append(entry.name)

    scores: dict[str, dict[str, float]] = defaultdict(dict)  # basename -> dim -> score
    where_scored: dict[tuple[str, str], str] = {}
    bad: set[str] = set()  # basenames with a problem: skipped whole, even if another dimension is fine
    mentioned: set[str] = set()  # stems some results entry refers to, usable or not
    found_dims: set[str] = set()
    for file in result_files:
        data = _load_json(file)
        if not isinstance(data, dict):
            raise VBenchFormatError(
                f"{str(file)!r}: expected a JSON object {{dimension: [mean, [entries]]}} (<name>_eval_results.json), "
                f"got {type(data).__name__}"
            )
        for dim in dimensions:
            if dim not in data:
                continue
            found_dims.add(dim)
            value = data[dim]
            if not isinstance(value, list) or len(value) < 2 or not isinstance(value[1], list):
                raise VBenchFormatError(
                    f"{str(file)!r}: key {dim!r} must be [mean, [{{'image_path', 'video_path', 'video_results'}}, "
                    f"...]], got {type(value).__name__} {_short(value)}"
                )
            for idx, entry in enumerate(value[1]):
                where = f"{str(file)!r} [{dim!r}][1][{idx}]"
                video_path = entry.get("video_path") if isinstance(entry, dict) else None
                if not isinstance(video_path, str) or not _basename(video_path):
                    problems(
                        "malformed_entry", f"{where}: field 'video_path' must be a file path, got {_short(entry)}"
                    )
                    continue
                basename = _basename(video_path)
                stem = os.path.splitext(basename)[0]
                if stem not in expected:
                    problems(
                        "unmatched_entry",
                        f"{where}: video {basename!r} matches no f'{{prompt_en}}-{{i}}' with i < {videos_per_image} "
                        "of the info JSON's I2V prompts",
                    )
                    continue
                info, _ = expected[stem]
                mentioned.add(stem)
                score = entry.get("video_results")
                if not _is_score(score) or not -_SCORE_TOLERANCE <= score <= 1 + _SCORE_TOLERANCE:
                    problems(
                        "score_out_of_range",
                        f"{where}: field 'video_results' of {basename!r} must be a number in [0, 1], got {score!r}",
                    )
                    bad.add(basename)
                    continue
                image_path = entry.get("image_path")
                if image_path is not None and _basename(str(image_path)) != info.image_name:
                    problems(
                        "image_mismatch",
                        f"{where}: field 'image_path' {image_path!r} is not the info JSON's image "
                        f"{info.image_name!r} of prompt {info.prompt!r}",
                    )
                    bad.add(basename)
                    continue
                score = min(max(float(score), 0.0), 1.0)
                previous = scores[basename].get(dim)
                if previous is not None and not math.isclose(previous, score, abs_tol=1e-9):
                    problems(
                        "conflicting_score",
                        f"{where}: {basename!r} has {dim}={score} here but {previous} in "
                        f"{where_scored[(basename, dim)]}",
                    )
                    bad.add(basename)
                    continue
                scores[basename][dim] = score
                where_scored[(basename, dim)] = str(file)

    absent = [d for d in dimensions if d not in found_dims]
    if absent:
        raise VBenchFormatError(
            f"dimension(s) {absent} not found in the eval results of {name!r} ({[str(f) for f in result_files]}); "
            "pass dimensions=... with the dimensions VBench evaluated"
        )

    videos: list[_Video] = []
    for basename in sorted(scores):
        stem = os.path.splitext(basename)[0]
        if basename in bad:
            continue
        if basename not in on_disk.get(stem, ()):
            problems("missing_video", f"video {basename!r} of {name!r} is scored but not in {str(folder)!r}")
            continue
        info, index = expected[stem]
        videos.append(_Video(name, info, index, str((folder / basename).resolve()), scores[basename]))

    # A video file of an I2V prompt that no results entry scores would be dropped silently otherwise.
    for stem in sorted(set(on_disk) & set(expected) - mentioned):
        info, _ = expected[stem]
        problems(
            "unscored_video",
            f"video {on_disk[stem][0]!r} in {str(folder)!r} has no score for {list(info.dimensions)} in "
            f"{[str(f) for f in result_files]}",
        )
    return videos


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_columns(rows: list[tuple[_Video, bool]], image_dir: Path, dimensions: tuple[str, ...]) -> dict[str, list[Any]]:
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


# ---------------------------------------------------------------------------------------------------------------
# Sharing on the Hugging Face Hub
# ---------------------------------------------------------------------------------------------------------------

_VIDEOS_FOLDER = "videos"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_vbench_dataset_card(
    dataset_dict: DatasetDict,
    *,
    pretty_name: str = "VBench++ I2V consistency labels",
    license: str = "other",
    source_models: Sequence[str] | None = None,
    report: VBenchLoadReport | None = None,
    description: str | None = None,
    extra_tags: Sequence[str] = (),
):
    """A :class:`huggingface_hub.DatasetCard` for a dataset built by :func:`load_vbench_i2v`.

    The card's YAML declares the license, tags and the ``data/<split>-*`` parquet layout written by
    :func:`export_vbench_dataset`; the body describes the source, the columns, the labelling protocol and cites
    VBench++ and ICReward. ``license`` defaults to ``"other"`` because the videos carry the terms of the model
    that generated them and the images those of VBench's image suite; set it to what applies. Nothing here
    touches the network: ``card.content`` is the README text, ``card.save(path)`` writes it.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..evaluation.human_study import _md as _markdown_text  # names from folders and files, escaped

    report = report if report is not None else getattr(dataset_dict, "report", None)
    if source_models is None:
        source_models = sorted({m for split in dataset_dict.values() for m in split.unique("source_model")})
    split_names = list(dataset_dict)
    card_data = DatasetCardData(
        license=license,
        language=["en"],
        pretty_name=pretty_name,
        task_categories=["image-to-video"],
        tags=["vbench", "image-to-video", "reward-modeling", "icreward", *extra_tags],
        size_categories=[_size_category(sum(len(d) for d in dataset_dict.values()))],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*"} for name in split_names],
            }
        ],
    )
    first = next(iter(dataset_dict.values()))
    dimension_columns = [c for c in first.column_names if c.startswith("i2v_")]
    column_rows = {
        "reference": "the reference (conditioning) image, VBench++'s cropped image suite",
        "video": f"path of the generated video inside this repository (`{_VIDEOS_FOLDER}/<source_model>/...`)",
        "score": "weighted mean of the available dimension scores, in [0, 1] (the regression label)",
        **{d: f"VBench++ `{d}` score, or null when VBench did not evaluate this dimension" for d in dimension_columns},
        "prompt": "VBench++ text prompt (`prompt_en`)",
        "image_type": "VBench++ image category",
        "source_model": "the image-to-video model that generated the video",
        "image_name": "VBench++ image file name; splits never share an image",
        "video_index": "sample index `i` of VBench's `{prompt_en}-{i}` file name",
        "rebalanced": "true for extra low-score training rows added to balance the labels",
    }
    columns_md = "\n".join(f"| `{c}` | {column_rows.get(c, '')} |" for c in first.column_names)
    splits_md = "\n".join(
        f"| {_markdown_text(name)} | {len(ds)} | {len(set(ds['image_name'])) if len(ds) else 0} |"
        for name, ds in dataset_dict.items()
    )
    report_md = ""
    if report is not None and report.skipped:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items()))
        report_md = f"\nItems skipped while reading the VBench files: {skipped}.\n"
    body = f"""
# {pretty_name}

{description or "Image-to-video consistency labels from VBench++ for training consistency reward models."}

Each row pairs a reference image from the VBench++ I2V image suite with a video generated from it and VBench++'s
image-to-video consistency scores: `i2v_subject` (DINO ViT-B/16 features) and `i2v_background` (DreamSim
features), each `0.4 * max_i cos(ref, f_i) + 0.3 * mean_i cos(f_(i-1), f_i) + 0.3 * min_i cos(f_(i-1), f_i)`
with negative cosines clamped to 0. Built with `icreward.data.vbench.load_vbench_i2v` from VBench's own
`vbench2_i2v_full_info.json`, cropped images and `*_eval_results.json` files.

Source models: {", ".join(f"`{m}`" if _PLAIN_NAME.fullmatch(m) else _markdown_text(m) for m in source_models) or "n/a"}.

## Splits

Splits are made by reference image, so no image appears in two splits.

| split | rows | images |
|---|---|---|
{splits_md}
{report_md}
## Columns

| column | description |
|---|---|
{columns_md}

## Usage

```python
from icreward.data.vbench import load_vbench_i2v_from_hub

dataset = load_vbench_i2v_from_hub("<repo_id>")  # resolves `video` to local files
```

## License

Videos follow the terms of the model that generated them, reference images those of the VBench++ image suite.

## Citation

```bibtex
{VBENCH_PLUS_PLUS_CITATION}

{ICREWARD_CITATION}
```
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def export_vbench_dataset(
    dataset_dict: DatasetDict, output_dir: PathLike, *, image_root: PathLike | None = None, **card_kwargs: Any
) -> Path:
    """Write a dataset built by :func:`load_vbench_i2v` as a self-contained Hub dataset repository folder.

    Layout: ``data/<split>-00000-of-00001.parquet`` with the reference images embedded as bytes,
    ``videos/<source_model>/<file name>`` with copies of the videos (the ``video`` column is rewritten to these
    relative paths) and ``README.md`` (:func:`build_vbench_dataset_card`, ``card_kwargs`` passed through). The
    folder loads with :func:`load_vbench_i2v_from_hub` or can be uploaded as is.

    Only files that belong to the dataset are embedded or copied: every ``reference`` must be the row's
    ``image_name`` (a relative path, no ``..``) inside one reference image folder (``image_root``, by default
    the folder the references share), resolve inside it (no symlink leading out) and be an image; every
    ``video`` must be a regular video file. Anything else raises :class:`VBenchFormatError` naming the row,
    before anything is written.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"output_dir {str(output_dir)!r} exists and is not empty")
    _check_export_sources(dataset_dict, image_root)
    (output_dir / "data").mkdir(parents=True, exist_ok=True)

    copies: dict[str, str] = {}  # repository-relative path -> local source
    for split, ds in dataset_dict.items():
        missing = {"video", "source_model", "reference"} - set(ds.column_names)
        if missing:
            raise ValueError(f"split {split!r} lacks column(s) {sorted(missing)}; expected a load_vbench_i2v dataset")
        for local, model in zip(ds["video"], ds["source_model"]):
            relative = f"{_VIDEOS_FOLDER}/{_UNSAFE.sub('_', model) or '_'}/{os.path.basename(local)}"
            if copies.setdefault(relative, local) != local:
                raise ValueError(f"videos {copies[relative]!r} and {local!r} would both be stored as {relative!r}")
    for relative, local in copies.items():
        if not os.path.isfile(local):
            raise FileNotFoundError(f"video {local!r} listed in the dataset does not exist")
        target = output_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    relative_of = {local: rel for rel, local in copies.items()}

    def _portable(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch["video"] = [relative_of[v] for v in batch["video"]]
        batch["reference"] = [_embed_image(r) for r in batch["reference"]]
        return batch

    for split, ds in dataset_dict.items():
        portable = ds.cast_column("reference", Image(decode=False)).map(
            _portable, batched=True, load_from_cache_file=False, desc=f"Preparing {split}"
        )
        portable = portable.cast(ds.features)
        portable.to_parquet(str(output_dir / "data" / f"{split}-00000-of-00001.parquet"))

    build_vbench_dataset_card(dataset_dict, **card_kwargs).save(str(output_dir / "README.md"))
    return output_dir


_PLAIN_NAME = re.compile(r"[\w. +-]{1,200}")  # shown as code in the dataset card; other names as escaped text
_EXPORTED_VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif"}


def _looks_like_video(path: str) -> bool:
    """The container signature of an MP4/MOV (``ftyp``/``moov``/...), Matroska/WebM, AVI or GIF file."""
    with open(path, "rb") as f:
        head = f.read(12)
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head.startswith(b"\x1a\x45\xdf\xa3")
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith((b"GIF87a", b"GIF89a"))
    )


def _check_export_sources(dataset_dict: DatasetDict, image_root: PathLike | None) -> None:
    """Refuse, before writing anything, a reference or video that is not a file of the dataset (see
    :func:`export_vbench_dataset`): an edited or hand-built dataset must not smuggle other files into an upload."""
    from PIL import Image as PILImage

    on_disk = []  # (where, path, image_name, folder the path names as its image folder)
    for split, ds in dataset_dict.items():
        if "image_name" not in ds.column_names:
            raise ValueError(f"split {split!r} lacks column 'image_name'; expected a load_vbench_i2v dataset")
        references = ds.cast_column("reference", Image(decode=False))["reference"]
        for row, (value, image_name, video) in enumerate(zip(references, ds["image_name"], ds["video"])):
            where = f"split {split!r}, row {row}"
            if not (isinstance(video, str) and Path(video).suffix.lower() in _EXPORTED_VIDEO_SUFFIXES):
                raise VBenchFormatError(f"{where}: video {_short(video)} is not a video file")
            if not os.path.isfile(video) or not _looks_like_video(video):
                raise VBenchFormatError(f"{where}: video {_short(video)} is not a video file")
            if value is None or value.get("bytes") is not None:
                continue  # nothing read from disk
            path = value.get("path")
            name = Path(str(image_name))
            if not path or name.is_absolute() or not name.parts or {"..", "."} & set(name.parts):
                raise VBenchFormatError(f"{where}: image_name {_short(image_name)} is not a relative file name")
            parts = Path(path).parts
            if parts[-len(name.parts) :] != name.parts:
                raise VBenchFormatError(f"{where}: reference {_short(path)} is not image_name {_short(image_name)}")
            on_disk.append((where, path, os.path.realpath(os.path.join(*parts[: -len(name.parts)]))))
    if not on_disk:
        return
    if image_root is not None:
        root = os.path.realpath(image_root)
    else:  # the folder the references share (a row elsewhere is the odd one out)
        root = Counter(folder for _, _, folder in on_disk).most_common(1)[0][0]
    for where, path, folder in on_disk:
        real = os.path.realpath(path)
        if folder != root or os.path.commonpath([root, real]) != root:
            raise VBenchFormatError(
                f"{where}: reference {_short(path)} resolves to {_short(real)}, outside the reference image folder "
                f"{_short(root)}" + ("" if image_root is not None else " of the other rows (image_root= names it)")
            )
        try:
            with PILImage.open(real) as image:
                image.verify()
        except (OSError, ValueError, SyntaxError) as err:  # what PIL raises for files that are not images
            raise VBenchFormatError(f"{where}: reference {_short(path)} is not an image ({err})") from None


def _embed_image(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"path", "bytes"}`` with the bytes read from disk, so the parquet file does not depend on local paths."""
    if value is None or value.get("bytes") is not None:
        return value
    path = value.get("path")
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"reference image {path!r} listed in the dataset does not exist")
    with open(path, "rb") as f:
        return {"path": os.path.basename(path), "bytes": f.read()}


def push_vbench_dataset_to_hub(
    dataset_dict: DatasetDict,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload VBench++ I2V consistency dataset",
    **card_kwargs: Any,
):
    """Upload a :func:`load_vbench_i2v` dataset, its videos and a dataset card to the Hub.

    Writes the folder of :func:`export_vbench_dataset` to a temporary directory and uploads it in one commit, so
    the repository holds the videos as well (a plain ``push_to_hub`` would only keep local paths). ``card_kwargs``
    go to :func:`build_vbench_dataset_card` (``license=``, ``pretty_name=``, ``description=``, ...). Returns the
    ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_vbench_dataset(dataset_dict, Path(tmp) / "repo", **card_kwargs)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message,
        )


def load_vbench_i2v_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    download_videos: bool = True,
    token: str | bool | None = None,
    **load_dataset_kwargs: Any,
):
    """Load a dataset written by :func:`push_vbench_dataset_to_hub` (or :func:`export_vbench_dataset`).

    A thin wrapper over :func:`datasets.load_dataset` (``load_dataset_kwargs`` pass through: ``split=``,
    ``cache_dir=``, ...) that also makes the ``video`` column usable: its repository-relative paths are resolved
    against a local folder (``repo_id`` itself when it is a directory, else a ``snapshot_download`` of the
    repository's ``videos/`` folder). With ``download_videos=False`` the paths stay relative.
    """
    from datasets import load_dataset

    dataset = load_dataset(repo_id, revision=revision, token=token, **load_dataset_kwargs)
    if not download_videos:
        return dataset
    if os.path.isdir(repo_id):
        root = os.path.abspath(repo_id)
    else:
        from huggingface_hub import snapshot_download

        root = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, token=token, allow_patterns=[f"{_VIDEOS_FOLDER}/**"]
        )

    def _resolve(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"video": [v if os.path.isabs(v) else os.path.join(root, v) for v in batch["video"]]}

    return dataset.map(_resolve, batched=True)
