"""Helpers of the trainers that fine-tune a video model's LoRA through a model-family adapter: seeded noise keyed by
stable row ids, offloading frozen denoisers, and the LoRA model card. The trainers' shared methods live in
:class:`~icreward.trainers.base_trainer.BaseVideoLoRATrainer` (``AdapterLoRATrainerMixin`` is its old name)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch import nn

from ..adapters import VideoModelAdapter
from .diffusion_config import DiffusionTrainingConfig

logger = logging.getLogger("icreward")

TRAINING_ARGS_NAME = "training_args.bin"
_CARD_TEMPLATE = Path(__file__).with_name("templates") / "lora_model_card.md"

__all__ = [
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
    """A diffusers-style LoRA model card rendered from ``templates/lora_model_card.md``: Hub metadata, a sentence on
    the method (``trainer_name``: ``description``), usage snippet, the ``training`` summary lines, ``citations``
    (markdown). ``base_model`` and ``datasets`` enter the metadata only when they are Hub ids."""
    from huggingface_hub import ModelCardData

    from ..models.model_card import is_hub_id

    pipeline = adapter.pipeline
    config = getattr(pipeline, "config", {}) or {}
    base_model = getattr(pipeline, "name_or_path", None) or config.get("_name_or_path") or None
    pipeline_class = type(pipeline).__name__
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="image-to-video",
        base_model=base_model if is_hub_id(base_model) else None,
        tags=list(dict.fromkeys([*tags, adapter.family, "template:diffusion-lora"])),
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,  # free-text data names stay out of it
    )
    if base_model:
        base_model_note = f" `{base_model}`"
        load_base = f'pipe = {pipeline_class}.from_pretrained("{base_model}", torch_dtype=torch.bfloat16)'
    else:
        base_model_note = " (built in memory: no checkpoint id was recorded)"
        load_base = f"pipe = ...  # the {pipeline_class} this LoRA was trained on (built in memory, no id recorded)"
    template = _CARD_TEMPLATE.read_text(encoding="utf-8").removesuffix("\n")
    return template.format(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        trainer_name=trainer_name,
        base_name=base_model or pipeline_class,
        pipeline_class=pipeline_class,
        base_model_note=base_model_note,
        family=adapter.family,
        description=description,
        load_base=load_base,
        load_lora=adapter.lora_load_snippet("<this repo or folder>"),
        training="".join(f"{line}\n" for line in training),
        citations=citations,
    )


def __getattr__(name: str) -> Any:
    # The trainers' shared methods moved to BaseVideoLoRATrainer (base_trainer.py); the old name stays importable.
    if name == "AdapterLoRATrainerMixin":
        from .base_trainer import BaseVideoLoRATrainer

        return BaseVideoLoRATrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
