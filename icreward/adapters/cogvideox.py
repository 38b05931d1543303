"""Adapter for CogVideoX image-to-video models in diffusers (``THUDM/CogVideoX-5b-I2V``, CogVideoX1.5-5B-I2V).

CogVideoX is a discrete-time (DDPM-family) model: ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` with the scheduler's
``alphas_cumprod``; the released I2V checkpoints predict ``v = sqrt(a_t) noise - sqrt(1 - a_t) x0``. Latents are laid
out ``(B, F, C, H, W)`` and scaled by the VAE's ``scaling_factor``. The reference image is VAE-encoded as a
one-frame video, zero-padded to the latent length, and concatenated with the noisy latents on the channel axis
(the transformer takes ``2 * latent_channels`` inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import PipelineSchedulerSampler, VideoModelAdapter
from .differentiable_decode import differentiable_decode
from .mixins import SingleTransformerMixin


class CogVideoXI2VAdapter(SingleTransformerMixin, VideoModelAdapter):
    """CogVideoX image-to-video (``CogVideoXImageToVideoPipeline``).

    :meth:`target` follows the scheduler's ``prediction_type``: ``v`` for ``"v_prediction"`` (the released
    checkpoints), the noise for ``"epsilon"``. Diffusion-DPO then compares per-sample MSEs in that space.

    Args:
        pipeline: a ``CogVideoXImageToVideoPipeline``.
        max_sequence_length: T5 text length; 226 for the released checkpoints (their learned positional embeddings
            cover exactly 226 text tokens).

    CogVideoX 1.5 (``patch_size_t=2``) needs an even number of latent frames: choose ``num_frames`` with
    ``((num_frames - 1) // 4 + 1) % 2 == 0`` (for example 85). The 5b-I2V checkpoint's learned positional
    embeddings only support its native 480x720 resolution.
    """

    family = "cogvideox-i2v"
    pipeline_class_name = "CogVideoXImageToVideoPipeline"
    default_lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, pipeline: Any, *, max_sequence_length: int = 226):
        super().__init__(pipeline)
        if getattr(pipeline, "transformer", None) is None:
            raise ValueError("CogVideoXI2VAdapter needs a pipeline with a `transformer`")
        if pipeline.transformer.config.in_channels != 2 * pipeline.vae.config.latent_channels:
            raise ValueError(
                "the transformer does not take image latents (in_channels != 2 * latent_channels): this is a "
                "text-to-video CogVideoX, not an image-to-video one"
            )
        prediction_type = pipeline.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r}")
        self.max_sequence_length = int(max_sequence_length)

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return type(pipeline).__name__ == "CogVideoXImageToVideoPipeline"

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") == "CogVideoXImageToVideoPipeline"

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    @property
    def vae_scale_factor_spatial(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.vae.config.temporal_compression_ratio)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    #: latents are ``(B, F', C, H', W')``.
    latent_frame_axis = 1

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """``(B, (F - 1) / 4 + 1, latent_channels, H / 8, W / 8)`` from the VAE config (no encode)."""
        self.check_video_size(num_frames, height, width)
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        latent_channels = int(self.vae.config.latent_channels)
        return (batch_size, (num_frames - 1) // t + 1, latent_channels, height // s, width // s)

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        config = self.pipeline.transformer.config
        if (num_frames - 1) % t != 0:
            raise ValueError(f"CogVideoX needs num_frames = {t}k + 1 (e.g. 9, 49), got {num_frames}")
        if height % (s * config.patch_size) or width % (s * config.patch_size):
            raise ValueError(
                f"CogVideoX needs height/width divisible by {s * config.patch_size}, got {height}x{width}"
            )
        latent_frames = (num_frames - 1) // t + 1
        if config.patch_size_t is not None and latent_frames % config.patch_size_t:
            raise ValueError(
                f"this CogVideoX (patch_size_t={config.patch_size_t}) needs a latent frame count divisible by "
                f"{config.patch_size_t}; {num_frames} frames give {latent_frames}"
            )

    # ------------------------------------------------------------------------------------------ data
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, H, W)`` in [-1, 1] -> posterior mode ``(B, F', C, h, w)`` float32 (unscaled)."""
        vae = self.vae
        latents = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode().float()
        return latents.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """VAE posterior mode times ``scaling_factor``: ``(B, F, 3, H, W)`` -> ``(B, F', C, H/8, W/8)`` float32."""
        x = self.videos_to_model_input(videos)
        self.check_video_size(x.shape[2], x.shape[3], x.shape[4])
        return self._encode(x) * self.scaling_factor

    @torch.no_grad()
    def encode_image_latents(self, images: Sequence[Any], *, num_frames: int, height: int, width: int):
        """Reference image latents, zero-padded to the video's latent length: ``(B, F', C, h, w)``.

        Uses the posterior mode where the pipeline samples (``latent_dist.sample``): deterministic, cacheable.
        """
        pil = self.images_to_pil(images)
        image = self.pipeline.video_processor.preprocess(pil, height=height, width=width).float()
        latents = self._encode(image[:, :, None])  # (B, 1, C, h, w)
        if self.vae.config.get("invert_scale_latents", False):
            latents = latents / self.scaling_factor  # CogVideoX 1.5 I2V was trained this way (see diffusers)
        else:
            latents = latents * self.scaling_factor
        latent_frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        padding = latents.new_zeros(latents.shape[0], latent_frames - 1, *latents.shape[2:])
        return torch.cat([latents, padding], dim=1)

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` (T5, ``(B, 226, D)``) and ``image_latents`` (``(B, F', C, h, w)``)."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        return {
            "prompt_embeds": self.encode_prompts(prompts).float(),
            "image_latents": self.encode_image_latents(images, num_frames=num_frames, height=height, width=width),
        }

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, F', C, h, w)`` -> ``(B, F, 3, H, W)`` in ``[0, 1]``, differentiable through the frozen VAE."""
        vae = self.vae
        x = (latents / self.scaling_factor).permute(0, 2, 1, 3, 4).to(vae.device, vae.dtype)
        # under autograd: checkpointed per decoder call, carrying the conv_cache (same values)
        return self.videos_from_model_output(differentiable_decode(vae, x))

    # ------------------------------------------------------------------------------------------ noise
    def _alphas(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        alphas_cumprod = self.scheduler.alphas_cumprod.to(like.device, torch.float32)
        alpha = alphas_cumprod[timesteps.to(like.device).long()]
        return alpha.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha = self._alphas(timesteps, latents)
        return alpha.sqrt() * latents + (1 - alpha).sqrt() * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        alpha = self._alphas(timesteps, latents)
        return alpha.sqrt() * noise - (1 - alpha).sqrt() * latents

    def predict(self, noisy_latents, timesteps, conditions):
        pipe = self.pipeline
        transformer = pipe.transformer
        # The first parameter (patch embedding) has the base weights' dtype; diffusers' `.dtype` walks all of them.
        device, dtype = noisy_latents.device, next(transformer.parameters()).dtype
        image_latents = conditions["image_latents"].to(device, noisy_latents.dtype)
        hidden = torch.cat([noisy_latents, image_latents], dim=2)
        num_latent_frames, latent_h, latent_w = noisy_latents.shape[1], noisy_latents.shape[3], noisy_latents.shape[4]
        rotary = None
        if transformer.config.use_rotary_positional_embeddings:
            s = self.vae_scale_factor_spatial
            rotary = pipe._prepare_rotary_positional_embeddings(latent_h * s, latent_w * s, num_latent_frames, device)
        ofs = None
        if transformer.config.ofs_embed_dim is not None:
            ofs = noisy_latents.new_full((1,), fill_value=2.0)  # the value CogVideoX 1.5 I2V uses at inference
        out = transformer(
            hidden_states=hidden.to(dtype),
            encoder_hidden_states=conditions["prompt_embeds"].to(device, dtype),
            timestep=timesteps.to(device),
            ofs=ofs,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        return out.float()

    def inference_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """The scheduler's timesteps followed by ``-1`` (the final step to ``x0``: ``alpha = 1``)."""
        timesteps = super().inference_timesteps(num_inference_steps)
        timesteps[-1] = -1
        return timesteps

    def sampler(self, num_inference_steps: int, *, device=None) -> PipelineSchedulerSampler:
        """The pipeline's own scheduler, stepped as ``CogVideoXImageToVideoPipeline`` steps it: the shipped
        ``CogVideoXDDIMScheduler`` (deterministic) or ``CogVideoXDPMScheduler`` (THUDM's recommendation for the 5B
        models: a two-step solver whose SDE noise is drawn from the sampling generator)."""
        return PipelineSchedulerSampler(self, num_inference_steps, device=device)

    def scheduler_step(self, latents, model_output, timesteps, next_timesteps):
        """Deterministic DDIM step (eta = 0); ``next_timesteps < 0`` steps to the clean sample."""
        alpha = self._alphas(timesteps, latents)
        is_final = (next_timesteps < 0).view(-1, *([1] * (latents.ndim - 1)))
        alpha_next = torch.where(is_final, 1.0, self._alphas(next_timesteps.clamp(min=0), latents))
        if self.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * latents - (1 - alpha).sqrt() * model_output
            eps = alpha.sqrt() * model_output + (1 - alpha).sqrt() * latents
        else:
            eps = model_output
            x0 = (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps
