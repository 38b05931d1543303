"""The base of the trainers that fine-tune a video model's LoRA through a model-family adapter (TRL-style
``base_trainer.py``): :class:`BaseVideoLoRATrainer`.

It owns what the video LoRA trainers (:class:`~icreward.trainers.video_dpo_trainer.VideoDPOTrainer`,
:class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackTrainer`,
:class:`~icreward.trainers.video_grpo_trainer.VideoGRPOTrainer`) share: building the adapter and injecting the LoRA,
per-row seeded noise generators, per-sample metrics gathered across processes and their logging, the evaluation loop,
LoRA save / resume in diffusers format and the model card (``templates/lora_model_card.md``, from the class attributes
``_name`` and ``_paper`` and the trainer's :meth:`~BaseVideoLoRATrainer._training_summary`). A trainer adds its loss
(``compute_loss``) and its sampling.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Trainer

from ..adapters import VideoModelAdapter, get_adapter
from .adapter_lora import TRAINING_ARGS_NAME, FrozenDenoiserOffload, render_lora_model_card, seeded_generator
from .checkpointing import CompleteCheckpointMixin
from .diffusion_config import DiffusionTrainingConfig

logger = logging.getLogger("icreward")

__all__ = ["BaseVideoLoRATrainer"]


class BaseVideoLoRATrainer(CompleteCheckpointMixin, Trainer):
    """A ``transformers.Trainer`` that trains a LoRA on ``self.adapter`` (a
    :class:`~icreward.adapters.VideoModelAdapter`).

    Checkpoints hold the LoRA in diffusers format (``pipe.load_lora_weights(dir)`` works on any of them), so
    ``transformers.Trainer``'s save / resume / best-model paths go through ``self.adapter``; checkpoints are marked
    complete (:class:`~icreward.trainers.checkpointing.CompleteCheckpointMixin`).

    A subclass sets ``_name`` (the trainer named in the model card), ``_paper`` (``{"description": ..., "citation":
    ...}``: the method in one sentence, its BibTeX), ``_tag_names`` (Hub tags), calls :meth:`_init_lora_trainer`
    before ``Trainer.__init__``, and defines ``compute_loss`` (storing its metrics with :meth:`_store`) and
    :meth:`_training_summary` (the card's training lines). Hooks with defaults: :meth:`_logits_and_labels`,
    :meth:`_summarise_metric`, :meth:`_attach_train_metrics`.
    """

    _name: ClassVar[str] = "BaseVideoLoRATrainer"
    _paper: ClassVar[dict[str, str]] = {"description": "", "citation": ""}
    _tag_names: ClassVar[list[str]] = []

    def _init_lora_trainer(self, adapter: VideoModelAdapter) -> None:
        """The state every video LoRA trainer keeps: the adapter, the stored metrics, the noise micro-batch counter."""
        self.adapter = adapter
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._noise_step, self._noise_micro = -1, 0
        self._latent_shape_cache: tuple[int, ...] | None = None

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

    @property
    def model_wrapped_policy(self) -> nn.Module:
        """The unwrapped policy module (whatever DDP / accelerate wrapped around it)."""
        return self.accelerator.unwrap_model(self.model)

    def _latent_shape(self) -> tuple[int, ...]:
        """Per-sample latent shape for the configured video size (the adapter's ``latent_shape``)."""
        if self._latent_shape_cache is None:
            args = self.args
            shape = self.adapter.latent_shape(1, args.num_frames, args.height, args.width)
            self._latent_shape_cache = tuple(shape[1:])
        return self._latent_shape_cache

    # ------------------------------------------------------------------------------------------------ noise
    def _generator(self, *key: Any) -> torch.Generator:
        """A generator seeded from (``args.seed``, ``*key``): the same key gives the same draws on any process."""
        return seeded_generator(self.args.seed, *key)

    def _row_generators(self, training: bool, row_ids: Sequence[str]) -> list[torch.Generator]:
        """One generator per row, keyed by (seed, global step, row) in training and (seed, row) in evaluation: never
        by the row's batch, process or accumulation micro-batch."""
        if training:
            return [self._generator("train", self.state.global_step, row) for row in row_ids]
        return [self._generator("eval", row) for row in row_ids]

    @staticmethod
    def _row_noise(shape: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One standard normal tensor of ``shape`` per row, each drawn from the row's generator, stacked (on CPU)."""
        return torch.stack([torch.randn(shape, generator=g) for g in generators])

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
        self,
        per_sample: dict[str, torch.Tensor],
        training: bool,
        scalars: dict[str, float] | None = None,
        *,
        per_row: bool = True,
    ) -> None:
        """Gather values from all processes and keep them until the next log (exact means over samples and steps).

        Per-row values go through ``gather_for_metrics`` (which drops the rows padded onto the last batch); values
        that are not one per dataset row (``per_row=False``: per generated video or per group) and scalars, one per
        process and micro-step, through ``gather``.
        """
        mode = "train" if training else "eval"
        for name, value in per_sample.items():
            if per_row:
                gathered = self.accelerator.gather_for_metrics(value.detach().float().reshape(-1))
            else:
                gathered = self.accelerator.gather(value.detach().float().reshape(-1).to(self.args.device))
            self._metrics[mode][name].extend(gathered.cpu().tolist())
        if scalars:
            gathered = self.accelerator.gather(torch.tensor([list(scalars.values())], device=self.args.device))
            for name, column in zip(scalars, gathered.cpu().T.tolist(), strict=True):
                self._metrics[mode][name].extend(column)

    def _summarise_metric(self, name: str, values: list[float]) -> dict[str, float]:
        """What a stored metric logs: counts of replaced scores (``.../nonfinite``) are totals over the logging
        window, everything else a mean."""
        if name.endswith("/nonfinite"):
            return {name: sum(values)}
        return {name: sum(values) / len(values)}

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        """The logged values of the metrics stored since the last log of ``mode``, which are then cleared."""
        stored = self._metrics[mode]
        metrics = {}
        for name, values in stored.items():
            if values:
                metrics.update(self._summarise_metric(name, values))
        stored.clear()
        return metrics

    def _attach_train_metrics(self, logs: dict[str, float]) -> bool:
        """Whether a log while training carries the stored training metrics: the Trainer's training logs (with a
        ``loss``), not other logs made during training (validation rounds)."""
        return "loss" in logs

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and self._attach_train_metrics(logs):
            logs = {**logs, **self._pop_metrics("train")}
        super().log(logs, start_time)

    @staticmethod
    def _logits_and_labels(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prediction_step``'s logits (the weighted rewards, ``(N,)``) and zero labels."""
        rewards = outputs["rewards"]
        return rewards, torch.zeros_like(rewards)

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

    def _training_summary(self) -> list[str]:
        """The model card's "Training" lines (markdown list items): what the method and the run were."""
        raise NotImplementedError

    def _render_model_card(self, model_name: str, dataset_name: str | None, tags: list[str]) -> str:
        """A diffusers LoRA model card (``templates/lora_model_card.md``) naming ``_name``, describing the method with
        ``_paper["description"]`` and citing ``_paper["citation"]``."""
        return render_lora_model_card(
            self.adapter,
            model_name=model_name,
            dataset_name=dataset_name,
            tags=tags,
            trainer_name=self._name,
            description=self._paper["description"],
            training=self._training_summary(),
            citations=f"```bibtex\n{self._paper['citation']}```\n",
        )
