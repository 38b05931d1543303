"""Adapter for HunyuanVideo 1.5 image-to-video in diffusers (``HunyuanVideo15ImageToVideoPipeline``).

HunyuanVideo 1.5 is a rectified-flow model: ``x_t = (1 - s) x0 + s * noise`` with ``s = t / 1000``; the network
predicts the velocity ``noise - x0``. What it does, as ``HunyuanVideo15ImageToVideoPipeline`` (diffusers 0.42) does:

- **Latents.** ``AutoencoderKLHunyuanVideo15`` compresses 16x in space and 4x in time into 32 channels; latents are
  normalised by the VAE's ``scaling_factor`` alone (``z * 1.03682``; no per-channel mean / std), and decoded as
  ``vae.decode(z / scaling_factor)``. The reference image's latent is the posterior *mode* of the one-frame video,
  scaled the same way (``_get_image_latents``).
- **Image conditioning by channel concatenation, plus SigLIP tokens.** The transformer reads ``2 C + 1`` channels
  (65 published): the noisy latents, the image-conditioned latents (the reference image's latent in frame 0, zeros
  elsewhere) and a one-channel mask (1 on frame 0). It also attends to the SigLIP ``last_hidden_state`` of the
  reference image (729 tokens of 1152 at 384x384), next to the two text streams. Every frame, frame 0 included, is
  denoised (one scalar timestep per sample), and the decoded frame 0 is the model's output, not the reference; so
  the loss here counts every frame, exactly what the sampler uses.
- **Two text encoders.** Qwen2.5-VL-7B (the hidden state two layers from the end, chat template with a system
  prompt, 1000 tokens after cropping the template's first 108) and the Glyph-ByT5 encoder on quoted text in the
  prompt (256 tokens, zeros and mask 0 when the prompt quotes nothing). :meth:`prepare_conditions` calls the
  pipeline's own ``encode_prompt`` / ``_get_image_embeds`` / ``_get_image_latents``.
- **Sampler.** ``FlowMatchEulerDiscreteScheduler(shift=5.0)`` for the 480p I2V checkpoint (7.0 for 720p), stepped on
  ``sigmas = linspace(1, 0, N + 1)[:-1]`` shifted by the scheduler; first-order Euler on the sigmas. Classifier-free
  guidance is the pipeline's ``ClassifierFreeGuidance`` guider (``uncond + s (cond - uncond)``, 6.0 published).
- **Size.** The pipeline picks the video's height / width itself from the reference image's aspect ratio (the
  closest bucket at ``transformer.config.target_size``, 640 for 480p); its ``__call__`` takes no height / width.
  Training accepts any size with ``num_frames = 4k + 1`` and sides divisible by 16; :func:`pipeline_size_for_image`
  gives the size the pipeline would generate for an image. :class:`HunyuanVideo15Generator` calls the pipeline
  with an explicit size (for best-of-N) and refuses sizes the pipeline would not produce.

**LoRA loading.** diffusers 0.42 gives ``HunyuanVideo15ImageToVideoPipeline`` no LoRA loader mixin, so
``pipe.load_lora_weights`` does not exist. The LoRA is saved in the diffusers layout (``transformer.<module>.lora_A /
lora_B.weight`` keys, peft config in the safetensors metadata) and loads with the transformer's own peft loader::

    pipe.transformer.load_lora_adapter(lora_dir, weight_name="pytorch_lora_weights.safetensors", prefix="transformer")

which :func:`load_hunyuan_video15_lora` wraps.

MeanFlow checkpoints (``use_meanflow=True``, the step-distilled / super-resolution variants, which take a second
timestep ``timestep_r``) are refused: their training objective is not the flow-matching target used here.
"""

from __future__ import annotations

import copy
import os
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn

from .base import LORA_WEIGHT_NAME, VideoModelAdapter
from .mixins import FlowMatchingMixin, SingleTransformerMixin

_I2V = "HunyuanVideo15ImageToVideoPipeline"
_T2V = "HunyuanVideo15Pipeline"


def pipeline_size_for_image(pipeline: Any, image: PIL.Image.Image) -> tuple[int, int]:
    """``(height, width)`` that ``HunyuanVideo15ImageToVideoPipeline`` generates for ``image`` (its aspect bucket)."""
    return tuple(
        pipeline.video_processor.calculate_default_height_width(
            height=image.size[1], width=image.size[0], target_size=pipeline.target_size
        )
    )


def load_hunyuan_video15_lora(
    pipeline: Any, lora_dir: str | os.PathLike, *, weight_name: str = LORA_WEIGHT_NAME, adapter_name: str | None = None
) -> None:
    """Load a LoRA saved by :class:`HunyuanVideo15I2VAdapter` into ``pipeline.transformer`` (diffusers' peft loader).

    Equivalent to ``pipe.load_lora_weights(lora_dir)`` for pipelines that have a LoRA loader mixin, which
    ``HunyuanVideo15ImageToVideoPipeline`` does not (diffusers 0.42).
    """
    path = os.path.join(os.fspath(lora_dir), weight_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no LoRA weights at {path}")
    pipeline.transformer.load_lora_adapter(
        os.fspath(lora_dir), weight_name=weight_name, prefix="transformer", adapter_name=adapter_name
    )


class HunyuanVideo15I2VAdapter(SingleTransformerMixin, FlowMatchingMixin, VideoModelAdapter):
    """HunyuanVideo 1.5 image-to-video (``HunyuanVideo15ImageToVideoPipeline``).

    Args:
        pipeline: a ``HunyuanVideo15ImageToVideoPipeline`` (the text-to-video ``HunyuanVideo15Pipeline`` is refused).

    Conditions: ``prompt_embeds`` / ``prompt_embeds_mask`` (Qwen2.5-VL), ``prompt_embeds_2`` / ``prompt_embeds_mask_2``
    (ByT5), ``image_embeds`` (SigLIP) and ``image_latents`` (the reference image's scaled VAE latent,
    ``(B, C, 1, h, w)``). Latents are ``(B, C, F', h, w)``, ``F' = (F - 1) / 4 + 1``, ``h = H / 16``, ``w = W / 16``
    (:attr:`latent_frame_axis` is 2).
    """

    family = "hunyuanvideo-1.5-i2v"
    pipeline_class_name = _I2V
    #: attention projections of the double-stream blocks (video and text streams); the same names also match the
    #: text token refiner's self-attention.
    default_lora_target_modules = (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "add_q_proj",
        "add_k_proj",
        "add_v_proj",
        "to_add_out",
    )
    encoder_module_names = ("vae", "text_encoder", "text_encoder_2", "image_encoder")
    latent_frame_axis = 2

    def __init__(self, pipeline: Any):
        name = type(pipeline).__name__
        if name == _T2V:
            raise ValueError(
                f"{_T2V} is HunyuanVideo 1.5 text-to-video; HunyuanVideo15I2VAdapter trains {_I2V} "
                "(e.g. hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v)"
            )
        if name != _I2V:
            raise ValueError(f"HunyuanVideo15I2VAdapter needs a {_I2V}, got {name}")
        for component in ("transformer", "vae"):
            if getattr(pipeline, component, None) is None:
                raise ValueError(f"HunyuanVideo15I2VAdapter needs a pipeline with a `{component}`")
        config = pipeline.transformer.config
        if getattr(config, "use_meanflow", False):
            raise ValueError(
                "this HunyuanVideo 1.5 transformer has use_meanflow=True (a MeanFlow-distilled variant taking a "
                "second timestep); only the flow-matching checkpoints (use_meanflow=False) are supported"
            )
        if getattr(config, "task_type", "i2v") != "i2v":
            raise ValueError(
                f"this HunyuanVideo 1.5 transformer was converted for task_type={config.task_type!r}; "
                "HunyuanVideo15I2VAdapter trains the image-to-video (task_type='i2v') checkpoints"
            )
        channels = int(pipeline.vae.config.latent_channels)
        if config.in_channels != 2 * channels + 1 or config.out_channels != channels:
            raise ValueError(
                f"transformer in/out channels ({config.in_channels}/{config.out_channels}) do not match the I2V "
                f"layout for {channels} latent channels (2 * {channels} + 1 / {channels})"
            )
        super().__init__(pipeline)

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        # The T2V class is accepted here so that __init__ refuses it with a message naming the I2V class.
        return type(pipeline).__name__ in (_I2V, _T2V)

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") == _I2V

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def vae_scale_factor_spatial(self) -> int:
        return int(self.vae.spatial_compression_ratio)

    @property
    def vae_scale_factor_temporal(self) -> int:
        return int(self.vae.temporal_compression_ratio)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a clear error for sizes the VAE / patchifier cannot represent exactly."""
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        p = int(self.pipeline.transformer.config.patch_size)
        if (num_frames - 1) % t != 0:
            raise ValueError(f"HunyuanVideo 1.5 needs num_frames = {t}k + 1 (e.g. {8 * t + 1}), got {num_frames}")
        if height % (s * p) or width % (s * p):
            raise ValueError(f"HunyuanVideo 1.5 needs height/width divisible by {s * p}, got {height}x{width}")

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        self.check_video_size(num_frames, height, width)
        t, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        channels = int(self.vae.config.latent_channels)
        return (batch_size, channels, (num_frames - 1) // t + 1, height // s, width // s)

    # ------------------------------------------------------------------------------------------ data
    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """VAE posterior mode times ``scaling_factor``: ``(B, F, 3, H, W)`` -> ``(B, C, F', h, w)`` float32."""
        x = self.videos_to_model_input(videos)
        self.check_video_size(x.shape[2], x.shape[3], x.shape[4])
        vae = self.vae
        x = x.to(vae.device, vae.dtype)
        # One video per VAE call: diffusers 0.42's AutoencoderKLHunyuanVideo15 mid-block attention broadcasts its
        # (B, S, S) causal mask against (B, 1, S, D) queries and fails for B > 1 (what its use_slicing also avoids).
        latents = torch.cat([vae.encode(v).latent_dist.mode() for v in x.split(1)]).float()
        return latents * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``vae.decode(z / scaling_factor)`` -> ``(B, F, 3, H, W)`` in ``[0, 1]``, differentiably."""
        vae = self.vae
        z = (latents / self.scaling_factor).to(vae.device, vae.dtype)
        video = torch.cat([vae.decode(v, return_dict=False)[0] for v in z.split(1)])  # one per call, see above
        return self.videos_from_model_output(video)

    def resize_reference(self, image: PIL.Image.Image, height: int, width: int) -> PIL.Image.Image:
        """The reference image resized with a center crop to the video size, as the pipeline does."""
        return self.pipeline.video_processor.resize(image, height=height, width=width, resize_mode="crop")

    @torch.no_grad()
    def encode_image_condition(self, images: Sequence[Any], *, height: int, width: int) -> dict[str, torch.Tensor]:
        """``image_embeds`` (SigLIP ``last_hidden_state``) and ``image_latents`` ``(B, C, 1, h, w)`` per image."""
        pipe = self.pipeline
        embeds, latents = [], []
        for image in self.images_to_pil(images):
            image = self.resize_reference(image, height, width)
            embeds.append(
                pipe._get_image_embeds(
                    image_encoder=pipe.image_encoder,
                    feature_extractor=pipe.feature_extractor,
                    image=image,
                    device=pipe.image_encoder.device,
                ).float()
            )
            latents.append(
                pipe._get_image_latents(
                    vae=pipe.vae,
                    image_processor=pipe.video_processor,
                    image=image,
                    height=height,
                    width=width,
                    device=pipe.vae.device,
                ).float()
            )
        return {"image_embeds": torch.cat(embeds), "image_latents": torch.cat(latents)}

    @torch.no_grad()
    def encode_prompt_streams(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The pipeline's ``encode_prompt``: Qwen2.5-VL embeddings / mask and ByT5 glyph embeddings / mask (float32)."""
        embeds, mask, embeds_2, mask_2 = self.pipeline.encode_prompt(
            prompt=list(prompts),
            device=self.pipeline.text_encoder.device,
            dtype=torch.float32,
            batch_size=len(prompts),
            num_videos_per_prompt=1,
        )
        return {
            "prompt_embeds": embeds,
            "prompt_embeds_mask": mask,
            "prompt_embeds_2": embeds_2,
            "prompt_embeds_mask_2": mask_2,
        }

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode_prompt_streams(prompts)["prompt_embeds"]

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        return {
            **self.encode_prompt_streams(prompts),
            **self.encode_image_condition(images, height=height, width=width),
        }

    # ------------------------------------------------------------------------------------------ noise
    # add_noise / target (velocity) / scheduler_step (Euler): FlowMatchingMixin
    def condition_channels(self, latents: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
        """``[image-conditioned latents, mask]``: ``(B, C + 1, F', h, w)``, the image latent and 1 on frame 0 only."""
        image = image_latents.to(latents.device, latents.dtype)
        if image.shape[0] != latents.shape[0]:
            raise ValueError(f"image_latents batch {image.shape[0]} != latents batch {latents.shape[0]}")
        rest = torch.zeros_like(latents[:, :, 1:])
        cond = torch.cat([image, rest], dim=2)
        mask = torch.zeros_like(latents[:, :1])
        mask[:, :, 0] = 1.0
        return torch.cat([cond, mask], dim=1)

    def transformer_inputs(self, noisy_latents, timesteps, conditions) -> dict[str, torch.Tensor]:
        """The transformer's keyword inputs: ``[noisy, image latents, mask]`` on the channel axis, one timestep per
        sample, the two text streams with their masks and the SigLIP tokens, in the transformer's dtype."""
        transformer = self.pipeline.transformer
        device = noisy_latents.device
        dtype = next(transformer.parameters()).dtype
        hidden = torch.cat([noisy_latents, self.condition_channels(noisy_latents, conditions["image_latents"])], dim=1)
        return {
            "hidden_states": hidden.to(dtype),
            "timestep": timesteps.to(device, dtype).expand(hidden.shape[0]),
            "encoder_hidden_states": conditions["prompt_embeds"].to(device, dtype),
            "encoder_attention_mask": conditions["prompt_embeds_mask"].to(device, dtype),
            "encoder_hidden_states_2": conditions["prompt_embeds_2"].to(device, dtype),
            "encoder_attention_mask_2": conditions["prompt_embeds_mask_2"].to(device, dtype),
            "image_embeds": conditions["image_embeds"].to(device, dtype),
        }

    def predict(self, noisy_latents, timesteps, conditions):
        """Transformer forward on :meth:`transformer_inputs`; velocity ``(B, C, F', h, w)`` float32."""
        inputs = self.transformer_inputs(noisy_latents, timesteps, conditions)
        return self.pipeline.transformer(**inputs, return_dict=False)[0].float()

    def inference_timesteps(self, num_inference_steps: int, **_: Any) -> torch.Tensor:
        """The pipeline's timesteps (``sigmas = linspace(1, 0, N + 1)[:-1]``, shifted by the scheduler), then 0."""
        scheduler = copy.deepcopy(self.scheduler)
        if scheduler.config.get("use_dynamic_shifting", False):
            raise ValueError(
                "this scheduler shifts its sigmas dynamically (use_dynamic_shifting=True), which "
                "HunyuanVideo15ImageToVideoPipeline never sets up (it passes no mu); use the published "
                "FlowMatchEulerDiscreteScheduler(shift=...)"
            )
        sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
        scheduler.set_timesteps(sigmas=sigmas, device="cpu")
        timesteps = scheduler.timesteps.float()
        return torch.cat([timesteps, timesteps.new_zeros(1)])

    # ---------------------------------------------------------------------------------------------- LoRA
    def lora_load_snippet(self, location: str = "<this repo or folder>") -> str:
        """The loading call for model cards: the transformer's peft loader (the pipeline has no load_lora_weights)."""
        if hasattr(type(self.pipeline), "load_lora_weights"):
            return super().lora_load_snippet(location)
        return (
            f'pipe.transformer.load_lora_adapter("{location}", weight_name="{self.lora_weight_name("transformer")}", '
            'prefix="transformer")'
        )

    def save_lora_weights(
        self, save_directory: str | os.PathLike, *, adapter_name: str = "default", is_main_process: bool = True
    ) -> list[str]:
        """Save the transformer's LoRA in diffusers' layout (``transformer.``-prefixed keys, peft config as metadata).

        Load it with :func:`load_hunyuan_video15_lora` (``pipe.transformer.load_lora_adapter``): the pipeline class
        has no ``load_lora_weights`` in diffusers 0.42.
        """
        if hasattr(type(self.pipeline), "save_lora_weights"):  # a diffusers release with a loader for the family
            return super().save_lora_weights(
                save_directory, adapter_name=adapter_name, is_main_process=is_main_process
            )
        from diffusers.loaders.lora_pipeline import HunyuanVideoLoraLoaderMixin

        transformer = self.pipeline.transformer
        weight_name = self.lora_weight_name("transformer")
        HunyuanVideoLoraLoaderMixin.save_lora_weights(
            os.fspath(save_directory),
            transformer_lora_layers=self.lora_state_dicts(adapter_name)["transformer"],
            transformer_lora_adapter_metadata=transformer.peft_config[adapter_name].to_dict(),
            weight_name=weight_name,
            is_main_process=is_main_process,
        )
        return [weight_name]


class HunyuanVideo15Generator:
    """Call a ``HunyuanVideo15ImageToVideoPipeline`` as ``pipe(image=..., height=..., width=..., ...)``.

    The pipeline chooses the video size from the reference image's aspect ratio and takes no ``height`` / ``width``;
    this wrapper accepts them (as :func:`icreward.evaluation.best_of_n.pipeline_generator` passes them), checks that
    they are the size the pipeline will generate for that image, and raises a clear error otherwise.
    """

    def __init__(self, pipeline: Any):
        if type(pipeline).__name__ != _I2V:
            raise ValueError(f"HunyuanVideo15Generator needs a {_I2V}, got {type(pipeline).__name__}")
        self.pipeline = pipeline

    def __call__(
        self,
        *,
        image: PIL.Image.Image,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float | None = None,
        **kwargs,
    ):
        """``pipeline(image=image, **kwargs)``; ``guidance_scale`` replaces the guider's scale for this call."""
        expected = pipeline_size_for_image(self.pipeline, image)
        if (height, width) != (None, None) and (height, width) != expected:
            raise ValueError(
                f"HunyuanVideo15ImageToVideoPipeline generates {expected[0]}x{expected[1]} for a {image.size[1]}x"
                f"{image.size[0]} reference image (target_size {self.pipeline.target_size}); asked for {height}x{width}"
            )
        if guidance_scale is None:
            return self.pipeline(image=image, **kwargs)
        guider = self.pipeline.guider
        self.pipeline.guider = guider.new(guidance_scale=float(guidance_scale))
        try:
            return self.pipeline(image=image, **kwargs)
        finally:
            self.pipeline.guider = guider


# ------------------------------------------------------------------------------------------------ meta device
#: Condition token counts of the published pipeline: Qwen2.5-VL tokens after the template crop
#: (``tokenizer_max_length``), ByT5 tokens (``tokenizer_2_max_length``) and SigLIP tokens
#: (``vision_num_semantic_tokens``), as ``HunyuanVideo15ImageToVideoPipeline.__init__`` sets them.
PUBLISHED_TEXT_TOKENS, PUBLISHED_GLYPH_TOKENS, PUBLISHED_IMAGE_TOKENS = 1000, 256, 729


def forward_all_tokens_valid(
    transformer: nn.Module,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    encoder_hidden_states_2: torch.Tensor,
    encoder_attention_mask_2: torch.Tensor,
    image_embeds: torch.Tensor,
    **_: Any,
) -> torch.Tensor:
    """``HunyuanVideo15Transformer3DModel``'s forward when every condition token is valid (all masks 1), without
    its data-dependent steps, so that it also runs on the ``meta`` device.

    The model's own forward branches on ``torch.all(image_embeds == 0)`` and moves valid condition tokens before
    padding with boolean indexing, neither of which ``meta`` tensors support. With every mask 1 (and nonzero image
    embeddings) that reordering is the plain concatenation ``[image, ByT5, Qwen]`` used here, so the operations and
    every tensor shape are the model's (a test checks equality with the real forward on CPU). Used for shape checks
    and memory accounting at the published size; training and sampling call the model itself.
    """
    config = transformer.config
    batch, _, frames, height, width = hidden_states.shape
    p_t, p = int(config.patch_size_t), int(config.patch_size)
    rotary = transformer.rope(hidden_states)
    temb = transformer.time_embed(timestep)
    tokens = transformer.x_embedder(hidden_states)

    def typed(x: torch.Tensor, kind: int) -> torch.Tensor:
        return x + transformer.cond_type_embed(torch.full_like(x[:, :, 0], kind, dtype=torch.long))

    text = typed(transformer.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask), 0)
    glyph = typed(transformer.context_embedder_2(encoder_hidden_states_2), 1)
    image = typed(transformer.image_embedder(image_embeds), 2)
    context = torch.cat([image, glyph, text], dim=1)
    mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
    for block in transformer.transformer_blocks:
        tokens, context = block(tokens, context, temb, mask, rotary)
    out = transformer.proj_out(transformer.norm_out(tokens, temb))
    out = out.reshape(batch, frames // p_t, height // p, width // p, -1, p_t, p, p)
    out = out.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(batch, -1, frames, height, width)
    return out


def _accounting_inputs(model, vae, recipe, forward_batch, dtype, source):
    """The memory accountant's view of a recipe (see :func:`icreward.memory.accountant.register_accounting_family`)."""
    from ..memory.families import channels_first_family_inputs

    frames, height, width = (int(recipe[k]) for k in ("num_frames", "height", "width"))
    t, s = int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)
    if (frames - 1) % t or height % s or width % s:
        raise ValueError(f"{source}: HunyuanVideo 1.5 needs num_frames = {t}k + 1 and height/width divisible by {s}")
    latent_frames, h, w = (frames - 1) // t + 1, height // s, width // s
    config = model.config

    def empty(*shape, **kwargs):
        return torch.empty(*shape, device="meta", **kwargs)

    kwargs = {
        "hidden_states": empty(forward_batch, config.in_channels, latent_frames, h, w, dtype=dtype),
        "timestep": empty(forward_batch, dtype=dtype),
        "encoder_hidden_states": empty(forward_batch, PUBLISHED_TEXT_TOKENS, config.text_embed_dim, dtype=dtype),
        "encoder_attention_mask": torch.ones(forward_batch, PUBLISHED_TEXT_TOKENS, device="meta", dtype=dtype),
        "encoder_hidden_states_2": empty(forward_batch, PUBLISHED_GLYPH_TOKENS, config.text_embed_2_dim, dtype=dtype),
        "encoder_attention_mask_2": torch.ones(forward_batch, PUBLISHED_GLYPH_TOKENS, device="meta", dtype=dtype),
        "image_embeds": empty(forward_batch, PUBLISHED_IMAGE_TOKENS, config.image_embed_dim, dtype=dtype),
    }
    # The model built for accounting runs the meta-safe forward (same operations and shapes, see above).
    model.forward = types.MethodType(lambda self, **kw: (forward_all_tokens_valid(self, **kw),), model)
    return channels_first_family_inputs(kwargs, recipe, vae, latent_frames, h, w)


def _register_memory_accounting() -> None:
    from ..memory.families import register_adapter_accounting

    register_adapter_accounting("HunyuanVideo15Transformer3DModel", _accounting_inputs, HunyuanVideo15I2VAdapter)


_register_memory_accounting()
