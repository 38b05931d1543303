"""Adapter for LTX-2 image-to-video in diffusers (``Lightricks/LTX-2``, ``LTX2ImageToVideoPipeline``).

LTX-2 denoises a video and an audio track **jointly**: ``LTX2VideoTransformer3DModel`` takes packed video tokens and
packed audio tokens, and the two branches attend to each other in every block. What this adapter reproduces from
``pipeline_ltx2_image2video.py`` (diffusers 0.42):

- **Video latents** as LTX-Video: ``AutoencoderKLLTX2Video`` latents ``(B, C, F', h, w)`` normalised per channel
  (``(x - mean) * scaling_factor / std``), kept unpacked here (time on axis 2) and packed around the transformer with
  the pipeline's own ``_pack_latents`` / ``_unpack_latents``. Frame 0 is the reference image's latent (posterior mode,
  normalised without ``scaling_factor``, as the pipeline's ``prepare_latents``); every video token gets the timestep
  ``t * (1 - mask)`` (0 on frame 0), the returned velocity and the regression target are zero on frame 0.
- **Reference image**: re-compressed with H.264 before encoding, by the pipeline's own
  ``diffusers.pipelines.ltx2.utils.apply_image_conditioning_crf`` at ``resolve_default_image_crf(text_encoder)``
  (33 for the Gemma 3 checkpoints) unless ``image_crf`` is given (0 skips it), then resized by the pipeline's
  ``video_processor``.
- **Prompts**: the pipeline's ``encode_prompt`` (all Gemma hidden states stacked and flattened, left padding), then
  its ``connectors``: the conditions hold the video text tokens, the audio text tokens and the connector mask.
- **Audio**: the audio branch is *not* trained (LoRA goes on the video branch), but the transformer always sees what
  the pipeline gives it. The conditions carry ``audio_latents``: the initial audio noise (packed, normalised), drawn
  from ``torch.Generator().manual_seed(audio_seed)`` and shared by every sample (pass your own tensor to vary it).
  While :meth:`LTX2I2VAdapter.sampler` runs, the audio latents are stepped by a copy of the scheduler exactly as the
  pipeline steps them (``audio_scheduler = copy.deepcopy(scheduler)``), with the audio prediction the transformer made
  in the same call, combined in x0 space with the audio guidance scale; :meth:`~LTX2I2VAdapter.predict` feeds the
  current audio state at each step. Outside a sampling run (DPO / training forwards on video-only data) the audio
  branch sees that audio noise at the audio timestep 1000: "audio not yet generated", which is also exactly the
  state of the pipeline's first step. The audio trajectory is a constant for autograd (its tensors are detached):
  reward-feedback gradients flow through the video latents only; forward values are the pipeline's.
- **Guidance**: text CFG. The pipeline combines ``x0 = x - sigma * v`` predictions with the delta formulation
  ``x0_c + (g - 1)(x0_c - x0_u)``, which is the same affine combination as the trainers' ``v_u + g (v_c - v_u)`` (equal up
  to float rounding). The audio branch uses ``audio_guidance_scale`` (``None``: the video scale, what the pipeline
  does when ``audio_guidance_scale=None``); the sampler reads the video scale the trainer used from the trainer's
  guided output and checks it. Spatio-temporal guidance (``stg_scale``), modality-isolation guidance
  (``modality_scale``) and ``guidance_rescale`` are refused: pass ``stg_scale=0, audio_stg_scale=0,
  modality_scale=1, audio_modality_scale=1, guidance_rescale=0, audio_guidance_rescale=0`` to the pipeline to sample
  what this adapter samples (the pipeline's defaults use all three).
- **Sampler**: Euler flow matching on the shifted sigmas (``mu`` from the packed video sequence length), frames
  ``1:`` stepped by a copy of the pipeline's scheduler, frame 0 kept as the image latent.

``LTX2ConditionPipeline`` (keyframe / video conditioning with noised conditioning tokens) is refused: its sampler is
not this one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from .base import DenoisingSampler
from .ltx import LTXFamilyAdapter, packed_token_grid

_LTX2_PIPELINES = ("LTX2ImageToVideoPipeline", "LTX2Pipeline")  # the text-to-video one is re-wrapped
_REFUSED = ("LTX2ConditionPipeline",)

#: LoRA on the video branch: video self-attention (``attn1``) and video-text cross-attention (``attn2``). Suffixes
#: are matched at a module-name boundary, so the audio branch's ``audio_attn1`` / ``audio_attn2`` stay frozen.
LTX2_VIDEO_LORA_TARGETS = (
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
)


class LTX2I2VAdapter(LTXFamilyAdapter):
    """LTX-2 image-to-video (``LTX2ImageToVideoPipeline``): the video branch trained, the audio branch carried.

    Args:
        pipeline: an ``LTX2ImageToVideoPipeline`` (an ``LTX2Pipeline``'s components are re-wrapped in one).
        max_sequence_length: Gemma text length; ``None``: the pipeline's default 1024 (capped by the tokenizer's
            ``model_max_length``).
        frame_rate: frames per second (the pipeline's ``frame_rate``, default 24): the video rotary positions and the
            audio length (``round(num_frames / frame_rate * sample_rate / hop / 4)`` latent audio frames).
        num_frames, height, width: the video size sampled at (reward feedback, best-of-N): the scheduler's ``mu``
            depends on it. Needed by :meth:`sampler` and :meth:`inference_timesteps` unless given there.
        image_crf: H.264 CRF of the reference re-compression; ``None`` (default): the pipeline's default for the
            text encoder (33 for Gemma 3); 0 skips it.
        audio_seed: seed of the initial audio noise put in the conditions.
        audio_guidance_scale: CFG scale of the audio branch when the trainer guides; ``None``: the video scale.
        use_cross_timestep: the pipeline's ``use_cross_timestep`` (default True).
        decode_timestep: the VAE decoder's timestep (VAEs with ``timestep_conditioning`` only); no decode noise is
            added, so decoding stays deterministic.
        stg_scale, modality_scale, guidance_rescale: refused unless disabled (0, 1, 0).

    :meth:`scheduler_step` / :meth:`denoise_step` step the video only; :meth:`sampler` also steps the audio, as the
    pipeline does.
    """

    family = "ltx2-i2v"
    pipeline_class_name = "LTX2ImageToVideoPipeline"
    default_lora_target_modules = LTX2_VIDEO_LORA_TARGETS
    latent_frame_axis = 2
    encoder_module_names = ("vae", "text_encoder", "connectors", "audio_vae", "vocoder")

    def __init__(
        self,
        pipeline: Any,
        *,
        max_sequence_length: int | None = None,
        frame_rate: float = 24.0,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        image_crf: int | None = None,
        audio_seed: int = 0,
        audio_guidance_scale: float | None = None,
        use_cross_timestep: bool = True,
        decode_timestep: float = 0.0,
        stg_scale: float = 0.0,
        modality_scale: float = 1.0,
        guidance_rescale: float = 0.0,
    ):
        name = type(pipeline).__name__
        if name in _REFUSED:
            raise ValueError(
                f"LTX2I2VAdapter does not support {name}: only LTX2ImageToVideoPipeline's first-frame conditioning "
                "is reproduced (the condition pipeline noises its conditioning tokens with a sampler of its own)"
            )
        if name == "LTX2Pipeline":  # same components (the class convert_ltx2_to_diffusers.py saves the checkpoint as)
            import inspect

            from diffusers import LTX2ImageToVideoPipeline

            accepted = inspect.signature(LTX2ImageToVideoPipeline.__init__).parameters
            components = {k: v for k, v in pipeline.components.items() if k in accepted}
            pipeline = LTX2ImageToVideoPipeline(**components)
        super().__init__(pipeline)
        for component in ("transformer", "vae", "audio_vae", "connectors"):
            if getattr(pipeline, component, None) is None:
                raise ValueError(f"LTX2I2VAdapter needs a pipeline with a `{component}`")
        if stg_scale != 0.0:
            raise NotImplementedError(
                f"stg_scale={stg_scale}: spatio-temporal guidance is not reproduced by LTX2I2VAdapter; use 0 (and "
                "stg_scale=0, audio_stg_scale=0 in the pipeline)"
            )
        if modality_scale != 1.0:
            raise NotImplementedError(
                f"modality_scale={modality_scale}: modality-isolation guidance is not reproduced by LTX2I2VAdapter; "
                "use 1 (and modality_scale=1, audio_modality_scale=1 in the pipeline)"
            )
        if guidance_rescale != 0.0:
            raise NotImplementedError(
                f"guidance_rescale={guidance_rescale}: guidance rescaling is not reproduced by LTX2I2VAdapter; use 0 "
                "(and guidance_rescale=0, audio_guidance_rescale=0 in the pipeline)"
            )
        if max_sequence_length is None:
            tokenizer = getattr(pipeline, "tokenizer", None)
            max_sequence_length = min(1024, int(getattr(tokenizer, "model_max_length", 1024) or 1024))
        self.max_sequence_length = int(max_sequence_length)
        self.frame_rate = float(frame_rate)
        self.image_crf = image_crf
        self.audio_seed = int(audio_seed)
        self.audio_guidance_scale = None if audio_guidance_scale is None else float(audio_guidance_scale)
        self.use_cross_timestep = bool(use_cross_timestep)
        self.decode_timestep = float(decode_timestep)
        self._set_sample_size(num_frames, height, width)
        self._run: _LTX2SamplingRun | None = None

    @classmethod
    def can_handle(cls, pipeline: Any) -> bool:
        return type(pipeline).__name__ in (*_LTX2_PIPELINES, *_REFUSED)

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        return model_index.get("_class_name") in _LTX2_PIPELINES

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def _compression(self) -> tuple[int, int]:
        return int(self.vae.temporal_compression_ratio), int(self.vae.spatial_compression_ratio)

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of the (unpacked) video latents of ``batch_size`` videos of this size."""
        self.check_video_size(num_frames, height, width)
        t, s = self._compression
        channels = int(self.vae.config.latent_channels)
        return (batch_size, channels, (num_frames - 1) // t + 1, height // s, width // s)

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a clear error for sizes the VAE / patchifier / pipeline cannot represent exactly."""
        t, s = self._compression
        patch, patch_t = self._patch
        if (num_frames - 1) % t != 0:
            raise ValueError(f"LTX-2 needs num_frames = {t}k + 1 (e.g. {t + 1}, {4 * t + 1}), got {num_frames}")
        if height % 32 or width % 32 or height % (s * patch) or width % (s * patch):
            raise ValueError(f"LTX-2 needs height/width divisible by {max(32, s * patch)}, got {height}x{width}")
        if ((num_frames - 1) // t + 1) % patch_t:
            raise ValueError(f"the latent frame count must be divisible by patch_size_t={patch_t}")

    def audio_latent_shape(self, batch_size: int, num_frames: int) -> tuple[int, int, int, int]:
        """Unpacked audio latent shape ``(B, C, L, M)`` the pipeline makes for ``num_frames`` at :attr:`frame_rate`."""
        audio_vae = self.pipeline.audio_vae
        per_second = (
            float(audio_vae.config.sample_rate)
            / float(audio_vae.config.mel_hop_length)
            / float(audio_vae.temporal_compression_ratio)
        )
        length = round(num_frames / self.frame_rate * per_second)
        mel = int(audio_vae.config.mel_bins) // int(audio_vae.mel_compression_ratio)
        return (batch_size, int(audio_vae.config.latent_channels), length, mel)

    # ------------------------------------------------------------------------------------------ data
    @torch.no_grad()
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """VAE posterior mode, normalised as the pipeline normalises given latents: ``(x - mean) * sf / std``."""
        x = self.videos_to_model_input(videos)
        self.check_video_size(x.shape[2], x.shape[3], x.shape[4])
        latents = self._encode(x)
        mean, std = self._latent_stats(latents)
        return (latents - mean) * float(self.vae.config.scaling_factor) / std

    def resolved_image_crf(self) -> int:
        """The CRF the pipeline re-compresses the reference with (its default for the text encoder, or ``image_crf``)."""
        if self.image_crf is not None:
            return int(self.image_crf)
        from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

        return int(resolve_default_image_crf(self.pipeline.text_encoder))

    @torch.no_grad()
    def encode_image_latents(self, images: Sequence[Any], *, height: int, width: int) -> torch.Tensor:
        """The conditioning frame ``(B, C, 1, h, w)``: H.264 re-compression (the pipeline's function), resize, VAE mode,
        normalised with mean / std (no ``scaling_factor``), as ``LTX2ImageToVideoPipeline.prepare_latents``."""
        from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

        crf = self.resolved_image_crf()
        pil = self.images_to_pil(images)
        if crf != 0:
            pil = [PIL.Image.fromarray(apply_image_conditioning_crf(np.array(im.convert("RGB")), crf)) for im in pil]
        image = self.pipeline.video_processor.preprocess(pil, height=height, width=width).float()
        latents = torch.cat([self._encode(image[i : i + 1, :, None]) for i in range(image.shape[0])])
        mean, std = self._latent_stats(latents)
        return (latents - mean) / std

    @torch.no_grad()
    def encode_prompts_with_mask(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Video text tokens, audio text tokens and their mask: the pipeline's ``encode_prompt`` then ``connectors``."""
        pipe = self.pipeline
        embeds, mask, _, _ = pipe.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=pipe.text_encoder.device,
        )
        padding_side = getattr(pipe.tokenizer, "padding_side", "left") if pipe.tokenizer is not None else "left"
        connectors = pipe.connectors
        video, audio, connector_mask = connectors(
            embeds.to(connectors.device), mask.to(connectors.device), padding_side=padding_side
        )
        return video, audio, connector_mask

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode_prompts_with_mask(prompts)[0]

    def encoding_settings(self) -> dict[str, Any]:
        # the conditions carry the audio noise and the re-compressed reference: both depend on these
        return {"audio_seed": self.audio_seed, "image_crf": self.resolved_image_crf(), "frame_rate": self.frame_rate}

    def initial_audio_latents(self, batch_size: int, num_frames: int) -> torch.Tensor:
        """The initial audio noise ``(B, L, C * M)`` (packed, normalised), from ``audio_seed``, equal for every row."""
        _, c, length, mel = self.audio_latent_shape(1, num_frames)
        noise = torch.randn((1, c, length, mel), generator=torch.Generator().manual_seed(self.audio_seed))
        packed = self.pipeline._pack_audio_latents(noise)
        return packed.expand(batch_size, -1, -1).contiguous()

    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """``prompt_embeds`` / ``audio_prompt_embeds`` / ``prompt_attention_mask`` (connector outputs),
        ``image_latents`` (the conditioning frame) and ``audio_latents`` (the initial audio noise)."""
        images = self.condition_images(images, prompts, num_frames=num_frames, height=height, width=width)
        video, audio, mask = self.encode_prompts_with_mask(prompts)
        return {
            "prompt_embeds": video.float(),
            "audio_prompt_embeds": audio.float(),
            "prompt_attention_mask": mask.float(),
            "image_latents": self.encode_image_latents(images, height=height, width=width),
            "audio_latents": self.initial_audio_latents(len(prompts), num_frames),
        }

    @torch.no_grad()
    def decode_audio(self, audio_latents: torch.Tensor) -> torch.Tensor:
        """Packed normalised audio latents (e.g. ``sampler.audio_latents`` after a run) -> waveform, as the pipeline."""
        pipe = self.pipeline
        audio_vae = pipe.audio_vae
        x = pipe._denormalize_audio_latents(audio_latents, audio_vae.latents_mean, audio_vae.latents_std)
        mel = int(audio_vae.config.mel_bins) // int(audio_vae.mel_compression_ratio)
        x = pipe._unpack_audio_latents(x, x.shape[1], num_mel_bins=mel).to(audio_vae.device, audio_vae.dtype)
        return pipe.vocoder(audio_vae.decode(x, return_dict=False)[0])

    # ------------------------------------------------------------------------------------------ noise
    def _audio_input(
        self, batch: int, timesteps: torch.Tensor, conditions: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, _LTX2SamplingRun | None, int | None]:
        """The audio tokens and audio timestep for this call: the running sampler's audio state at this step, or the
        initial audio noise at timestep 1000 outside a sampling run."""
        run = self._run
        if run is not None:
            index = run.index_of(timesteps, batch)
            if index is not None:
                return run.audio_at(index, batch, conditions), timesteps, run, index
        audio = conditions["audio_latents"]
        t_audio = torch.full_like(timesteps, float(self.num_train_timesteps))
        return audio, t_audio, None, None

    def predict(self, noisy_latents, timesteps, conditions):
        """Joint transformer forward; returns the video velocity ``(B, C, F', h, w)`` float32, zero on frame 0.

        The audio tokens are the running sampler's audio state (see :meth:`sampler`) or the initial audio noise.
        """
        pipe = self.pipeline
        transformer = pipe.transformer
        device = noisy_latents.device
        dtype = next(transformer.parameters()).dtype
        batch = noisy_latents.shape[0]
        timesteps = timesteps.to(device, torch.float32).reshape(-1).expand(batch)
        image = conditions["image_latents"].to(device, noisy_latents.dtype)
        x = torch.cat([image, noisy_latents[:, :, 1:]], dim=2)
        _, _, num_frames, height, width = x.shape
        patch, patch_t = self._patch
        tokens = pipe._pack_latents(x, patch, patch_t)
        mask = self.conditioning_mask(x)
        video_timestep = timesteps.view(-1, 1) * (1 - mask)
        audio, audio_timestep, run, index = self._audio_input(batch, timesteps, conditions)
        audio = audio.to(device)
        video_out, audio_out = transformer(
            hidden_states=tokens.to(dtype),
            audio_hidden_states=audio.to(dtype),
            encoder_hidden_states=conditions["prompt_embeds"].to(device, dtype),
            audio_encoder_hidden_states=conditions["audio_prompt_embeds"].to(device, dtype),
            timestep=video_timestep,
            audio_timestep=audio_timestep,
            sigma=timesteps,
            audio_sigma=audio_timestep,
            encoder_attention_mask=conditions["prompt_attention_mask"].to(device),
            audio_encoder_attention_mask=conditions["prompt_attention_mask"].to(device),
            num_frames=num_frames // patch_t,
            height=height // patch,
            width=width // patch,
            fps=self.frame_rate,
            audio_num_frames=audio.shape[1],
            isolate_modalities=False,
            spatio_temporal_guidance_blocks=None,
            perturbation_mask=None,
            use_cross_timestep=self.use_cross_timestep,
            return_dict=False,
        )
        video_out = pipe._unpack_latents(
            video_out.float(), num_frames // patch_t, height // patch, width // patch, patch, patch_t
        )
        if run is not None and index == run.next_index and index not in run.outputs:
            # the first call at the step the sampler takes next: the policy's (a KL reference call made after it
            # with the LoRA disabled, or a recomputation in the backward pass, does not replace it)
            run.record(index, video_out.detach(), audio_out.detach().float())
        return self._generated(video_out)

    def _mu(self, size: tuple[int, int, int] | None) -> dict[str, Any]:
        scheduler = self.scheduler
        if not scheduler.config.get("use_dynamic_shifting", False):
            return {}
        if size is None or any(v is None for v in size):
            if self.sample_size is None:
                raise ValueError(
                    "LTX-2's scheduler shifts its sigmas by the video size: build the adapter with "
                    "LTX2I2VAdapter(pipe, num_frames=..., height=..., width=...) or pass the size"
                )
            size = self.sample_size
        from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import calculate_shift

        _, _, frames, h, w = self.latent_shape(1, *size)
        patch, patch_t = self._patch
        config = scheduler.config
        return {
            "mu": calculate_shift(
                (frames // patch_t) * (h // patch) * (w // patch),
                config.get("base_image_seq_len", 1024),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.95),
                config.get("max_shift", 2.05),
            )
        }

    def _scheduler_for(self, num_inference_steps: int, size, device) -> Any:
        scheduler = copy.deepcopy(self.scheduler)
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, device=device, **self._mu(size))
        return scheduler

    def inference_timesteps(
        self,
        num_inference_steps: int,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """The pipeline's timesteps for this size (``linspace(1, 1/T, T)`` shifted by ``mu``), then 0."""
        timesteps = self._scheduler_for(num_inference_steps, (num_frames, height, width), "cpu").timesteps.float()
        return torch.cat([timesteps, timesteps.new_zeros(1)])

    def sampler(
        self,
        num_inference_steps: int,
        *,
        device: torch.device | str | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> LTX2Sampler:
        """A fresh run of the pipeline's joint sampler (video and audio; see :class:`LTX2Sampler`).

        The newest sampler is the adapter's running one: :meth:`predict` calls whose timestep is one of its steps
        reached so far (and whose batch is its batch, or twice it under guidance) read its audio state at that step,
        also after the run ended, so that a checkpointed denoiser call recomputed in the backward pass sees the audio
        it saw in the forward pass. Make one per sampled batch.
        """
        size = (num_frames, height, width)
        sampler = LTX2Sampler(self, num_inference_steps, device=device, size=size)
        self._run = sampler.run
        return sampler


class _LTX2SamplingRun:
    """The audio state of one sampling run, shared by :class:`LTX2Sampler` and :meth:`LTX2I2VAdapter.predict`."""

    def __init__(self, timesteps: torch.Tensor):
        self.timesteps = timesteps.detach().float().cpu()
        self.batch: int | None = None
        self.audio: dict[int, torch.Tensor] = {}  # step index -> (B, L, D) audio latents the transformer sees
        self.outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> (video, audio) predictions
        self.next_index = 0
        self.finished = False

    def index_of(self, timesteps: torch.Tensor, batch: int) -> int | None:
        t = timesteps.detach().float().cpu()
        if t.numel() == 0 or not bool((t == t[0]).all()):
            return None
        hits = (self.timesteps == t[0]).nonzero().flatten()
        if len(hits) == 0:
            return None
        index = int(hits[0])
        if index > self.next_index:
            return None
        if self.batch is not None and batch not in (self.batch, 2 * self.batch):
            return None
        return index

    def audio_at(self, index: int, batch: int, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The audio latents the transformer sees at step ``index`` (rows repeated for a guided batch)."""
        if index == 0:
            return conditions["audio_latents"]  # the initial noise, one row per (possibly guided) input row
        if index not in self.audio:
            raise RuntimeError(f"no audio state for step {index}: the sampler was not stepped in order")
        audio = self.audio[index]
        return torch.cat([audio, audio]) if batch == 2 * audio.shape[0] else audio

    def record(self, index: int, video: torch.Tensor, audio: torch.Tensor) -> None:
        self.outputs[index] = (video, audio)


class LTX2Sampler(DenoisingSampler):
    """``LTX2ImageToVideoPipeline``'s denoising loop, stepped as a differentiable function of the video latents.

    Video: a copy of the pipeline's scheduler (``set_timesteps(sigmas=linspace(1, 1/T, T), mu=...)``) steps frames
    ``1:`` with the given (guided) velocity, converted to x0 and back as the pipeline does; frame 0 is the image
    latent. Audio: a second copy steps the audio latents with the audio velocity the transformer predicted in this
    step's :meth:`LTX2I2VAdapter.predict` call (with guidance: ``uncond`` and ``cond`` halves combined in x0 space with
    the audio guidance scale; the video scale is read from the trainer's guided output and checked). After the last
    step :attr:`audio_latents` holds the final packed, normalised audio latents
    (:meth:`LTX2I2VAdapter.decode_audio` makes the waveform).
    """

    def __init__(self, adapter: LTX2I2VAdapter, num_inference_steps: int, *, device=None, size=None):
        self.adapter = adapter
        self.scheduler = adapter._scheduler_for(num_inference_steps, size, device)
        self.audio_scheduler = copy.deepcopy(self.scheduler)
        self.timesteps = self.scheduler.timesteps
        self.run = _LTX2SamplingRun(self.timesteps)
        self.audio_latents: torch.Tensor | None = None

    def _guidance_scale(self, model_output, uncond, cond) -> float:
        """The CFG scale ``g`` with ``model_output = uncond + g (cond - uncond)`` on the generated frames (checked)."""
        m, u, c = (x[:, :, 1:].double() for x in (model_output.detach(), uncond, cond))
        d = c - u
        denom = float((d * d).sum())
        if denom == 0.0:
            return 1.0
        g = float(((m - u) * d).sum()) / denom
        residual = float((m - (u + g * d)).abs().max())
        scale = float(m.abs().max()) + 1.0
        if residual > 1e-4 * scale:
            raise ValueError(
                "the denoiser output given to LTX2Sampler.step is not a classifier-free-guidance combination of the "
                "predictions made at this step (uncond + g * (cond - uncond)); the audio branch cannot be guided"
            )
        return g

    def step(self, index, latents, model_output, conditions, *, generator=None):
        run = self.run
        if index != run.next_index:
            raise RuntimeError(
                f"LTX2Sampler is stepped in order: expected step {run.next_index}, got {index} "
                "(make a new sampler with adapter.sampler(T) for every sampled batch)"
            )
        if index not in run.outputs:
            raise RuntimeError(
                f"LTX2Sampler.step({index}) needs the audio prediction of this step: call adapter.predict on "
                "timesteps[index] first (the trainers do)"
            )
        batch = latents.shape[0]
        if run.batch is None:
            run.batch = batch
        t = self.timesteps[index]
        sigma = self.scheduler.sigmas[index]
        video_pred, audio_pred = run.outputs[index]
        audio = run.audio_at(index, batch, conditions).to(latents.device).float()
        if audio_pred.shape[0] == 2 * batch:
            uncond_v, cond_v = video_pred.chunk(2)
            g = self._guidance_scale(model_output, uncond_v, cond_v)
            g_audio = self.adapter.audio_guidance_scale if self.adapter.audio_guidance_scale is not None else g
            uncond_a, cond_a = audio_pred.chunk(2)
            x0_cond = audio - cond_a * sigma
            x0_uncond = audio - uncond_a * sigma
            x0 = x0_cond + (g_audio - 1) * (x0_cond - x0_uncond)
        elif audio_pred.shape[0] == batch:
            x0 = audio - audio_pred * sigma
        else:
            raise RuntimeError(f"audio prediction has {audio_pred.shape[0]} rows for a batch of {batch}")
        audio_velocity = (audio - x0) / sigma
        # video, as the pipeline: x0 = x - sigma v, back to a velocity, Euler on frames 1:, frame 0 kept
        x0_video = latents - model_output * sigma
        velocity = (latents - x0_video) / sigma
        stepped = self.scheduler.step(velocity[:, :, 1:], t, latents[:, :, 1:], return_dict=False)[0]
        image = conditions["image_latents"].to(stepped.device, stepped.dtype)
        out = torch.cat([image, stepped], dim=2)
        new_audio = self.audio_scheduler.step(audio_velocity, t, audio, return_dict=False)[0]
        run.audio[index + 1] = new_audio.detach()
        run.next_index = index + 1
        del run.outputs[index]
        if run.next_index == len(self.timesteps):
            run.finished = True
            self.audio_latents = new_audio.detach()
        return out


def _accounting_inputs(model, vae, recipe, forward_batch, dtype, source):
    """The memory accountant's view of an LTX-2 recipe: packed video tokens with per-token timesteps, the audio tokens
    of the same duration (audio VAE of the published config: 25 latent frames per second, 16 mel bins x 8 channels),
    Gemma connector outputs at ``max_sequence_length`` tokens."""
    from ..memory.families import channels_first_family_inputs

    config = model.config
    frames, t, s, p, p_t, latent_frames, h, w, tokens = packed_token_grid(model, vae, recipe, source, "LTX-2")
    frame_rate = float(recipe.get("frame_rate", 24.0))
    audio_frames = round(frames / frame_rate * 16000 / 160 / 4)
    text_len = int(recipe.get("max_sequence_length") or 1024)
    kwargs = {
        "hidden_states": torch.empty(
            forward_batch, tokens, config.in_channels * p * p * p_t, device="meta", dtype=dtype
        ),
        "audio_hidden_states": torch.empty(
            forward_batch, audio_frames, config.audio_in_channels, device="meta", dtype=dtype
        ),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, config.caption_channels, device="meta", dtype=dtype
        ),
        "audio_encoder_hidden_states": torch.empty(
            forward_batch, text_len, config.caption_channels, device="meta", dtype=dtype
        ),
        "timestep": torch.empty(forward_batch, tokens, device="meta"),
        "audio_timestep": torch.empty(forward_batch, device="meta"),
        "sigma": torch.empty(forward_batch, device="meta"),
        "encoder_attention_mask": torch.ones(forward_batch, text_len, device="meta"),
        "audio_encoder_attention_mask": torch.ones(forward_batch, text_len, device="meta"),
        "num_frames": latent_frames // p_t,
        "height": h // p,
        "width": w // p,
        "fps": frame_rate,
        "audio_num_frames": audio_frames,
        "use_cross_timestep": True,
    }
    return channels_first_family_inputs(kwargs, recipe, vae, latent_frames, h, w)


def _register_memory_accounting() -> None:
    from ..memory.families import register_adapter_accounting

    register_adapter_accounting("LTX2VideoTransformer3DModel", _accounting_inputs, LTX2I2VAdapter)


_register_memory_accounting()
