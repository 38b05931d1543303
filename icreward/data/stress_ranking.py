"""Preference pairs and ranking evaluation on the stress-test suite (:mod:`icreward.data.stress_suite`)."""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage

from icreward.data.stress_labels import MOTION_LEVELS, STRESS_SUITE_PAIR_FEATURES
from icreward.metrics.reward_metrics import group_index_pairs, pair_correctness, spearman_correlation
from icreward.video import load_image, read_video

__all__ = [
    "evaluate_ranking",
    "motion_decoupled_pairs",
    "pixel_similarity_score",
    "ranking_metrics",
    "stress_suite_pairs",
]

_LEVEL_RANK = {level: rank for rank, level in enumerate(MOTION_LEVELS)}


def _same_source_pairs(
    source_ids: Sequence[str], scores: np.ndarray, min_margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(chosen, rejected)`` of all same-source pairs whose labels differ by at least ``min_margin``."""
    if min_margin <= 0:
        raise ValueError(f"min_margin must be positive (ties have no preferred video), got {min_margin}.")
    a, b = group_index_pairs(source_ids)
    # Labels are stored as float32: allow for its rounding at the margin.
    keep = np.abs(scores[a] - scores[b]) >= min_margin - 1e-6
    a, b = a[keep], b[keep]
    a_better = scores[a] > scores[b]
    return np.where(a_better, a, b).astype(np.int64), np.where(a_better, b, a).astype(np.int64)


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
    correct = pair_correctness(predictions[chosen], predictions[rejected])
    decoupled = _pair_decoupled(columns["motion_level"], chosen, rejected)

    def accuracy(mask: np.ndarray) -> float:
        return float(correct[mask].mean()) if mask.any() else float("nan")

    metrics = {
        "accuracy": accuracy(np.ones(len(chosen), dtype=bool)),
        "accuracy/motion_decoupled": accuracy(decoupled),
        "spearman": spearman_correlation(predictions, labels),
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
