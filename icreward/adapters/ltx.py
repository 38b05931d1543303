"""Adapter for LTX-Video 0.9.x image-to-video in diffusers (``Lightricks/LTX-Video``, ``LTXImageToVideoPipeline``).

LTX-Video is a rectified-flow model: ``x_t = (1 - s) x0 + s * noise`` with ``s = t / 1000``; the network predicts the
velocity ``noise - x0``. What differs from Wan and CogVideoX:

- **Packed latents.** The VAE compresses 32x in space and 8x in time into 128 channels (``(B, C, F', h, w)``,
  normalised per channel with the VAE's ``latents_mean`` / ``latents_std`` and ``scaling_factor``); the transformer
  reads them as a token sequence ``(B, F' h w / (p_t p p), C p_t p p)``. This adapter keeps latents *unpacked*
  (``(B, C, F', h, w)``, time on axis 2, so trainers can slice frames) and packs / unpacks around the transformer
  with the pipeline's own ``_pack_latents`` / ``_unpack_latents``: the packing is a pure reshape.
- **Image conditioning by replacement, with per-token timesteps.** The first latent frame *is* the reference
  image's latent (clean), marked by a conditioning mask; every token gets its own timestep ``t * (1 - mask)`` (0 on
  the conditioned frame). The sampler steps only the generated frames; the conditioned frame stays the image.
  Here: :meth:`predict` puts the image latent into frame 0 and returns a zero velocity there, :meth:`target` is zero
  there as well (so the loss is over generated frames only; the per-sample mean still divides by every frame, a
  constant factor ``(F' - 1) / F'``), and :meth:`denoise_step` puts the image latent back into frame 0 after each
  step, as the pipeline does.
- **Resolution-dependent sampler.** The checkpoint's ``FlowMatchEulerDiscreteScheduler`` shifts its sigmas by
  ``mu``, computed from the latent sequence length (``use_dynamic_shifting``), then stretches them so the last one is
  ``shift_terminal``. :meth:`inference_timesteps` therefore needs the video size: pass it to the adapter
  (``num_frames``, ``height``, ``width``) or to the call.
- **Rotary positions scaled by the frame rate** (``rope_interpolation_scale = (8 / frame_rate, 32, 32)``).

``LTXConditionPipeline`` (LTX-Video 0.9.5+) loads the same transformer and VAE classes: wrap its components in an
``LTXImageToVideoPipeline`` (``LTXImageToVideoPipeline(**pipe.components)``, as :meth:`LTXVideoI2VAdapter.__init__`
does for you) to train first-frame conditioning; a LoRA trained so loads into either pipeline class. The condition
pipeline's own sampler (noised conditioning frames, ``image_cond_noise_scale``) is not what this adapter samples with.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import VideoModelAdapter
from .mixins import FirstFrameConditionedMixin, FlowMatchingMixin, SingleTransformerMixin

_LTX_PIPELINES = ("LTXImageToVideoPipeline", "LTXConditionPipeline")

#: The published LTX-Video 0.9.x sizes (transformer, VAE, scheduler, text encoder, sample size) with their sources
#: are registered in :mod:`icreward.adapters.published_configs` as ``"Lightricks/LTX-Video"``.


class LTXFamilyAdapter(SingleTransformerMixin, FirstFrameConditionedMixin, FlowMatchingMixin, VideoModelAdapter):
    """What the LTX-Video and LTX-2 adapters share: the VAE's per-channel latent statistics and mode encode, rectified
    flow (``x_s = (1 - s) x0 + s noise``, ``s = t / T``, velocity target) with the first latent frame conditioned on
    the reference image (zero target there, replaced by the image latent after every sampler step), and packed-token
    conditioning masks, the transformer as the trained module and its (spatial, temporal) patch size, the sampled
    video size and the decode. Subclasses provide ``vae``, ``pipeline`` and ``num_train_timesteps``. The noise
    (``(1 - s) x0 + s noise``; ``predict`` replaces the first frame by the image latent), the target, the Euler step
    of the checkpoints' FlowMatchEulerDiscreteScheduler and ``denoise_step`` come from the mixins."""

    @property
    def _patch(self) -> tuple[int, int]:
        config = self.pipeline.transformer.config
        return int(config.patch_size), int(config.patch_size_t)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.vae
        mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode().float()

    def _set_sample_size(self, num_frames: int | None, height: int | None, width: int | None) -> None:
        """Keep the video size sampled at (``sample_size``; all three or none), checked against the family."""
        sizes = (num_frames, height, width)
        if any(s is not None for s in sizes) and any(s is None for s in sizes):
            raise ValueError("give num_frames, height and width together (the size sampled at), or none of them")
        self.sample_size = None if num_frames is None else (int(num_frames), int(height), int(width))
        if self.sample_size is not None:
            self.check_video_size(*self.sample_size)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Un-normalise and VAE-decode ``(B, C, F', h, w)`` -> ``(B, F, 3, H, W)`` in ``[0, 1]``, differentiably."""
        vae = self.vae
        mean, std = self._latent_stats(latents)
        x = (latents * std / float(vae.config.scaling_factor) + mean).to(vae.device, vae.dtype)
        temb = None
        if vae.config.timestep_conditioning:
            temb = torch.full((x.shape[0],), self.decode_timestep, device=x.device, dtype=x.dtype)
        return self.videos_from_model_output(vae.decode(x, temb, return_dict=False)[0])

    def conditioning_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-token conditioning mask ``(B, S)`` of packed latents: 1 on the first latent frame's tokens."""
        mask = torch.zeros_like(latents[:, :1])
        mask[:, :, 0] = 1.0
        patch, patch_t = self._patch
        return self.pipeline._pack_latents(mask, patch, patch_t).squeeze(-1)


class LTXVideoI2VAdapter(LTXFamilyAdapter):
    """LTX-Video 0.9.x image-to-video (``LTXImageToVideoPipeline``; ``LTXConditionPipeline`` components accepted).

    Args:
        pipeline: an ``LTXImageToVideoPipeline`` (or an ``LTXConditionPipeline``, whose components are re-wrapped).
        max_sequence_length: T5 text length (128, the pipeline's default).
        frame_rate: frames per second of the training videos; scales the temporal rotary positions (the pipeline's
            ``frame_rate``, default 25).
        num_frames, height, width: the video size sampled at (reward feedback, best-of-N). The published
            scheduler's sigmas depend on it; :meth:`inference_timesteps` raises when it is needed and unknown.
        decode_timestep: the VAE decoder's timestep (only for VAEs with ``timestep_conditioning``, 0.9.1+; the
            pipeline's ``decode_timestep``). No decode noise is added, so decoding stays deterministic.

    Latents are ``(B, C, F', h, w)`` with ``F' = (F - 1) / 8 + 1``, ``h = H / 32``, ``w = W / 32`` for the published
    VAE (:attr:`latent_frame_axis` is 2).
    """

    family = "ltx-video-i2v"
    pipeline_class_name = "LTXImageToVideoPipeline"
    default_lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")
    #: time axis of the (unpacked) latents
    latent_frame_axis = 2

    def __init__(
        self,
        pipeline: Any,
        *,
        max_sequence_length: int = 128,
        frame_rate: float = 25.0,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        decode_timestep: float = 0.0,
    ):
        if type(pipeline).__name__ == "LTXConditionPipeline":
            from diffusers import LTXImageToVideoPipeline

            pipeline = LTXImageToVideoPipeline(**{k: v for k, v in pipeline.components.items() if v is not None})
        super().__init__(pipeline)
        if getattr(pipeline, "transformer", None) is None or getattr(pipeline, "vae", None) is None:
            raise ValueError("LTXVideoI2VAdapter needs a pipeline with a `transformer` and a `vae`")
        if pipeline.transformer.config.in_channels != pipeline.vae.config.latent_channels:
            raise ValueError(
                f"transformer in_channels ({pipeline.transformer.config.in_channels}) != VAE latent_channels "
                f"({pipeline.vae.config.latent_channels}): not an LTX-Video 0.9.x checkpoint"
            )
        self.max_sequence_length = int(max_sequence_length)
        self.frame_rate = float(frame_rate)
        self.decode_timestep = float(decode_timestep)
        self._set_sample_size(num_frames, height, width)

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return type(pipeline).__name__ in _LTX_PIPELINES

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") in (*_LTX_PIPELINES, "LTXPipeline")

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def vae_scale_factor_spatial(self) -> int:
        return int(self.vae.spatial_compression_ratio)

    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the (unpacked) latents of ``batch_size`` videos of this size."""
        self.check_video_size(num_frames, height, width)
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        channels = int(self.vae.config.latent_channels)
        return (batch_size, channels, (num_frames - 1) // t + 1, height // s, width // s)

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a clear error for sizes the VAE / patchifier cannot represent exactly."""
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        patch, patch_t = self._patch
        if (num_frames - 1) % t != 0:
            raise ValueError(f"LTX-Video needs num_frames = {t}k + 1 (e.g. {t + 1}, {4 * t + 1}), got {num_frames}")
        if height % (s * patch) or width % (s * patch):
            raise ValueError(f"LTX-Video needs height/width divisible by {s * patch}, got {height}x{width}")
        if ((num_frames - 1) // t + 1) % patch_t:
            raise ValueError(f"the latent frame count must be divisible by patch_size_t={patch_t}")

    # ------------------------------------------------------------------------------------------ data
    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """VAE posterior mode, normalised as the pipeline does: ``(x - mean) * scaling_factor / std``.

        ``(B, F, 3, H, W)`` -> ``(B, C, F', h, w)`` float32 (deterministic, so latents can be cached).
        """
        x = self.videos_to_model_input(videos)
        self.check_video_size(x.shape[2], x.shape[3], x.shape[4])
        latents = self._encode(x)
        mean, std = self._latent_stats(latents)
        return (latents - mean) * float(self.vae.config.scaling_factor) / std

    @torch.no_grad()
    def encode_image_latents(self, images: Sequence[Any], *, height: int, width: int) -> torch.Tensor:
        """The conditioning frame: the reference image encoded as a one-frame video, ``(B, C, 1, h, w)``.

        Normalised like the pipeline's ``prepare_latents`` (mean / std, no ``scaling_factor``: 1.0 in the published
        VAE). Uses the posterior mode where the pipeline samples it (deterministic, cacheable).
        """
        pil = self.images_to_pil(images)
        image = self.pipeline.video_processor.preprocess(pil, height=height, width=width).float()
        latents = self._encode(image[:, :, None])
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std

    @torch.no_grad()
    def encode_prompts_with_mask(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 embeddings ``(B, L, D)`` and their attention mask ``(B, L)`` (float 0/1), from the pipeline."""
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.pipeline.text_encoder.device,
        )
        return embeds, mask.float()

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode_prompts_with_mask(prompts)[0]

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` (T5), ``prompt_attention_mask`` and ``image_latents`` (the conditioning frame)."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        embeds, mask = self.encode_prompts_with_mask(prompts)
        return {
            "prompt_embeds": embeds.float(),
            "prompt_attention_mask": mask,
            "image_latents": self.encode_image_latents(images, height=height, width=width),
        }

    # ------------------------------------------------------------------------------------------ noise
    def predict(self, noisy_latents, timesteps, conditions):
        """Transformer forward on packed tokens with per-token timesteps ``t * (1 - mask)``.

        The first latent frame is the reference image's latent; the returned velocity is ``(B, C, F', h, w)``
        float32 with zeros on that frame.
        """
        pipe = self.pipeline
        transformer = pipe.transformer
        device = noisy_latents.device
        dtype = next(transformer.parameters()).dtype
        image = conditions["image_latents"].to(device, noisy_latents.dtype)
        x = torch.cat([image, noisy_latents[:, :, 1:]], dim=2)
        _, _, num_frames, height, width = x.shape
        patch, patch_t = self._patch
        tokens = pipe._pack_latents(x, patch, patch_t)
        mask = self.conditioning_mask(x)
        timestep = timesteps.to(device, torch.float32).view(-1, 1) * (1 - mask)
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        out = transformer(
            hidden_states=tokens.to(dtype),
            encoder_hidden_states=conditions["prompt_embeds"].to(device, dtype),
            timestep=timestep,
            encoder_attention_mask=conditions["prompt_attention_mask"].to(device),
            num_frames=num_frames // patch_t,
            height=height // patch,
            width=width // patch,
            rope_interpolation_scale=(t / self.frame_rate, s, s),
            return_dict=False,
        )[0]
        out = pipe._unpack_latents(out.float(), num_frames // patch_t, height // patch, width // patch, patch, patch_t)
        return self._generated(out)

    def inference_timesteps(
        self,
        num_inference_steps: int,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """The pipeline's timesteps for this video size (``sigmas = linspace(1, 1/T, T)`` shifted by ``mu``), then 0.

        With a scheduler that does not shift dynamically the size is not needed.
        """
        scheduler = copy.deepcopy(self.scheduler)
        kwargs: dict[str, Any] = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            size = (num_frames, height, width)
            if any(v is None for v in size):
                if self.sample_size is None:
                    raise ValueError(
                        "LTX-Video's scheduler shifts its sigmas by the video size: build the adapter with "
                        "LTXVideoI2VAdapter(pipe, num_frames=..., height=..., width=...) or pass the size to "
                        "inference_timesteps"
                    )
                size = self.sample_size
            from diffusers.pipelines.ltx.pipeline_ltx_image2video import calculate_shift

            _, _, frames, h, w = self.latent_shape(1, *size)
            config = scheduler.config
            kwargs["mu"] = calculate_shift(
                frames * h * w,
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.15),
            )
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device="cpu", **kwargs)
        timesteps = scheduler.timesteps.float()
        return torch.cat([timesteps, timesteps.new_zeros(1)])


def packed_token_grid(model, vae, recipe, source: str, family: str) -> tuple[int, ...]:
    """An LTX-family recipe's geometry for memory accounting, checked against the VAE and the patchifier:
    ``(frames, t, s, p, p_t, latent_frames, h, w, tokens)`` (compression ratios, patch sizes, latent size, packed
    video tokens)."""
    frames, height, width = (int(recipe[k]) for k in ("num_frames", "height", "width"))
    t, s = int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)
    p, p_t = int(model.config.patch_size), int(model.config.patch_size_t)
    if (frames - 1) % t or height % (s * p) or width % (s * p):
        raise ValueError(f"{source}: {family} needs num_frames = {t}k + 1 and height/width divisible by {s * p}")
    latent_frames, h, w = (frames - 1) // t + 1, height // s, width // s
    return frames, t, s, p, p_t, latent_frames, h, w, (latent_frames // p_t) * (h // p) * (w // p)


def _accounting_inputs(model, vae, recipe, forward_batch, dtype, source):
    """The memory accountant's view of an LTX-Video recipe (packed tokens, per-token timesteps, T5 at 128 tokens)."""
    from ..memory.families import channels_first_family_inputs

    config = model.config
    frames, t, s, p, p_t, latent_frames, h, w, tokens = packed_token_grid(model, vae, recipe, source, "LTX-Video")
    text_len = int(recipe.get("max_sequence_length") or 128)
    kwargs = {
        "hidden_states": torch.empty(
            forward_batch, tokens, config.in_channels * p * p * p_t, device="meta", dtype=dtype
        ),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, config.caption_channels, device="meta", dtype=dtype
        ),
        "timestep": torch.empty(forward_batch, tokens, device="meta"),  # per token: 0 on the conditioning frame
        "encoder_attention_mask": torch.ones(forward_batch, text_len, device="meta"),
        "num_frames": latent_frames // p_t,
        "height": h // p,
        "width": w // p,
        "rope_interpolation_scale": (t / float(recipe.get("frame_rate", 25.0)), s, s),
    }
    return channels_first_family_inputs(kwargs, recipe, vae, latent_frames, h, w)


def _register_memory_accounting() -> None:
    from ..memory.families import register_adapter_accounting

    register_adapter_accounting("LTXVideoTransformer3DModel", _accounting_inputs, LTXVideoI2VAdapter)


_register_memory_accounting()
