"""Trainers (``transformers.Trainer`` subclasses) and their configs: one ``xxx_config.py`` + ``xxx_trainer.py`` pair
per method, on shared bases (``base_config.py``: :class:`BaseConfig`; ``diffusion_config.py``; ``base_trainer.py``:
:class:`BaseVideoLoRATrainer`, the video LoRA trainers' base). Imported lazily so that using one trainer does not
import the others' dependencies (e.g. diffusers)."""

from .._lazy import lazy_exports

_LAZY = {
    "BaseConfig": "base_config",
    "BaseVideoLoRATrainer": "base_trainer",
    "RewardModelConfig": "reward_model_config",
    "RewardModelTrainer": "reward_model_trainer",
    "RewardDataCollator": "reward_data",
    "encode_dataset_features": "reward_data",
    "DiffusionTrainingConfig": "diffusion_config",
    "VideoDPOConfig": "video_dpo_config",
    "VideoDPOTrainer": "video_dpo_trainer",
    "VideoDPODataCollator": "video_dpo_trainer",
    "PreferenceCurveCallback": "preference_curves",
    "LatentCache": "latent_cache",
    "RewardFeedbackConfig": "reward_feedback_config",
    "RewardFeedbackTrainer": "reward_feedback_trainer",
    "VideoGRPOConfig": "video_grpo_config",
    "VideoGRPOTrainer": "video_grpo_trainer",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
