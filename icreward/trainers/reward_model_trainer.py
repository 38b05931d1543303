"""``RewardModelTrainer``: trains :class:`ICRewardModel` or :class:`MLPRewardModel` with ``transformers.Trainer``."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import EvalPrediction

from ..losses import bradley_terry_loss
from ..metrics.reward_metrics import preference_pair_metrics, reward_regression_metrics
from .checkpointing import CompleteCheckpointMixin
from .reward_data import RewardDataCollator, check_columns, encode_dataset_features
from .reward_model_config import RewardModelConfig

logger = logging.getLogger("icreward")

__all__ = ["RewardModelTrainer"]

_MODEL_INPUTS = ("pixel_values", "frame_mask", "reference_pixel_values", "frame_features", "reference_features")


class RewardModelTrainer(CompleteCheckpointMixin, Trainer):
    r"""Trainer for image-to-video consistency reward models.

    Args:
        model: an :class:`ICRewardModel` or :class:`MLPRewardModel`.
        args: a :class:`RewardModelConfig`.
        train_dataset / eval_dataset: ``datasets.Dataset`` (or a dict of them for ``eval_dataset``). Pointwise
            (``loss_type="mse"``): columns ``reference`` (image or path), ``video`` (path or frames), ``score``
            in [0, 1]; optional ``source_id`` / ``perturbation`` / ``motion`` enrich the metrics. Pairwise
            (``"bt"``, ``"bt_ties"``): ``reference``, ``chosen``, ``rejected``, optional ``is_tie`` and, with
            ``args.pair_weight_column``, a per-pair weight. Human preference votes become such pairs with
            :func:`icreward.data.human_preferences.to_preference_pairs`.
        processing_class: an :class:`ICRewardProcessor` (defaults to ``model.get_processor()``).
        peft_config: a ``peft.LoraConfig`` to put LoRA adapters on the backbone (see
            :meth:`ICRewardModel.enable_backbone_lora`).
        feature_store: a dict shared between trainers to encode each video once per frozen backbone.

    Logged metrics (eval): ``mse``, ``mae``, ``spearman``, ``kendall``, ``pairwise_accuracy``,
    ``pairwise_accuracy_with_ties`` and, when the data carries them, ``accuracy/<perturbation>`` and
    ``accuracy/motion_decoupled``; pairwise data gives ``accuracy``, ``accuracy_with_ties``, ``margin`` and
    ``min_reward`` / ``mean_reward`` / ``max_reward`` (TRL's ``RewardTrainer`` names), which pairwise training
    also logs, averaged over the batches since the last log (``accuracy`` there counts non-tied pairs only).
    """

    def __init__(
        self,
        model=None,
        args: RewardModelConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        feature_store: dict | None = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError("RewardModelTrainer needs a reward model (ICRewardModel or MLPRewardModel)")
        args = args or RewardModelConfig(output_dir="outputs/reward_model")
        if not isinstance(args, RewardModelConfig):
            raise TypeError(f"args must be a RewardModelConfig, got {type(args).__name__}")
        if peft_config is not None:
            model.enable_backbone_lora(peft_config)
        processing_class = processing_class or model.get_processor()
        self.pairwise = args.loss_type in ("bt", "bt_ties")
        weight_column = args.pair_weight_column if self.pairwise else None
        extra = (weight_column,) if weight_column else ()
        if train_dataset is not None:
            check_columns(train_dataset, self.pairwise, "train_dataset", extra)
        eval_sets = (
            eval_dataset
            if isinstance(eval_dataset, dict)
            else {"eval": eval_dataset}
            if eval_dataset is not None
            else {}
        )
        for name, ds in eval_sets.items():
            check_columns(ds, self.pairwise, f"eval_dataset[{name!r}]", extra)

        self._reward_args = args  # `self.args` only exists after Trainer.__init__
        if feature_store is None:  # persistent on disk unless ICREWARD_FEATURE_CACHE=0 (icreward.models.feature_cache)
            from ..models.feature_cache import default_feature_store

            feature_store = default_feature_store()
        self.feature_store = feature_store
        # The eval sets given here, as the Trainer sees them, with their metadata columns; held (not keyed by id())
        # so that an identity match cannot be a freed dataset's reused id.
        self._eval_sets: list[tuple[Any, dict[str, Any]]] = []
        self._train_metrics: dict[str, list[float]] = defaultdict(list)
        self.uses_cached_features = args.precompute_features and not model.backbone_is_trainable
        train_dataset, eval_dataset = self._prepare_datasets(
            model, train_dataset, eval_dataset, eval_sets, processing_class, args
        )

        data_collator = data_collator or RewardDataCollator(
            processing_class, pairwise=self.pairwise, group_column=args.group_column, weight_column=weight_column
        )
        self.user_compute_metrics = compute_metrics
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=None,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        if args.activation_checkpointing and not model.is_activation_checkpointing:
            self._enable_activation_checkpointing(model, args)

    def _prepare_datasets(self, model, train_dataset, eval_dataset, eval_sets, processing_class, args):
        """The datasets the Trainer sees: encoded to cached backbone features when the backbone is frozen and
        ``precompute_features`` is set, each eval set remembered (its metadata) either way."""
        if self.uses_cached_features:
            encode = lambda ds: self._encode_features(model, ds, processing_class, args)  # noqa: E731
            if train_dataset is not None:
                train_dataset = encode(train_dataset)
            encoded = {name: self._remember(ds, encode(ds)) for name, ds in eval_sets.items()}
        else:
            encoded = {name: self._remember(ds, ds) for name, ds in eval_sets.items()}
        if isinstance(eval_dataset, dict):
            eval_dataset = encoded
        elif eval_dataset is not None:
            eval_dataset = encoded["eval"]
        return train_dataset, eval_dataset

    @staticmethod
    def _enable_activation_checkpointing(model, args) -> None:
        # The model is in its configured state from construction on; the Trainer itself only enables it when
        # train() starts (and does so again then, idempotently).
        ckpt_kwargs = dict(args.activation_checkpointing_kwargs or {})
        every_n_layers, offload = ckpt_kwargs.pop("every_n_layers", 1), ckpt_kwargs.pop("offload", False)
        model.activation_checkpointing_enable(ckpt_kwargs or None, every_n_layers=every_n_layers, offload=offload)

    # -- feature cache -------------------------------------------------------------------------------------
    def _encode_features(self, model, dataset, processing_class, args):
        """Cache the frozen backbone's features of ``dataset``; under DDP each process encodes a share of the videos
        and all processes end with the same full cache (``args.world_size`` / ``args.process_index`` are known
        before ``Trainer.__init__`` creates the accelerator)."""
        return encode_dataset_features(
            model,
            dataset,
            processing_class,
            video_columns=("chosen", "rejected") if self.pairwise else ("video",),
            batch_size=args.feature_batch_size,
            store=self.feature_store,
            process_index=args.process_index,
            num_processes=args.world_size,
        )

    # -- metadata for metrics ------------------------------------------------------------------------------
    def _remember(self, original, prepared):
        """Hold the prepared eval set with the metadata columns of its original (group, perturbation, motion)."""
        self._eval_sets.append((prepared, self._metadata_of(original)))
        return prepared

    def _metadata_of(self, original) -> dict[str, list]:
        """The metadata columns of an eval set (group, perturbation, motion) that the metrics use."""
        columns = set(getattr(original, "column_names", None) or original[0].keys())
        meta = {}
        for key, column in (
            ("groups", self._reward_args.group_column),
            ("perturbations", self._reward_args.perturbation_column),
            ("motions", self._reward_args.motion_column),
        ):
            if column and column in columns:
                meta[key] = (
                    list(original[column]) if hasattr(original, "column_names") else [r[column] for r in original]
                )
        return meta

    def _eval_set_metadata(self, dataset) -> dict[str, list] | None:
        """The metadata of one of the eval sets given to the constructor (as prepared), else None."""
        return next((meta for held, meta in self._eval_sets if held is dataset), None)

    # -- optimisation --------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """AdamW (or ``args.optim``) with separate learning rates for the head and trainable backbone parameters."""
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        decay_names = set(self.get_decay_parameter_names(model))
        backbone_lr = self.args.backbone_learning_rate or self.args.learning_rate
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            key = (name.startswith("backbone."), name in decay_names)
            groups.setdefault(key, []).append(param)
        param_groups = [
            {
                "params": params,
                "lr": backbone_lr if is_backbone else self.args.learning_rate,
                "weight_decay": self.args.weight_decay if decays else 0.0,
            }
            for (is_backbone, decays), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # -- loss ----------------------------------------------------------------------------------------------
    @staticmethod
    def _inputs(inputs: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            k[len(prefix) :]: v
            for k, v in inputs.items()
            if k.startswith(prefix) and k[len(prefix) :] in _MODEL_INPUTS
        }

    def _pair_forward(self, model, inputs):
        chosen = model(**self._inputs(inputs, "chosen_"))
        rejected = model(**self._inputs(inputs, "rejected_"))
        return chosen, rejected

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if not self.pairwise:
            outputs = model(**self._inputs(inputs), labels=inputs["labels"])
            loss = outputs.loss
            if self.args.ranking_loss_weight > 0 and "groups" in inputs:
                loss = loss + self.args.ranking_loss_weight * self._in_batch_ranking_loss(
                    outputs.logits, inputs["labels"], inputs["groups"]
                )
            return (loss, outputs) if return_outputs else loss
        chosen, rejected = self._pair_forward(model, inputs)
        ties = inputs.get("ties") if self.args.loss_type == "bt_ties" else None
        losses = bradley_terry_loss(chosen.logits, rejected.logits, ties=ties, k=self.args.tie_k)
        weights = inputs.get("weights")
        if weights is not None:
            weights = weights.to(losses)
            if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
                raise ValueError(f"pair weights (column {self.args.pair_weight_column!r}) must be finite and >= 0")
            loss = (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
        else:
            loss = losses.mean()
        if model.training:
            self._record_pair_metrics(chosen.scores.detach(), rejected.scores.detach(), inputs.get("ties"))
        if return_outputs:
            return loss, {"chosen_scores": chosen.scores, "rejected_scores": rejected.scores}
        return loss

    def _record_pair_metrics(self, chosen: torch.Tensor, rejected: torch.Tensor, ties: torch.Tensor | None) -> None:
        """TRL RewardTrainer-style training metrics of one batch (gathered over processes)."""
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = gather(chosen.float()), gather(rejected.float())
        decided = ~gather(ties.bool()) if ties is not None else torch.ones_like(chosen, dtype=torch.bool)
        everything = torch.cat([chosen, rejected])
        self._train_metrics["min_reward"].append(everything.min().item())
        self._train_metrics["mean_reward"].append(everything.mean().item())
        self._train_metrics["max_reward"].append(everything.max().item())
        self._train_metrics["margin"].append((chosen - rejected).mean().item())
        if decided.any():
            self._train_metrics["accuracy"].append((chosen[decided] > rejected[decided]).float().mean().item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._train_metrics and "loss" in logs:  # a training log: add the averaged batch metrics
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._train_metrics.items() if v}}
            self._train_metrics.clear()
        super().log(logs, start_time)

    def _in_batch_ranking_loss(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Mean Bradley-Terry loss over same-group pairs whose labels differ by more than ``ranking_margin``."""
        diff = labels[:, None] - labels[None, :]
        pairs = (groups[:, None] == groups[None, :]) & (diff > self.args.ranking_margin)
        if not pairs.any():
            return logits.sum() * 0.0
        hi, lo = pairs.nonzero(as_tuple=True)
        return bradley_terry_loss(logits[hi], logits[lo]).mean()

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        if self.pairwise:
            preds = torch.stack([outputs["chosen_scores"], outputs["rejected_scores"]], dim=1)
            return loss, preds.detach(), inputs["ties"].float()
        return loss, outputs.scores.detach(), inputs["labels"]

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        if isinstance(eval_dataset, str):
            dataset = self.eval_dataset[eval_dataset]
        elif eval_dataset is not None:
            dataset = eval_dataset
            if self._eval_set_metadata(dataset) is None:  # another dataset: prepared for this call only
                check_columns(dataset, self.pairwise, "eval_dataset")
                meta = self._metadata_of(dataset)
                if self.uses_cached_features:
                    dataset = self._encode_features(self.model, dataset, self.processing_class, self.args)
                return self._evaluate_one(dataset, meta, ignore_keys, metric_key_prefix)
        else:
            dataset = self.eval_dataset
        if isinstance(dataset, dict):
            metrics = {}
            for name, ds in dataset.items():
                metrics.update(self.evaluate(ds, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        return self._evaluate_one(dataset, self._eval_set_metadata(dataset) or {}, ignore_keys, metric_key_prefix)

    def _evaluate_one(self, dataset, meta: dict[str, list], ignore_keys, metric_key_prefix: str):
        """``Trainer.evaluate`` of one prepared dataset, with ``meta`` (its metadata columns) for the metrics."""
        self.compute_metrics = lambda pred: self._compute_metrics(pred, meta)
        try:
            return super().evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = None

    def _compute_metrics(self, pred: EvalPrediction, meta: dict[str, Any]) -> dict[str, float]:
        preds = np.asarray(pred.predictions)
        if self.pairwise:
            metrics = preference_pair_metrics(
                preds[:, 0], preds[:, 1], np.asarray(pred.label_ids) > 0.5, tie_threshold=self.args.tie_threshold
            )
            metrics.update(
                min_reward=float(preds.min()), mean_reward=float(preds.mean()), max_reward=float(preds.max())
            )
        else:
            metrics = reward_regression_metrics(
                preds,
                np.asarray(pred.label_ids),
                groups=meta.get("groups"),
                perturbations=meta.get("perturbations"),
                motions=meta.get("motions"),
                tie_threshold=self.args.tie_threshold,
            )
        if self.user_compute_metrics is not None:
            metrics.update(self.user_compute_metrics(pred))
        return {k: float(v) for k, v in metrics.items() if not (isinstance(v, float) and np.isnan(v))}

    def predict_scores(self, dataset) -> np.ndarray:
        """Scores of a pointwise dataset (or ``(N, 2)`` chosen/rejected scores of a pairwise one)."""
        if self.uses_cached_features:
            dataset = self._encode_features(self.model, dataset, self.processing_class, self.args)
        return np.asarray(self.predict(dataset).predictions)

    # -- saving --------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.processing_class is not None and self.args.should_save:
            self.processing_class.save_pretrained(output_dir)
