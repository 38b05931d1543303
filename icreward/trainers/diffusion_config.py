"""Training arguments shared by the image-to-video diffusion trainers' configs (TRL-style dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .base_config import BaseConfig

__all__ = ["DiffusionTrainingConfig", "RewardSamplingFields", "loading_dtype", "shared_field"]

WAN22_TRAIN_EXPERTS = ("low_noise", "high_noise", "both")


@dataclass
class DiffusionTrainingConfig(BaseConfig):
    r"""What the video LoRA trainers' configs (:class:`~icreward.trainers.video_dpo_config.VideoDPOConfig`,
    :class:`~icreward.trainers.reward_feedback_config.RewardFeedbackConfig`,
    :class:`~icreward.trainers.video_grpo_config.VideoGRPOConfig`) share, a
    :class:`~icreward.trainers.base_config.BaseConfig` (``TrainingArguments``) subclass: the video size, the prompt
    length and the Wan 2.2 expert that gets LoRA (what building the model-family adapter and its inputs reads), and
    (from ``BaseConfig``) the defaults that video LoRA training and CPU runs need: ``bf16=False`` (TRL's ``True`` raises on CPU; turn it on on GPUs) and
    ``remove_unused_columns=False`` (the collators read the dataset's columns).

    The two configs restate some of these fields with help text of their own (:func:`shared_field`) and set their
    own ``learning_rate`` and ``logging_steps`` defaults.
    """

    num_frames: int = field(default=81, metadata={"help": "Frames per video; 4k + 1 for Wan/CogVideoX."})
    height: int = field(default=480, metadata={"help": "Video height."})
    width: int = field(default=832, metadata={"help": "Video width."})
    max_sequence_length: int | None = field(
        default=None,
        metadata={
            "help": "Text tokens per prompt; the model family's default when unset (512 for Wan, which Wan 2.1 I2V "
            "requires; 226 for CogVideoX)."
        },
    )
    wan22_train_expert: str = field(
        default="low_noise",
        metadata={
            "help": "Wan 2.2 A14B: which expert gets LoRA: 'low_noise' (transformer_2, as in IPRO), 'high_noise' "
            "(transformer) or 'both'.",
            "choices": list(WAN22_TRAIN_EXPERTS),
        },
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype of the base weights when the trainer loads a Hub id or a local folder itself (a loaded "
            "pipeline is used as it is). None follows the mixed precision: bfloat16 with bf16, float16 with fp16, "
            "float32 otherwise. LoRA parameters train in float32 whatever this is."
        },
    )
    offload_encoders: bool = field(
        default=False,
        metadata={
            "help": "Keep the text / image encoders in CPU memory and move each to the device only for its own "
            "forward call (icreward.memory.offload.EncoderOffload): saves their weights on the device (10.6 GiB for "
            "Wan's UMT5-XXL in bf16) for one host-device copy per encoded batch. The VAE stays on the device."
        },
    )

    def __post_init__(self):
        if self.wan22_train_expert not in WAN22_TRAIN_EXPERTS:
            raise ValueError(
                f"wan22_train_expert must be 'low_noise', 'high_noise' or 'both', got {self.wan22_train_expert!r}"
            )
        if self.torch_dtype not in (None, "bfloat16", "float16", "float32"):
            raise ValueError(f"torch_dtype must be bfloat16, float16, float32 or None, got {self.torch_dtype!r}")
        for name in ("num_frames", "height", "width"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        super().__post_init__()


def loading_dtype(args: DiffusionTrainingConfig) -> torch.dtype:
    """The dtype a trainer loads a Hub id / folder in: ``args.torch_dtype``, else the mixed precision's."""
    if getattr(args, "torch_dtype", None):
        return getattr(torch, args.torch_dtype)
    if getattr(args, "bf16", False):
        return torch.bfloat16
    if getattr(args, "fp16", False):
        return torch.float16
    return torch.float32


def shared_field(name: str, *, help: str) -> Any:
    """The :class:`DiffusionTrainingConfig` field ``name`` (its default and choices) with a config's own help text.

    For a subclass whose help says what the field means in its method, e.g.
    ``num_frames: int = shared_field("num_frames", help="Frames per generated video; ...")``.
    """
    base = next(f for f in fields(DiffusionTrainingConfig) if f.name == name)
    return field(default=base.default, metadata={**base.metadata, "help": help})


class RewardSamplingFields:
    """The fields of the configs whose trainers sample videos and maximise rewards (reward feedback, GRPO), written
    once: the same type, default and checks, with help text saying what they mean in each method. Use in a config
    body, e.g. ``guidance_scale: float = RewardSamplingFields.guidance_scale("Classifier-free guidance ...")``, and
    call :meth:`check` from its ``__post_init__``."""

    @staticmethod
    def reward_weights(none_gives: str) -> Any:
        """``reward_weights``: one weight per reward of ``reward_funcs`` (default None); ``none_gives`` completes the
        help ("None gives ...")."""
        return field(
            default=None,
            metadata={"help": f"Weight of each reward (in the order of `reward_funcs`). None gives {none_gives}"},
        )

    @staticmethod
    def guidance_scale(help: str) -> Any:
        """``guidance_scale``: the classifier-free guidance scale while sampling, 1 (none) by default."""
        return field(default=1.0, metadata={"help": help})

    @staticmethod
    def negative_prompt() -> Any:
        """``negative_prompt``: the negative prompt of classifier-free guidance, empty by default."""
        return field(default="", metadata={"help": "Negative prompt when guidance_scale > 1."})

    @staticmethod
    def check(config: Any) -> None:
        """The ``__post_init__`` checks of these fields: the reward weights as floats, a guidance scale >= 1."""
        if config.reward_weights is not None:
            config.reward_weights = [float(w) for w in config.reward_weights]
        if config.guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables guidance), got {config.guidance_scale}")
