"""Human image-to-video preference pairs in the layout of ``datapointai/image-2-video-human-preferences-*``.

Column names follow that dataset's card (as read on its hub page; the files themselves were not available
offline): ``prompt_id`` (string, UUID), ``prompt`` (string), ``reference_image`` (image), ``pika_video`` and
``cog_video`` (videos from Pika and CogVideoX), ``winner`` (majority vote: ``"pika"``, ``"cog"`` or ``"tie"``),
``pika_votes`` and ``cog_votes`` (annotators out of 10 preferring each video). The card's column table was
only partly readable: ``cog_votes`` is assumed to be the CogVideoX count, symmetric to ``pika_votes``.

:func:`load_human_preferences` turns such rows into a :class:`datasets.DatasetDict` of pairs, split by
``prompt_id``::

    reference      the reference image value, as given (path, PIL image or datasets image dict)
    prompt         string
    video_a        the first video (Pika's), as given
    video_b        the second video (CogVideoX's), as given
    votes_a        int32   annotators preferring ``video_a``
    votes_b        int32
    margin         float32 (votes_a - votes_b) / (votes_a + votes_b), in [-1, 1]
    tie            bool    the majority label is a tie
    winner         int8    1: a preferred, -1: b preferred, 0: tie
    prompt_id      string  the split key

Malformed rows (missing columns are a :class:`HumanPreferenceFormatError`; a row with a bad winner, negative or
non-integer votes, or a winner that contradicts its vote counts) are skipped and counted by reason in
``dataset_dict.report``, or raise with ``on_malformed="raise"``.

:func:`human_agreement` reports how often a reward model's scores agree with the human majority, with and
without the tied rows, with Wilson confidence intervals (scipy).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasets import Dataset, DatasetDict

__all__ = [
    "HUMAN_PREFERENCE_COLUMNS",
    "HumanAgreement",
    "HumanPreferenceDatasetDict",
    "HumanPreferenceFormatError",
    "HumanPreferenceLoadReport",
    "human_agreement",
    "load_human_preferences",
    "to_preference_pairs",
]

#: Columns of ``datapointai/image-2-video-human-preferences-*`` that the loader reads.
HUMAN_PREFERENCE_COLUMNS: tuple[str, ...] = (
    "prompt_id",
    "prompt",
    "reference_image",
    "pika_video",
    "cog_video",
    "winner",
    "pika_votes",
    "cog_votes",
)

_WINNERS = {"pika": 1, "cog": -1, "tie": 0}


class HumanPreferenceFormatError(ValueError):
    """A human-preference table does not have the expected layout (the message names the row and column)."""


@dataclass
class HumanPreferenceLoadReport:
    """What the loader kept and skipped, by reason."""

    num_rows: int = 0
    num_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_rows": self.num_rows,
            "num_kept": self.num_kept,
            "num_skipped": self.num_skipped,
            "skipped": dict(self.skipped),
            "examples": list(self.examples),
        }


class HumanPreferenceDatasetDict(DatasetDict):
    """A :class:`~datasets.DatasetDict` that also carries the :class:`HumanPreferenceLoadReport`."""

    def __init__(self, *args: Any, report: HumanPreferenceLoadReport | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = report if report is not None else HumanPreferenceLoadReport()


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if value >= 0 else None
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer() and value >= 0:
        return int(value)
    return None


def _split_of(prompt_id: str, fractions: Mapping[str, float], seed: int) -> str:
    # Deterministic per prompt_id: a hash in [0, 1) compared with the cumulative fractions.
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if u < total:
            return name
    return next(reversed(fractions))


def load_human_preferences(
    rows: Dataset | Iterable[Mapping[str, Any]],
    split: Mapping[str, float] | None = None,
    seed: int = 0,
    on_malformed: Literal["skip", "raise"] = "skip",
) -> HumanPreferenceDatasetDict:
    """Turn rows in the ``datapointai/image-2-video-human-preferences-*`` layout into pairs, split by prompt.

    Args:
        rows: a :class:`datasets.Dataset` (e.g. ``load_dataset(local_dir, split="train")``) or any iterable of
            row mappings with the columns in :data:`HUMAN_PREFERENCE_COLUMNS`.
        split: fractions per split name (default train 0.8 / validation 0.1 / test 0.1); each ``prompt_id``
            lands in exactly one split.
        seed: changes the assignment of prompts to splits.
        on_malformed: ``"skip"`` counts bad rows in ``report.skipped``; ``"raise"`` raises
            :class:`HumanPreferenceFormatError` on the first one.
    """
    if on_malformed not in ("skip", "raise"):
        raise ValueError(f"on_malformed must be 'skip' or 'raise', got {on_malformed!r}")
    fractions = dict(split) if split is not None else {"train": 0.8, "validation": 0.1, "test": 0.1}
    if not fractions or any(f < 0 for f in fractions.values()) or not math.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    if isinstance(rows, Dataset):
        missing = [c for c in HUMAN_PREFERENCE_COLUMNS if c not in rows.column_names]
        if missing:
            raise HumanPreferenceFormatError(
                f"human-preference dataset lacks column(s) {missing}; has {rows.column_names}"
            )
    report = HumanPreferenceLoadReport()
    columns: dict[str, dict[str, list[Any]]] = {name: {} for name in fractions}

    def bad(index: int, reason: str, message: str) -> None:
        if on_malformed == "raise":
            raise HumanPreferenceFormatError(f"row {index}: {message}")
        report.skipped[reason] += 1
        if len(report.examples) < 10:
            report.examples.append(f"row {index}: {message}")

    for index, row in enumerate(rows):
        report.num_rows += 1
        missing = [c for c in HUMAN_PREFERENCE_COLUMNS if c not in row]
        if missing:
            raise HumanPreferenceFormatError(f"row {index} lacks column(s) {missing}")
        prompt_id = row["prompt_id"]
        if not isinstance(prompt_id, str) or not prompt_id:
            bad(index, "bad_prompt_id", f"prompt_id must be a non-empty string, got {prompt_id!r}")
            continue
        if row["reference_image"] is None or row["pika_video"] is None or row["cog_video"] is None:
            bad(index, "missing_media", "reference_image, pika_video or cog_video is empty")
            continue
        winner = row["winner"]
        if not isinstance(winner, str) or winner.strip().lower() not in _WINNERS:
            bad(index, "bad_winner", f"winner must be one of {sorted(_WINNERS)}, got {winner!r}")
            continue
        votes_a, votes_b = _as_count(row["pika_votes"]), _as_count(row["cog_votes"])
        if votes_a is None or votes_b is None or votes_a + votes_b == 0:
            bad(
                index,
                "bad_votes",
                f"pika_votes/cog_votes must be non-negative integers, not both 0; got "
                f"{row['pika_votes']!r}/{row['cog_votes']!r}",
            )
            continue
        label = _WINNERS[winner.strip().lower()]
        if label != int(np.sign(votes_a - votes_b)):
            bad(index, "winner_contradicts_votes", f"winner {winner!r} but votes {votes_a} vs {votes_b}")
            continue
        out = columns[_split_of(prompt_id, fractions, seed)]
        values = {
            "reference": row["reference_image"],
            "prompt": row["prompt"] if row["prompt"] is not None else "",
            "video_a": row["pika_video"],
            "video_b": row["cog_video"],
            "votes_a": votes_a,
            "votes_b": votes_b,
            "margin": (votes_a - votes_b) / (votes_a + votes_b),
            "tie": label == 0,
            "winner": label,
            "prompt_id": prompt_id,
        }
        for key, value in values.items():
            out.setdefault(key, []).append(value)
        report.num_kept += 1
    if report.num_kept == 0:
        raise HumanPreferenceFormatError(
            f"no usable human-preference rows among {report.num_rows} (skipped: {dict(report.skipped)})"
        )
    splits = {name: Dataset.from_dict(cols) for name, cols in columns.items() if cols}
    return HumanPreferenceDatasetDict(splits, report=report)


def to_preference_pairs(dataset: Dataset) -> Dataset:
    """Rows for :class:`~icreward.RewardModelTrainer` with ``loss_type="bt_ties"``.

    ``chosen`` is the human majority's video (``video_a`` for a tie), ``rejected`` the other, ``is_tie`` the
    tie flag; ``margin`` (the absolute vote margin), ``prompt`` and ``prompt_id`` are kept.
    """
    missing = [c for c in ("reference", "video_a", "video_b", "winner", "margin") if c not in dataset.column_names]
    if missing:
        raise HumanPreferenceFormatError(f"pair dataset lacks column(s) {missing}; use load_human_preferences first")

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        b_wins = [w == -1 for w in batch["winner"]]
        return {
            "reference": batch["reference"],
            "chosen": [b if flip else a for a, b, flip in zip(batch["video_a"], batch["video_b"], b_wins)],
            "rejected": [a if flip else b for a, b, flip in zip(batch["video_a"], batch["video_b"], b_wins)],
            "is_tie": [w == 0 for w in batch["winner"]],
            "margin": [abs(m) for m in batch["margin"]],
            "prompt": batch["prompt"],
            "prompt_id": batch["prompt_id"],
        }

    return dataset.map(convert, batched=True, remove_columns=dataset.column_names)


@dataclass
class HumanAgreement:
    """Agreement of a reward model with the human majority vote."""

    agreement: float  # over non-tied pairs: sign(score_a - score_b) == human winner
    agreement_ci: tuple[float, float]
    num_decided: int
    agreement_with_ties: float  # over all pairs; a tie agrees when |score_a - score_b| <= tie_threshold
    agreement_with_ties_ci: tuple[float, float]
    num_pairs: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def human_agreement(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    winner: Sequence[int],
    tie_threshold: float = 0.0,
    confidence: float = 0.95,
) -> HumanAgreement:
    """Agreement of reward scores with the human majority (``winner``: 1 a, -1 b, 0 tie), with Wilson CIs.

    Without ties: over pairs with a majority, the fraction where the higher-scored video is the human winner
    (equal scores count as disagreement). With ties: over all pairs, a decided pair as before, a tied pair
    agrees when ``|score_a - score_b| <= tie_threshold``.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    w = np.asarray(winner, dtype=np.int64)
    if not (a.shape == b.shape == w.shape) or a.ndim != 1:
        raise ValueError(f"scores_a {a.shape}, scores_b {b.shape} and winner {w.shape} must be 1-D and equal")
    if not np.isin(w, (-1, 0, 1)).all():
        raise ValueError("winner values must be 1 (a), -1 (b) or 0 (tie)")
    if tie_threshold < 0:
        raise ValueError(f"tie_threshold must be >= 0, got {tie_threshold}")
    diff = a - b
    decided = w != 0
    correct = np.where(decided, np.sign(diff) == w, np.abs(diff) <= tie_threshold)
    n_dec, k_dec = int(decided.sum()), int(correct[decided].sum())
    n_all, k_all = int(w.size), int(correct.sum())
    return HumanAgreement(
        agreement=k_dec / n_dec if n_dec else math.nan,
        agreement_ci=_wilson(k_dec, n_dec, confidence),
        num_decided=n_dec,
        agreement_with_ties=k_all / n_all if n_all else math.nan,
        agreement_with_ties_ci=_wilson(k_all, n_all, confidence),
        num_pairs=n_all,
        confidence=confidence,
    )
