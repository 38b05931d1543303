"""icreward: image-to-video consistency rewards and reward-guided fine-tuning of video diffusion models.

Public names are imported lazily (like transformers), so ``import icreward`` stays fast and optional parts
only load what they need. ``import icreward`` also registers the reward models with transformers' ``AutoConfig`` /
``AutoModel`` (deferred until transformers' auto modules are imported; see ``icreward._lazy``), so
``AutoModel.from_pretrained(saved_reward_model_dir)`` works after a plain ``import icreward``.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import install_auto_registration_hook, lazy_package

__version__ = "0.1.0.dev0"

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

__getattr__, __dir__, __all__ = lazy_package(__name__, extra=["__version__"])
