"""Trainers (``transformers.Trainer`` subclasses) and their configs, one ``xxx_config.py`` + ``xxx_trainer.py`` pair per method."""

from .reward_model_config import RewardModelConfig
from .reward_model_trainer import RewardModelTrainer

__all__ = ["RewardModelConfig", "RewardModelTrainer"]
