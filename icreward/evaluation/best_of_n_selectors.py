"""Selection methods of best-of-N (:mod:`icreward.evaluation.best_of_n`): random, oracle, reward models and score
callables, and the conversion of anything to a selector or a score function."""

from __future__ import annotations

import logging
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icreward.evaluation.best_of_n_candidates import CandidateGroup

logger = logging.getLogger(__name__)


__all__ = [
    "OracleSelector",
    "RandomSelector",
    "RewardModelSelector",
    "ScoreFn",
    "ScoreSelector",
    "Selection",
    "Selector",
    "as_score_fn",
    "as_selector",
    "metric_value",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], float]


# ---------------------------------------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """What a selector picked for one image: the candidate ``index`` and, if it scored them, every ``score``."""

    index: int
    scores: list[float] | None = None


class Selector(ABC):
    """Base class of selection methods: picks one candidate of a group.

    Subclass it for a custom rule; ``reference`` and ``videos`` are the decoded uint8 tensors of the group.
    """

    @abstractmethod
    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        """Return the :class:`Selection` for ``group``."""


def _argmax_first(scores: Sequence[float]) -> int:
    # NaN never wins; ties go to the first candidate (input order), as in pairs_from_reward_model_picks.
    values = np.array([s if math.isfinite(s) else -np.inf for s in scores], dtype=np.float64)
    if np.all(values == -np.inf):
        return 0
    return int(np.argmax(values))


class RandomSelector(Selector):
    """Uniform random pick, seeded by ``seed`` and the image's ``sample_id`` (not by the order of the images)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        # random.Random seeds from a string through SHA-512: stable across runs and platforms.
        return Selection(index=random.Random(f"{self.seed}:{group.sample_id}").randrange(len(videos)))

    def __repr__(self) -> str:
        return f"RandomSelector(seed={self.seed})"


class OracleSelector(Selector):
    """Picks the candidate with the highest oracle label (``CandidateGroup.labels``)."""

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        if group.labels is None:
            raise ValueError(
                f"the oracle selector needs labels, but sample {group.sample_id!r} has none (load the candidates with "
                "label_column=..., or write labels.json in each candidate folder)"
            )
        return Selection(index=_argmax_first(group.labels), scores=list(group.labels))

    def __repr__(self) -> str:
        return "OracleSelector()"


class ScoreSelector(Selector):
    """Picks the candidate that ``score_fn(reference, video)`` rates highest (lowest if ``higher_is_better=False``).

    ``score_fn`` receives uint8 tensors and may return a float, a 0-d tensor, or a metric result with a ``mean``
    (e.g. :class:`~icreward.metrics.CLIPSimilarity` and :class:`~icreward.metrics.FaceSim` modules).
    """

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], Any], higher_is_better: bool = True):
        self.score_fn = as_score_fn(score_fn)
        self.higher_is_better = higher_is_better

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        scores = [self.score_fn(reference, v) for v in videos]
        ranked = scores if self.higher_is_better else [-s for s in scores]
        return Selection(index=_argmax_first(ranked), scores=scores)


class RewardModelSelector(Selector):
    """Picks the candidate with the highest reward-model score (``model.score(references, videos)``).

    All candidates of an image are scored in batches of ``batch_size``. For :class:`~icreward.MLPRewardModel` the
    score is the average per-frame reward, the paper's ranking rule.
    """

    def __init__(self, model: Any, *, processor: Any = None, batch_size: int = 8):
        if not hasattr(model, "score"):
            raise TypeError(f"{type(model).__name__} has no score(references, videos) method")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        with torch.no_grad():
            scores = self.model.score(
                [reference] * len(videos), list(videos), processor=self.processor, batch_size=self.batch_size
            )
        scores = [float(s) for s in torch.as_tensor(scores).reshape(-1)]
        return Selection(index=_argmax_first(scores), scores=scores)

    def __repr__(self) -> str:
        return f"RewardModelSelector({type(self.model).__name__})"


def _is_reward_model(obj: Any) -> bool:
    # The reward models' batch API: score(references, videos) -> (N,) scores.
    return callable(getattr(obj, "score", None)) and not isinstance(obj, Selector)


def as_score_fn(obj: Any) -> ScoreFn:
    """Turn a reward model, a metric module or a callable into ``fn(reference, video) -> float``.

    * objects with ``score(references, videos)`` (the reward models): ``float(obj.score(reference, video))``;
    * callables returning a number, a 0-d tensor, or a result with ``mean`` (``CLIPSimResult``, ``FaceSimResult``).
      A ``FaceSimResult`` without any detected face gives NaN (undefined), never a fake 0.
    """
    if _is_reward_model(obj):

        def reward_model_score(reference: torch.Tensor, video: torch.Tensor) -> float:
            with torch.no_grad():
                return float(obj.score(reference, video))

        return reward_model_score
    if not callable(obj):
        raise TypeError(f"expected a reward model or a callable fn(reference, video), got {type(obj).__name__}")

    def score(reference: torch.Tensor, video: torch.Tensor) -> float:
        with torch.no_grad():
            return metric_value(obj(reference, video))

    return score


def metric_value(result: Any) -> float:
    """A metric's output as a float: numbers, 0-d tensors, and results with ``mean`` (NaN when no face was found)."""
    if isinstance(result, (int, float, np.number)):  # numpy scalars have a .mean() method: handle them first
        return float(result)
    if getattr(result, "has_face", True) is False:
        return float("nan")
    if hasattr(result, "mean") and not isinstance(result, (torch.Tensor, np.ndarray)):
        return metric_value(result.mean)
    if isinstance(result, (torch.Tensor, np.ndarray)):
        if result.size != 1 if isinstance(result, np.ndarray) else result.numel() != 1:
            raise ValueError(f"a metric must return one value per video, got shape {tuple(result.shape)}")
        return float(result.item())
    raise TypeError(
        f"a metric returned {type(result).__name__}; expected a number, a 0-d tensor or a result with .mean"
    )


def as_selector(obj: Any, *, seed: int = 0) -> Selector:
    """Build a selector: ``"random"``, ``"oracle"``, a :class:`Selector`, a reward model, or a score callable."""
    if isinstance(obj, str):
        if obj == "random":
            return RandomSelector(seed)
        if obj == "oracle":
            return OracleSelector()
        raise ValueError(f"unknown selector {obj!r}: the named selectors are 'random' and 'oracle'")
    if isinstance(obj, Selector):
        return obj
    if _is_reward_model(obj):
        return RewardModelSelector(obj)
    if callable(obj):
        return ScoreSelector(obj)
    raise TypeError(f"cannot use {type(obj).__name__} as a selector")


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (
    Selection,
    Selector,
    RandomSelector,
    OracleSelector,
    ScoreSelector,
    RewardModelSelector,
):
    _cls.__module__ = "icreward.evaluation.best_of_n"
