"""What the trainers that fine-tune a video model's LoRA through a model-family adapter share: building the adapter
and injecting the LoRA, seeded noise keyed by stable row ids, per-sample metrics gathered across processes, evaluation, saving, loading and
the model card."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import PIL.Image
import torch
from torch import nn

from ..adapters import VideoModelAdapter, get_adapter
from .diffusion_config import DiffusionTrainingConfig

logger = logging.getLogger("icreward")

TRAINING_ARGS_NAME = "training_args.bin"

__all__ = [
    "AdapterLoRATrainerMixin",
    "FrozenDenoiserOffload",
    "TRAINING_ARGS_NAME",
    "batch_breakdown",
    "describe_lora",
    "image_identity",
    "render_lora_model_card",
    "row_id",
    "seeded_generator",
]


class FrozenDenoiserOffload:
    """Keep frozen denoisers (Wan 2.2's untrained expert) in CPU memory and move each to ``device`` only while the
    sampler runs it.

    A forward pre-hook moves a frozen denoiser to ``device`` before its call; it stays there for the following calls
    (consecutive high-noise steps) and goes back to the CPU when a trained denoiser is about to run. Calls of an
    offloaded denoiser must not need gradients through it: its weights move after the call, under the autograd graph
    (:class:`RewardFeedbackTrainer` checks that the trained steps all run a trained expert).

    Args:
        frozen: the frozen denoisers by name.
        trained: the trained denoisers by name (their calls evict the frozen ones).
        device: the training device.
    """

    def __init__(self, frozen: Mapping[str, nn.Module], trained: Mapping[str, nn.Module], device: torch.device | str):
        self.device = torch.device(device)
        self.frozen = dict(frozen)
        self.resident: set[str] = set()
        self._handles = []
        for name, module in self.frozen.items():
            module.to("cpu")
            self._handles.append(module.register_forward_pre_hook(self._bring_in(name)))
        for module in trained.values():
            self._handles.append(module.register_forward_pre_hook(lambda *_: self.evict()))

    def _bring_in(self, name: str):
        def hook(module: nn.Module, args: Any) -> None:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    f"the offloaded frozen denoiser {name!r} was called with gradients enabled; backpropagating "
                    "through an offloaded expert is not supported (set offload_frozen_denoisers=False)"
                )
            if name in self.resident:
                return
            module.to(self.device)
            self.resident.add(name)

        return hook

    def evict(self) -> None:
        """Move every frozen denoiser back to the CPU."""
        for name in sorted(self.resident):
            self.frozen[name].to("cpu")
        self.resident.clear()

    def remove(self) -> None:
        """Remove the hooks (the denoisers stay where they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def seeded_generator(*key: Any) -> torch.Generator:
    """A CPU generator seeded from a JSON-serialisable key: the same key gives the same noise on any process."""
    digest = hashlib.sha256(json.dumps(list(key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def row_id(*parts: Any) -> str:
    """A stable identifier of a dataset row from JSON-serialisable ``parts`` (its prompt, file paths, image digest).

    The trainers seed a row's noise from it (with :func:`seeded_generator`), so that the row draws the same noise
    whatever batch, process or accumulation micro-batch it lands in, and in every run over the same data.
    """
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()


def image_identity(image: Any) -> str:
    """What stands for a row's reference image in its :func:`row_id`: a path as given (so ids do not depend on the
    working directory), and an in-memory image (PIL, encoded bytes, a ``datasets`` image dict) a digest of its
    content (never its ``repr``, which holds a memory address)."""
    if isinstance(image, Mapping):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if image.get("bytes"):
            image = bytes(image["bytes"])
        elif image.get("path"):
            image = image["path"]
        else:
            raise ValueError("image dict has neither bytes nor path")
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(image).hexdigest()
    if isinstance(image, PIL.Image.Image):
        digest = hashlib.sha256(json.dumps([image.mode, list(image.size)]).encode())
        digest.update(image.tobytes())
        return "sha256:" + digest.hexdigest()
    raise TypeError(f"cannot identify an image given as {type(image).__name__}: use a path, PIL image or bytes")


class AdapterLoRATrainerMixin:
    """Mixed into the ``transformers.Trainer`` subclasses that train a LoRA on ``self.adapter`` (a
    :class:`~icreward.adapters.VideoModelAdapter`).

    Checkpoints hold the LoRA in diffusers format (``pipe.load_lora_weights(dir)`` works on any of them), so
    ``transformers.Trainer``'s save / resume / best-model paths go through ``self.adapter``. The class using it
    defines ``_render_model_card(model_name, dataset_name, tags) -> str`` (its method-specific card),
    ``_logits_and_labels(outputs)`` (what :meth:`prediction_step` returns besides the loss), ``self._metrics``
    (``{"train": defaultdict(list), "eval": defaultdict(list)}``) with ``_pop_metrics(mode) -> dict`` (the means it
    logs), and ``self._noise_step, self._noise_micro = -1, 0`` (the micro-batch counter).
    """

    # ------------------------------------------------------------------------------------------------ setup
    @staticmethod
    def _resolve_adapter(model: Any, args: DiffusionTrainingConfig) -> VideoModelAdapter:
        if isinstance(model, (str, os.PathLike)):  # a Hub id / folder: load the base weights in args.torch_dtype
            from .diffusion_config import loading_dtype

            model = get_adapter(model, torch_dtype=loading_dtype(args)).pipeline
        base = get_adapter(model)
        if model is base:  # an adapter built by the user: keep its settings
            return base
        # Families whose schedule depends on the video size (LTX's sigma shift, Open-Sora) take it at construction.
        options = {
            "train_expert": args.wan22_train_expert,
            "max_sequence_length": args.max_sequence_length,
            "num_frames": getattr(args, "num_frames", None),
            "height": getattr(args, "height", None),
            "width": getattr(args, "width", None),
        }
        accepted = inspect.signature(type(base).__init__).parameters
        kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
        return type(base)(base.pipeline, **kwargs) if kwargs else base

    @staticmethod
    def _setup_lora(adapter: VideoModelAdapter, peft_config: Any, *, requirement: str) -> None:
        """Inject ``peft_config`` into the trainable denoiser(s), or keep training the LoRA they carry; only LoRA
        parameters train. ``requirement`` starts the error raised when there is neither."""
        if peft_config is not None:
            if adapter.has_lora():
                raise ValueError("the model already has a LoRA adapter; pass peft_config=None to keep training it")
            adapter.add_lora(peft_config)
        elif not adapter.has_lora():
            raise ValueError(
                f"{requirement}: pass peft_config=LoraConfig(r=..., lora_alpha=...) (default target modules for "
                f"{adapter.family}: {list(adapter.default_lora_target_modules)})"
            )
        else:
            adapter.freeze()
            for module in adapter.trainable_modules.values():
                for name, param in module.named_parameters():
                    param.requires_grad_("lora_" in name)
        # LoRA weights train in float32 even when the frozen base runs in bf16/fp16 (as diffusers' scripts do).
        for module in adapter.trainable_modules.values():
            for param in module.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()

    @staticmethod
    def _allow_unused_experts(adapter: VideoModelAdapter, args: DiffusionTrainingConfig) -> None:
        """Two experts (Wan 2.2): a step whose trained timesteps all fall in one expert's range leaves the other
        without gradients, which DDP has to be told."""
        if len(adapter.trainable_modules) > 1 and args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = True

    def _move_encoders(self, device: torch.device | str) -> None:
        """Move the VAE and the text / image encoders: they are not submodules of the trained module, so the
        Trainer never moves them. With ``args.offload_encoders`` the text / image encoders stay in CPU memory and
        visit ``device`` only during their own calls (:class:`~icreward.memory.offload.EncoderOffload`)."""
        modules = dict(self.adapter.encoder_modules)
        previous = getattr(self, "_encoder_offload", None)
        if previous is not None:
            previous.remove()
            self._encoder_offload = None
        if getattr(self.args, "offload_encoders", False) and torch.device(device).type != "cpu":
            from ..memory.offload import EncoderOffload

            offloaded = {name: module for name, module in modules.items() if name != "vae"}
            self._encoder_offload = EncoderOffload(offloaded, device)
            modules = {name: module for name, module in modules.items() if name == "vae"}
        for module in modules.values():
            module.to(device)

    def _move_frozen_denoisers(self, device: torch.device | str) -> None:
        """Put frozen denoisers (Wan 2.2's untrained expert) on ``device``: sampling runs them, and the Trainer only
        moves the trained module. With ``args.offload_frozen_denoisers`` they stay in CPU memory instead and are
        moved in only for the calls that run them (:class:`FrozenDenoiserOffload`)."""
        frozen = self.adapter.frozen_denoisers
        if getattr(self.args, "offload_frozen_denoisers", False) and frozen:
            previous = getattr(self, "_frozen_offload", None)
            if previous is not None:
                previous.remove()
            self._frozen_offload = FrozenDenoiserOffload(frozen, self.adapter.trainable_modules, device)
            return
        for module in frozen.values():
            module.to(device)

    # ------------------------------------------------------------------------------------------------ noise
    def _micro_batch_index(self) -> tuple[int, int]:
        """``(global step, micro-batch)``: how many batches this process drew noise for before, in this step (the
        fallback key of batches whose rows carry no id)."""
        if self.state.global_step != self._noise_step:
            self._noise_step, self._noise_micro = self.state.global_step, 0
        index = (self._noise_step, self._noise_micro)
        self._noise_micro += 1
        return index

    # ---------------------------------------------------------------------------------------------- metrics
    def _store(
        self, per_sample: dict[str, torch.Tensor], training: bool, scalars: dict[str, float] | None = None
    ) -> None:
        """Gather values from all processes and keep them until the next log (exact means over samples and steps).

        Per-sample values go through ``gather_for_metrics`` (which drops the samples padded onto the last batch);
        scalars, one per process and micro-step, through ``gather``.
        """
        mode = "train" if training else "eval"
        for name, value in per_sample.items():
            gathered = self.accelerator.gather_for_metrics(value.detach().float().reshape(-1))
            self._metrics[mode][name].extend(gathered.cpu().tolist())
        if scalars:
            gathered = self.accelerator.gather(torch.tensor([list(scalars.values())], device=self.args.device))
            for name, column in zip(scalars, gathered.cpu().T.tolist(), strict=True):
                self._metrics[mode][name].extend(column)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        return (loss, *self._logits_and_labels(outputs))

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._metrics["eval"].clear()
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        # Exact means over all evaluated samples, returned by evaluate() and logged with its other metrics.
        for name, value in self._pop_metrics("eval").items():
            output.metrics[f"{metric_key_prefix}_{name}"] = value
        return output

    # ----------------------------------------------------------------------------------------------- saving
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the LoRA in diffusers format (``pipe.load_lora_weights(output_dir)``), plus the training args."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.adapter.save_lora_weights(output_dir)
        if self.processing_class is not None and hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        if not _internal_call and self.args.should_save:
            self.create_model_card(output_dir=output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        logger.info("Loading LoRA weights from %s", resume_from_checkpoint)
        self.adapter.load_lora_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        logger.info("Loading best LoRA from %s (score: %s)", self.state.best_model_checkpoint, self.state.best_metric)
        self.adapter.load_lora_weights(self.state.best_model_checkpoint)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        output_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Write ``README.md`` (a diffusers LoRA model card citing the method's papers) to ``output_dir``."""
        if not self.is_world_process_zero():
            return
        output_dir = output_dir or self.args.output_dir
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        card = self._render_model_card(
            model_name=model_name or os.path.basename(os.path.normpath(output_dir)),
            dataset_name=dataset_name,
            tags=[*self._tag_names, *tags],
        )
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------


def describe_lora(adapter: VideoModelAdapter) -> str:
    """``rank R, alpha A, target modules [...]; files [...]`` of the adapter's LoRA, for the model card."""
    lora_files = [adapter.lora_weight_name(name) for name in adapter.trainable_modules]
    first_module = next(iter(adapter.trainable_modules.values()))
    peft_config = getattr(first_module, "peft_config", {}).get("default")
    rank, alpha = getattr(peft_config, "r", None), getattr(peft_config, "lora_alpha", None)
    targets = sorted(getattr(peft_config, "target_modules", None) or [])
    return f"rank {rank}, alpha {alpha}, target modules {targets}; files {lora_files}"


def batch_breakdown(args: DiffusionTrainingConfig) -> tuple[int, str]:
    """The effective batch of an optimiser step and what makes it up, e.g.
    ``(64, "per device 1 x accumulation 64 x 1 process")``."""
    num_processes = max(args.world_size, 1)
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    breakdown = (
        f"per device {args.per_device_train_batch_size} x accumulation {args.gradient_accumulation_steps} x "
        f"{num_processes} process{'es' if num_processes != 1 else ''}"
    )
    return effective_batch, breakdown


def render_lora_model_card(
    adapter: VideoModelAdapter,
    *,
    model_name: str,
    dataset_name: str | None,
    tags: list[str],
    trainer_name: str,
    description: str,
    training: list[str],
    citations: str,
) -> str:
    """A diffusers-style LoRA model card: YAML metadata, a sentence on the method (``trainer_name``: ``description``),
    usage snippet, the ``training`` summary lines, citations."""
    pipeline = adapter.pipeline
    config = getattr(pipeline, "config", {}) or {}
    base_model = getattr(pipeline, "name_or_path", None) or config.get("_name_or_path") or None
    pipeline_class = type(pipeline).__name__

    from ..models.model_card import is_hub_id

    meta = ["---", "library_name: diffusers", "pipeline_tag: image-to-video"]
    if is_hub_id(base_model):
        meta.append(f"base_model: {base_model}")
    meta.append("tags:")
    meta += [f"- {tag}" for tag in dict.fromkeys([*tags, adapter.family, "template:diffusion-lora"])]
    if is_hub_id(dataset_name):  # free-text data names stay out of the Hub metadata
        meta.append(f"datasets:\n- {dataset_name}")
    meta.append("---")

    load = adapter.lora_load_snippet("<this repo or folder>")
    lines = [
        *meta,
        "",
        f"# {model_name}: {trainer_name} LoRA for {base_model or pipeline_class}",
        "",
        f"A LoRA for the `{pipeline_class}` pipeline"
        + (f" `{base_model}`" if base_model else " (built in memory: no checkpoint id was recorded)")
        + f" ({adapter.family}), trained with the `icreward` library's `{trainer_name}`: {description}",
        "",
        "## Usage",
        "",
        "```python",
        "import torch",
        f"from diffusers import {pipeline_class}",
        "",
        *(
            [f'pipe = {pipeline_class}.from_pretrained("{base_model}", torch_dtype=torch.bfloat16)']
            if base_model
            else [f"pipe = ...  # the {pipeline_class} this LoRA was trained on (built in memory, no id recorded)"]
        ),
        load,
        "```",
        "",
        "## Training",
        "",
        *training,
        "",
        "## Citation",
        "",
        citations,
    ]
    return "\n".join(lines)
