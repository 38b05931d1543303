"""Differentiable samplers: one run of a family's inference sampler, stepped as a differentiable function of the
latents (what reward-feedback training steps through). Made by :meth:`VideoModelAdapter.sampler
<icreward.adapters.base.VideoModelAdapter.sampler>`; also importable from :mod:`icreward.adapters.base`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .base import VideoModelAdapter


class DenoisingSampler:
    """One run of a family's inference sampler, stepped as a differentiable function of the latents.

    Made by :meth:`VideoModelAdapter.sampler`; a trainer only reads :attr:`timesteps` and calls :meth:`step` once per
    step, in order, with the (possibly guided) denoiser output on ``timesteps[index]``. Gradients flow through
    ``step`` when grad mode is on; history a multistep sampler keeps (previous model outputs, the previous sample)
    holds the tensors it was given, graph included, so gradients of a later step reach the earlier trained steps.

    Attributes:
        timesteps: ``(T,)`` the timesteps the denoiser is called with, in sampling order (the scheduler's values
            and dtype).
    """

    timesteps: torch.Tensor

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def step(
        self,
        index: int,
        latents: torch.Tensor,
        model_output: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """``x_{t_index} -> x_{t_index + 1}`` from the denoiser output on ``timesteps[index]``.

        ``generator`` (one, or one per sample) feeds stochastic steps (e.g. ``CogVideoXDPMScheduler``'s SDE noise);
        deterministic samplers ignore it.
        """
        raise NotImplementedError


class StatelessSampler(DenoisingSampler):
    """``T + 1`` timesteps stepped with the adapter's pure :meth:`~VideoModelAdapter.denoise_step`.

    Args:
        adapter: the family's adapter.
        timesteps: ``T + 1`` values (from :meth:`~VideoModelAdapter.inference_timesteps`: the ``T`` model
            timesteps and the final one).
    """

    def __init__(self, adapter: VideoModelAdapter, timesteps: torch.Tensor | Sequence[float]):
        timesteps = torch.as_tensor(timesteps, dtype=torch.float32)
        if timesteps.ndim != 1 or len(timesteps) < 2:
            raise ValueError(f"timesteps must be a 1-d sequence of T + 1 values, got shape {tuple(timesteps.shape)}")
        self.adapter = adapter
        self.boundaries = timesteps
        self.timesteps = timesteps[:-1]

    def step(self, index, latents, model_output, conditions, *, generator=None):
        t, t_next = self.boundaries[index], self.boundaries[index + 1]
        return self.adapter.denoise_step(latents, t, t_next, conditions, model_output=model_output)


class PipelineSchedulerSampler(DenoisingSampler):
    """The pipeline's own diffusers scheduler, stepped exactly as the pipeline's denoising loop steps it.

    A deep copy of ``adapter.scheduler`` (the pipeline's scheduler is never touched) gets
    ``set_timesteps(num_inference_steps, device=device)``, the call diffusers' pipelines make, and every
    :meth:`step` is the scheduler's own ``step``. Supported step signatures:

    - ``step(model_output, timestep, sample, ...)``: ``FlowMatchEulerDiscreteScheduler``,
      ``UniPCMultistepScheduler`` (e.g. with ``use_flow_sigmas`` and a ``flow_shift``, as Wan ships),
      ``DPMSolverMultistepScheduler``, ``DDIMScheduler``, ``CogVideoXDDIMScheduler`` ...;
    - ``CogVideoXDPMScheduler``'s ``step(model_output, old_pred_original_sample, timestep, timestep_back, sample)``:
      the previous step's predicted ``x0`` and timestep are kept here between steps, as
      ``CogVideoXImageToVideoPipeline`` keeps them.

    ``generator`` is passed to schedulers whose ``step`` accepts one (the CogVideoX pipelines pass theirs; its SDE
    noise is then drawn per sample from a list of generators). Those steps are written without in-place operations
    on their inputs, so autograd differentiates them; the multistep history (UniPC's ``model_outputs`` and
    ``last_sample``, the DPM scheduler's previous ``x0``) keeps the graph of the steps that produced it.

    Args:
        adapter: the family's adapter (its ``scheduler`` is copied).
        num_inference_steps: ``T``.
        device: where ``set_timesteps`` puts the schedule (the pipeline passes its execution device).
        set_timesteps_kwargs: extra arguments the family's pipeline passes to ``set_timesteps`` (e.g. ``mu``).
    """

    def __init__(
        self,
        adapter: VideoModelAdapter,
        num_inference_steps: int,
        *,
        device: torch.device | str | None = None,
        set_timesteps_kwargs: dict[str, Any] | None = None,
    ):
        import copy
        import inspect

        scheduler = copy.deepcopy(adapter.scheduler)
        if not hasattr(scheduler, "set_timesteps") or not hasattr(scheduler, "step"):
            raise TypeError(f"{type(scheduler).__name__} is not a diffusers scheduler (no set_timesteps / step)")
        scheduler.set_timesteps(num_inference_steps, device=device, **(set_timesteps_kwargs or {}))
        self.adapter = adapter
        self.scheduler = scheduler
        self.timesteps = scheduler.timesteps
        parameters = inspect.signature(scheduler.step).parameters
        self._two_step = "old_pred_original_sample" in parameters  # CogVideoXDPMScheduler
        self._accepts_generator = "generator" in parameters
        self._old_pred_original_sample: torch.Tensor | None = None
        self._next_index = 0

    def step(self, index, latents, model_output, conditions, *, generator=None):
        if index != self._next_index:
            raise RuntimeError(
                f"{type(self.scheduler).__name__} is stepped in order: expected step {self._next_index}, got {index} "
                "(make a new sampler with adapter.sampler(T) for every sampled batch)"
            )
        self._next_index += 1
        t = self.timesteps[index]
        kwargs = {"generator": generator} if self._accepts_generator and generator is not None else {}
        if self._two_step:
            back = self.timesteps[index - 1] if index > 0 else None
            latents, self._old_pred_original_sample = self.scheduler.step(
                model_output, self._old_pred_original_sample, t, back, latents, return_dict=False, **kwargs
            )
            return latents
        return self.scheduler.step(model_output, t, latents, return_dict=False, **kwargs)[0]
