"""The base of every icreward training config (TRL-style ``base_config.py``): the defaults that differ from
:class:`~transformers.TrainingArguments` for all of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["BaseConfig"]


@dataclass
class BaseConfig(TrainingArguments):
    r"""A :class:`~transformers.TrainingArguments` subclass, the base of
    :class:`~icreward.trainers.diffusion_config.DiffusionTrainingConfig` (the video LoRA trainers' configs) and
    :class:`~icreward.trainers.reward_model_config.RewardModelConfig`: ``bf16=False`` (TRL's ``True`` raises on
    CPU; turn it on on GPUs) and ``remove_unused_columns=False`` (the collators read the dataset's columns). A
    subclass may restate a field with help text of its own."""

    bf16: bool = field(
        default=False, metadata={"help": "bfloat16 mixed precision (off by default: it raises on CPU)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep all dataset columns; the collator reads them."}
    )
