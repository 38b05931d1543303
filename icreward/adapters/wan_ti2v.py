"""Adapter for Wan 2.2 TI2V-5B image-to-video (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) in diffusers.

What differs from Wan 2.1 I2V / Wan 2.2 I2V A14B (see :mod:`icreward.adapters.wan`):

- **VAE.** ``AutoencoderKLWan(is_residual=True, patch_size=2)`` with 48 latent channels, 16x spatial and 4x temporal
  compression; latents are normalised per channel with the VAE's 48 ``latents_mean`` / ``latents_std``.
- **Image conditioning by replacement, no mask channels, no CLIP.** The transformer reads 48 channels (not 36): the
  first latent frame *is* the normalised VAE latent of the reference image, ``(1 - mask) * condition + mask * x``
  with ``mask = 0`` on frame 0, exactly as ``WanImageToVideoPipeline(expand_timesteps=True)`` does.
- **Per-token timesteps.** Every patch token gets ``mask * t``: 0 on the conditioned frame, ``t`` elsewhere.

Here :meth:`WanTI2VAdapter.predict` puts the image latent into frame 0 and returns zero velocity there,
:meth:`WanTI2VAdapter.target` is zero there too, so the loss counts only generated frames (the per-sample mean still
divides by every frame, a constant factor ``(F' - 1) / F'``), and :meth:`WanTI2VAdapter.denoise_step` puts the
image latent back into frame 0 after each step, as the pipeline does before decoding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .base import DenoisingSampler, PipelineSchedulerSampler, VideoModelAdapter
from .mixins import FirstFrameConditionedMixin, SingleTransformerMixin
from .wan import WAN_I2V_TEXT_LENGTH, WanBase


class WanTI2VAdapter(SingleTransformerMixin, FirstFrameConditionedMixin, WanBase):
    """Wan 2.2 TI2V-5B image-to-video (``WanImageToVideoPipeline`` / ``WanPipeline`` with ``expand_timesteps=True``).

    Args:
        pipeline: a Wan pipeline with ``expand_timesteps=True``, one ``transformer`` and no ``transformer_2``. A
            ``WanPipeline`` (the class the Hub checkpoint's ``model_index.json`` names) is re-wrapped, sharing its
            components, in a ``WanImageToVideoPipeline`` so it can take a reference image.
        max_sequence_length: UMT5 text length (512 as trained).

    LoRA is saved as ``pytorch_lora_weights.safetensors`` and loads with ``pipe.load_lora_weights(dir)``.
    """

    family = "wan2.2-ti2v-5b"

    def __init__(self, pipeline: Any, *, max_sequence_length: int = WAN_I2V_TEXT_LENGTH):
        name = type(pipeline).__name__
        if name not in ("WanImageToVideoPipeline", "WanPipeline"):
            raise ValueError(f"WanTI2VAdapter needs a WanImageToVideoPipeline or WanPipeline, got {name}")
        if not getattr(pipeline.config, "expand_timesteps", False):
            raise ValueError(
                f"WanTI2VAdapter is for Wan 2.2 TI2V-5B (expand_timesteps=True); this {name} has expand_timesteps="
                f"{getattr(pipeline.config, 'expand_timesteps', None)!r}: use WanI2VAdapter or Wan22Adapter"
            )
        if getattr(pipeline, "transformer", None) is None or getattr(pipeline, "transformer_2", None) is not None:
            raise ValueError("WanTI2VAdapter needs exactly one denoiser, `transformer` (TI2V-5B has no experts)")
        if name == "WanPipeline":
            from diffusers import WanImageToVideoPipeline

            pipeline = WanImageToVideoPipeline(
                tokenizer=pipeline.tokenizer,
                text_encoder=pipeline.text_encoder,
                vae=pipeline.vae,
                scheduler=pipeline.scheduler,
                transformer=pipeline.transformer,
                expand_timesteps=True,
            )
        in_channels = pipeline.transformer.config.in_channels
        if in_channels != pipeline.vae.config.z_dim:
            raise ValueError(
                f"Wan 2.2 TI2V conditions by replacing the first latent frame, so the transformer's in_channels "
                f"({in_channels}) must equal the VAE's z_dim ({pipeline.vae.config.z_dim})"
            )
        # Skip WanBase.__init__, which refuses expand_timesteps pipelines.
        VideoModelAdapter.__init__(self, pipeline)
        self.max_sequence_length = int(max_sequence_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, **kwargs):
        return cls(cls.load_pipeline(name_or_path, torch_dtype=torch_dtype, **kwargs))

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return (
            type(pipeline).__name__ in ("WanImageToVideoPipeline", "WanPipeline")
            and bool(getattr(pipeline.config, "expand_timesteps", False))
            and getattr(pipeline, "transformer_2", None) is None
        )

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") in ("WanImageToVideoPipeline", "WanPipeline") and bool(
            model_index.get("expand_timesteps", False)
        )

    def _uses_image_embeds(self) -> bool:
        return False

    # ------------------------------------------------------------------------------------------ conditions
    @torch.no_grad()
    def encode_image_condition(self, images: Sequence[Any], *, num_frames: int, height: int, width: int):
        """The normalised VAE latent of the reference image alone: ``(B, z_dim, 1, H / 16, W / 16)``."""
        pil = self.images_to_pil(images)
        image = self.pipeline.video_processor.preprocess(pil, height=height, width=width).float()
        return self._encode(image[:, :, None])

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(latents.device, latents.dtype)
        return (latents - mean) / std

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` (UMT5) and ``image_latents`` (the reference image's latent, frame 0 of every video)."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        return {
            "prompt_embeds": self.encode_prompts(prompts).float(),
            "image_latents": self.encode_image_condition(images, num_frames=num_frames, height=height, width=width),
        }

    # ------------------------------------------------------------------------------------------ model
    # target (zero on the conditioned first frame) and denoise_step (frame 0 set back to the image latent):
    # FirstFrameConditionedMixin
    def token_timesteps(self, timesteps: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Per-token timesteps ``(B, F' * h/p * w/p)``: 0 on the first latent frame's tokens, ``t`` elsewhere."""
        _, p_h, p_w = self.pipeline.transformer.config.patch_size
        frames, height, width = latents.shape[2:]
        mask = torch.ones(frames, height // p_h, width // p_w, device=latents.device, dtype=torch.float32)
        mask[0] = 0
        t = timesteps.to(latents.device, torch.float32).view(-1, 1)
        return mask.flatten()[None] * t

    def predict(self, noisy_latents, timesteps, conditions):
        """Transformer forward on ``[image latent, noisy frames 1:]`` with per-token timesteps; velocity with zeros
        on frame 0, ``(B, z_dim, F', h, w)`` float32."""
        transformer = self.pipeline.transformer
        dtype = next(transformer.parameters()).dtype
        image = conditions["image_latents"].to(noisy_latents.device, noisy_latents.dtype)
        if image.shape[0] != noisy_latents.shape[0]:
            raise ValueError(f"image_latents batch {image.shape[0]} != latents batch {noisy_latents.shape[0]}")
        hidden = torch.cat([image, noisy_latents[:, :, 1:]], dim=2)
        out = transformer(
            hidden_states=hidden.to(dtype),
            timestep=self.token_timesteps(timesteps, hidden),
            encoder_hidden_states=conditions["prompt_embeds"].to(noisy_latents.device, dtype),
            encoder_hidden_states_image=None,
            return_dict=False,
        )[0]
        return self._generated(out.float())

    def sampler(self, num_inference_steps: int, *, device=None) -> DenoisingSampler:
        """The pipeline's own scheduler (UniPC with ``flow_shift`` 5.0 as published), stepped as
        ``WanImageToVideoPipeline(expand_timesteps=True)`` steps it, with frame 0 set to the reference image's latent
        after every step (the pipeline sets it once before decoding; frame 0 never feeds the other frames, because
        :meth:`predict` replaces it with the image latent, so the generated frames are the pipeline's)."""
        return _ImageFrameSampler(PipelineSchedulerSampler(self, num_inference_steps, device=device))


_with_image_frame = FirstFrameConditionedMixin._with_image_frame


class _ImageFrameSampler(DenoisingSampler):
    """A sampler whose every step leaves the reference image's latent in frame 0."""

    def __init__(self, inner: DenoisingSampler):
        self.inner = inner
        self.timesteps = inner.timesteps

    def step(self, index, latents, model_output, conditions, *, generator=None):
        stepped = self.inner.step(index, latents, model_output, conditions, generator=generator)
        return _with_image_frame(stepped, conditions)


#: Wan 2.2 TI2V-5B's published sizes, for building it on the ``meta`` device (shape checks, memory estimates).
#: Sources: ``vae``: ``vae22_diffusers_config`` in huggingface/diffusers ``scripts/convert_wan_to_diffusers.py``
#: (the 48 ``latents_mean`` / ``latents_std`` values copied from there). ``transformer``: the
#: ``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` ``transformer/config.json`` as produced by that script's TI2V-5B entry
#: (dim 3072 = 24 heads x 128, 30 layers, FFN 14336, 48 in/out channels); these values were NOT re-read from the
#: file in this session, the 5.0B parameter count the test checks is the consistency check. ``sample_size``: the
#: model card's 720P setting, 121 frames at 704x1280.
WAN22_TI2V_5B_PUBLISHED_CONFIG: dict[str, Any] = {
    "transformer": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 24,
        "attention_head_dim": 128,
        "in_channels": 48,
        "out_channels": 48,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 14336,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    },
    "vae": {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "temperal_downsample": [False, True, True],
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 16,
        "latents_mean": [
            -0.2289,
            -0.0052,
            -0.1323,
            -0.2339,
            -0.2799,
            0.0174,
            0.1838,
            0.1557,
            -0.1382,
            0.0542,
            0.2813,
            0.0891,
            0.1570,
            -0.0098,
            0.0375,
            -0.1825,
            -0.2246,
            -0.1207,
            -0.0698,
            0.5109,
            0.2665,
            -0.2108,
            -0.2158,
            0.2502,
            -0.2055,
            -0.0322,
            0.1109,
            0.1567,
            -0.0729,
            0.0899,
            -0.2799,
            -0.1230,
            -0.0313,
            -0.1649,
            0.0117,
            0.0723,
            -0.2839,
            -0.2083,
            -0.0520,
            0.3748,
            0.0152,
            0.1957,
            0.1433,
            -0.2944,
            0.3573,
            -0.0548,
            -0.1681,
            -0.0667,
        ],  # fmt: skip
        "latents_std": [
            0.4765,
            1.0364,
            0.4514,
            1.1677,
            0.5313,
            0.4990,
            0.4818,
            0.5013,
            0.8158,
            1.0344,
            0.5894,
            1.0901,
            0.6885,
            0.6165,
            0.8454,
            0.4978,
            0.5759,
            0.3523,
            0.7135,
            0.6804,
            0.5833,
            1.4146,
            0.8986,
            0.5659,
            0.7069,
            0.5338,
            0.4889,
            0.4917,
            0.4069,
            0.4999,
            0.6866,
            0.4093,
            0.5709,
            0.6065,
            0.6415,
            0.4944,
            0.5726,
            1.2042,
            0.5458,
            1.6887,
            0.3971,
            1.0600,
            0.3943,
            0.5537,
            0.5444,
            0.4089,
            0.7468,
            0.7744,
        ],  # fmt: skip
    },
    "sample_size": {"num_frames": 121, "height": 704, "width": 1280},
}
