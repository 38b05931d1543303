"""Training arguments of :class:`RewardModelTrainer` (TRL-style dataclass with help metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseConfig

__all__ = ["RewardModelConfig"]


@dataclass
class RewardModelConfig(BaseConfig):
    r"""Configuration of :class:`RewardModelTrainer`, a :class:`~transformers.TrainingArguments` subclass
    (through :class:`~icreward.trainers.base_config.BaseConfig`, the base it shares with the diffusion configs).

    Everything ``TrainingArguments`` accepts works too (``output_dir``, ``learning_rate``, ``num_train_epochs``,
    ``eval_strategy``, ``save_steps``, ``activation_checkpointing``, ``report_to`` ...). Defaults differ from
    transformers where CPU-friendliness or reward training needs it (``bf16=False``, ``remove_unused_columns=False``,
    ``report_to="none"``).
    """

    loss_type: str = field(
        default="mse",
        metadata={
            "help": "Objective: 'mse' (pointwise regression on consistency scores, the ICReward paper's setting), "
            "'bt' (Bradley-Terry on preference pairs) or 'bt_ties' (Bradley-Terry with ties, as in VideoAlign).",
            "choices": ["mse", "bt", "bt_ties"],
        },
    )
    ranking_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "With loss_type 'mse': weight of an added Bradley-Terry term over the pairs of videos of the same "
            "group (`group_column`) in each batch whose labels differ by more than `ranking_margin` (0 = the paper's "
            "pure regression)."
        },
    )
    ranking_margin: float = field(
        default=0.05, metadata={"help": "Label difference below which in-batch pairs are not ranked."}
    )
    tie_k: float = field(
        default=5.0, metadata={"help": "k of the BT-with-ties model (must be > 1); log k is the tie margin."}
    )
    tie_threshold: float = field(
        default=0.0,
        metadata={
            "help": "Evaluation: pairs whose labels (or predictions) differ by at most this much count as ties."
        },
    )
    pair_weight_column: str | None = field(
        default=None,
        metadata={
            "help": "With loss_type 'bt'/'bt_ties': dataset column with a non-negative weight per pair; the loss is "
            "the weighted mean over the batch. `to_preference_pairs` (human preference data) writes 'weight', the "
            "share of annotators who voted with the majority (1.0 for 10-0, 0.6 for 6-4, 0.5 for a 5-5 tie). "
            "None: every pair weighs 1."
        },
    )
    backbone_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of trainable backbone parameters (full or LoRA); defaults to `learning_rate`."
        },
    )
    precompute_features: bool = field(
        default=True,
        metadata={
            "help": "With a frozen backbone, encode every video once before training and train the head on cached "
            "features (identical results, far faster). Ignored when the backbone is trainable."
        },
    )
    feature_batch_size: int = field(default=16, metadata={"help": "Videos per batch when precomputing features."})
    group_column: str | None = field(
        default="source_id",
        metadata={
            "help": "Dataset column grouping videos of the same source image (pairwise accuracy is within groups)."
        },
    )
    perturbation_column: str | None = field(
        default="perturbation",
        metadata={"help": "Dataset column with a perturbation type per video, for per-type accuracy (if present)."},
    )
    motion_column: str | None = field(
        default="motion",
        metadata={
            "help": "Dataset column with a motion magnitude per video, for motion-decoupled accuracy (if present)."
        },
    )
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (off: it raises on CPU)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep all columns; the collator needs them."})
    # `None` first, as in TrainingArguments: TRL's argument parser (TrlParser, used by examples/train_reward.py) takes
    # the second member of a three-way union as the argument type and fails on `list[str]` there.
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "Trackers to log to ('none', 'wandb', ...)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        if self.loss_type not in ("mse", "bt", "bt_ties"):
            raise ValueError(f"loss_type must be 'mse', 'bt' or 'bt_ties', got {self.loss_type!r}")
        if self.loss_type == "bt_ties" and self.tie_k <= 1:
            raise ValueError(f"tie_k must be > 1, got {self.tie_k}")
        super().__post_init__()
