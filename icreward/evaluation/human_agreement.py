"""Agreement of a reward model with the human majority on image-to-video preference pairs.

For pairs from :func:`~icreward.data.human_preferences.load_human_preferences` (``winner`` 1: video a, -1: video
b, 0: tie) and a reward model's scores of both videos:

- **agreement without ties** (``agreement``): over the pairs with a majority, the share where the model scores the
  human winner higher (equal scores count as disagreement);
- **agreement with ties** (``agreement_with_ties``): over all pairs, where the model "calls" a tie when its two
  scores differ by at most ``tie_threshold``: a decided pair agrees when the model ranks it the humans' way and
  does not call a tie, a tied pair agrees when the model calls a tie. This is the pairwise accuracy with ties of
  Deutsch et al. (2023, "Ties Matter: Meta-Evaluating Modern Metrics with Pairwise Accuracy and Tie
  Calibration"); :func:`calibrate_tie_threshold` picks the threshold on a validation split, as they do. With
  ``tie_threshold=0`` a tie only agrees when both scores are exactly equal.

Each share comes with a confidence interval: Wilson's score interval (default) or a percentile bootstrap over
pairs (``scipy.stats.bootstrap``).

``icreward human-agreement --model DIR --data DIR`` (:mod:`icreward.cli.human_agreement`) runs this from the
command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "HumanAgreement",
    "agreement_markdown",
    "calibrate_tie_threshold",
    "evaluate_human_agreement",
    "human_agreement",
    "score_preference_pairs",
]


@dataclass
class HumanAgreement:
    """Agreement of reward scores with the human majority vote (see the module docstring)."""

    agreement: float
    agreement_ci: tuple[float, float]
    num_decided: int
    num_agree_decided: int
    agreement_with_ties: float
    agreement_with_ties_ci: tuple[float, float]
    num_pairs: int
    num_agree_with_ties: int
    num_ties: int
    num_model_ties: int
    tie_threshold: float
    confidence: float
    interval: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interval(
    correct: np.ndarray, confidence: float, interval: str, num_bootstrap: int, seed: int
) -> tuple[float, float]:
    n, k = int(correct.size), int(correct.sum())
    if n == 0:
        return (math.nan, math.nan)
    if interval == "wilson":
        from .human_study import wilson_interval

        return wilson_interval(k, n, confidence)
    if k in (0, n):  # every resample has the same share: the percentile interval is that point
        return (k / n, k / n)
    import inspect

    from scipy.stats import bootstrap

    # scipy >= 1.15 takes `rng`; older versions `random_state`.
    key = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    result = bootstrap(
        (correct.astype(np.float64),),
        np.mean,
        confidence_level=confidence,
        n_resamples=num_bootstrap,
        method="percentile",
        **{key: np.random.default_rng(seed)},
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def _check(scores_a, scores_b, winner) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    w = np.asarray(winner, dtype=np.int64)
    if not (a.shape == b.shape == w.shape) or a.ndim != 1:
        raise ValueError(f"scores_a {a.shape}, scores_b {b.shape} and winner {w.shape} must be 1-D and equal")
    if not np.isin(w, (-1, 0, 1)).all():
        raise ValueError("winner values must be 1 (a), -1 (b) or 0 (tie)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    return a, b, w


def _agree(diff: np.ndarray, w: np.ndarray, tie_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(agrees ignoring ties, agrees with ties) per pair."""
    model_tie = np.abs(diff) <= tie_threshold
    ranked = np.sign(diff) == w
    return ranked, np.where(w == 0, model_tie, ranked & ~model_tie)


def human_agreement(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    winner: Sequence[int],
    tie_threshold: float = 0.0,
    confidence: float = 0.95,
    interval: Literal["wilson", "bootstrap"] = "wilson",
    num_bootstrap: int = 2000,
    seed: int = 0,
) -> HumanAgreement:
    """Agreement of scores with the human majority (``winner``: 1 a, -1 b, 0 tie), with and without ties.

    Args:
        scores_a / scores_b: the model's scores of video a and video b, one per pair.
        winner: the human majority per pair.
        tie_threshold: the model calls a tie when ``|score_a - score_b| <= tie_threshold``.
        confidence: the intervals' confidence level.
        interval: ``"wilson"`` (score interval of the binomial share) or ``"bootstrap"`` (percentile bootstrap
            over pairs, ``num_bootstrap`` resamples, seeded by ``seed``).
    """
    if tie_threshold < 0:
        raise ValueError(f"tie_threshold must be >= 0, got {tie_threshold}")
    if interval not in ("wilson", "bootstrap"):
        raise ValueError(f"interval must be 'wilson' or 'bootstrap', got {interval!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a, b, w = _check(scores_a, scores_b, winner)
    diff = a - b
    ranked, with_ties = _agree(diff, w, tie_threshold)
    decided = w != 0
    correct_decided = ranked[decided]
    n_dec, k_dec = int(decided.sum()), int(correct_decided.sum())
    n_all, k_all = int(w.size), int(with_ties.sum())
    return HumanAgreement(
        agreement=k_dec / n_dec if n_dec else math.nan,
        agreement_ci=_interval(correct_decided, confidence, interval, num_bootstrap, seed),
        num_decided=n_dec,
        num_agree_decided=k_dec,
        agreement_with_ties=k_all / n_all if n_all else math.nan,
        agreement_with_ties_ci=_interval(with_ties, confidence, interval, num_bootstrap, seed),
        num_pairs=n_all,
        num_agree_with_ties=k_all,
        num_ties=int((~decided).sum()),
        num_model_ties=int((np.abs(diff) <= tie_threshold).sum()),
        tie_threshold=float(tie_threshold),
        confidence=confidence,
        interval=interval,
    )


def calibrate_tie_threshold(scores_a: Sequence[float], scores_b: Sequence[float], winner: Sequence[int]) -> float:
    """The ``tie_threshold`` that maximises the agreement with ties on these pairs (tie calibration).

    Candidates are 0 and every ``|score_a - score_b|`` of the pairs (agreement only changes there); the smallest
    best one is returned. Calibrate on a validation split and report on a test split.
    """
    a, b, w = _check(scores_a, scores_b, winner)
    if w.size == 0:
        raise ValueError("no pairs to calibrate on")
    gaps = np.abs(a - b)
    best, best_threshold = -1, 0.0
    for threshold in np.unique(np.concatenate([[0.0], gaps])):
        _, with_ties = _agree(a - b, w, float(threshold))
        count = int(with_ties.sum())
        if count > best:
            best, best_threshold = count, float(threshold)
    return best_threshold


def score_preference_pairs(model, dataset, processor=None, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A reward model's scores of ``video_a`` and ``video_b`` of every pair (against its ``reference``)."""
    missing = [c for c in ("reference", "video_a", "video_b") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; use load_human_preferences")
    references = list(dataset["reference"])
    scores = model.score(
        references + references,
        list(dataset["video_a"]) + list(dataset["video_b"]),
        processor=processor,
        batch_size=batch_size,
    )
    scores = np.asarray(scores.detach().cpu().float(), dtype=np.float64).reshape(-1)
    return scores[: len(references)], scores[len(references) :]


def evaluate_human_agreement(
    model,
    dataset,
    *,
    calibration_dataset=None,
    tie_threshold: float = 0.0,
    processor=None,
    batch_size: int = 8,
    **kwargs: Any,
) -> HumanAgreement:
    """Score a split of :func:`~icreward.data.human_preferences.load_human_preferences` and compare with humans.

    With ``calibration_dataset`` (e.g. the validation split) the tie threshold is calibrated there
    (:func:`calibrate_tie_threshold`) instead of using ``tie_threshold``. ``kwargs`` go to :func:`human_agreement`.
    """
    if calibration_dataset is not None:
        cal_a, cal_b = score_preference_pairs(model, calibration_dataset, processor, batch_size)
        tie_threshold = calibrate_tie_threshold(cal_a, cal_b, calibration_dataset["winner"])
    scores_a, scores_b = score_preference_pairs(model, dataset, processor, batch_size)
    return human_agreement(scores_a, scores_b, dataset["winner"], tie_threshold=tie_threshold, **kwargs)


def agreement_markdown(results: Mapping[str, HumanAgreement]) -> str:
    """A markdown table of several models' agreement with the human majority."""
    if not results:
        raise ValueError("no results to tabulate")
    first = next(iter(results.values()))
    pct = f"{first.confidence:.0%}"
    lines = [
        f"| model | agreement, ties excluded ({pct} CI) | decided pairs | agreement with ties ({pct} CI) "
        "| pairs (human ties) | tie threshold |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.agreement:.3f} [{r.agreement_ci[0]:.3f}, {r.agreement_ci[1]:.3f}] | {r.num_decided} "
            f"| {r.agreement_with_ties:.3f} [{r.agreement_with_ties_ci[0]:.3f}, {r.agreement_with_ties_ci[1]:.3f}] "
            f"| {r.num_pairs} ({r.num_ties}) | {r.tie_threshold:.4g} |"
        )
    return "\n".join(lines) + f"\n\nIntervals: {first.interval}.\n"
