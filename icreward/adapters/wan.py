"""Adapters for Wan image-to-video models (Wan 2.1 I2V and the two-expert Wan 2.2 I2V A14B) in diffusers.

Wan is a rectified-flow model: ``x_t = (1 - s) x0 + s * noise`` with ``s = t / 1000`` and the network predicts the
velocity ``noise - x0``. Image conditioning (both versions) concatenates, on the channel axis, the noisy latents
(16 channels), a 4-channel first-frame mask and the VAE latents of ``[image, 0, 0, ...]`` (16 channels): 36 input
channels. Wan 2.1 additionally cross-attends to CLIP ViT-H penultimate-layer image tokens; Wan 2.2 A14B does not,
but splits denoising between a high-noise expert (``transformer``, ``t >= boundary_ratio * 1000``) and a
low-noise expert (``transformer_2``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from .base import LORA_WEIGHT_NAME, PipelineSchedulerSampler, VideoModelAdapter
from .differentiable_decode import differentiable_decode
from .mixins import FlowMatchingMixin, SingleTransformerMixin

WanExpert = Literal["both", "high_noise", "low_noise"]

# Wan 2.1 I2V's attention processor takes the first `len - 512` context tokens as image tokens: the text must be
# exactly 512 tokens, or image tokens are silently read as text.
WAN_I2V_TEXT_LENGTH = 512


class WanBase(FlowMatchingMixin, VideoModelAdapter):
    """Shared Wan logic: flow matching, VAE normalisation, 36-channel image conditioning."""

    pipeline_class_name = "WanImageToVideoPipeline"
    default_lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, pipeline: Any, *, max_sequence_length: int = WAN_I2V_TEXT_LENGTH):
        super().__init__(pipeline)
        if getattr(pipeline.config, "expand_timesteps", False):
            raise ValueError(
                "Wan 2.2 TI2V-5B (expand_timesteps=True, per-token timesteps) is not supported by the Wan adapters; "
                "use Wan 2.1 I2V or Wan 2.2 I2V A14B"
            )
        self.max_sequence_length = int(max_sequence_length)

    # Wan's VAE compresses 4x in time (first frame kept) and 8x in space; the transformer patchifies 2x2.
    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def vae_scale_factor_spatial(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    def _latent_stats(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device, dtype=dtype).view(1, z, 1, 1, 1)
        return mean, std

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a clear error for sizes the VAE / patchifier cannot represent exactly."""
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        patch = self._any_transformer().config.patch_size
        if (num_frames - 1) % t != 0:
            raise ValueError(f"Wan needs num_frames = {t}k + 1 (e.g. 9, 33, 81), got {num_frames}")
        if height % (s * patch[1]) or width % (s * patch[2]):
            raise ValueError(f"Wan needs height/width divisible by {s * patch[1]}, got {height}x{width}")

    #: latents are ``(B, C, F', H', W')``.
    latent_frame_axis = 2

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """``(B, z_dim, (F - 1) / 4 + 1, H / 8, W / 8)`` from the VAE config (no encode)."""
        self.check_video_size(num_frames, height, width)
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        return (batch_size, int(self.vae.config.z_dim), (num_frames - 1) // t + 1, height // s, width // s)

    def _any_transformer(self) -> nn.Module:
        return self.pipeline.transformer if self.pipeline.transformer is not None else self.pipeline.transformer_2

    # ------------------------------------------------------------------------------------------ data
    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """VAE-encode videos ``(B, F, 3, H, W)`` and normalise with the VAE's ``latents_mean`` / ``latents_std``.

        The posterior mode is used (deterministic, so latents can be cached); returns ``(B, 16, F', H/8, W/8)``
        float32 with ``F' = (F - 1) / 4 + 1``.
        """
        x = self.videos_to_model_input(videos)
        self.check_video_size(x.shape[2], x.shape[3], x.shape[4])
        vae = self.vae
        latents = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(latents.device, latents.dtype)
        return (latents - mean) / std

    @torch.no_grad()
    def encode_image_condition(self, images: Sequence[Any], *, num_frames: int, height: int, width: int):
        """The 20-channel I2V condition: first-frame mask (4 channels) + latents of ``[image, 0, ..., 0]`` (16)."""
        pipe = self.pipeline
        pil = self.images_to_pil(images)
        image = pipe.video_processor.preprocess(pil, height=height, width=width).float()  # (B, 3, H, W) in [-1, 1]
        batch = image.shape[0]
        video = torch.cat([image[:, :, None], image.new_zeros(batch, 3, num_frames - 1, height, width)], dim=2)
        vae = self.vae
        cond = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(cond.device, cond.dtype)
        cond = (cond - mean) / std
        t = self.vae_scale_factor_temporal
        latent_h, latent_w = cond.shape[-2:]
        # One mask value per pixel frame; the first frame is repeated t times so that frames pack into groups of t
        # per latent frame (the VAE keeps frame 0 on its own).
        mask = torch.zeros(batch, 1, num_frames, latent_h, latent_w, device=cond.device)
        mask[:, :, 0] = 1
        mask = torch.cat([mask[:, :, :1].repeat_interleave(t, dim=2), mask[:, :, 1:]], dim=2)
        mask = mask.view(batch, -1, t, latent_h, latent_w).transpose(1, 2)
        return torch.cat([mask, cond], dim=1)

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` (UMT5), ``condition`` (mask + image latents) and, for Wan 2.1, ``image_embeds`` (CLIP)."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        conditions = {
            "prompt_embeds": self.encode_prompts(prompts).float(),
            "condition": self.encode_image_condition(images, num_frames=num_frames, height=height, width=width),
        }
        if self._uses_image_embeds():
            with torch.no_grad():
                # One call per image: CLIPImageProcessor resizes each to the encoder's resolution.
                conditions["image_embeds"] = self.pipeline.encode_image(images, device=self.device).float()
        return conditions

    def _uses_image_embeds(self) -> bool:
        transformer = self._any_transformer()
        return transformer.config.image_dim is not None

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Un-normalise, VAE-decode and map to ``[0, 1]``: ``(B, 16, F', h, w)`` -> ``(B, F, 3, H, W)``."""
        vae = self.vae
        mean, std = self._latent_stats(latents.device, latents.dtype)
        x = (latents * std + mean).to(vae.device, vae.dtype)
        # under autograd: chunked and gradient-checkpointed, carrying the causal feat_cache (same values)
        return self.videos_from_model_output(differentiable_decode(vae, x))

    # ------------------------------------------------------------------------------------------ noise
    # add_noise / target (velocity) / scheduler_step (Euler): FlowMatchingMixin
    def _forward(self, transformer: nn.Module, noisy, timesteps, conditions) -> torch.Tensor:
        # The first parameter (patch embedding) has the base weights' dtype; diffusers' `.dtype` walks all of them.
        dtype = next(transformer.parameters()).dtype
        hidden = torch.cat([noisy, conditions["condition"].to(noisy.device, noisy.dtype)], dim=1)
        image_embeds = conditions.get("image_embeds")
        if transformer.config.image_dim is not None and image_embeds is None:
            raise ValueError("this Wan transformer cross-attends to CLIP image tokens: conditions need 'image_embeds'")
        out = transformer(
            hidden_states=hidden.to(dtype),
            timestep=timesteps.to(noisy.device),
            encoder_hidden_states=conditions["prompt_embeds"].to(noisy.device, dtype),
            encoder_hidden_states_image=None if image_embeds is None else image_embeds.to(noisy.device, dtype),
            return_dict=False,
        )[0]
        return out.float()


class WanI2VAdapter(SingleTransformerMixin, WanBase):
    """Wan 2.1 image-to-video (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``, ``...-720P-Diffusers``).

    Args:
        pipeline: a ``WanImageToVideoPipeline`` with a single ``transformer`` and a CLIP ``image_encoder``.
        max_sequence_length: text length; must stay 512 for Wan 2.1 I2V (see module notes).

    Example:

    ```python
    adapter = WanI2VAdapter.from_pretrained("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", torch_dtype=torch.bfloat16)
    cond = adapter.prepare_conditions([image], ["a cat walks"], num_frames=81, height=480, width=832)
    ```
    """

    family = "wan2.1-i2v"
    # Also adapt the projections of the CLIP image tokens in cross-attention: that is where the reference
    # image enters, and diffusers' Wan I2V LoRA loader expects them.
    default_lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj")

    def __init__(self, pipeline: Any, *, max_sequence_length: int = WAN_I2V_TEXT_LENGTH):
        super().__init__(pipeline, max_sequence_length=max_sequence_length)
        if getattr(pipeline, "transformer", None) is None:
            raise ValueError("WanI2VAdapter needs a pipeline with a `transformer`")
        if getattr(pipeline, "transformer_2", None) is not None:
            raise ValueError("this pipeline has two experts (Wan 2.2): use Wan22Adapter")
        if pipeline.transformer.config.image_dim is not None:
            if getattr(pipeline, "image_encoder", None) is None:
                raise ValueError(
                    "Wan 2.1 I2V cross-attends to CLIP image tokens but the pipeline has no image_encoder"
                )
            if self.max_sequence_length != WAN_I2V_TEXT_LENGTH:
                raise ValueError(
                    f"Wan 2.1 I2V needs max_sequence_length={WAN_I2V_TEXT_LENGTH}: its attention treats all context "
                    f"tokens beyond the first {WAN_I2V_TEXT_LENGTH} as image tokens, got {self.max_sequence_length}"
                )

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return (
            type(pipeline).__name__ == "WanImageToVideoPipeline"
            and getattr(pipeline, "transformer_2", None) is None
            and getattr(pipeline.config, "boundary_ratio", None) is None
        )

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") == "WanImageToVideoPipeline" and not _has_component(
            model_index, "transformer_2"
        )

    def predict(self, noisy_latents, timesteps, conditions):
        return self._forward(self.pipeline.transformer, noisy_latents, timesteps, conditions)

    def sampler(self, num_inference_steps: int, *, device=None) -> PipelineSchedulerSampler:
        """The pipeline's own scheduler (Wan ships ``UniPCMultistepScheduler`` with ``flow_shift``), stepped as
        ``WanImageToVideoPipeline`` steps it."""
        return PipelineSchedulerSampler(self, num_inference_steps, device=device)


class Wan22Adapter(WanBase):
    """Wan 2.2 I2V A14B (``Wan-AI/Wan2.2-I2V-A14B-Diffusers``): two experts switched at ``boundary_ratio``.

    ``transformer`` denoises ``t >= boundary_ratio * 1000`` (high noise, layout), ``transformer_2`` the rest (low
    noise, detail). :meth:`predict` routes every sample to its expert, whether or not that expert is trained.

    Args:
        pipeline: a ``WanImageToVideoPipeline`` with ``transformer_2`` and ``boundary_ratio``.
        train_expert: which expert(s) receive LoRA and gradients: ``"low_noise"`` (IPRO's choice, the default),
            ``"high_noise"`` or ``"both"``. Training timesteps are drawn only from the trained experts' range.
        max_sequence_length: text length (512, as the model was trained).

    LoRA files: the high-noise expert's LoRA is ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(dir)``);
    the low-noise expert's is ``pytorch_lora_weights_transformer_2.safetensors``, loaded with
    ``pipe.load_lora_weights(dir, weight_name="pytorch_lora_weights_transformer_2.safetensors",
    load_into_transformer_2=True)``. :func:`load_wan22_lora` does both.
    """

    family = "wan2.2-i2v"
    lora_weight_names = {
        "transformer": LORA_WEIGHT_NAME,
        "transformer_2": "pytorch_lora_weights_transformer_2.safetensors",
    }

    def __init__(
        self, pipeline: Any, *, train_expert: WanExpert = "low_noise", max_sequence_length: int = WAN_I2V_TEXT_LENGTH
    ):
        if type(pipeline).__name__ != "WanImageToVideoPipeline":
            raise ValueError(
                f"Wan22Adapter trains image-to-video models: it supports WanImageToVideoPipeline (Wan 2.2 I2V A14B, "
                f"36 input channels), not {type(pipeline).__name__} (a Wan 2.2 T2V pipeline has 16-channel "
                "transformers and no image condition)"
            )
        super().__init__(pipeline, max_sequence_length=max_sequence_length)
        if getattr(pipeline.config, "boundary_ratio", None) is None:
            raise ValueError("Wan22Adapter needs a pipeline with `boundary_ratio` set (two-expert Wan 2.2)")
        if train_expert not in ("both", "high_noise", "low_noise"):
            raise ValueError(f"train_expert must be 'both', 'high_noise' or 'low_noise', got {train_expert!r}")
        needed = {
            "both": ("transformer", "transformer_2"),
            "high_noise": ("transformer",),
            "low_noise": ("transformer_2",),
        }
        for name in needed[train_expert]:
            if getattr(pipeline, name, None) is None:
                raise ValueError(f"train_expert={train_expert!r} needs `{name}` but the pipeline has none")
        self.train_expert = train_expert

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | None = None,
        train_expert: WanExpert = "low_noise",
        **kwargs,
    ) -> Wan22Adapter:
        return cls(cls.load_pipeline(name_or_path, torch_dtype=torch_dtype, **kwargs), train_expert=train_expert)

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return (
            type(pipeline).__name__ in ("WanImageToVideoPipeline", "WanPipeline")
            and getattr(pipeline.config, "boundary_ratio", None) is not None
        )

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") == "WanImageToVideoPipeline" and _has_component(
            model_index, "transformer_2"
        )

    @property
    def boundary_timestep(self) -> float:
        return float(self.pipeline.config.boundary_ratio) * self.num_train_timesteps

    @property
    def trainable_modules(self) -> dict[str, nn.Module]:
        names = {"both": ("transformer", "transformer_2"), "high_noise": ("transformer",)}.get(
            self.train_expert, ("transformer_2",)
        )
        return {name: getattr(self.pipeline, name) for name in names}

    @property
    def timestep_bounds(self) -> tuple[float, float]:
        if self.train_expert == "high_noise":
            return self.boundary_timestep, float(self.num_train_timesteps)
        if self.train_expert == "low_noise":
            return 0.0, self.boundary_timestep
        return 0.0, float(self.num_train_timesteps)

    def lora_load_snippet(self, location: str = "<this repo or folder>") -> str:
        """The diffusers calls that load each trained expert's LoRA into that expert.

        Diffusers' ``WanLoraLoaderMixin.load_lora_weights`` always loads into ``transformer`` (the high-noise expert)
        unless ``load_into_transformer_2=True`` is passed, and with no ``weight_name`` it picks whatever
        ``.safetensors`` file the folder holds: a plain ``pipe.load_lora_weights(dir)`` on a low-noise-only LoRA
        therefore puts it into the wrong expert. The note says so next to the exact calls.
        """
        lines = []
        if "transformer" in self.trainable_modules:
            lines.append(f'pipe.load_lora_weights("{location}")  # high-noise expert (transformer)')
        if "transformer_2" in self.trainable_modules:
            lines += [
                "# low-noise expert (transformer_2): weight_name AND load_into_transformer_2=True are both needed;",
                "# a plain pipe.load_lora_weights(dir) would load this file into the high-noise expert",
                "pipe.load_lora_weights(",
                f'    "{location}",',
                f'    weight_name="{self.lora_weight_name("transformer_2")}",',
                "    load_into_transformer_2=True,",
                ")",
            ]
        lines.append(f'# or: from icreward.adapters import load_wan22_lora; load_wan22_lora(pipe, "{location}")')
        return "\n".join(lines)

    def sampler(self, num_inference_steps: int, *, device=None) -> PipelineSchedulerSampler:
        """The pipeline's own scheduler, stepped as ``WanImageToVideoPipeline`` steps it (:meth:`predict` picks each
        step's expert by the same ``t >= boundary_ratio * 1000`` rule)."""
        return PipelineSchedulerSampler(self, num_inference_steps, device=device)

    def expert_for(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Boolean mask, True where a timestep goes to the high-noise expert (``transformer``)."""
        return timesteps >= self.boundary_timestep

    def predict(self, noisy_latents, timesteps, conditions):
        high = self.expert_for(timesteps.to(noisy_latents.device))
        experts = ((high, self.pipeline.transformer), (~high, self.pipeline.transformer_2))
        if bool(high.all()) or not bool(high.any()):
            expert = self.pipeline.transformer if bool(high.all()) else self.pipeline.transformer_2
            if expert is None:
                raise ValueError("a timestep falls in the range of an expert the pipeline does not have")
            return self._forward(expert, noisy_latents, timesteps, conditions)
        out = torch.empty_like(noisy_latents, dtype=torch.float32)
        for mask, expert in experts:
            sub = {k: v[mask] if torch.is_tensor(v) else v for k, v in conditions.items()}
            out[mask] = self._forward(expert, noisy_latents[mask], timesteps[mask], sub)
        return out


def load_wan22_lora(pipeline: Any, directory: str | os.PathLike, adapter_name: str | None = None) -> list[str]:
    """Load a LoRA saved by :class:`Wan22Adapter` into a Wan 2.2 pipeline, each expert's file into its expert.

    Returns the names of the experts that received weights.
    """
    directory = os.fspath(directory)
    loaded = []
    if os.path.isfile(os.path.join(directory, LORA_WEIGHT_NAME)):
        pipeline.load_lora_weights(directory, weight_name=LORA_WEIGHT_NAME, adapter_name=adapter_name)
        loaded.append("transformer")
    name_2 = Wan22Adapter.lora_weight_names["transformer_2"]
    if os.path.isfile(os.path.join(directory, name_2)):
        pipeline.load_lora_weights(
            directory, weight_name=name_2, adapter_name=adapter_name, load_into_transformer_2=True
        )
        loaded.append("transformer_2")
    if not loaded:
        raise FileNotFoundError(f"no Wan 2.2 LoRA files in {directory}")
    return loaded


def _has_component(model_index: dict[str, Any], name: str) -> bool:
    value = model_index.get(name)
    return isinstance(value, (list, tuple)) and len(value) == 2 and value[0] is not None
