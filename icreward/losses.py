"""Pure loss functions shared by the trainers.

Every function returns *per-sample* losses (no reduction) so trainers can weight, mask and log them; take
``.mean()`` for the scalar objective. The formulas follow ``DESIGN.md`` exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "bradley_terry_loss",
    "diffusion_dpo_loss",
    "dpo_implicit_accuracy",
    "per_sample_mse",
    "velocity_kl",
]


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every dimension but the first: ``(B, ...) -> (B,)``, computed in float32."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    diff = prediction.float() - target.float()
    return diff.pow(2).reshape(diff.shape[0], -1).mean(dim=1)


def diffusion_dpo_loss(
    model_w: torch.Tensor,
    model_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Diffusion-DPO / Flow-DPO loss (Wallace et al. 2023; the Flow-DPO variant of VideoReward).

    Each argument is the per-sample MSE of a prediction against its target (noise for epsilon models, the
    velocity ``noise - x0`` for flow matching); winner (``w``) and loser (``l``) share noise and timestep.
    Returns ``-logsigmoid(-0.5 * beta * ((model_w - ref_w) - (model_l - ref_l)))`` per pair.
    """
    _check_same_shape(model_w=model_w, model_l=model_l, ref_w=ref_w, ref_l=ref_l)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    inside = -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))
    return -F.logsigmoid(inside)


def dpo_implicit_accuracy(
    model_w: torch.Tensor, model_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor
) -> torch.Tensor:
    """1.0 where the policy improved the winner more than the loser: ``(model_w - ref_w) < (model_l - ref_l)``."""
    return ((model_w - ref_w) < (model_l - ref_l)).float()


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    ties: torch.Tensor | None = None,
    k: float = 5.0,
) -> torch.Tensor:
    """Bradley-Terry loss on reward logits, optionally with ties (Rao-Kupper, as in VideoAlign).

    With ``ties=None``: ``-logsigmoid(r_c - r_r)``. Otherwise, for a non-tied pair
    ``-logsigmoid(r_c - r_r - log k)`` and for a tied pair
    ``-logsigmoid(r_c - r_r - log k) - logsigmoid(r_r - r_c - log k) - log(k^2 - 1)``.
    """
    _check_same_shape(r_chosen=r_chosen, r_rejected=r_rejected)
    diff = r_chosen.float() - r_rejected.float()
    if ties is None:
        return -F.logsigmoid(diff)
    if k <= 1.0:
        raise ValueError(f"k must be > 1 for the tie model (log(k^2 - 1) must exist), got {k}")
    ties = ties.to(device=diff.device).bool()
    if ties.shape != diff.shape:
        raise ValueError(f"ties shape {tuple(ties.shape)} != rewards shape {tuple(diff.shape)}")
    log_k = math.log(k)
    win = -F.logsigmoid(diff - log_k)
    tie = win - F.logsigmoid(-diff - log_k) - math.log(k * k - 1.0)
    return torch.where(ties, tie, win)


def velocity_kl(
    v_theta: torch.Tensor | list[torch.Tensor],
    v_ref: torch.Tensor | list[torch.Tensor],
    weights: torch.Tensor | list[float] | None = None,
) -> torch.Tensor:
    """KL regulariser on velocity predictions (IPRO): ``sum_t w_t * ||v_theta(x_t, t) - v_ref(x_t, t)||^2``.

    ``v_theta`` / ``v_ref`` are sequences (one entry per trained denoising step) of tensors ``(B, ...)``, or
    stacked tensors ``(K, B, ...)``. The squared norm is the per-sample mean over non-batch dimensions (so
    the value does not scale with resolution). Returns per-sample values ``(B,)``; ``weights`` default to 1.
    """
    v_theta = torch.stack(list(v_theta)) if not torch.is_tensor(v_theta) else v_theta
    v_ref = torch.stack(list(v_ref)) if not torch.is_tensor(v_ref) else v_ref
    _check_same_shape(v_theta=v_theta, v_ref=v_ref)
    num_steps = v_theta.shape[0]
    if weights is None:
        weights = torch.ones(num_steps, device=v_theta.device)
    weights = torch.as_tensor(weights, dtype=torch.float32, device=v_theta.device)
    if weights.shape != (num_steps,):
        raise ValueError(f"weights must have one entry per step ({num_steps}), got shape {tuple(weights.shape)}")
    sq = (v_theta.float() - v_ref.float().detach()).pow(2)
    per_step = sq.reshape(num_steps, sq.shape[1], -1).mean(dim=2)  # (K, B)
    return (weights[:, None] * per_step).sum(dim=0)


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all inputs must have the same shape, got {shapes}")
