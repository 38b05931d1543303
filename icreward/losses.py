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
    "flow_sde_transition",
    "gaussian_log_prob",
    "gaussian_transition_kl",
    "grpo_clipped_loss",
    "group_advantages",
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


# ---------------------------------------------------------------------------------------------------------------
# Online RL on the SDE form of the flow-matching sampler (Flow-GRPO family)
# ---------------------------------------------------------------------------------------------------------------


def flow_sde_transition(
    sample: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    noise_level: float,
    sigma_max: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of one step ``x_sigma -> x_sigma_next`` of the SDE that shares the marginals of
    the flow-matching ODE ``dx = v dsigma`` (Flow-GRPO, Liu et al. 2025), for ``x_sigma = (1 - sigma) x0 + sigma n``.

    With ``dt = sigma_next - sigma < 0`` and ``s = noise_level * sqrt(sigma / (1 - sigma))``:
    ``mean = x + [v + s^2 / (2 sigma) * (x + (1 - sigma) v)] * dt`` and ``std = s * sqrt(-dt)``. ``noise_level = 0``
    gives the Euler step of the ODE with ``std = 0``. ``s`` diverges as ``sigma -> 1``, so with ``sigma_max`` (Flow-GRPO:
    the schedule's second sigma) ``min(sigma, sigma_max)`` stands in for ``sigma`` inside ``s`` only. That matters for
    the first step of schedules starting at or just below 1 (UniPC's flow sigmas start at 0.999999, where ``s`` would
    be about 700 times ``noise_level``); ``sigma_max`` is required when ``sigma = 1``.

    ``sigma`` / ``sigma_next`` are scalars or one value per sample. Returns ``(mean, std)``; ``mean`` is float32
    shaped like ``sample``, ``std`` float32 broadcastable to it (``(B, 1, ...)``).
    """
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if sample.shape != velocity.shape:
        raise ValueError(f"sample shape {tuple(sample.shape)} != velocity shape {tuple(velocity.shape)}")
    x, v = sample.float(), velocity.float()
    view = (-1, *([1] * (x.ndim - 1)))
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0]).reshape(view)
    sigma_next = torch.as_tensor(sigma_next, dtype=torch.float32, device=x.device).expand(x.shape[0]).reshape(view)
    dt = sigma_next - sigma
    if bool((dt >= 0).any()) or bool((sigma > 1).any()) or bool((sigma_next < 0).any()):
        raise ValueError("flow_sde_transition needs 1 >= sigma > sigma_next >= 0")
    if noise_level == 0:
        return x + v * dt, torch.zeros_like(sigma)
    if sigma_max is not None and not 0 < sigma_max < 1:
        raise ValueError(f"sigma_max must be in (0, 1), got {sigma_max}")
    if sigma_max is None and bool((sigma >= 1).any()):
        raise ValueError("sigma = 1 needs a sigma_max in (0, 1) for the noise scale")
    capped = sigma if sigma_max is None else sigma.clamp(max=sigma_max)
    scale = noise_level * torch.sqrt(capped / (1 - capped))
    mean = x + (v + scale.pow(2) / (2 * sigma) * (x + (1 - sigma) * v)) * dt
    return mean, scale * torch.sqrt(-dt)


def gaussian_log_prob(value: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample log-density of ``value`` under ``N(mean, std^2)`` per element, averaged over every dimension but
    the first: ``(B, ...) -> (B,)`` (Flow-GRPO's per-step log-probability; the mean keeps ratios of large latents in a
    usable range). ``value`` is treated as a constant (detached), as a sampled action is."""
    if value.shape != mean.shape:
        raise ValueError(f"value shape {tuple(value.shape)} != mean shape {tuple(mean.shape)}")
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    if bool((std <= 0).any()):
        raise ValueError("gaussian_log_prob needs std > 0 (noise_level = 0 is a deterministic sampler)")
    std = std.expand_as(mean)
    log_density = -((value.detach().float() - mean.float()) ** 2) / (2 * std**2) - torch.log(std)
    log_density = log_density - 0.5 * math.log(2 * math.pi)
    return log_density.reshape(log_density.shape[0], -1).mean(dim=1)


def gaussian_transition_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, std^2) || N(ref_mean, std^2))`` per element, averaged over every dimension but the first:
    ``||mean - ref_mean||^2 / (2 std^2)``, ``(B,)``. The reference is detached."""
    _check_same_shape(mean=mean, ref_mean=ref_mean)
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device).expand_as(mean)
    kl = (mean.float() - ref_mean.detach().float()) ** 2 / (2 * std**2)
    return kl.reshape(kl.shape[0], -1).mean(dim=1)


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's group-relative advantages: ``(r - mean_g) / (std_g + eps)`` within each group of ``group_size``
    consecutive rewards (``std`` the population standard deviation; ``scale=False`` only centres).

    Returns ``(advantages (B,), per-group std (B / group_size,))``: a group whose samples all score alike has zero
    spread and zero advantages, i.e. no learning signal (what IPRO argues happens to same-prompt videos).
    """
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-d, got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    grouped = rewards.detach().float().reshape(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)
    advantages = grouped - mean
    if scale:
        advantages = advantages / (std + eps)
    return advantages.reshape(-1), std.reshape(-1)


def grpo_clipped_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped surrogate of PPO / GRPO, per sample: ``max(-A * rho, -A * clip(rho, 1 - epsilon, 1 + epsilon))``
    with ``rho = exp(log_prob - old_log_prob)`` (``old_log_prob`` is detached).

    Returns ``(loss, low_clipped, high_clipped)``; the last two are float masks of the samples where the clipped
    term is the one taken (``rho < 1 - epsilon`` with ``A < 0``, ``rho > 1 + epsilon`` with ``A > 0``): TRL's
    ``clip_ratio/low_mean`` and ``clip_ratio/high_mean``.
    """
    _check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    ratio = torch.exp(log_prob.float() - old_log_prob.detach().float())
    advantages = advantages.detach().float()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - epsilon, 1 + epsilon)
    low = ((ratio < 1 - epsilon) & (advantages < 0)).float()
    high = ((ratio > 1 + epsilon) & (advantages > 0)).float()
    return torch.maximum(unclipped, clipped), low, high


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all inputs must have the same shape, got {shapes}")
