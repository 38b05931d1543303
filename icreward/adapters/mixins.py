"""Small pieces of model specification that several families share (finetrainers-style: one adapter per family, the
shared behaviour written once here and mixed in ahead of :class:`~icreward.adapters.base.VideoModelAdapter`).

- :class:`SingleTransformerMixin`: the pipeline's ``transformer`` is the one trained module;
- :class:`FlowMatchingMixin`: rectified flow with ``s = t / num_train_timesteps``, ``x_s = (1 - s) x0 + s noise``,
  the velocity target ``noise - x0`` and the first-order Euler step of ``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

import torch
from torch import nn


class SingleTransformerMixin:
    """The pipeline's ``transformer`` is the single fine-tuned denoiser (CogVideoX, HunyuanVideo 1.5, LTX, Wan 2.1)."""

    @property
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.pipeline.transformer}


class FlowMatchingMixin:
    """Rectified flow (HunyuanVideo 1.5, LTX-Video, LTX-2, Wan): ``x_s = (1 - s) x0 + s noise`` with
    ``s = t / num_train_timesteps``; the network predicts the velocity ``noise - x0``."""

    @property
    def prediction_type(self) -> str:
        return "flow"

    def _sigmas(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t / num_train_timesteps`` per sample, shaped to broadcast against ``like``."""
        sigma = timesteps.to(like.device, torch.float32) / self.num_train_timesteps
        return sigma.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``(1 - s) x0 + s noise``."""
        sigma = self._sigmas(timesteps, latents)
        return (1.0 - sigma) * latents + sigma * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The velocity ``noise - x0``."""
        return noise - latents

    def scheduler_step(self, latents, model_output, timesteps, next_timesteps):
        """Euler step of the flow ODE, ``x + (s_next - s) v`` (``FlowMatchEulerDiscreteScheduler.step``)."""
        return latents + (self._sigmas(next_timesteps, latents) - self._sigmas(timesteps, latents)) * model_output


class FirstFrameConditionedMixin:
    """The first latent frame is the reference image's clean latent (LTX-Video, LTX-2, Wan 2.2 TI2V): the target is
    zero there, and every sampler step puts the image latent (``conditions["image_latents"]``) back into it. Mix it
    in ahead of :class:`FlowMatchingMixin` (its :meth:`target` replaces the plain velocity)."""

    @staticmethod
    def _generated(x: torch.Tensor) -> torch.Tensor:
        """``x`` with the conditioned (first) latent frame zeroed: what the loss and the sampler see."""
        return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:]], dim=2)

    @staticmethod
    def _with_image_frame(latents: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """``latents`` with frame 0 replaced by the reference image's latent."""
        image = conditions["image_latents"].to(latents.device, latents.dtype)
        return torch.cat([image, latents[:, :, 1:]], dim=2)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``noise - x0`` on the generated frames, 0 on the conditioned first frame."""
        return self._generated(noise - latents)

    def denoise_step(self, latents, timestep, next_timestep, conditions, *, model_output=None):
        """One sampler step on the generated frames; the first frame is (again) the reference image's latent."""
        stepped = super().denoise_step(latents, timestep, next_timestep, conditions, model_output=model_output)
        return self._with_image_frame(stepped, conditions)
