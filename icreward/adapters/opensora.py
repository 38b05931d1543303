"""Adapter for Open-Sora 1.2 / 1.3 image-to-video (STDiT3 + rectified flow), wrapping the official ``opensora`` package.

Open-Sora is not part of diffusers and not on PyPI. Install it from its repository (it pulls ``colossalai``;
``flash-attn`` and apex are optional)::

    git clone https://github.com/hpcaitech/Open-Sora && cd Open-Sora
    git checkout v1.2.0        # or v1.3: STDiT3 with the same forward interface
    pip install -v .

What this adapter relies on, read from that repository's source (``opensora/models/stdit/stdit3.py``,
``opensora/models/vae/vae.py``, ``opensora/models/text_encoder/t5.py``, ``opensora/schedulers/rf/``,
``scripts/inference.py``, ``opensora/utils/inference_utils.py``):

- the model (``STDiT3``) is called ``model(x, timestep, y, mask=..., x_mask=..., fps=..., height=..., width=...)``
  with ``x`` the latents ``(B, C, T, h, w)``, ``timestep`` in ``[0, 1000]`` (1000 = pure noise), ``y`` the T5
  embeddings ``(B, 1, N, 4096)`` and ``mask`` their token mask ``(B, N)``; ``x_mask`` ``(B, T)`` is True on frames
  being generated and False on clean conditioning frames (which get the ``t = 0`` modulation); it returns
  ``(B, 2C, T, h, w)`` whose first ``C`` channels are the velocity ``x0 - noise`` (rectified flow, Open-Sora's sign);
- the VAE (``OpenSoraVAE_V1_2``) has ``encode(x)`` -> normalised latents, ``decode(z, num_frames=F)`` -> video in
  ``[-1, 1]``, ``get_latent_size([F, H, W])`` and ``out_channels``;
- the text encoder (``T5Encoder``) has ``encode(prompts)`` -> ``{"y": ..., "mask": ...}``, ``null(n)`` (the learned
  null caption, after ``text_encoder.y_embedder = model.y_embedder``), ``output_dim``, ``model_max_length``, and its
  Hugging Face T5 at ``text_encoder.t5.model``;
- forward process ``x_t = (1 - t / 1000) x0 + (t / 1000) noise``; sampling is Euler on timesteps
  ``(1 - i / N) * 1000``, optionally warped by the resolution-dependent ``timestep_transform``;
- image-to-video (mask strategy ``"0"``): the reference image, encoded as a one-frame video, replaces latent frame
  0; that frame's mask is 0 (clean, never stepped), the loss is averaged over generated frames only.

Conventions here (the same as the other adapters): :meth:`predict` returns ``noise - x0`` (Open-Sora's output
negated), zero on the conditioning frame; :meth:`target` is ``noise - x0`` with that frame zeroed (the per-sample
mean then divides by every frame, a constant factor ``(T - 1) / T`` against Open-Sora's masked mean).

Verified here: only against a fake ``opensora`` module that implements the interface above (see
``tests/test_adapter_opensora.py``); the real package and checkpoints were not available. LoRA is injected with peft
into the ``STDiT3`` module and saved as a plain safetensors file (``transformer.<module path>.lora_A/B.weight``);
load it back with :meth:`OpenSoraAdapter.load_lora_weights` after :meth:`add_lora` (there is no diffusers pipeline
to call ``load_lora_weights`` on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .base import VideoModelAdapter

OPENSORA_INSTALL_HINT = (
    "Open-Sora is not on PyPI and is not part of diffusers: install the official package from source, "
    "`git clone https://github.com/hpcaitech/Open-Sora && cd Open-Sora && git checkout v1.2.0 && pip install -v .` "
    "(it needs colossalai; flash-attn and apex are optional), then retry."
)

#: The published Open-Sora 1.2 inference setup (``configs/opensora-v1-2/inference/sample.py`` of hpcaitech/Open-Sora).
OPENSORA_V12_MODULES: dict[str, dict[str, Any]] = {
    "model": {
        "type": "STDiT3-XL/2",
        "from_pretrained": "hpcai-tech/OpenSora-STDiT-v3",
        "qk_norm": True,
        "enable_flash_attn": False,  # the published config enables it on GPUs with flash-attn installed
        "enable_layernorm_kernel": False,  # likewise, with apex
    },
    "vae": {
        "type": "OpenSoraVAE_V1_2",
        "from_pretrained": "hpcai-tech/OpenSora-VAE-v1.2",
        "micro_frame_size": 17,
        "micro_batch_size": 4,
    },
    "text_encoder": {"type": "t5", "from_pretrained": "DeepFloyd/t5-v1_1-xxl", "model_max_length": 300},
}


def import_opensora():
    """Import the ``opensora`` package (and register its models), or raise ImportError saying how to install it."""
    try:
        import opensora  # noqa: F401
        import opensora.models  # noqa: F401  (registers STDiT3, the VAE and T5 with opensora.registry.MODELS)
        from opensora.registry import MODELS, build_module
    except ImportError as error:
        raise ImportError(f"{OPENSORA_INSTALL_HINT} ({error})") from error
    return MODELS, build_module


def opensora_timestep_transform(
    timesteps: torch.Tensor,
    *,
    num_frames: int,
    height: int,
    width: int,
    num_timesteps: int = 1000,
    scale: float = 1.0,
    base_resolution: int = 512 * 512,
) -> torch.Tensor:
    """Open-Sora 1.2's resolution- and length-dependent warp of sampling timesteps (``use_timestep_transform``).

    With ``s = t / T`` and ``r = sqrt(H W / 512^2) * sqrt(n) * scale`` (``n = 1`` for images, else
    ``num_frames // 17 * 5``, the latent length of whole 17-frame chunks), ``s' = r s / (1 + (r - 1) s)``.
    """
    if 1 < num_frames < 17:
        raise ValueError(
            f"Open-Sora's timestep transform needs num_frames = 1 or >= 17 (it counts whole 17-frame chunks; "
            f"{num_frames} frames give a zero ratio); use more frames or use_timestep_transform=False"
        )
    s = timesteps.float() / num_timesteps
    ratio_space = (height * width / base_resolution) ** 0.5
    frames = 1 if num_frames == 1 else num_frames // 17 * 5
    ratio = ratio_space * frames**0.5 * scale
    return ratio * s / (1 + (ratio - 1) * s) * num_timesteps


@dataclass
class OpenSoraComponents:
    """The pieces of an Open-Sora 1.2 model, held together like a pipeline (``model``, ``vae``, ``text_encoder``).

    Attributes:
        model: the ``STDiT3`` denoiser (an ``nn.Module``).
        vae: the ``OpenSoraVAE_V1_2`` (``encode`` / ``decode(z, num_frames=)`` / ``get_latent_size``).
        text_encoder: the ``T5Encoder`` wrapper (``encode`` / ``null``); its ``y_embedder`` must be the model's.
        fps: frame rate given to the model (Open-Sora 1.2 samples at 24).
        num_timesteps: training timesteps of the rectified-flow scheduler (1000).
        use_timestep_transform, transform_scale: the sampling scheduler's settings (``rflow``).
        name_or_path: where the model came from (model cards).
    """

    model: nn.Module
    vae: Any
    text_encoder: Any
    fps: float = 24.0
    num_timesteps: int = 1000
    use_timestep_transform: bool = True
    transform_scale: float = 1.0
    name_or_path: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def components(self) -> dict[str, Any]:
        text = getattr(getattr(self.text_encoder, "t5", None), "model", None)
        return {"transformer": self.model, "vae": self.vae, "text_encoder": text}


class OpenSoraAdapter(VideoModelAdapter):
    """Open-Sora 1.2 / 1.3 image-to-video (STDiT3, rectified flow, reference frame through the mask).

    Args:
        pipeline: an :class:`OpenSoraComponents` (``OpenSoraAdapter.from_pretrained()`` builds one with the official
            package).
        num_frames, height, width: the video size sampled at (the timestep transform depends on it).

    Example (needs the ``opensora`` package and a GPU)::

        adapter = OpenSoraAdapter.from_pretrained(torch_dtype=torch.bfloat16)
        trainer = VideoDPOTrainer(model=adapter, args=VideoDPOConfig(num_frames=51, height=360, width=640, ...), ...)
    """

    family = "open-sora-1.2"
    # STDiT3's attention (``attn.qkv`` / ``attn.proj``) and cross-attention (``cross_attn.q_linear``,
    # ``cross_attn.kv_linear``, ``cross_attn.proj``) in both spatial and temporal blocks.
    default_lora_target_modules = ("qkv", "q_linear", "kv_linear", "proj")
    latent_frame_axis = 2

    def __init__(
        self, pipeline: Any, *, num_frames: int | None = None, height: int | None = None, width: int | None = None
    ):
        super().__init__(pipeline)
        for name in ("model", "vae", "text_encoder"):
            if getattr(pipeline, name, None) is None:
                raise ValueError(
                    f"OpenSoraAdapter needs an object with `model`, `vae` and `text_encoder`; no {name!r}"
                )
        if not isinstance(pipeline.model, nn.Module):
            raise TypeError(f"the Open-Sora model must be an nn.Module, got {type(pipeline.model).__name__}")
        sizes = (num_frames, height, width)
        if any(s is not None for s in sizes) and any(s is None for s in sizes):
            raise ValueError("give num_frames, height and width together (the size sampled at), or none of them")
        self.sample_size = None if num_frames is None else (int(num_frames), int(height), int(width))

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return isinstance(pipeline, OpenSoraComponents)

    @classmethod
    def load_pipeline(
        cls,
        name_or_path: str | os.PathLike | None = None,
        torch_dtype: torch.dtype | None = None,
        *,
        vae: str | None = None,
        text_encoder: str | None = None,
        device: str | torch.device = "cpu",
        **model_kwargs: Any,
    ) -> OpenSoraComponents:
        """Build the published Open-Sora 1.2 model, VAE and T5 with the official package (its registry builders).

        Args:
            name_or_path: the STDiT3 checkpoint (default ``hpcai-tech/OpenSora-STDiT-v3``).
            torch_dtype: dtype of the model and VAE (T5 stays float32, as Open-Sora runs it).
            vae, text_encoder: other checkpoints for those (defaults as published).
            model_kwargs: extra STDiT3 options (``enable_flash_attn=True``, ...).
        """
        models, build_module = import_opensora()
        spec = {k: dict(v) for k, v in OPENSORA_V12_MODULES.items()}
        if name_or_path is not None:
            spec["model"]["from_pretrained"] = os.fspath(name_or_path)
        if vae is not None:
            spec["vae"]["from_pretrained"] = vae
        if text_encoder is not None:
            spec["text_encoder"]["from_pretrained"] = text_encoder
        spec["model"].update(model_kwargs)
        text = build_module(spec["text_encoder"], models, device=device)
        autoencoder = build_module(spec["vae"], models).to(device, torch_dtype).eval()
        model = build_module(
            spec["model"],
            models,
            in_channels=autoencoder.out_channels,
            caption_channels=text.output_dim,
            model_max_length=text.model_max_length,
            enable_sequence_parallelism=False,
        ).to(device, torch_dtype)
        text.y_embedder = model.y_embedder  # what Open-Sora's inference script does, for the null caption
        return OpenSoraComponents(
            model=model, vae=autoencoder, text_encoder=text, name_or_path=spec["model"]["from_pretrained"], config=spec
        )

    @classmethod
    def from_pretrained(cls, name_or_path=None, *, torch_dtype=None, **kwargs) -> OpenSoraAdapter:
        size = {k: kwargs.pop(k) for k in ("num_frames", "height", "width") if k in kwargs}
        return cls(cls.load_pipeline(name_or_path, torch_dtype=torch_dtype, **kwargs), **size)

    # ------------------------------------------------------------------------------------------ components
    @property
    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.pipeline.model}

    @property
    def frozen_modules(self) -> dict[str, nn.Module]:
        return {
            name: module
            for name, module in self.pipeline.components.items()
            if isinstance(module, nn.Module) and module is not self.pipeline.model
        }

    @property
    def encoder_modules(self) -> dict[str, nn.Module]:
        return self.frozen_modules

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def scheduler(self):
        raise AttributeError(
            "Open-Sora's rectified-flow scheduler is not a diffusers scheduler; see num_train_timesteps"
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipeline.num_timesteps)

    @property
    def prediction_type(self) -> str:
        return "flow"

    def enable_gradient_checkpointing(self) -> None:
        """Open-Sora's own switch: ``model.grad_checkpointing = True`` (read by its ``auto_grad_checkpoint``)."""
        self.pipeline.model.grad_checkpointing = True

    # ------------------------------------------------------------------------------------------ data
    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        latent = self.vae.get_latent_size([num_frames, height, width])
        return (batch_size, int(self.vae.out_channels), *[int(v) for v in latent])

    def _vae_input(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        parameter = next(iter(vae.parameters()), None) if isinstance(vae, nn.Module) else None
        return x if parameter is None else x.to(parameter.device, parameter.dtype)

    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """``vae.encode`` of ``(B, F, 3, H, W)`` videos -> normalised latents ``(B, C, T, h, w)`` float32."""
        x = self.videos_to_model_input(videos)
        return self.vae.encode(self._vae_input(x)).float()

    @torch.no_grad()
    def encode_image_latents(self, images: Sequence[Any], *, height: int, width: int) -> torch.Tensor:
        """The reference image, resized to the video size and encoded as a one-frame video: ``(B, C, 1, h, w)``."""
        import numpy as np

        pil = [image.resize((width, height)) for image in self.images_to_pil(images)]
        frames = torch.stack([torch.from_numpy(np.asarray(p, dtype=np.uint8).copy()) for p in pil])
        video = frames.permute(0, 3, 1, 2)[:, None]  # (B, 1, 3, H, W)
        latents = self.vae.encode(self._vae_input(self.videos_to_model_input(video))).float()
        return latents[:, :, :1]

    @torch.no_grad()
    def encode_prompts_with_mask(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.pipeline.text_encoder.encode(list(prompts))
        return encoded["y"].float(), encoded["mask"].float()

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``y`` / ``y_mask`` (T5), ``image_latents`` (frame 0) and the model's size/fps inputs, one per sample."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        y, y_mask = self.encode_prompts_with_mask(prompts)
        batch = len(prompts)
        fps = 120.0 if num_frames == 1 else float(self.pipeline.fps)  # Open-Sora's convention for images
        return {
            "y": y,
            "y_mask": y_mask,
            "image_latents": self.encode_image_latents(images, height=height, width=width),
            "height": torch.full((batch,), float(height)),
            "width": torch.full((batch,), float(width)),
            "num_frames": torch.full((batch,), float(num_frames)),
            "fps": torch.full((batch,), fps),
        }

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``vae.decode(z, num_frames=F)`` -> ``(B, F, 3, H, W)`` in ``[0, 1]``; ``F`` is the most frames that
        encode to this many latent frames (Open-Sora's VAE maps each 17 frames to 5)."""
        num_latent = latents.shape[2]
        candidates = [
            f for f in range(1, 4 * num_latent + 18) if self.vae.get_latent_size([f, None, None])[0] == num_latent
        ]
        if not candidates:
            raise ValueError(f"no frame count encodes to {num_latent} latent frames with this VAE")
        video = self.vae.decode(self._vae_input(latents), num_frames=max(candidates))
        return self.videos_from_model_output(video)

    # ------------------------------------------------------------------------------------------ noise
    def _s(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        s = timesteps.to(like.device, torch.float32) / self.num_train_timesteps
        return s.view(-1, *([1] * (like.ndim - 1)))

    @staticmethod
    def _generated(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:]], dim=2)

    def add_noise(self, latents, noise, timesteps):
        """Open-Sora's ``RFlowScheduler.add_noise``: ``(1 - t/T) x0 + (t/T) noise``."""
        s = self._s(timesteps, latents)
        return (1 - s) * latents + s * noise

    def target(self, latents, noise, timesteps):
        """``noise - x0`` on generated frames, 0 on the conditioning frame."""
        return self._generated(noise - latents)

    def frame_mask(self, latents: torch.Tensor) -> torch.Tensor:
        """``x_mask`` ``(B, T)``: True on generated frames, False on the conditioning frame 0."""
        mask = torch.ones(latents.shape[0], latents.shape[2], dtype=torch.bool, device=latents.device)
        mask[:, 0] = False
        return mask

    def predict(self, noisy_latents, timesteps, conditions):
        """STDiT3 forward with the reference latent as clean frame 0; returns ``noise - x0`` (zero on frame 0)."""
        model = self.pipeline.model
        device = noisy_latents.device
        image = conditions["image_latents"].to(device, noisy_latents.dtype)
        x = torch.cat([image, noisy_latents[:, :, 1:]], dim=2)
        extra = {k: conditions[k].to(device) for k in ("height", "width", "num_frames", "fps")}
        out = model(
            x,
            timesteps.to(device, torch.float32),
            conditions["y"].to(device),
            mask=conditions["y_mask"].to(device).long(),
            x_mask=self.frame_mask(x),
            **extra,
        )
        velocity = out.float()[:, : x.shape[1]]  # the model also predicts sigma channels (pred_sigma)
        return self._generated(-velocity)

    def scheduler_step(self, latents, model_output, timesteps, next_timesteps):
        """Open-Sora's Euler update ``z + v dt`` with ``dt = (t - t_next) / T`` (``model_output`` is ``-v``)."""
        return latents + (self._s(next_timesteps, latents) - self._s(timesteps, latents)) * model_output

    def denoise_step(self, latents, timestep, next_timestep, conditions, *, model_output=None):
        """One Euler step on generated frames; frame 0 stays the reference latent (mask 0 is never stepped)."""
        stepped = super().denoise_step(latents, timestep, next_timestep, conditions, model_output=model_output)
        image = conditions["image_latents"].to(stepped.device, stepped.dtype)
        return torch.cat([image, stepped[:, :, 1:]], dim=2)

    def inference_timesteps(
        self,
        num_inference_steps: int,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """``(1 - i / N) * T`` for ``i < N`` (warped by the timestep transform when enabled), then 0."""
        total = self.num_train_timesteps
        timesteps = torch.tensor([(1.0 - i / num_inference_steps) * total for i in range(num_inference_steps)])
        if self.pipeline.use_timestep_transform:
            size = (num_frames, height, width)
            if any(v is None for v in size):
                if self.sample_size is None:
                    raise ValueError(
                        "Open-Sora's timestep transform depends on the video size: build the adapter with "
                        "OpenSoraAdapter(components, num_frames=..., height=..., width=...) or pass the size"
                    )
                size = self.sample_size
            timesteps = opensora_timestep_transform(
                timesteps,
                num_frames=size[0],
                height=size[1],
                width=size[2],
                num_timesteps=total,
                scale=self.pipeline.transform_scale,
            )
        return torch.cat([timesteps.float(), torch.zeros(1)])
