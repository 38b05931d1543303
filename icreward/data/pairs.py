"""Turn scored videos into preference pairs for Bradley-Terry reward training and Diffusion-/Flow-DPO.

Both builders return a :class:`datasets.Dataset` with the columns TRL-style preference trainers expect, plus the
scores the pair came from::

    reference       the reference image (same feature as the input's reference column, e.g. datasets.Image())
    prompt          string
    chosen          the preferred video (same feature as the input's video column: a path)
    rejected        the other video
    chosen_score    float32
    rejected_score  float32
    margin          float32, chosen_score - rejected_score (>= 0)
    is_tie          bool, the pair is a tie (for icreward.losses.bradley_terry_loss(ties=...))
    <group_by>      the group key column(s), e.g. image_name

* :func:`build_preference_pairs` pairs every two videos of a group (same reference image by default) and orders
  each pair by a score column, e.g. the VBench++ labels of :func:`icreward.data.vbench.load_vbench_i2v`.
* :func:`pairs_from_reward_model_picks` is the ICReward paper's DPO data: per image, the video picked by reward
  model A (ICReward) is chosen and the video picked by reward model B (the MLP baseline) rejected.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasets import Dataset, Features, Value, concatenate_datasets

logger = logging.getLogger(__name__)

__all__ = ["PairBuildStats", "build_preference_pairs", "pairs_from_reward_model_picks"]


@dataclass
class PairBuildStats:
    """Counts of what a pair builder kept and dropped.

    Attributes:
        num_groups: groups in the input.
        num_candidate_pairs: pairs considered before any filter (``n * (n - 1) / 2`` per group of ``n`` for
            :func:`build_preference_pairs`; one per group for :func:`pairs_from_reward_model_picks`).
        num_pairs: pairs in the returned dataset.
        num_ties: ties among the returned pairs.
        dropped: pairs dropped per reason: ``"tie"`` (``ties="drop"``), ``"min_margin"``,
            ``"max_pairs_per_group"``, ``"same_pick"`` (both reward models picked the same video) and
            ``"single_candidate"`` (a group with fewer than two videos cannot form a pair).
    """

    num_groups: int = 0
    num_candidate_pairs: int = 0
    num_pairs: int = 0
    num_ties: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_groups": self.num_groups,
            "num_candidate_pairs": self.num_candidate_pairs,
            "num_pairs": self.num_pairs,
            "num_ties": self.num_ties,
            "dropped": dict(self.dropped),
        }


def build_preference_pairs(
    data: Dataset | Iterable[Mapping[str, Any]],
    *,
    group_by: str | Sequence[str] = "image_name",
    score_column: str = "score",
    video_column: str = "video",
    reference_column: str = "reference",
    prompt_column: str = "prompt",
    min_margin: float = 0.0,
    tie_threshold: float = 0.0,
    ties: Literal["drop", "keep"] = "drop",
    max_pairs_per_group: int | None = None,
    return_stats: bool = False,
) -> Dataset | tuple[Dataset, PairBuildStats]:
    """Pair every two videos of a group and order each pair by score.

    Args:
        data: a :class:`datasets.Dataset` or an iterable of row dicts with the columns below.
        group_by: column(s) whose equal values form a group; only videos of the same group are paired. The
            default pairs videos made from the same reference image (add ``"source_model"`` to pair within a model).
        score_column: the score that decides which video is chosen (higher is better).
        video_column, reference_column, prompt_column: the input columns for ``chosen``/``rejected``,
            ``reference`` and ``prompt``; ``reference`` and ``prompt`` are taken from the chosen row.
        min_margin: non-tied pairs with ``margin < min_margin`` are dropped. It does not apply to ties, which
            ``ties`` governs.
        tie_threshold: a pair with ``|score_a - score_b| <= tie_threshold`` is a tie (with the default 0.0 only
            exactly equal scores tie).
        ties: ``"drop"`` removes ties; ``"keep"`` keeps them with ``is_tie=True``, ordered deterministically: the
            higher score is ``chosen``, and for equal scores the row that comes first in ``data``.
        max_pairs_per_group: keep at most this many pairs per group, those with the largest margins (ties last,
            input order breaking equal margins); ``None`` keeps all.
        return_stats: also return a :class:`PairBuildStats`.

    Returns:
        The pairs dataset (columns in the module docstring), in group order of first appearance, and with
        ``return_stats=True`` a ``(dataset, stats)`` tuple. Dropped pairs are counted in the stats and logged.
    """
    _check_pair_options(min_margin, tie_threshold, ties, max_pairs_per_group)
    dataset = _as_dataset(data)
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    _check_group_keys(keys, video_column, reference_column, prompt_column)
    _require_columns(dataset, [*keys, score_column, video_column, reference_column, prompt_column], "data")
    scores = _float_column(dataset, score_column)

    stats = PairBuildStats()
    groups = _groups(dataset, keys)
    stats.num_groups = len(groups)
    chosen_idx: list[int] = []
    rejected_idx: list[int] = []
    tie_flags: list[bool] = []
    for rows in groups.values():
        if len(rows) < 2:
            stats.dropped["single_candidate"] += 1
            continue
        for _, is_tie, chosen, rejected in _group_pairs(
            rows, scores, stats, min_margin, tie_threshold, ties, max_pairs_per_group
        ):
            chosen_idx.append(chosen)
            rejected_idx.append(rejected)
            tie_flags.append(is_tie)

    pairs = _assemble(
        dataset, chosen_idx, rejected_idx, [scores[i] for i in chosen_idx], [scores[i] for i in rejected_idx],
        tie_flags, keys=keys, video_column=video_column, reference_column=reference_column, prompt_column=prompt_column,
    )  # fmt: skip
    return _with_stats("build_preference_pairs", pairs, tie_flags, stats, return_stats)


def pairs_from_reward_model_picks(
    candidates: Dataset | Iterable[Mapping[str, Any]],
    scores_a: str | Sequence[float],
    scores_b: str | Sequence[float],
    *,
    group_by: str | Sequence[str] = "image_name",
    video_column: str = "video",
    reference_column: str = "reference",
    prompt_column: str = "prompt",
    tie_threshold: float = 0.0,
    return_stats: bool = False,
) -> Dataset | tuple[Dataset, PairBuildStats]:
    """The ICReward paper's DPO pairs: model A's pick is chosen, model B's pick is rejected.

    For every group of candidate videos (the N samples generated for one reference image), ``chosen`` is the
    candidate with the highest ``scores_a`` (ICReward) and ``rejected`` the one with the highest ``scores_b``
    (the MLP baseline). Ties within one model's scores go to the candidate that comes first in ``candidates``.
    When both models pick the same video the group yields no pair (counted as ``"same_pick"``), and a group with
    a single candidate yields none either (``"single_candidate"``).

    Args:
        candidates: a :class:`datasets.Dataset` or an iterable of row dicts, one row per candidate video.
        scores_a, scores_b: a column name of ``candidates`` or one score per row, for model A and model B.
        group_by: column(s) that identify the candidates of one image.
        video_column, reference_column, prompt_column: input columns, as in :func:`build_preference_pairs`.
        tie_threshold: ``is_tie`` is set when model A scores the two picks within this distance (its preference
            is then a coin flip); such pairs are kept.
        return_stats: also return a :class:`PairBuildStats`.

    Returns:
        The pairs dataset; ``chosen_score``/``rejected_score``/``margin`` are model A's scores, so ``margin >= 0``
        measures how strongly A prefers its own pick.
    """
    if tie_threshold < 0 or not math.isfinite(tie_threshold):
        raise ValueError(f"tie_threshold must be a finite number >= 0, got {tie_threshold}")
    dataset = _as_dataset(candidates)
    keys = [group_by] if isinstance(group_by, str) else list(group_by)
    _check_group_keys(keys, video_column, reference_column, prompt_column)
    required = [*keys, video_column, reference_column, prompt_column]
    required += [s for s in (scores_a, scores_b) if isinstance(s, str)]
    _require_columns(dataset, required, "candidates")
    a = _scores(dataset, scores_a, "scores_a")
    b = _scores(dataset, scores_b, "scores_b")

    stats = PairBuildStats()
    groups = _groups(dataset, keys)
    stats.num_groups = len(groups)
    chosen_idx, rejected_idx = _picks(groups, a, b, stats)

    chosen_scores = [a[i] for i in chosen_idx]
    rejected_scores = [a[i] for i in rejected_idx]
    tie_flags = [c - r <= tie_threshold for c, r in zip(chosen_scores, rejected_scores)]
    pairs = _assemble(
        dataset, chosen_idx, rejected_idx, chosen_scores, rejected_scores, tie_flags,
        keys=keys, video_column=video_column, reference_column=reference_column, prompt_column=prompt_column,
    )  # fmt: skip
    return _with_stats("pairs_from_reward_model_picks", pairs, tie_flags, stats, return_stats)


def _with_stats(
    caller: str, pairs: Dataset, tie_flags: list[bool], stats: PairBuildStats, return_stats: bool
) -> Dataset | tuple[Dataset, PairBuildStats]:
    """Complete and log the stats; the pairs, with the stats when asked for."""
    stats.num_pairs = len(pairs)
    stats.num_ties = sum(tie_flags)
    _log_stats(caller, stats)
    return (pairs, stats) if return_stats else pairs


def _check_pair_options(min_margin: float, tie_threshold: float, ties: str, max_pairs_per_group: int | None) -> None:
    if min_margin < 0 or not math.isfinite(min_margin):
        raise ValueError(f"min_margin must be a finite number >= 0, got {min_margin}")
    if tie_threshold < 0 or not math.isfinite(tie_threshold):
        raise ValueError(f"tie_threshold must be a finite number >= 0, got {tie_threshold}")
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
    if max_pairs_per_group is not None and max_pairs_per_group < 1:
        raise ValueError(f"max_pairs_per_group must be >= 1 or None, got {max_pairs_per_group}")


def _group_pairs(
    rows: list[int],
    scores: list[float],
    stats: PairBuildStats,
    min_margin: float,
    tie_threshold: float,
    ties: str,
    max_pairs_per_group: int | None,
) -> list[tuple[float, bool, int, int]]:
    """The kept ``(margin, is_tie, chosen, rejected)`` pairs of one group's rows; dropped ones are counted."""
    kept: list[tuple[float, bool, int, int]] = []
    for a_pos, a in enumerate(rows):
        for b in rows[a_pos + 1 :]:
            stats.num_candidate_pairs += 1
            # a precedes b in the input; a stays chosen on equal scores.
            chosen, rejected = (a, b) if scores[a] >= scores[b] else (b, a)
            margin = scores[chosen] - scores[rejected]
            is_tie = margin <= tie_threshold
            if is_tie and ties == "drop":
                stats.dropped["tie"] += 1
            elif not is_tie and margin < min_margin:
                stats.dropped["min_margin"] += 1
            else:
                kept.append((margin, is_tie, chosen, rejected))
    if max_pairs_per_group is not None and len(kept) > max_pairs_per_group:
        # Stable sort: equal (margin, tie) keys keep input order.
        kept.sort(key=lambda p: (p[1], -p[0]))
        stats.dropped["max_pairs_per_group"] += len(kept) - max_pairs_per_group
        kept = kept[:max_pairs_per_group]
    return kept


def _picks(groups: dict, a: list[float], b: list[float], stats: PairBuildStats) -> tuple[list[int], list[int]]:
    """Per group, model A's pick (chosen) and model B's pick (rejected); same picks and single rows are counted."""
    chosen_idx: list[int] = []
    rejected_idx: list[int] = []
    for rows in groups.values():
        if len(rows) < 2:
            stats.dropped["single_candidate"] += 1
            continue
        stats.num_candidate_pairs += 1
        # np.argmax returns the first maximum: input order breaks ties.
        pick_a = rows[int(np.argmax([a[i] for i in rows]))]
        pick_b = rows[int(np.argmax([b[i] for i in rows]))]
        if pick_a == pick_b:
            stats.dropped["same_pick"] += 1
            continue
        chosen_idx.append(pick_a)
        rejected_idx.append(pick_b)
    return chosen_idx, rejected_idx


def _as_dataset(data: Dataset | Iterable[Mapping[str, Any]]) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping):
        raise TypeError("expected a datasets.Dataset or an iterable of row dicts, got a single mapping")
    rows = [dict(row) for row in data]
    if not rows:
        raise ValueError("no rows given")
    return Dataset.from_list(rows)


def _check_group_keys(keys: list[str], video_column: str, reference_column: str, prompt_column: str) -> None:
    if not keys:
        raise ValueError("group_by must name at least one column")
    taken = {"reference", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "is_tie"}
    for key in keys:
        if key in (video_column, reference_column) or (key in taken | {"prompt"} and key != prompt_column):
            raise ValueError(f"group_by column {key!r} clashes with an output column of the pairs dataset")


def _require_columns(dataset: Dataset, columns: Sequence[str], what: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{what} is missing column(s) {missing}; it has {dataset.column_names}")


def _float_column(dataset: Dataset, column: str) -> list[float]:
    values = dataset[column]
    out = []
    for row, value in enumerate(values):
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"column {column!r} must hold finite numbers; row {row} has {value!r}")
        out.append(float(value))
    return out


def _scores(dataset: Dataset, scores: str | Sequence[float], name: str) -> list[float]:
    if isinstance(scores, str):
        return _float_column(dataset, scores)
    values = [float(s) for s in (scores.tolist() if hasattr(scores, "tolist") else scores)]
    if len(values) != len(dataset):
        raise ValueError(f"{name} has {len(values)} scores for {len(dataset)} candidate rows")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} must be finite; rows {bad[:10]} are not")
    return values


def _groups(dataset: Dataset, keys: list[str]) -> dict[tuple[Any, ...], list[int]]:
    """Row indices per group key, groups in order of first appearance."""
    columns = [dataset[k] for k in keys]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row, key in enumerate(zip(*columns)):
        groups.setdefault(key, []).append(row)
    return groups


def _assemble(
    dataset: Dataset,
    chosen_idx: list[int],
    rejected_idx: list[int],
    chosen_scores: list[float],
    rejected_scores: list[float],
    tie_flags: list[bool],
    *,
    keys: list[str],
    video_column: str,
    reference_column: str,
    prompt_column: str,
) -> Dataset:
    """Select rows by index so the reference and video features (e.g. ``datasets.Image``) carry over undecoded."""
    order = ["reference", "prompt", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "is_tie"]
    numbers = Features(
        chosen_score=Value("float32"), rejected_score=Value("float32"), margin=Value("float32"), is_tie=Value("bool")
    )
    if not chosen_idx:
        # concatenate_datasets(axis=1) loses the columns of empty tables; build the empty schema directly.
        source = dataset.features
        features = Features(
            reference=source[reference_column],
            prompt=source[prompt_column],
            chosen=source[video_column],
            rejected=source[video_column],
            **numbers,
            **{k: source[k] for k in keys if k not in order},
        )
        return Dataset.from_dict({name: [] for name in features}, features=features)
    chosen_columns = list(dict.fromkeys([reference_column, prompt_column, video_column, *keys]))
    chosen = dataset.select(chosen_idx).select_columns(chosen_columns)
    renames = {reference_column: "reference", prompt_column: "prompt", video_column: "chosen"}
    chosen = chosen.rename_columns({c: n for c, n in renames.items() if c != n})
    rejected = dataset.select(rejected_idx).select_columns([video_column]).rename_column(video_column, "rejected")
    margins = [c - r for c, r in zip(chosen_scores, rejected_scores)]
    scores = Dataset.from_dict(
        {"chosen_score": chosen_scores, "rejected_score": rejected_scores, "margin": margins, "is_tie": tie_flags},
        features=numbers,
    )
    pairs = concatenate_datasets([chosen, rejected, scores], axis=1)
    return pairs.select_columns(order + [k for k in keys if k not in order])


def _log_stats(name: str, stats: PairBuildStats) -> None:
    dropped = {k: v for k, v in stats.dropped.items() if v}
    logger.info(
        "%s: %d pairs (%d ties) from %d groups; dropped %s",
        name,
        stats.num_pairs,
        stats.num_ties,
        stats.num_groups,
        dropped or "none",
    )
