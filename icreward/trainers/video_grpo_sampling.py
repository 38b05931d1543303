"""The sampler of :class:`~icreward.trainers.video_grpo_trainer.VideoGRPOTrainer`: the SDE form of the flow-matching
ODE on the pipeline scheduler's sigmas (Flow-GRPO), the module the trainer optimises (the trained transitions'
log-probabilities and KL), and the sampler that repeats batches for ``num_iterations > 1``."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters import VideoModelAdapter
from ..losses import flow_sde_transition, gaussian_log_prob, gaussian_transition_kl
from .adapter_lora import seeded_generator

__all__ = ["SDETrajectory", "flow_sde_schedule", "sample_sde_trajectory"]


def flow_sde_schedule(adapter: VideoModelAdapter, num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model timesteps ``(T,)`` and sigmas ``(T + 1,)`` (from 1 down to 0) of the pipeline's own flow-matching
    scheduler for ``num_inference_steps`` (its shift and spacing; a copy is set, the pipeline's is untouched).

    Raises for a family that is not flow matching (CogVideoX's v-prediction DDIM has no sigmas in this sense) and for
    a scheduler without flow sigmas (e.g. UniPC without ``use_flow_sigmas``).
    """
    if adapter.prediction_type != "flow":
        raise ValueError(
            f"VideoGRPOTrainer samples with the SDE form of the flow-matching ODE, but {adapter.family} predicts "
            f"{adapter.prediction_type!r} (a DDIM-family sampler): its stochastic transition would be DDIM with eta > 0, "
            "which this trainer does not implement. Use a flow-matching family (Wan 2.1 / Wan 2.2 I2V), or "
            "VideoDPOTrainer / RewardFeedbackTrainer for this model."
        )
    if type(adapter).denoise_step is not VideoModelAdapter.denoise_step:
        raise ValueError(
            f"{type(adapter).__name__} has a sampler step of its own (denoise_step; e.g. LTX-Video keeps its "
            "conditioning tokens out of the update): VideoGRPOTrainer's SDE transition assumes every latent follows "
            "the plain flow-matching update, so it does not support this family"
        )
    scheduler = copy.deepcopy(adapter.scheduler)
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    sigmas = getattr(scheduler, "sigmas", None)
    name = type(scheduler).__name__
    if sigmas is None or getattr(scheduler.config, "use_flow_sigmas", True) is False:
        raise ValueError(f"the pipeline's scheduler {name} has no flow-matching sigmas (set use_flow_sigmas=True)")
    timesteps = torch.as_tensor(scheduler.timesteps).float()[:num_inference_steps]
    sigmas = torch.as_tensor(sigmas).float()[: num_inference_steps + 1]
    if len(timesteps) != num_inference_steps or len(sigmas) != num_inference_steps + 1:
        raise ValueError(
            f"{name} gave {len(timesteps)} timesteps / {len(sigmas)} sigmas for {num_inference_steps} steps"
        )
    if float(sigmas[-1]) != 0.0 or float(sigmas[0]) > 1.0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"{name}'s sigmas must decrease from <= 1 to 0, got {sigmas.tolist()}")
    _check_euler_parametrisation(adapter, timesteps)
    return timesteps, sigmas


def _check_euler_parametrisation(adapter: VideoModelAdapter, timesteps: torch.Tensor) -> None:
    """The family's deterministic step must be the Euler step ``x + (s' - s) v`` with ``s = t / num_train_timesteps``
    (the ODE whose SDE form is sampled): checked numerically on a random tensor."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 2, 2, 2, generator=g), torch.randn(2, 3, 2, 2, 2, generator=g)
    t = torch.stack([timesteps[0], timesteps[-1]])
    t_next = torch.zeros(2)
    try:
        stepped = adapter.scheduler_step(x, v, t, t_next)
    except Exception as error:
        raise ValueError(f"cannot check the flow-matching step of {type(adapter).__name__}: {error}") from error
    expected = x + (t_next - t).view(-1, 1, 1, 1, 1) / adapter.num_train_timesteps * v
    if stepped.shape != x.shape or not torch.allclose(stepped.float(), expected, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"{type(adapter).__name__}.scheduler_step is not the flow-matching Euler step x + (s' - s) v with s = t / "
            f"{adapter.num_train_timesteps}: VideoGRPOTrainer's SDE transition does not apply to it"
        )


def second_sigma(sigmas: torch.Tensor) -> float | None:
    """The schedule's second sigma (Flow-GRPO): the noise scale of the first step uses it in place of a first sigma
    at or just below 1. None for a one-step schedule."""
    return float(sigmas[1]) if len(sigmas) > 2 else None


def _guided_velocity(
    adapter: VideoModelAdapter,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditions: Mapping[str, Any],
    negative_conditions: Mapping[str, Any] | None,
    guidance_scale: float,
) -> torch.Tensor:
    """The (classifier-free guided) velocity; ``timesteps`` one per sample."""
    if guidance_scale == 1.0:
        return adapter.predict(latents, timesteps, dict(conditions))
    if negative_conditions is None:
        raise ValueError("guidance_scale != 1 needs negative_conditions")
    both = {
        k: torch.cat([negative_conditions[k], conditions[k]]) if torch.is_tensor(conditions[k]) else conditions[k]
        for k in conditions
    }
    uncond, cond = adapter.predict(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), both).chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@dataclass
class SDETrajectory:
    """What :func:`sample_sde_trajectory` returns.

    Attributes:
        latents: ``(T + 1, N, ...)``: ``x_0`` is the initial noise, ``latents[-1]`` the sample.
        log_probs: ``(T, N)``: log-probability of each transition under the sampling policy (zeros for the ODE).
    """

    latents: torch.Tensor
    log_probs: torch.Tensor


@torch.no_grad()
def sample_sde_trajectory(
    adapter: VideoModelAdapter,
    noise: torch.Tensor,
    conditions: Mapping[str, Any],
    timesteps: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_level: float,
    generators: Sequence[torch.Generator] | None = None,
    negative_conditions: Mapping[str, Any] | None = None,
    guidance_scale: float = 1.0,
) -> SDETrajectory:
    """Sample from ``noise`` with the SDE (``noise_level > 0``; sample ``n``'s noise drawn from ``generators[n]``) or
    the ODE (``noise_level = 0``: Euler on the same sigmas), keeping every intermediate latent and the log-probability
    of every transition. No gradients."""
    num_steps = len(timesteps)
    if len(sigmas) != num_steps + 1:
        raise ValueError(f"need T + 1 = {num_steps + 1} sigmas, got {len(sigmas)}")
    if noise_level > 0 and (generators is None or len(generators) != noise.shape[0]):
        raise ValueError("the SDE needs one generator per sample")
    sigma_max = second_sigma(sigmas)
    x = noise.float()
    latents, log_probs = [x], []
    for i in range(num_steps):
        t = timesteps[i].to(x.device).expand(x.shape[0])
        v = _guided_velocity(adapter, x, t, conditions, negative_conditions, guidance_scale)
        mean, std = flow_sde_transition(x, v, sigmas[i], sigmas[i + 1], noise_level, sigma_max)
        if noise_level > 0:
            eps = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x.device)
            x = mean + std * eps
            log_probs.append(gaussian_log_prob(x, mean, std))
        else:
            x = mean
            log_probs.append(torch.zeros(x.shape[0], device=x.device))
        latents.append(x)
    return SDETrajectory(torch.stack(latents), torch.stack(log_probs))


class GRPOPolicy(nn.Module):
    """The module the Trainer optimises (and DDP wraps): the trained transitions' log-probabilities and KL in one
    forward. Only the trained denoiser(s) are submodules."""

    def __init__(
        self, adapter: VideoModelAdapter, *, noise_level: float, guidance_scale: float, sigma_max: float | None
    ):
        super().__init__()
        self.denoisers = nn.ModuleDict(adapter.trainable_modules)
        self.adapter = adapter
        self.noise_level = noise_level
        self.guidance_scale = guidance_scale
        self.sigma_max = sigma_max

    def forward(
        self,
        latents: torch.Tensor,
        next_latents: torch.Tensor,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        next_sigmas: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        negative_conditions: dict[str, torch.Tensor] | None = None,
        compute_kl: bool = True,
    ) -> dict[str, torch.Tensor | None]:
        """``latents`` / ``next_latents``: ``(K, N, ...)`` transitions; ``timesteps`` / sigmas ``(K, N)``. Returns
        ``log_prob`` ``(K, N)`` (with gradients) and ``kl`` ``(K, N)`` (None without)."""
        log_probs, kls = [], []
        for k in range(latents.shape[0]):
            x = latents[k]
            v = _guided_velocity(self.adapter, x, timesteps[k], conditions, negative_conditions, self.guidance_scale)
            mean, std = flow_sde_transition(x, v, sigmas[k], next_sigmas[k], self.noise_level, self.sigma_max)
            log_probs.append(gaussian_log_prob(next_latents[k], mean, std))
            if compute_kl:
                with torch.no_grad(), self.adapter.disable_lora():
                    v_ref = _guided_velocity(
                        self.adapter, x, timesteps[k], conditions, negative_conditions, self.guidance_scale
                    )
                    ref_mean, _ = flow_sde_transition(
                        x, v_ref, sigmas[k], next_sigmas[k], self.noise_level, self.sigma_max
                    )
                kls.append(gaussian_transition_kl(mean, ref_mean, std))
        return {"log_prob": torch.stack(log_probs), "kl": torch.stack(kls) if compute_kl else None}

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Per-block gradient checkpointing of the denoiser(s) (called by the Trainer for ``activation_checkpointing``)."""
        self.adapter.enable_gradient_checkpointing()

    def activation_checkpointing_disable(self) -> None:
        for module in self.adapter.trainable_modules.values():
            if hasattr(module, "disable_gradient_checkpointing"):
                module.disable_gradient_checkpointing()

    gradient_checkpointing_enable = activation_checkpointing_enable
    gradient_checkpointing_disable = activation_checkpointing_disable


class RepeatBlockSampler(torch.utils.data.Sampler):
    """A seeded shuffle of the dataset cut into blocks of ``block`` indices (one optimiser step of the global batch),
    each yielded ``repeats`` times in a row, so the same rows come back for ``num_iterations`` steps."""

    def __init__(self, num_rows: int, block: int, repeats: int, seed: int):
        self.num_rows, self.block, self.repeats, self.seed, self.epoch = num_rows, block, repeats, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows * self.repeats

    def __iter__(self):
        order = torch.randperm(self.num_rows, generator=seeded_generator(self.seed, "grpo-order", self.epoch)).tolist()
        for start in range(0, self.num_rows, self.block):
            chunk = order[start : start + self.block]
            for _ in range(self.repeats):
                yield from chunk
