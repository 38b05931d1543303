"""Saving and loading shared by the trainers that fine-tune a video model's LoRA through a model-family adapter."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("icreward")

TRAINING_ARGS_NAME = "training_args.bin"

__all__ = ["AdapterLoRATrainerMixin", "TRAINING_ARGS_NAME"]


class AdapterLoRATrainerMixin:
    """Checkpoints hold the LoRA in diffusers format (``pipe.load_lora_weights(dir)`` works on any of them), so
    ``transformers.Trainer``'s save / resume / best-model paths go through ``self.adapter``. The class using it
    defines ``_render_model_card(model_name, dataset_name, tags) -> str`` (its method-specific card)."""

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
