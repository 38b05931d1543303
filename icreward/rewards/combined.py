"""The reward interface shared by the reward-feedback trainers, its wrappers, and a weighted combination.

A *video reward* maps generated videos to one score per video, differentiably, so that reward-feedback training
(DRaFT-K, IPRO) can backpropagate the score into the generator:

```python
scores = reward(video, reference_images, batch)   # (B,) float
```

- ``video``: ``(B, F, 3, H, W)`` float in ``[0, 1]``, carrying the autograd graph of the generator;
- ``reference_images``: ``(B, 3, H, W)`` float in ``[0, 1]``, the conditioning images at the video's size;
- ``batch``: a mapping with whatever else the trainer knows about the rows. :class:`RewardFeedbackTrainer` passes
  ``prompts`` (list of str), ``keys`` (a stable id per dataset row), ``images`` (the conditioning PIL images),
  ``ground_truth`` (the raw ``ground_truth`` column, or Nones) and, when a reward sets
  ``needs_ground_truth_frames``, ``ground_truth_frames`` (one ``uint8 (P, 3, h, w)`` tensor or None per row).

Any callable with that signature is a :class:`VideoReward`. The classes here add what trainers use on top:

- :class:`FaceReward` wraps :class:`~icreward.rewards.face.FaceIdentityReward` (IPRO's facial scoring mechanism)
  and caches one face pool per dataset row;
- :class:`RewardModelReward` wraps an :class:`~icreward.models.ICRewardModel` or
  :class:`~icreward.models.MLPRewardModel`: frames are sampled, resized and normalised *inside torch* with the
  model's processor settings, the model is frozen, and gradients flow to the pixels;
- :class:`CallableReward` wraps a plain function (``fn(video)``, ``fn(video, reference_images)`` or
  ``fn(video, reference_images, batch)``);
- :class:`CombinedReward` sums weighted rewards, returns each reward's value for logging, and guards against
  non-finite scores: a NaN/inf score is replaced by a fixed value, counted and warned about, and its gradient is
  cut, so that it never reaches the generator's parameters.

Rewards may define ``prepare(reference_image, ground_truth_frames=None, *, key=None)``: trainers call it once
per dataset row before training (full-resolution reference image, ground-truth frames as ``uint8`` tensors), so that
bad rows (for example a reference without a detectable face) fail before the first step, and per-row state such as
face pools is computed once.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "BaseVideoReward",
    "CallableReward",
    "CombinedReward",
    "CombinedRewardOutput",
    "FaceReward",
    "RewardModelReward",
    "VideoReward",
    "as_video_reward",
    "reward_key",
]


@runtime_checkable
class VideoReward(Protocol):
    """Anything that scores generated videos: ``(video, reference_images, batch) -> scores (B,)``.

    ``video`` is ``(B, F, 3, H, W)`` float in ``[0, 1]`` (differentiable), ``reference_images`` is ``(B, 3, H, W)``
    float in ``[0, 1]``, ``batch`` a mapping of row information (see the module docstring). Higher is better.
    """

    def __call__(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor: ...


class BaseVideoReward(nn.Module):
    """Base class of the reward wrappers: a :class:`VideoReward` that is an ``nn.Module`` (moves with ``.to``).

    Attributes:
        name: default name under which trainers log the reward.
        needs_ground_truth_frames: when True, trainers decode each row's ground-truth clip into
            ``batch["ground_truth_frames"]`` at every step. Rewards that only need the clip once should use
            :meth:`prepare` instead.
        last_stats: scalar diagnostics of the last call (for example ``faces_found_rate``), logged by trainers.
    """

    name: str = "reward"
    needs_ground_truth_frames: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.last_stats: dict[str, float] = {}

    def prepare(
        self,
        reference_image: torch.Tensor,
        ground_truth_frames: torch.Tensor | None = None,
        *,
        key: str | None = None,
    ) -> None:
        """Per-row setup before training (the default does nothing). May raise to reject a row."""

    def forward(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(video, reference_images, batch)")


def reward_key(reference_image: torch.Tensor, ground_truth: Any = None) -> str:
    """A stable key for a row from its reference pixels (and its ground-truth source): used to cache per-row state."""
    image = reference_image.detach()
    if image.is_floating_point():
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    digest = hashlib.sha1(image.cpu().contiguous().numpy().tobytes())
    digest.update(str(tuple(image.shape)).encode())
    if ground_truth is not None:
        if torch.is_tensor(ground_truth):
            digest.update(ground_truth.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(ground_truth).encode())
    return digest.hexdigest()


def _check_video(video: torch.Tensor, who: str) -> None:
    if not torch.is_tensor(video) or video.ndim != 5 or video.shape[2] != 3:
        shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
        raise ValueError(f"{who}: video must be a (B, F, 3, H, W) tensor, got {shape}")
    if not video.is_floating_point():
        raise ValueError(f"{who}: video must be float in [0, 1], got {video.dtype}")


# ---------------------------------------------------------------------------------------------------------------
# Face identity (IPRO)
# ---------------------------------------------------------------------------------------------------------------


class FaceReward(BaseVideoReward):
    """IPRO's face-identity reward (:class:`~icreward.rewards.face.FaceIdentityReward`) as a :class:`VideoReward`.

    Each dataset row has its own face pool: the faces of its reference image and, in ``mode="pool"`` (IPRO's facial
    scoring mechanism), of its ground-truth frames. Pools are built by :meth:`prepare` (trainers call it for every
    row before training, on the full-resolution reference and clip, where faces are easiest to detect) and cached
    under ``batch["keys"]``. A row met without a prepared pool gets one built from ``reference_images`` (and
    ``batch["ground_truth_frames"]`` when present) on first use.

    A generated video without any detected face scores the face reward's ``no_face_value`` with a zero gradient;
    ``last_stats`` reports ``faces_found_rate`` (fraction of generated frames with a face) and ``no_face_videos``.

    Args:
        face_reward: a :class:`~icreward.rewards.face.FaceIdentityReward`, or the name of its embedder
            (``"dlib"``, ``"facenet"``, ``"arcface"``) to build one with ``face_kwargs``.
        name: logging name.
    """

    name = "face"

    def __init__(self, face_reward: Any = "dlib", *, name: str = "face", **face_kwargs: Any):
        super().__init__()
        from .face import FaceIdentityReward

        if isinstance(face_reward, str):
            face_reward = FaceIdentityReward(face_reward, **face_kwargs)
        elif face_kwargs:
            raise ValueError(f"face_kwargs {sorted(face_kwargs)} only apply when face_reward is an embedder name")
        if not isinstance(face_reward, FaceIdentityReward):
            raise TypeError(f"face_reward must be a FaceIdentityReward or an embedder name, got {type(face_reward)}")
        self.face = face_reward
        self.name = name
        self._pools: dict[str, torch.Tensor] = {}

    @property
    def num_pools(self) -> int:
        """Number of cached face pools (one per prepared row)."""
        return len(self._pools)

    def prepare(
        self,
        reference_image: torch.Tensor,
        ground_truth_frames: torch.Tensor | None = None,
        *,
        key: str | None = None,
    ) -> None:
        """Build and cache the row's face pool; raises :class:`~icreward.rewards.face.FaceNotFoundError` for a
        reference (or a ground-truth clip) without a detectable face."""
        key = key if key is not None else reward_key(reference_image, ground_truth_frames)
        if key in self._pools:
            return
        # "reference" mode scores against the reference face alone; the clip is not part of its pool.
        frames = ground_truth_frames if self.face.mode == "pool" else None
        self._pools[key] = self.face.build_pool(reference_image, frames)

    def forward(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        _check_video(video, "FaceReward")
        batch = batch or {}
        size = video.shape[0]
        keys = list(batch.get("keys") or [None] * size)
        frames = list(batch.get("ground_truth_frames") or [None] * size)
        if len(keys) != size or len(frames) != size:
            raise ValueError(f"FaceReward: batch has {len(keys)} keys / {len(frames)} clips for {size} videos")
        pools = []
        for b in range(size):
            key = keys[b] if keys[b] is not None else reward_key(reference_images[b], frames[b])
            if key not in self._pools:
                self.prepare(reference_images[b], frames[b], key=key)
            pools.append(self._pools[key])
        scores = self.face(video, references=pools)
        stats = self.face.last_stats
        self.last_stats = {
            "faces_found_rate": float(stats.get("faces_found_rate", 0.0)),
            "no_face_videos": float(stats.get("num_no_face_videos", 0)),
        }
        return scores


# ---------------------------------------------------------------------------------------------------------------
# Learned reward models (ICReward, MLP baseline)
# ---------------------------------------------------------------------------------------------------------------


class RewardModelReward(BaseVideoReward):
    """An icreward reward model (:class:`~icreward.models.ICRewardModel`, :class:`~icreward.models.MLPRewardModel`)
    as a differentiable :class:`VideoReward`.

    ``ICRewardProcessor`` works on ``uint8`` frames (not differentiable); this wrapper reproduces its steps in torch
    on the float video: ``num_frames`` evenly spaced frames (:func:`icreward.video.sample_frame_indices`), resize
    (``"crop"``: short side to ``image_size`` then centre crop; ``"squash"``: both sides), then normalisation with
    the backbone's mean and std. The model is frozen (``requires_grad_(False)``, eval mode); the backbone runs with
    autograd on, so gradients reach the pixels (the models' own ``forward`` skips autograd through a frozen
    backbone, so frame features are computed here and passed as ``frame_features``).

    Args:
        model: the reward model (any model whose ``forward(pixel_values=, reference_pixel_values=)`` returns
            ``scores`` also works, through its own forward).
        processor: an ``ICRewardProcessor``; defaults to ``model.get_processor()``. Its ``image_size``,
            ``num_frames``, ``resize_mode``, ``image_mean`` and ``image_std`` are used.
        num_frames: overrides the processor's frame count.
        name: logging name; defaults to ``"icreward"`` / ``"mlp_reward"`` / the model class name.
    """

    def __init__(
        self, model: nn.Module, *, processor: Any = None, num_frames: int | None = None, name: str | None = None
    ):
        super().__init__()
        if processor is None:
            if not hasattr(model, "get_processor"):
                raise ValueError(
                    f"{type(model).__name__} has no get_processor(); pass processor=ICRewardProcessor(...)"
                )
            processor = model.get_processor()
        self.model = model.eval().requires_grad_(False)
        self.image_size = int(processor.image_size)
        self.num_frames = int(num_frames if num_frames is not None else processor.num_frames)
        self.resize_mode = getattr(processor, "resize_mode", "crop")
        if self.resize_mode not in ("crop", "squash"):
            raise ValueError(f"unsupported resize_mode {self.resize_mode!r}; expected 'crop' or 'squash'")
        self.register_buffer("image_mean", torch.tensor(processor.image_mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("image_std", torch.tensor(processor.image_std, dtype=torch.float32).view(3, 1, 1))
        default_names = {"ICRewardModel": "icreward", "MLPRewardModel": "mlp_reward"}
        self.name = name or default_names.get(type(model).__name__, type(model).__name__.lower())

    def train(self, mode: bool = True) -> RewardModelReward:
        # the reward model is a fixed judge: no dropout, no batch-norm updates, whatever the trainer's mode
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float in ``[0, 1]`` -> normalised ``(N, 3, S, S)``, differentiably."""
        size = self.image_size
        height, width = images.shape[-2:]
        x = images.float()
        if self.resize_mode == "squash":
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        else:
            scale = size / min(height, width)
            new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
            if (new_h, new_w) != (height, width):
                x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            x = x[..., top : top + size, left : left + size]
        return (x.clamp(0, 1) - self.image_mean) / self.image_std

    def forward(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        from ..video import sample_frame_indices

        _check_video(video, "RewardModelReward")
        size, num_frames = video.shape[:2]
        if reference_images.shape[0] != size:
            raise ValueError(f"got {reference_images.shape[0]} reference images for {size} videos")
        device = self.image_mean.device
        index = torch.tensor(sample_frame_indices(num_frames, self.num_frames), device=video.device)
        frames = video.index_select(1, index).to(device)
        pixel_values = self.preprocess(frames.flatten(0, 1)).unflatten(0, (size, len(index)))
        with torch.no_grad():
            reference_pixel_values = self.preprocess(reference_images.to(device))
        return self._score(pixel_values, reference_pixel_values).float().to(video.device)

    def _score(self, pixel_values: torch.Tensor, reference_pixel_values: torch.Tensor) -> torch.Tensor:
        # icreward reward models keep a frozen backbone out of autograd unless the pixels need gradients, so the
        # plain forward is differentiable with respect to the generated frames (for every backbone family).
        dtype = next(self.model.parameters()).dtype
        output = self.model(
            pixel_values=pixel_values.to(dtype), reference_pixel_values=reference_pixel_values.to(dtype)
        )
        scores = output.scores if hasattr(output, "scores") else output[0]
        return scores.reshape(-1)


# ---------------------------------------------------------------------------------------------------------------
# Plain functions
# ---------------------------------------------------------------------------------------------------------------


class CallableReward(BaseVideoReward):
    """A plain function as a :class:`VideoReward`.

    ``fn`` is called with as many of ``(video, reference_images, batch)`` as it takes positional parameters (1, 2 or
    3; ``*args`` gets all three) and returns ``(B,)`` scores (a tensor, to be differentiable; numbers and lists are
    accepted but give no gradient). An ``nn.Module`` ``fn`` is registered as a submodule, so it moves with ``.to``.

    Example::

        brightness = CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness")

    Args:
        fn: the scoring function.
        name: logging name; defaults to the function's ``__name__``.
        needs_ground_truth_frames: ask the trainer to decode ground-truth clips into ``batch["ground_truth_frames"]``.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, needs_ground_truth_frames: bool = False):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn  # an nn.Module becomes a submodule through nn.Module.__setattr__
        self.num_args = _num_positional_args(fn)
        fallback = type(fn).__name__ if isinstance(fn, nn.Module) else "reward"
        self.name = name or getattr(fn, "__name__", fallback)
        if self.name == "<lambda>":
            self.name = "reward"
        self.needs_ground_truth_frames = bool(needs_ground_truth_frames)

    def forward(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        args = (video, reference_images, batch if batch is not None else {})[: self.num_args]
        scores = self.fn(*args)
        if not torch.is_tensor(scores):
            scores = torch.as_tensor(scores, dtype=torch.float32, device=video.device)
        return scores


def _num_positional_args(fn: Callable[..., Any]) -> int:
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume the full protocol
        return 3
    count = 0
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return 3
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    if not 1 <= count <= 3:
        raise ValueError(
            f"a reward function takes (video), (video, reference_images) or (video, reference_images, batch); "
            f"{getattr(fn, '__name__', fn)} takes {count} positional arguments"
        )
    return count


def as_video_reward(reward: Any, *, name: str | None = None) -> BaseVideoReward:
    """Wrap what users pass as a reward into a :class:`BaseVideoReward`.

    ``FaceIdentityReward`` -> :class:`FaceReward`; ``ICRewardModel`` / ``MLPRewardModel`` (or any ``PreTrainedModel``
    with ``get_processor``) -> :class:`RewardModelReward`; a path or Hub id -> the reward model loaded with
    ``AutoModel`` and wrapped; a :class:`BaseVideoReward` is kept (renamed when ``name`` is given); any other callable
    -> :class:`CallableReward`.
    """
    from .face import FaceIdentityReward

    if isinstance(reward, BaseVideoReward):
        wrapped = reward
    elif isinstance(reward, FaceIdentityReward):
        wrapped = FaceReward(reward)
    elif isinstance(reward, str):
        from transformers import AutoModel

        import icreward.models  # noqa: F401  (registers the reward models with AutoModel)

        wrapped = RewardModelReward(AutoModel.from_pretrained(reward))
    elif isinstance(reward, nn.Module) and hasattr(reward, "get_processor"):
        wrapped = RewardModelReward(reward)
    elif callable(reward):
        wrapped = CallableReward(reward)
    else:
        raise TypeError(f"cannot use a {type(reward).__name__} as a video reward; pass a callable or a reward model")
    if name is not None:
        wrapped.name = name
    return wrapped


# ---------------------------------------------------------------------------------------------------------------
# Weighted combination with a non-finite guard
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CombinedRewardOutput:
    """What :meth:`CombinedReward.compute` returns.

    Attributes:
        total: ``(B,)`` weighted sum ``sum_i w_i * r_i`` (differentiable).
        rewards: per reward name, the ``(B,)`` guarded, unweighted scores (differentiable).
        weights: per reward name, its weight.
        num_nonfinite: per reward name, how many scores were NaN/inf and replaced in this call.
        stats: scalar diagnostics, ``"<name>/<stat>"`` from each reward's ``last_stats``.
    """

    total: torch.Tensor
    rewards: dict[str, torch.Tensor]
    weights: dict[str, float]
    num_nonfinite: dict[str, int]
    stats: dict[str, float] = field(default_factory=dict)


class CombinedReward(BaseVideoReward):
    """A weighted sum of :class:`VideoReward` s, with per-reward values for logging and a NaN/inf guard.

    Example::

        reward = CombinedReward({
            "face": (FaceReward("dlib"), 0.1),                 # IPRO's face-reward weight
            "icreward": (RewardModelReward(icreward_model), 0.05),
        })
        out = reward.compute(video, reference_images, batch)  # out.total, out.rewards["face"], ...

    Non-finite scores: a reward's NaN or inf score is replaced with ``nonfinite_value``, counted
    (``num_nonfinite``, ``total_nonfinite``) and logged as a warning (the first time per reward, then at debug level).
    The replaced sample also gets a zero gradient through that reward, and non-finite gradient entries on the video
    are zeroed, so a broken reward can never write NaN into the generator's parameters.

    Args:
        rewards: ``{name: reward}`` or ``{name: (reward, weight)}``; rewards are wrapped with
            :func:`as_video_reward`. Weights default to 1. Names must be non-empty and contain no ``.``.
        nonfinite_value: the score given in place of a non-finite one.
    """

    name = "combined"

    def __init__(self, rewards: Mapping[str, Any], *, nonfinite_value: float = 0.0):
        super().__init__()
        if not isinstance(rewards, Mapping) or not rewards:
            raise ValueError("CombinedReward needs a non-empty mapping {name: reward or (reward, weight)}")
        self.nonfinite_value = float(nonfinite_value)
        if not torch.isfinite(torch.tensor(self.nonfinite_value)):
            raise ValueError(f"nonfinite_value must be finite, got {nonfinite_value}")
        self.rewards = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for key, value in rewards.items():
            if not isinstance(key, str) or not key or "." in key:
                raise ValueError(f"reward names must be non-empty strings without '.', got {key!r}")
            reward, weight = value if isinstance(value, tuple) else (value, 1.0)
            weight = float(weight)
            if not torch.isfinite(torch.tensor(weight)):
                raise ValueError(f"weight of reward {key!r} must be finite, got {weight}")
            self.rewards[key] = as_video_reward(reward, name=key)
            self.weights[key] = weight
        self.total_nonfinite: dict[str, int] = dict.fromkeys(self.weights, 0)
        self.num_nonfinite_gradients = 0

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    @property
    def needs_ground_truth_frames(self) -> bool:  # type: ignore[override]
        return any(getattr(reward, "needs_ground_truth_frames", False) for reward in self.rewards.values())

    def prepare(
        self,
        reference_image: torch.Tensor,
        ground_truth_frames: torch.Tensor | None = None,
        *,
        key: str | None = None,
    ) -> None:
        for reward in self.rewards.values():
            reward.prepare(reference_image, ground_truth_frames, key=key)

    def forward(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """The weighted total ``(B,)`` (so a ``CombinedReward`` is itself a :class:`VideoReward`)."""
        return self.compute(video, reference_images, batch).total

    def compute(
        self, video: torch.Tensor, reference_images: torch.Tensor, batch: Mapping[str, Any] | None = None
    ) -> CombinedRewardOutput:
        """Score ``video`` with every reward; see :class:`CombinedRewardOutput`."""
        _check_video(video, "CombinedReward")
        batch = batch if batch is not None else {}
        size = video.shape[0]
        total = video.new_zeros(size, dtype=torch.float32)
        values, counts, stats = {}, {}, {}
        for name, reward in self.rewards.items():
            bad_holder: dict[str, torch.Tensor] = {}
            scores = reward(self._guarded_input(video, bad_holder), reference_images, batch)
            scores = self._check_scores(name, scores, size, video.device)
            bad = ~torch.isfinite(scores.detach())
            bad_holder["mask"] = bad
            count = int(bad.sum())
            if count:
                self._report_nonfinite(name, count, size)
                scores = torch.where(bad, torch.full_like(scores, self.nonfinite_value), scores)
            values[name], counts[name] = scores, count
            total = total + self.weights[name] * scores
            for stat, value in (getattr(reward, "last_stats", None) or {}).items():
                stats[f"{name}/{stat}"] = float(value)
        self.last_stats = stats
        return CombinedRewardOutput(
            total=total, rewards=values, weights=dict(self.weights), num_nonfinite=counts, stats=stats
        )

    def _guarded_input(self, video: torch.Tensor, bad_holder: dict[str, torch.Tensor]) -> torch.Tensor:
        """A view of ``video`` whose incoming gradient drops replaced samples and non-finite entries.

        ``torch.where`` alone is not enough: the backward of a NaN score still multiplies a zero by NaN inside the
        reward, which would spread NaN through the batched decoder into every parameter.
        """
        if not video.requires_grad:
            return video
        view = video.view_as(video)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            bad = bad_holder.get("mask")
            if bad is not None and bool(bad.any()):
                grad = grad.masked_fill(bad.to(grad.device).view(-1, *([1] * (grad.ndim - 1))), 0.0)
            finite = torch.isfinite(grad)
            if not bool(finite.all()):
                self.num_nonfinite_gradients += int((~finite).sum())
                logger.warning(
                    "a reward produced %d non-finite gradient entries; they were zeroed", int((~finite).sum())
                )
                grad = torch.where(finite, grad, torch.zeros_like(grad))
            return grad

        view.register_hook(hook)
        return view

    @staticmethod
    def _check_scores(name: str, scores: Any, size: int, device: torch.device) -> torch.Tensor:
        if not torch.is_tensor(scores):
            scores = torch.as_tensor(scores, dtype=torch.float32, device=device)
        if scores.shape != (size,):
            raise ValueError(f"reward {name!r} returned scores of shape {tuple(scores.shape)}; expected ({size},)")
        return scores.to(device=device, dtype=torch.float32)

    def _report_nonfinite(self, name: str, count: int, size: int) -> None:
        first = self.total_nonfinite[name] == 0
        self.total_nonfinite[name] += count
        level = logging.WARNING if first else logging.DEBUG
        logger.log(
            level,
            "reward %r returned %d non-finite score(s) out of %d; replaced with %s and cut from the gradient "
            "(%d so far%s)",
            name,
            count,
            size,
            self.nonfinite_value,
            self.total_nonfinite[name],
            "; further occurrences are logged at debug level" if first else "",
        )
