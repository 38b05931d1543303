"""Reward models (ICReward and the MLP baseline), their configs, processor, backbones and model cards."""

from transformers import AutoConfig, AutoModel

from .backbones import BackboneFeatures, VisionBackbone, backbone_normalization, build_backbone, resolve_backbone
from .configuration import ICRewardConfig, MLPRewardConfig
from .efficientnet_lite import EfficientNetLite, load_efficientnet_lite
from .feature_cosine import FeatureCosineReward
from .model_card import create_reward_model_card
from .modeling import ICRewardModel, ImageConsistencyHead, MLPRewardModel, RewardModelOutput
from .processing import ICRewardProcessor

AutoConfig.register(ICRewardConfig.model_type, ICRewardConfig, exist_ok=True)
AutoConfig.register(MLPRewardConfig.model_type, MLPRewardConfig, exist_ok=True)
AutoModel.register(ICRewardConfig, ICRewardModel, exist_ok=True)
AutoModel.register(MLPRewardConfig, MLPRewardModel, exist_ok=True)

__all__ = [
    "BackboneFeatures",
    "EfficientNetLite",
    "FeatureCosineReward",
    "ICRewardConfig",
    "ICRewardModel",
    "ICRewardProcessor",
    "ImageConsistencyHead",
    "MLPRewardConfig",
    "MLPRewardModel",
    "RewardModelOutput",
    "VisionBackbone",
    "backbone_normalization",
    "build_backbone",
    "create_reward_model_card",
    "load_efficientnet_lite",
    "resolve_backbone",
]
