"""Sampling through a video model's sampler with truncated backpropagation (DRaFT-K), and the module the
reward-feedback trainer optimises (:class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackTrainer`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..adapters import VideoModelAdapter
from ..adapters.base import DenoisingSampler, StatelessSampler
from ..losses import velocity_kl

logger = logging.getLogger("icreward.trainers.reward_feedback_trainer")

__all__ = ["TruncatedSample", "sample_with_truncated_backprop"]


@dataclass
class TruncatedSample:
    """Result of :func:`sample_with_truncated_backprop`.

    Attributes:
        latents: the final latents ``x_0`` (with an autograd graph through the last ``K`` steps when grad mode is on).
        velocities: the policy's predictions on the ``K`` trained steps, in sampling order.
        reference_velocities: the LoRA-disabled predictions on the same inputs (empty unless requested).
        grad_timesteps: the ``K`` timesteps of the trained steps.
    """

    latents: torch.Tensor
    velocities: list[torch.Tensor]
    reference_velocities: list[torch.Tensor]
    grad_timesteps: torch.Tensor


def _concat_conditions(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    if set(first) != set(second):
        raise ValueError(f"condition keys differ: {sorted(first)} vs {sorted(second)}")
    return {k: torch.cat([first[k], second[k]]) if torch.is_tensor(first[k]) else first[k] for k in first}


def _as_sampler(adapter: VideoModelAdapter, sampler: Any, device: torch.device) -> DenoisingSampler:
    """A sampler given as a fresh :class:`DenoisingSampler`, a step count or ``T + 1`` timesteps, as a sampler."""
    if isinstance(sampler, int):
        return adapter.sampler(sampler, device=device)
    if not isinstance(sampler, DenoisingSampler):
        return StatelessSampler(adapter, sampler)
    return sampler


def sample_with_truncated_backprop(
    adapter: VideoModelAdapter,
    latents: torch.Tensor,
    conditions: Mapping[str, torch.Tensor],
    sampler: DenoisingSampler | int | torch.Tensor | Sequence[float],
    *,
    num_grad_steps: int,
    negative_conditions: Mapping[str, torch.Tensor] | None = None,
    guidance_scale: float = 1.0,
    compute_reference: bool = False,
    checkpoint_steps: bool = False,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> TruncatedSample:
    """Sample from ``latents`` (pure noise) through every step, with autograd only on the last ``num_grad_steps``.

    The first ``T - num_grad_steps`` steps run under ``torch.no_grad()``, so their activations are never stored and
    peak memory does not depend on the number of steps. The trained steps run in the caller's grad mode (under an
    outer ``no_grad`` nothing is trained, which is how evaluation and validation sample). Every step, trained or not,
    is a step of the same sampler: the family's (``adapter.sampler``), which for diffusers pipelines is a copy of the
    pipeline's own scheduler, so with gradients off this returns what the pipeline samples from the same noise.

    Args:
        adapter: the model family's adapter (``predict``, ``sampler``, ``disable_lora``).
        latents: initial noise ``x_T``, shaped like the family's latents.
        conditions: from ``adapter.prepare_conditions``.
        sampler: a fresh ``adapter.sampler(T)`` (samplers keep multistep state: one per call), or ``T`` (an int) to
            make one here, or ``T + 1`` timesteps (stepped with the adapter's pure ``denoise_step``).
        num_grad_steps: ``K``, between 0 and ``T``.
        negative_conditions: conditions of the negative prompt, for classifier-free guidance.
        guidance_scale: CFG scale; 1 (the default, as IPRO) runs the denoiser once per step.
        compute_reference: also predict with the LoRA disabled on the trained steps' inputs (for the KL term).
        checkpoint_steps: checkpoint each trained denoiser call as a whole: only its inputs are kept, and the call
            is recomputed during the backward pass. Only the denoiser call is checkpointed, never the sampler step:
            a multistep scheduler's state advances exactly once per step, and its history tensors are ordinary
            graph nodes. (The trainer also turns on the denoiser's own per-block checkpointing, which then bounds
            the memory of that recomputation.)
        generator: the sampling generator(s) (one, or one per sample), for samplers with stochastic steps.
    """
    sampler = _as_sampler(adapter, sampler, latents.device)
    num_steps = sampler.num_steps
    if not 0 <= num_grad_steps <= num_steps:
        raise ValueError(
            f"num_grad_steps must be between 0 and the number of steps ({num_steps}), got {num_grad_steps}"
        )
    guided = guidance_scale != 1.0
    if guided and negative_conditions is None:
        raise ValueError("guidance_scale != 1 needs negative_conditions")
    batch = latents.shape[0]
    both_conditions = _concat_conditions(negative_conditions, conditions) if guided else None

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.device).expand(batch)
        if not guided:
            return adapter.predict(x, t, conditions)
        uncond, cond = adapter.predict(torch.cat([x, x]), torch.cat([t, t]), both_conditions).chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    timesteps = sampler.timesteps
    first_grad_step = num_steps - num_grad_steps
    latents = latents.detach()
    with torch.no_grad():
        for i in range(first_grad_step):
            v = velocity(latents, timesteps[i])
            latents = sampler.step(i, latents, v, conditions, generator=generator)
    velocities, reference_velocities = [], []
    for i in range(first_grad_step, num_steps):
        t = timesteps[i]
        if checkpoint_steps and torch.is_grad_enabled():
            v = checkpoint(velocity, latents, t, use_reentrant=False)
        else:
            v = velocity(latents, t)
        if compute_reference:
            with torch.no_grad(), adapter.disable_lora():
                reference_velocities.append(velocity(latents.detach(), t))
        velocities.append(v)
        latents = sampler.step(i, latents, v, conditions, generator=generator)
    grad_timesteps = torch.as_tensor(timesteps[first_grad_step:num_steps]).float().cpu()
    return TruncatedSample(latents, velocities, reference_velocities, grad_timesteps)


class RewardFeedbackPolicy(nn.Module):
    """The module the Trainer optimises and (under DDP) wraps: sampling, KL and decoding in one forward.

    One forward per micro-step keeps DDP's contract (several denoiser calls happen inside it). Only the trained
    denoiser(s) are submodules, so the Trainer neither moves, wraps nor saves the VAE, encoders or rewards.
    """

    def __init__(
        self,
        adapter: VideoModelAdapter,
        *,
        num_inference_steps: int,
        num_grad_steps: int,
        kl_step_weights: list[float] | None,
        compute_kl: bool,
        guidance_scale: float,
        frame_axis: int | None,
    ):
        super().__init__()
        self.denoisers = nn.ModuleDict(adapter.trainable_modules)
        self.adapter = adapter
        self.num_inference_steps = num_inference_steps
        self.num_grad_steps = num_grad_steps
        self.kl_step_weights = kl_step_weights
        self.compute_kl = compute_kl
        self.guidance_scale = guidance_scale
        self.frame_axis = frame_axis
        self.checkpoint_steps = False

    def forward(
        self,
        noise: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        negative_conditions: dict[str, torch.Tensor] | None = None,
        decode_starts: Sequence[int] | None = None,
        decode_length: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Sample from ``noise``, return the decoded ``video`` and the per-sample ``kl`` (None without KL).

        With ``decode_length``, only latent frames ``decode_starts[i] : decode_starts[i] + decode_length`` of sample
        ``i`` are decoded (one window per sample, so a sample's window does not depend on its batch). ``generator``
        (one per sample) feeds samplers with stochastic steps.
        """
        sample = sample_with_truncated_backprop(
            self.adapter,
            noise,
            conditions,
            self.new_sampler(noise.device),
            num_grad_steps=self.num_grad_steps,
            negative_conditions=negative_conditions,
            guidance_scale=self.guidance_scale,
            compute_reference=self.compute_kl,
            checkpoint_steps=self.checkpoint_steps,
            generator=generator,
        )
        kl = None
        if self.compute_kl and sample.velocities:
            kl = velocity_kl(sample.velocities, sample.reference_velocities, self.kl_step_weights)
        latents = sample.latents
        if decode_length is not None:
            if len(decode_starts) != latents.shape[0]:
                raise ValueError(f"got {len(decode_starts)} decode_starts for a batch of {latents.shape[0]}")
            if len(set(decode_starts)) == 1:
                latents = latents.narrow(self.frame_axis, decode_starts[0], decode_length)
            else:
                axis = self.frame_axis - 1  # of one sample
                windows = [
                    x.narrow(axis, start, decode_length) for x, start in zip(latents, decode_starts, strict=True)
                ]
                latents = torch.stack(windows)
        return {"video": self.adapter.decode_latents(latents), "kl": kl}

    def new_sampler(self, device: torch.device | str | None = None) -> DenoisingSampler:
        """A fresh run of the family's sampler (samplers are stateful: one per sampled batch)."""
        return self.adapter.sampler(self.num_inference_steps, device=device)

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Called by the Trainer for ``activation_checkpointing``: checkpoint each trained denoiser call as a whole
        (only its inputs are kept across the K steps) AND turn on the denoiser's own per-block gradient checkpointing
        (``adapter.enable_gradient_checkpointing``), so that recomputing one call in the backward pass keeps only the
        blocks' inputs plus one block's activations instead of the whole call's."""
        self.checkpoint_steps = True
        try:
            self.adapter.enable_gradient_checkpointing()
        except TypeError as error:  # a plug-in denoiser without per-block checkpointing: whole calls only
            logger.warning(
                "per-block gradient checkpointing is unavailable (%s): checkpointing whole calls only", error
            )

    def activation_checkpointing_disable(self) -> None:
        self.checkpoint_steps = False
        self.adapter.disable_gradient_checkpointing()

    gradient_checkpointing_enable = activation_checkpointing_enable
    gradient_checkpointing_disable = activation_checkpointing_disable

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.checkpoint_steps
