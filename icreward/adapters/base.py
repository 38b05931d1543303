"""The model-family adapter interface (a finetrainers-style "model specification").

A trainer never talks to a diffusers pipeline directly: it talks to a :class:`VideoModelAdapter`, which knows how
one model family encodes its conditions, maps videos to latents, adds noise, runs the denoiser with its image
conditioning and defines the regression target. Everything a preference (DPO) or reward-feedback trainer needs is
here, and nothing else:

- ``prepare_conditions``: reference images + prompts -> dict of condition tensors (batch first);
- ``prepare_latents``: videos ``(B, F, 3, H, W)`` in ``[0, 1]`` -> normalised VAE latents;
- ``sample_timesteps``: training timesteps (uniform or logit-normal), restricted to the trained expert;
- ``add_noise`` / ``target``: the forward process and the regression target (velocity, epsilon or v);
- ``predict``: the denoiser forward with the family's image conditioning;
- ``denoise_step`` / ``decode_latents``: one differentiable sampler step (``predict``, then the family's
  ``scheduler_step``) / a differentiable decode through the frozen VAE (what reward-feedback training needs);
- ``sampler(T)``: a fresh, differentiable run of the family's inference sampler (:class:`DenoisingSampler`). The
  default steps ``inference_timesteps`` with ``denoise_step`` (:class:`StatelessSampler`); families whose pipeline loop
  is ``latents = scheduler.step(noise_pred, t, latents)`` return a :class:`PipelineSchedulerSampler`, which steps a
  copy of the pipeline's own scheduler (UniPC multistep, CogVideoX DDIM / DPM ...), so that reward-feedback samples
  are the pipeline's samples;
- ``trainable_modules`` / ``default_lora_target_modules``: the network(s) that receive LoRA, and where;
- ``add_lora`` / ``disable_lora``: inject a peft LoRA / a context giving the frozen reference network;
- ``save_lora_weights``: diffusers-format LoRA files that ``pipe.load_lora_weights(dir)`` reads;
- ``latent_shape(batch_size, num_frames, height, width)`` / ``latent_frame_axis``: the latent shape for a video size
  and the batched latent axis that indexes frames (``None`` when unknown). The default encodes one blank video
  through ``prepare_latents``; families override both with their VAE's arithmetic (no encode needed, so this also
  works on ``meta`` components);
- ``enable_gradient_checkpointing`` / ``disable_gradient_checkpointing``: the denoisers' own per-block gradient
  checkpointing;
- ``lora_load_snippet``: the code that loads the saved LoRA into the module that was trained (for model cards).

Conventions (all adapters):

- videos are ``(B, F, 3, H, W)`` tensors, ``uint8`` in ``[0, 255]`` or floating point in ``[0, 1]`` (what
  :func:`icreward.video.read_video` and ``pipe(..., output_type="pt")`` return). Floating-point input with negative
  values is rejected instead of guessed: pass ``(x + 1) / 2`` if you hold ``[-1, 1]`` tensors;
- reference images are PIL images, ``(3, H, W)`` ``uint8`` tensors / arrays, or ``(3, H, W)`` floats in ``[0, 1]``;
  they are resized to the video size, exactly as the pipeline does at inference;
- latents, conditions and predictions are opaque batch-first tensors: trainers only slice, concatenate and repeat
  them along dimension 0, and compare predictions with :func:`icreward.losses.per_sample_mse`;
- timesteps are in the scheduler's training units (``0 .. num_train_timesteps``), one per sample.

Plugging in another family (for example Open-Sora, which is not part of diffusers): subclass
:class:`VideoModelAdapter`, implement the abstract methods, and register the class::

    from icreward.adapters import VideoModelAdapter, register_adapter

    @register_adapter
    class OpenSoraAdapter(VideoModelAdapter):
        family = "open-sora"
        default_lora_target_modules = ("qkv", "proj")

        @classmethod
        def can_handle(cls, pipeline):                    # used by get_adapter(pipeline)
            return type(pipeline).__name__ == "OpenSoraPipeline"

        @classmethod
        def load_pipeline(cls, name_or_path, torch_dtype=None, **kwargs):
            ...  # build the opensora package's model, VAE and text encoder, return any object holding them

        @property
        def trainable_modules(self):
            return {"transformer": self.pipeline.model}   # an nn.Module (STDiT3 / MMDiT)

        @property
        def prediction_type(self):
            return "flow"                                 # rectified flow: the target is noise - x0

        def prepare_conditions(self, images, prompts, *, num_frames, height, width): ...
        def prepare_latents(self, videos): ...
        def add_noise(self, latents, noise, timesteps): ...   # rectified flow: (1 - s) x0 + s n, s = t / T
        def target(self, latents, noise, timesteps): ...      # n - x0
        def predict(self, noisy_latents, timesteps, conditions): ...  # reference frames enter through the mask
        def scheduler_step(self, latents, model_output, timesteps, next_timesteps): ...  # Euler: x + (s' - s) v
        def decode_latents(self, latents): ...

Open-Sora 1.2/1.3 (STDiT3) injects the reference latents into the first frame positions and masks their timestep;
Open-Sora 2.0 concatenates ``cond`` (mask + reference latents) on the channel axis, much like Wan. Either way,
``predict`` takes ``(noisy, t, conditions)`` and returns a tensor shaped like the target, so the trainers work
unchanged. Plain ``nn.Module`` denoisers get LoRA through ``peft.inject_adapter_in_model``, and
``save_lora_weights`` falls back to a plain safetensors file of the peft state dict when the pipeline has no
diffusers LoRA loader.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import PIL.Image
import torch
from torch import nn

TimestepSampling = Literal["uniform", "logit_normal"]

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


class VideoModelAdapter(ABC):
    """Uniform access to one family of image-to-video diffusion models for training.

    Args:
        pipeline: the loaded pipeline (any object exposing the family's components, typically a diffusers
            ``DiffusionPipeline``). The adapter keeps a reference and never copies weights.

    Attributes:
        family: short family name, used by the registry and in model cards.
        default_lora_target_modules: module-name suffixes that receive LoRA when the user gives none.
        prediction_type: what the network predicts: ``"flow"`` (velocity ``noise - x0``), ``"epsilon"`` or
            ``"v_prediction"``. It decides :meth:`target`.
    """

    family: ClassVar[str] = ""
    default_lora_target_modules: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    #: name of the attribute a pipeline uses for its (first) denoiser; used in LoRA file keys.
    lora_weight_names: ClassVar[dict[str, str]] = {"transformer": LORA_WEIGHT_NAME}

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    @abstractmethod
    def can_handle(cls, pipeline: Any) -> bool:
        """Whether this adapter understands ``pipeline`` (used by :func:`icreward.adapters.get_adapter`)."""

    @classmethod
    def can_handle_model_index(cls, model_index: dict[str, Any]) -> bool:
        """Whether a saved pipeline with this ``model_index.json`` content belongs to the family."""
        return False

    #: the diffusers pipeline class (its name in ``diffusers``) that :meth:`load_pipeline` loads; ``None``: none.
    pipeline_class_name: ClassVar[str | None] = None

    @classmethod
    def load_pipeline(cls, name_or_path: str | os.PathLike, torch_dtype: torch.dtype | None = None, **kwargs):
        """Load the family's pipeline from a Hub id or a local directory (diffusers layout): by default
        ``diffusers.<pipeline_class_name>.from_pretrained``."""
        if cls.pipeline_class_name is None:
            raise NotImplementedError(f"{cls.__name__} does not know how to load a pipeline; pass one instead")
        import diffusers

        try:
            pipeline_class = getattr(diffusers, cls.pipeline_class_name)
        except AttributeError as error:  # what `from diffusers import <name>` raises
            raise ImportError(f"cannot import name {cls.pipeline_class_name!r} from 'diffusers'") from error
        return pipeline_class.from_pretrained(name_or_path, torch_dtype=torch_dtype, **kwargs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, **kwargs
    ) -> VideoModelAdapter:
        """Load the pipeline (Hub id or local path; ``kwargs`` go to the pipeline's ``from_pretrained``) and wrap it."""
        return cls(cls.load_pipeline(name_or_path, torch_dtype=torch_dtype, **kwargs))

    # ------------------------------------------------------------------------------------------ components
    @property
    @abstractmethod
    def trainable_modules(self) -> dict[str, nn.Module]:
        """The denoiser(s) that are fine-tuned, keyed by their attribute name on the pipeline."""

    @property
    def trainable_module(self) -> nn.Module:
        """The single fine-tuned denoiser, or an ``nn.ModuleDict`` when several experts are trained together."""
        modules = self.trainable_modules
        if len(modules) == 1:
            return next(iter(modules.values()))
        return nn.ModuleDict(modules)

    @property
    def frozen_modules(self) -> dict[str, nn.Module]:
        """Every other ``nn.Module`` of the pipeline (VAE, text / image encoders, unused experts)."""
        trainable = {id(m) for m in self.trainable_modules.values()}
        components = getattr(self.pipeline, "components", {}) or {}
        return {
            name: module
            for name, module in components.items()
            if isinstance(module, nn.Module) and id(module) not in trainable
        }

    #: pipeline components used only to encode inputs; trainers move them off the accelerator once latents are cached.
    encoder_module_names: ClassVar[tuple[str, ...]] = ("vae", "text_encoder", "image_encoder")

    @property
    def encoder_modules(self) -> dict[str, nn.Module]:
        """The VAE and the text / image encoders present in the pipeline."""
        modules = {name: getattr(self.pipeline, name, None) for name in self.encoder_module_names}
        return {name: module for name, module in modules.items() if isinstance(module, nn.Module)}

    @property
    def frozen_denoisers(self) -> dict[str, nn.Module]:
        """Frozen modules that are neither trained nor encoders (Wan 2.2's untrained expert): sampling needs them on
        the training device, and the Trainer only moves the trained module."""
        encoders = {id(m) for m in self.encoder_modules.values()}
        return {name: m for name, m in self.frozen_modules.items() if id(m) not in encoders}

    @property
    def scheduler(self):
        """The pipeline's noise scheduler (read for its training constants; adapters never step it statefully)."""
        return self.pipeline.scheduler

    @property
    def vae(self) -> nn.Module:
        return self.pipeline.vae

    @property
    def device(self) -> torch.device:
        """Device of the (first) trainable denoiser."""
        return next(iter(self.trainable_modules.values())).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the denoiser: inputs are cast to it in :meth:`predict`."""
        return next(iter(self.trainable_modules.values())).dtype

    def to(self, device: torch.device | str) -> VideoModelAdapter:
        """Move every pipeline component to ``device``; returns ``self``."""
        for module in [*self.trainable_modules.values(), *self.frozen_modules.values()]:
            module.to(device)
        return self

    def freeze(self) -> None:
        """Freeze every parameter of the pipeline and put frozen components in eval mode."""
        for module in [*self.trainable_modules.values(), *self.frozen_modules.values()]:
            module.requires_grad_(False)
        for module in self.frozen_modules.values():
            module.eval()

    # -------------------------------------------------------------------------------------------- data
    #: text length passed to the pipeline's ``encode_prompt``; each family's ``__init__`` sets it.
    max_sequence_length: int | None = None

    @abstractmethod
    def prepare_conditions(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> dict[str, torch.Tensor]:
        """Encode reference images and prompts into the tensors :meth:`predict` needs (batch-first, detached)."""

    @abstractmethod
    def prepare_latents(self, videos: torch.Tensor) -> torch.Tensor:
        """Encode videos ``(B, F, 3, H, W)`` (``uint8`` or float in ``[0, 1]``) into normalised latents."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents to videos ``(B, F, 3, H, W)`` in ``[0, 1]``, differentiably (frozen VAE)."""

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a clear error for video sizes the family's VAE / patchifier cannot represent (default: accept any)."""
        return

    def condition_images(
        self, images: Sequence[Any], prompts: Sequence[str], *, num_frames: int, height: int, width: int
    ) -> list[PIL.Image.Image]:
        """What every :meth:`prepare_conditions` checks first: the reference images as RGB PIL images, one per
        prompt, for a video size the family can represent (:meth:`check_video_size`)."""
        images = self.images_to_pil(images)
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        self.check_video_size(num_frames, height, width)
        return images

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(B, max_sequence_length, D)`` from a diffusers pipeline's ``encode_prompt`` (no CFG).

        Padding is as the pipeline's own (Wan zeroes the embeddings after each prompt's length).
        """
        embeds, _ = self.pipeline.encode_prompt(
            prompt=list(prompts),
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.pipeline.text_encoder.device,
        )
        return embeds

    # ------------------------------------------------------------------------------------------- noise
    @property
    @abstractmethod
    def prediction_type(self) -> str:
        """``"flow"``, ``"epsilon"`` or ``"v_prediction"``."""

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def timestep_bounds(self) -> tuple[float, float]:
        """``(low, high)`` timesteps that training samples from; narrower when only one expert is trained."""
        return 0.0, float(self.num_train_timesteps)

    def sample_timesteps(
        self,
        batch_size: int,
        *,
        sampling: TimestepSampling = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Draw ``batch_size`` training timesteps within :attr:`timestep_bounds`.

        ``"uniform"`` draws ``u ~ U(0, 1)``; ``"logit_normal"`` draws ``u = sigmoid(N(logit_mean, logit_std))``
        (SD3 / Wan training), concentrating on mid-range noise levels. ``u`` is mapped linearly into the bounds.
        Flow models get continuous float timesteps, discrete-time (DDPM-family) models integer ones.
        """
        if sampling == "uniform":
            u = torch.rand(batch_size, generator=generator)
        elif sampling == "logit_normal":
            u = torch.sigmoid(torch.randn(batch_size, generator=generator) * logit_std + logit_mean)
        else:
            raise ValueError(f"unknown timestep sampling {sampling!r}; use 'uniform' or 'logit_normal'")
        low, high = self.timestep_bounds
        t = low + u * (high - low)
        if self.prediction_type != "flow":
            t = t.long().clamp(int(low), max(int(low), int(high) - 1))
        return t.to(device if device is not None else self.device)

    @abstractmethod
    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The forward process ``x_t`` for each sample's timestep."""

    @abstractmethod
    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` regresses onto (``noise - x0`` for flow, ``noise`` for epsilon, ``v`` for v-pred)."""

    @abstractmethod
    def predict(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditions: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Denoiser forward with the family's image conditioning; returns a tensor shaped like ``noisy_latents``."""

    def denoise_step(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        next_timestep: torch.Tensor | float,
        conditions: dict[str, torch.Tensor],
        *,
        model_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One deterministic sampler step ``x_t -> x_{t_next}`` as a pure, differentiable function.

        ``timestep`` and ``next_timestep`` are scalars or one per sample. Pass ``model_output`` to reuse a
        prediction (for example after classifier-free guidance); otherwise :meth:`predict` is called. The update
        itself is the family's :meth:`scheduler_step`. Gradients flow when grad mode is on, which reward-feedback
        training (DRaFT-K) enables only for the last steps.
        """
        t = self._per_sample_timesteps(timestep, latents)
        t_next = self._per_sample_timesteps(next_timestep, latents)
        if model_output is None:
            model_output = self.predict(latents, t, conditions)
        return self.scheduler_step(latents, model_output, t, t_next)

    def scheduler_step(
        self,
        latents: torch.Tensor,
        model_output: torch.Tensor,
        timesteps: torch.Tensor,
        next_timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """The family's deterministic update ``x_t -> x_{t_next}`` from the denoiser output (a pure function).

        The stateless counterpart of a diffusers scheduler's ``step``; timesteps come one per sample, typed as in
        :meth:`sample_timesteps`. Adapters implement this, or override :meth:`denoise_step` as a whole.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither scheduler_step nor denoise_step")

    def _per_sample_timesteps(self, timestep: torch.Tensor | float, latents: torch.Tensor) -> torch.Tensor:
        """A scalar or per-sample timestep -> one per sample on the latents' device, float for flow models and
        integer for discrete-time ones (as :meth:`sample_timesteps` draws them)."""
        if self.prediction_type == "flow":
            t = torch.as_tensor(timestep, dtype=torch.float32, device=latents.device)
        else:
            t = torch.as_tensor(timestep, device=latents.device).long()
        return t.expand(latents.shape[0])

    def inference_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """The sampler's timesteps for ``num_inference_steps``, followed by the final ``0``."""
        import copy

        scheduler = copy.deepcopy(self.scheduler)  # set_timesteps mutates scheduler state used by the pipeline
        scheduler.set_timesteps(num_inference_steps, device="cpu")
        timesteps = scheduler.timesteps.float()
        return torch.cat([timesteps, timesteps.new_zeros(1)])

    def sampler(self, num_inference_steps: int, *, device: torch.device | str | None = None) -> DenoisingSampler:
        """A fresh, differentiable run of the family's inference sampler for ``num_inference_steps`` steps.

        What reward-feedback training samples with: its ``step`` is differentiable, so gradients can flow through the
        last steps (DRaFT-K). Samplers can be stateful (multistep history), so make one per sampled batch.

        Default: :class:`StatelessSampler`, i.e. :meth:`inference_timesteps` stepped with :meth:`denoise_step` (the
        family's pure step; exact for pipelines that step a first-order flow-matching Euler scheduler). Families
        whose pipeline loop is ``latents = scheduler.step(noise_pred, t, latents)`` return a
        :class:`PipelineSchedulerSampler` instead, which steps a copy of the pipeline's own scheduler (UniPC
        multistep, DPM-Solver, CogVideoX's DDIM / DPM ...) and so samples exactly what the pipeline samples.
        """
        return StatelessSampler(self, self.inference_timesteps(num_inference_steps))

    # ---------------------------------------------------------------------------------------------- LoRA
    def add_lora(self, lora_config: Any, adapter_name: str = "default") -> None:
        """Freeze the pipeline and inject a peft ``LoraConfig`` into every trainable module.

        ``target_modules=None`` in the config means :attr:`default_lora_target_modules`. Only LoRA parameters
        require gradients afterwards.
        """
        import copy

        lora_config = copy.deepcopy(lora_config)
        if getattr(lora_config, "target_modules", None) is None:
            lora_config.target_modules = list(self.default_lora_target_modules)
        # TRL's ModelConfig defaults task_type to CAUSAL_LM; a diffusion denoiser has none, and the value would be
        # stored in the saved LoRA's metadata.
        lora_config.task_type = None
        self.freeze()
        for module in self.trainable_modules.values():
            config = copy.deepcopy(lora_config)
            if hasattr(module, "add_adapter"):  # diffusers models: keeps their LoRA loading/saving API working
                module.add_adapter(config, adapter_name=adapter_name)
            else:  # any other nn.Module (e.g. an Open-Sora STDiT3)
                from peft import inject_adapter_in_model

                inject_adapter_in_model(config, module, adapter_name=adapter_name)
                module.peft_config = {**getattr(module, "peft_config", {}), adapter_name: config}
        self._tuner_layer_cache = None

    def has_lora(self) -> bool:
        """Whether every trainable module carries peft adapter layers."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        return all(
            any(isinstance(layer, BaseTunerLayer) for layer in module.modules())
            for module in self.trainable_modules.values()
        )

    def _tuner_layers(self) -> list[nn.Module]:
        """peft's adapter layers inside the trainable modules (cached: the reference pass toggles them every step)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        key = tuple(id(m) for m in self.trainable_modules.values())
        cached = getattr(self, "_tuner_layer_cache", None)
        if cached is None or cached[0] != key:
            layers = [
                layer
                for module in self.trainable_modules.values()
                for layer in module.modules()
                if isinstance(layer, BaseTunerLayer)
            ]
            cached = (key, layers)
            self._tuner_layer_cache = cached
        return cached[1]

    @contextlib.contextmanager
    def disable_lora(self) -> Iterator[None]:
        """Within the context, the trainable modules run without their LoRA (the frozen reference network).

        Equivalent to diffusers' ``disable_adapters()`` / ``enable_adapters()`` on each module, but toggles peft's
        layers directly: the diffusers wrappers re-check the peft version and walk every submodule on each call,
        which is a measurable share of a small model's training step.
        """
        layers = self._tuner_layers()
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def lora_state_dicts(self, adapter_name: str = "default") -> dict[str, dict[str, torch.Tensor]]:
        """peft state dicts (no adapter name in keys) per trainable module."""
        from peft.utils import get_peft_model_state_dict

        return {
            name: get_peft_model_state_dict(module, adapter_name=adapter_name)
            for name, module in self.trainable_modules.items()
        }

    def lora_weight_name(self, module_name: str) -> str:
        """File name the LoRA of ``module_name`` is saved under (see :meth:`save_lora_weights`)."""
        return self.lora_weight_names.get(module_name, f"pytorch_lora_weights_{module_name}.safetensors")

    def save_lora_weights(
        self, save_directory: str | os.PathLike, *, adapter_name: str = "default", is_main_process: bool = True
    ) -> list[str]:
        """Save each trainable module's LoRA in diffusers format; returns the written file names.

        The first denoiser's file (``pytorch_lora_weights.safetensors``) loads with ``pipe.load_lora_weights(dir)``.
        Keys are ``transformer.<module path>.lora_A/B.weight`` and the peft config is stored as metadata, so rank and
        alpha round-trip.
        """
        save_directory = os.fspath(save_directory)
        save_fn = getattr(type(self.pipeline), "save_lora_weights", None)
        written = []
        for name, state_dict in self.lora_state_dicts(adapter_name).items():
            module = self.trainable_modules[name]
            weight_name = self.lora_weight_name(name)
            metadata = module.peft_config[adapter_name].to_dict() if hasattr(module, "peft_config") else None
            if save_fn is not None:
                save_fn(
                    save_directory,
                    transformer_lora_layers=state_dict,
                    transformer_lora_adapter_metadata=metadata,
                    weight_name=weight_name,
                    is_main_process=is_main_process,
                )
            elif is_main_process:
                from safetensors.torch import save_file

                os.makedirs(save_directory, exist_ok=True)
                tensors = {f"transformer.{k}": v.detach().contiguous().cpu() for k, v in state_dict.items()}
                save_file(tensors, os.path.join(save_directory, weight_name), metadata={"format": "pt"})
            written.append(weight_name)
        return written

    def lora_load_snippet(self, location: str = "<this repo or folder>") -> str:
        """Python that loads the LoRA saved by :meth:`save_lora_weights` at ``location`` into a pipeline ``pipe`` of
        the family, each module's file into the module that was trained (written into model cards)."""
        calls = []
        for name in self.trainable_modules:
            weight_name = self.lora_weight_name(name)
            if name == "transformer" and weight_name == LORA_WEIGHT_NAME:
                calls.append(f'pipe.load_lora_weights("{location}")')
            else:
                calls.append(f'pipe.load_lora_weights("{location}", weight_name="{weight_name}")  # into {name}')
        return "\n".join(calls)

    def load_lora_weights(self, directory: str | os.PathLike, *, adapter_name: str = "default") -> None:
        """Load LoRA weights written by :meth:`save_lora_weights` into the already injected adapters.

        Used to resume training; to use a trained LoRA at inference, call ``pipe.load_lora_weights(dir)``.
        """
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        for name, module in self.trainable_modules.items():
            path = os.path.join(os.fspath(directory), self.lora_weight_name(name))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no LoRA weights for {name!r} at {path}")
            state_dict = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
            result = set_peft_model_state_dict(module, state_dict, adapter_name=adapter_name)
            unexpected = getattr(result, "unexpected_keys", None) or []
            if unexpected:
                raise ValueError(f"LoRA file {path} has keys the model does not have, e.g. {unexpected[:3]}")

    #: batched latent axis that indexes (latent) frames; ``None``: unknown (trainers then infer it).
    latent_frame_axis: ClassVar[int | None] = None

    def encoding_settings(self) -> dict[str, Any]:
        """Adapter options that change what :meth:`prepare_conditions` / :meth:`prepare_latents` return (they key
        the DPO latent cache, so that changing one never reuses stale entries). Default: none."""
        return {}

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """Latent shape (batch axis first) of ``batch_size`` videos of ``num_frames x height x width``.

        Default: encode one blank video with :meth:`prepare_latents`. Families override this with their VAE's
        compression arithmetic so that it is free and works on ``meta`` components.
        """
        with torch.no_grad():
            blank = torch.zeros(1, num_frames, 3, height, width)
            return (batch_size, *self.prepare_latents(blank).shape[1:])

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the denoisers' activations in the backward pass (diffusers models)."""
        for name, module in self.trainable_modules.items():
            if not hasattr(module, "enable_gradient_checkpointing"):
                raise TypeError(f"{name} ({type(module).__name__}) has no enable_gradient_checkpointing()")
            module.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        """Undo :meth:`enable_gradient_checkpointing` (modules without the switch are left alone)."""
        for module in self.trainable_modules.values():
            if hasattr(module, "disable_gradient_checkpointing"):
                module.disable_gradient_checkpointing()

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def repeat_conditions(conditions: dict[str, torch.Tensor], times: int) -> dict[str, torch.Tensor]:
        """Concatenate every condition ``times`` times along the batch axis (winner and loser share them)."""
        return {k: torch.cat([v] * times, dim=0) if torch.is_tensor(v) else v for k, v in conditions.items()}

    @staticmethod
    def videos_to_model_input(videos: torch.Tensor) -> torch.Tensor:
        """``(B, F, 3, H, W)`` ``uint8`` / ``[0, 1]`` videos -> ``(B, 3, F, H, W)`` float in ``[-1, 1]``."""
        if not torch.is_tensor(videos) or videos.ndim != 5 or videos.shape[2] != 3:
            shape = tuple(videos.shape) if torch.is_tensor(videos) else type(videos).__name__
            raise ValueError(f"videos must be a (B, F, 3, H, W) tensor, got {shape}")
        if videos.dtype == torch.uint8:
            videos = videos.float() / 255.0
        elif not videos.is_floating_point():
            raise ValueError(f"videos must be uint8 or floating point, got {videos.dtype}")
        elif videos.numel() and float(videos.min()) < -1e-3:
            raise ValueError(
                "floating-point videos must be in [0, 1] but contain negative values; if they are in [-1, 1], "
                "pass (videos + 1) / 2"
            )
        return (videos * 2.0 - 1.0).permute(0, 2, 1, 3, 4)

    @staticmethod
    def videos_from_model_output(video: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`videos_to_model_input` for a VAE's decode: ``(B, 3, F, H, W)`` in ``[-1, 1]`` ->
        ``(B, F, 3, H, W)`` float32 in ``[0, 1]`` (clamped)."""
        return (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)

    @staticmethod
    def images_to_pil(images: Sequence[Any] | torch.Tensor | PIL.Image.Image) -> list[PIL.Image.Image]:
        """Reference images (PIL, ``(3, H, W)`` uint8 / [0, 1] tensors, HWC / CHW arrays) -> RGB PIL images."""
        if isinstance(images, PIL.Image.Image) or (torch.is_tensor(images) and images.ndim == 3):
            images = [images]
        out = []
        for image in images:
            if isinstance(image, PIL.Image.Image):
                out.append(image.convert("RGB"))
                continue
            array = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
            if array.ndim != 3:
                raise ValueError(f"a reference image must have 3 dimensions, got shape {array.shape}")
            if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
                array = array.transpose(1, 2, 0)  # CHW -> HWC
            if array.dtype != np.uint8:
                array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
            if array.shape[-1] == 1:
                array = np.repeat(array, 3, axis=-1)
            out.append(PIL.Image.fromarray(array, mode="RGB"))
        return out

    def __repr__(self) -> str:
        modules = ", ".join(f"{k}={type(v).__name__}" for k, v in self.trainable_modules.items())
        return f"{type(self).__name__}(family={self.family!r}, {modules}, prediction_type={self.prediction_type!r})"


# the differentiable samplers live in .samplers (re-exported here: old import paths keep working)
from .samplers import DenoisingSampler, PipelineSchedulerSampler, StatelessSampler  # noqa: E402, F401
