"""VBench / VBench++ consistency metrics on pre-computed features.

These are pure, differentiable torch functions: give them features from any extractor (DINO for subject
consistency, DreamSim for background consistency, CLIP, ...) and they return the score VBench would compute
from those features. Feature extraction lives in :mod:`icreward.data.autolabel`.

Two families:

* **I2V consistency** (VBench++ ``i2v_subject`` / ``i2v_background``), reference image vs. generated frames::

      score = 0.4 * max_i cos(ref, f_i) + 0.3 * mean_i cos(f_{i-1}, f_i) + 0.3 * min_i cos(f_{i-1}, f_i)

  The weights are those of ``vbench2_beta_i2v/i2v_subject.py`` and ``i2v_background.py`` (earlier VBench
  revisions of ``i2v_subject`` used ``(0.5, 0.5, 0.0)``; pass ``weights=`` to reproduce them).
* **Temporal consistency** (VBench ``subject_consistency`` / ``background_consistency``), frames only: for every
  frame ``i >= 1``, ``(cos(f_{i-1}, f_i) + cos(f_0, f_i)) / 2``, averaged over ``i``.

Conventions shared by every function here, all taken from VBench: features are L2-normalised first, and
every cosine similarity is clamped below at 0 (VBench's ``max(0.0, F.cosine_similarity(...))``), so scores lie
in ``[0, 1]``. VBench leaves the single-frame case undefined for I2V (``np.mean`` of an empty list is NaN);
here a one-frame video has perfect temporal consistency, i.e. its temporal terms are ``1.0`` — the same value
VBench's ``background_consistency`` returns when a video has no consecutive pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "I2V_CONSISTENCY_WEIGHTS",
    "background_consistency",
    "i2v_consistency_score",
    "i2v_consistency_scores",
    "subject_consistency",
    "temporal_consistency",
]

#: ``(max-to-reference, mean-consecutive, min-consecutive)`` weights of VBench++'s ``i2v_subject``/``i2v_background``.
I2V_CONSISTENCY_WEIGHTS: tuple[float, float, float] = (0.4, 0.3, 0.3)


def i2v_consistency_score(
    ref_feature: torch.Tensor,
    frame_features: torch.Tensor,
    *,
    weights: Sequence[float] = I2V_CONSISTENCY_WEIGHTS,
) -> torch.Tensor:
    """VBench++ image-to-video consistency of one video.

    Args:
        ref_feature: ``(D,)`` feature of the reference (conditioning) image.
        frame_features: ``(F, D)`` features of the generated frames, in temporal order.
        weights: ``(w_max, w_mean, w_min)``; defaults to VBench++'s ``(0.4, 0.3, 0.3)``.

    Returns:
        A 0-dim float tensor ``w_max * max_i c(ref, f_i) + w_mean * mean_i c(f_{i-1}, f_i) + w_min * min_i
        c(f_{i-1}, f_i)`` where ``c`` is the cosine similarity clamped at 0. With a single frame both temporal
        terms are 1.0. Differentiable with respect to both inputs.
    """
    if ref_feature.ndim != 1:
        raise ValueError(f"ref_feature must have shape (D,), got {tuple(ref_feature.shape)}")
    if frame_features.ndim != 2:
        raise ValueError(f"frame_features must have shape (F, D), got {tuple(frame_features.shape)}")
    return i2v_consistency_scores(ref_feature[None], frame_features[None], weights=weights)[0]


def i2v_consistency_scores(
    ref_features: torch.Tensor,
    frame_features: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    *,
    weights: Sequence[float] = I2V_CONSISTENCY_WEIGHTS,
) -> torch.Tensor:
    """Batched :func:`i2v_consistency_score`.

    Args:
        ref_features: ``(B, D)`` reference-image features.
        frame_features: ``(B, F, D)`` frame features.
        frame_mask: optional ``(B, F)`` boolean mask, ``True`` for real frames. Masked frames are removed from
            the sequence before anything is computed, so the frames on either side of a masked frame become
            consecutive (for the usual end-padding this is simply "ignore the padding"). Every row needs at
            least one real frame.
        weights: ``(w_max, w_mean, w_min)``.

    Returns:
        ``(B,)`` float tensor of scores in ``[0, 1]`` (when the weights sum to 1).
    """
    if ref_features.ndim != 2:
        raise ValueError(f"ref_features must have shape (B, D), got {tuple(ref_features.shape)}")
    if frame_features.ndim != 3:
        raise ValueError(f"frame_features must have shape (B, F, D), got {tuple(frame_features.shape)}")
    if ref_features.shape[0] != frame_features.shape[0] or ref_features.shape[-1] != frame_features.shape[-1]:
        raise ValueError(
            f"ref_features {tuple(ref_features.shape)} and frame_features {tuple(frame_features.shape)} must "
            "agree on batch size B and feature size D"
        )
    w_max, w_mean, w_min = _check_weights(weights)
    check_finite("ref_features", ref_features)
    check_finite("frame_features", frame_features)
    frames, valid = _compact_frames(frame_features, frame_mask)

    ref = F.normalize(ref_features.float(), dim=-1)
    frames = F.normalize(frames.float(), dim=-1)

    to_ref = torch.einsum("bd,bfd->bf", ref, frames).clamp(min=0.0)
    # Masked-out frames get -inf so they never win the max (every row has at least one real frame).
    max_to_ref = to_ref.masked_fill(~valid, float("-inf")).amax(dim=1)

    mean_consec, min_consec = _consecutive_stats(frames, valid)
    return w_max * max_to_ref + w_mean * mean_consec + w_min * min_consec


def temporal_consistency(frame_features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """VBench's frame-to-frame consistency: mean over ``i >= 1`` of ``(c(f_{i-1}, f_i) + c(f_0, f_i)) / 2``.

    This is the per-video value of VBench's ``subject_consistency`` (on DINO features) and
    ``background_consistency`` (on CLIP image features); ``c`` is the cosine similarity clamped at 0.

    Args:
        frame_features: ``(F, D)`` for one video or ``(B, F, D)`` for a batch.
        frame_mask: optional ``(B, F)`` (or ``(F,)``) boolean mask of real frames; masked frames are removed
            before computing, as in :func:`i2v_consistency_scores`.

    Returns:
        A 0-dim tensor for ``(F, D)`` input, ``(B,)`` for batched input. A single-frame video scores 1.0
        (VBench's ``background_consistency`` convention for a video with no frame pair).
    """
    unbatched = frame_features.ndim == 2
    if unbatched:
        frame_features = frame_features[None]
        frame_mask = None if frame_mask is None else frame_mask[None]
    if frame_features.ndim != 3:
        raise ValueError(f"frame_features must have shape (F, D) or (B, F, D), got {tuple(frame_features.shape)}")
    check_finite("frame_features", frame_features)
    frames, valid = _compact_frames(frame_features, frame_mask)
    frames = F.normalize(frames.float(), dim=-1)

    # After compaction the first real frame of every row is at index 0.
    to_first = torch.einsum("bd,bfd->bf", frames[:, 0], frames[:, 1:]).clamp(min=0.0)
    to_prev = (frames[:, :-1] * frames[:, 1:]).sum(-1).clamp(min=0.0)
    pair_valid = valid[:, 1:]
    per_pair = (to_first + to_prev) / 2
    n_pairs = pair_valid.sum(dim=1)
    total = (per_pair * pair_valid).sum(dim=1)
    scores = torch.where(n_pairs > 0, total / n_pairs.clamp(min=1), torch.ones_like(total))
    return scores[0] if unbatched else scores


def check_finite(name: str, features: torch.Tensor) -> None:
    """NaN or inf features (a diverged extractor, a corrupt cache) are refused by name instead of becoming a NaN
    score; so are values whose square overflows float32 (the L2 norm of ``3e38`` is inf)."""
    if not torch.isfinite(features).all():
        raise ValueError(f"`{name}` contains NaN or inf values")
    if features.numel() and features.detach().abs().amax().float() > 1e18:
        raise ValueError(f"`{name}` has values beyond 1e18; their L2 norm overflows float32")


def subject_consistency(frame_features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """VBench ``subject_consistency`` from frame features (VBench uses DINO ViT-B/16 CLS features).

    Same formula as :func:`temporal_consistency`; the name says which features to feed it.
    """
    return temporal_consistency(frame_features, frame_mask)


def background_consistency(frame_features: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """VBench ``background_consistency`` from frame features (VBench uses CLIP ViT-B/32 image embeddings).

    Same formula as :func:`temporal_consistency`; the name says which features to feed it.
    """
    return temporal_consistency(frame_features, frame_mask)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise ValueError(f"weights must be (w_max, w_mean, w_min), got {weights!r}")
    if any(float(w) < 0 for w in weights):
        raise ValueError(f"weights must be non-negative, got {weights!r}")
    return float(weights[0]), float(weights[1]), float(weights[2])


def _compact_frames(
    frame_features: torch.Tensor, frame_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real frames to the front (keeping their order); return frames and the prefix mask."""
    batch, num_frames = frame_features.shape[:2]
    if num_frames == 0:
        raise ValueError("frame_features has no frames (F == 0)")
    if frame_mask is None:
        return frame_features, torch.ones(batch, num_frames, dtype=torch.bool, device=frame_features.device)
    if frame_mask.shape != (batch, num_frames):
        raise ValueError(f"frame_mask must have shape {(batch, num_frames)}, got {tuple(frame_mask.shape)}")
    valid = frame_mask.to(device=frame_features.device, dtype=torch.bool)
    counts = valid.sum(dim=1)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"frame_mask has no real frame in batch row(s) {empty}")
    # A stable sort on "is padding" keeps the real frames in temporal order; gather keeps gradients.
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    frames = torch.gather(frame_features, 1, order[..., None].expand_as(frame_features))
    prefix = torch.arange(num_frames, device=frame_features.device)[None] < counts[:, None]
    return frames, prefix


def _consecutive_stats(frames: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and min of clamped cosines between consecutive real frames; 1.0 for rows with a single frame."""
    consec = (frames[:, :-1] * frames[:, 1:]).sum(-1).clamp(min=0.0)
    pair_valid = valid[:, 1:]
    n_pairs = pair_valid.sum(dim=1)
    has_pair = n_pairs > 0
    ones = torch.ones(frames.shape[0], dtype=frames.dtype, device=frames.device)
    if consec.shape[1] == 0:
        return ones, ones
    mean = (consec * pair_valid).sum(dim=1) / n_pairs.clamp(min=1)
    minimum = consec.masked_fill(~pair_valid, float("inf")).amin(dim=1)
    # torch.where, not arithmetic, so the inf of a pair-less row never reaches the gradient.
    return torch.where(has_pair, mean, ones), torch.where(has_pair, minimum, ones)
