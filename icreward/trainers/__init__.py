"""Trainers (``transformers.Trainer`` subclasses) and their configs: one ``xxx_config.py`` + ``xxx_trainer.py`` pair
per method, on shared bases (``base_config.py``: :class:`BaseConfig`; ``diffusion_config.py``; ``base_trainer.py``:
:class:`BaseVideoLoRATrainer`, the video LoRA trainers' base). Imported lazily so that using one trainer does not
import the others' dependencies (e.g. diffusers)."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .base_config import BaseConfig
    from .base_trainer import BaseVideoLoRATrainer
    from .diffusion_config import DiffusionTrainingConfig
    from .latent_cache import LatentCache
    from .preference_curves import PreferenceCurveCallback
    from .reward_data import RewardDataCollator, encode_dataset_features
    from .reward_feedback_config import RewardFeedbackConfig
    from .reward_feedback_trainer import RewardFeedbackTrainer
    from .reward_model_config import RewardModelConfig
    from .reward_model_trainer import RewardModelTrainer
    from .video_dpo_config import VideoDPOConfig
    from .video_dpo_trainer import VideoDPODataCollator, VideoDPOTrainer
    from .video_grpo_config import VideoGRPOConfig
    from .video_grpo_trainer import VideoGRPOTrainer

__getattr__, __dir__, __all__ = lazy_package(__name__)
