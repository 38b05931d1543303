"""icreward: image-to-video consistency rewards and reward-guided fine-tuning of video diffusion models.

Public names are imported lazily (like transformers), so ``import icreward`` stays fast and optional parts
only load what they need. ``import icreward`` also registers the reward models with transformers' ``AutoConfig`` /
``AutoModel`` (deferred until transformers' auto modules are imported; see ``icreward._lazy``), so
``AutoModel.from_pretrained(saved_reward_model_dir)`` works after a plain ``import icreward``.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports below exist for type checkers; __all__ is built from _LAZY)
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._lazy import install_auto_registration_hook

__version__ = "0.1.0.dev0"

_LAZY = {
    # reward models
    "ICRewardConfig": "icreward.models",
    "ICRewardModel": "icreward.models",
    "MLPRewardConfig": "icreward.models",
    "MLPRewardModel": "icreward.models",
    "ICRewardProcessor": "icreward.models",
    "FeatureCosineReward": "icreward.models",
    "RewardModelOutput": "icreward.models",
    # trainers
    "RewardModelTrainer": "icreward.trainers.reward_model_trainer",
    "RewardModelConfig": "icreward.trainers.reward_model_config",
    "VideoDPOTrainer": "icreward.trainers.video_dpo_trainer",
    "VideoDPOConfig": "icreward.trainers.video_dpo_config",
    "RewardFeedbackTrainer": "icreward.trainers.reward_feedback_trainer",
    "RewardFeedbackConfig": "icreward.trainers.reward_feedback_config",
    "VideoGRPOTrainer": "icreward.trainers.video_grpo_trainer",
    "VideoGRPOConfig": "icreward.trainers.video_grpo_config",
    "VideoDPODataCollator": "icreward.trainers.video_dpo_trainer",
    "PreferenceCurveCallback": "icreward.trainers.video_dpo_trainer",
    # model-family adapters
    "VideoModelAdapter": "icreward.adapters",
    "get_adapter": "icreward.adapters",
    # rewards
    "FaceIdentityReward": "icreward.rewards.face",
    # video IO
    "read_video": "icreward.video",
    "write_video": "icreward.video",
    "load_image": "icreward.video",
    "VideoReadError": "icreward.video",
}

_SUBMODULES = {
    "losses",
    "metrics",
    "rewards",
    "models",
    "data",
    "trainers",
    "adapters",
    "evaluation",
    "testing",
    "video",
}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])

install_auto_registration_hook()

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first access
    from . import adapters, data, evaluation, losses, metrics, models, rewards, testing, trainers, video
    from .adapters import VideoModelAdapter, get_adapter
    from .models import (
        FeatureCosineReward,
        ICRewardConfig,
        ICRewardModel,
        ICRewardProcessor,
        MLPRewardConfig,
        MLPRewardModel,
        RewardModelOutput,
    )
    from .rewards.face import FaceIdentityReward
    from .trainers.reward_feedback_config import RewardFeedbackConfig
    from .trainers.reward_feedback_trainer import RewardFeedbackTrainer
    from .trainers.reward_model_config import RewardModelConfig
    from .trainers.reward_model_trainer import RewardModelTrainer
    from .trainers.video_dpo_config import VideoDPOConfig
    from .trainers.video_dpo_trainer import PreferenceCurveCallback, VideoDPODataCollator, VideoDPOTrainer
    from .trainers.video_grpo_config import VideoGRPOConfig
    from .trainers.video_grpo_trainer import VideoGRPOTrainer
    from .video import VideoReadError, load_image, read_video, write_video


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"icreward.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'icreward' has no attribute {name!r}")


def __dir__():
    return __all__
