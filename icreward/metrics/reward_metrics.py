"""Metrics of a reward model's predictions against consistency labels (what ``RewardModelTrainer`` reports)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "group_index_pairs",
    "pair_correctness",
    "pairwise_accuracy",
    "preference_pair_metrics",
    "reward_regression_metrics",
    "spearman_correlation",
]


def _finite_1d(name: str, values: Sequence[float]) -> np.ndarray:
    """``values`` as float64; NaN or inf (a diverged model, a corrupt label) is refused by name rather than turned
    into NaN metrics."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or inf values")
    return array


def _same_group_pairs(labels: np.ndarray, groups: Sequence[Any] | None):
    """All index pairs ``(i, j)``, ``i < j``, inside each group (every pair when ``groups`` is None)."""
    by_group: dict[Any, list[int]] = defaultdict(list)
    for idx in range(len(labels)):
        by_group[None if groups is None else groups[idx]].append(idx)
    for members in by_group.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                yield members[a], members[b]


def spearman_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`, ties given their average rank); NaN when it is
    undefined: fewer than two values, or a constant input."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # scipy.stats takes seconds to import: only when needed

    return float(spearmanr(a, b).statistic)


def group_index_pairs(groups: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(first, second)`` of every pair ``i < j`` of items with equal ``groups[i] == groups[j]``:
    groups in order of first appearance, pairs in ``numpy.triu_indices`` order within a group."""
    by_group: dict[Any, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    firsts, seconds = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for members in by_group.values():
        idx = np.asarray(members, dtype=np.int64)
        first, second = np.triu_indices(len(idx), k=1)
        firsts.append(idx[first])
        seconds.append(idx[second])
    return np.concatenate(firsts), np.concatenate(seconds)


def pair_correctness(chosen_scores: np.ndarray, rejected_scores: np.ndarray) -> np.ndarray:
    """Per pair: 1 where the chosen item is scored above the rejected one, 0.5 for a tie, 0 otherwise."""
    chosen_scores, rejected_scores = np.asarray(chosen_scores), np.asarray(rejected_scores)
    return (chosen_scores > rejected_scores) + 0.5 * (chosen_scores == rejected_scores)


def pairwise_accuracy(
    predictions: Sequence[float],
    labels: Sequence[float],
    groups: Sequence[Any] | None = None,
    *,
    tie_threshold: float = 0.0,
    pair_filter=None,
) -> dict[str, float]:
    """Ranking agreement over pairs of videos of the same group (e.g. the same source image).

    - ``accuracy``: over pairs whose labels differ by more than ``tie_threshold``, the fraction the predictions
      order the same way (a predicted tie counts as half).
    - ``accuracy_with_ties``: over all pairs, a pair's relation is ``>``, ``<`` or ``=`` (``|diff| <=
      tie_threshold``, for labels and predictions alike); the fraction where the relations agree.
    - ``num_pairs`` / ``num_tied_pairs``.
    ``pair_filter(i, j, hi, lo)`` (``hi``/``lo`` the higher/lower labelled index) restricts the pairs counted.
    An accuracy over zero pairs is undefined and reported as NaN (with ``num_pairs == 0``); NaN or inf
    predictions or labels raise ``ValueError``.
    """
    preds = _finite_1d("predictions", predictions)
    labs = _finite_1d("labels", labels)
    if preds.shape != labs.shape:
        raise ValueError(f"predictions shape {preds.shape} != labels shape {labs.shape}")
    correct = total = correct_ties = total_ties = tied = 0.0
    for i, j in _same_group_pairs(labs, groups):
        label_diff, pred_diff = labs[i] - labs[j], preds[i] - preds[j]
        label_tie = abs(label_diff) <= tie_threshold
        hi, lo = (i, j) if label_diff >= 0 else (j, i)
        if pair_filter is not None and not pair_filter(i, j, hi, lo):
            continue
        pred_rel = 0 if abs(pred_diff) <= tie_threshold else np.sign(pred_diff)
        label_rel = 0 if label_tie else np.sign(label_diff)
        total_ties += 1
        correct_ties += float(pred_rel == label_rel)
        if label_tie:
            tied += 1
            continue
        total += 1
        correct += 1.0 if np.sign(pred_diff) == np.sign(label_diff) else (0.5 if pred_diff == 0 else 0.0)
    return {
        "accuracy": correct / total if total else float("nan"),
        "accuracy_with_ties": correct_ties / total_ties if total_ties else float("nan"),
        "num_pairs": total,
        "num_tied_pairs": tied,
    }


def reward_regression_metrics(
    predictions: Sequence[float],
    labels: Sequence[float],
    *,
    groups: Sequence[Any] | None = None,
    perturbations: Sequence[str] | None = None,
    motions: Sequence[float] | None = None,
    tie_threshold: float = 0.0,
) -> dict[str, float]:
    """MSE, MAE, Spearman and Kendall correlation, and same-group pairwise accuracy (with and without ties).

    With ``perturbations`` (one type per video, e.g. ``"none"``, ``"color_drift"``), adds
    ``accuracy/<type>``: accuracy over pairs whose lower-labelled video carries that perturbation. With
    ``motions`` (a motion magnitude per video), adds ``accuracy/motion_decoupled``: pairs where the more
    consistent video moves *more*, so that pixel or feature distance to the reference would rank them wrongly.

    Undefined statistics are NaN: Spearman and Kendall when predictions or labels are constant, accuracies over
    zero pairs. NaN or inf predictions or labels, and an empty input, raise ``ValueError``.
    """
    from scipy.stats import kendalltau

    preds = _finite_1d("predictions", predictions)
    labs = _finite_1d("labels", labels)
    if preds.shape != labs.shape or preds.ndim != 1:
        raise ValueError(f"predictions {preds.shape} and labels {labs.shape} must be 1-d of equal length")
    if preds.size == 0:
        raise ValueError("reward_regression_metrics needs at least one prediction, got none")
    metrics: dict[str, float] = {
        "mse": float(np.mean((preds - labs) ** 2)),
        "mae": float(np.mean(np.abs(preds - labs))),
    }
    constant = np.ptp(preds) == 0 or np.ptp(labs) == 0
    metrics["spearman"] = spearman_correlation(preds, labs)
    metrics["kendall"] = float("nan") if constant else float(kendalltau(preds, labs).statistic)
    overall = pairwise_accuracy(preds, labs, groups, tie_threshold=tie_threshold)
    metrics["pairwise_accuracy"] = overall["accuracy"]
    metrics["pairwise_accuracy_with_ties"] = overall["accuracy_with_ties"]
    metrics["num_pairs"] = overall["num_pairs"]
    if perturbations is not None:
        for kind in sorted(set(perturbations)):
            acc = pairwise_accuracy(
                preds,
                labs,
                groups,
                tie_threshold=tie_threshold,
                pair_filter=lambda i, j, hi, lo, k=kind: perturbations[lo] == k,
            )
            if acc["num_pairs"]:
                metrics[f"accuracy/{kind}"] = acc["accuracy"]
    if motions is not None:
        motion = np.asarray(motions, dtype=np.float64)
        acc = pairwise_accuracy(
            preds, labs, groups, tie_threshold=tie_threshold, pair_filter=lambda i, j, hi, lo: motion[hi] > motion[lo]
        )
        metrics["accuracy/motion_decoupled"] = acc["accuracy"]
        metrics["num_motion_decoupled_pairs"] = acc["num_pairs"]
    return metrics


def preference_pair_metrics(
    chosen_scores: Sequence[float],
    rejected_scores: Sequence[float],
    ties: Sequence[bool] | None = None,
    *,
    tie_threshold: float = 0.0,
) -> dict[str, float]:
    """Accuracy on explicit preference pairs: chosen scored above rejected (ties excluded), and with ties.

    With no pairs (or no untied pair, for ``accuracy``) the value is undefined and reported as NaN; NaN or inf
    scores raise ``ValueError``.
    """
    c = _finite_1d("chosen_scores", chosen_scores)
    r = _finite_1d("rejected_scores", rejected_scores)
    t = np.zeros_like(c, dtype=bool) if ties is None else np.asarray(ties, dtype=bool)
    diff = c - r
    pred_tie = np.abs(diff) <= tie_threshold
    non_tied = ~t
    acc = float(np.mean(diff[non_tied] > 0)) if non_tied.any() else float("nan")
    with_ties = float(np.mean(np.where(t, pred_tie, (diff > 0) & ~pred_tie)))
    return {
        "accuracy": acc,
        "accuracy_with_ties": with_ties,
        "margin": float(np.mean(diff)),
        "num_pairs": float(len(c)),
    }
