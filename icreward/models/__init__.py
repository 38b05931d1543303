"""Reward models (ICReward and the MLP baseline), their configs, processor, backbones and model cards.

Names load on first access. The Auto-class registration (``AutoModel.from_pretrained`` on a saved reward model) is
done by ``import icreward`` (see ``icreward._lazy``), which always runs before this package is imported.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports exist for type checkers; __all__ is built from _LAZY)
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_LAZY = {
    "BackboneFeatures": "backbones",
    "VisionBackbone": "backbones",
    "backbone_normalization": "backbones",
    "build_backbone": "backbones",
    "resolve_backbone": "backbones",
    "ICRewardConfig": "configuration",
    "MLPRewardConfig": "configuration",
    "EfficientNetLite": "efficientnet_lite",
    "load_efficientnet_lite": "efficientnet_lite",
    "FeatureCache": "feature_cache",
    "FeatureCosineReward": "feature_cosine",
    "create_reward_model_card": "model_card",
    "ICRewardModel": "modeling",
    "ImageConsistencyHead": "modeling",
    "MLPRewardModel": "modeling",
    "RewardModelOutput": "modeling",
    "ICRewardProcessor": "processing",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:
    from .backbones import BackboneFeatures, VisionBackbone, backbone_normalization, build_backbone, resolve_backbone
    from .configuration import ICRewardConfig, MLPRewardConfig
    from .efficientnet_lite import EfficientNetLite, load_efficientnet_lite
    from .feature_cache import FeatureCache
    from .feature_cosine import FeatureCosineReward
    from .model_card import create_reward_model_card
    from .modeling import ICRewardModel, ImageConsistencyHead, MLPRewardModel, RewardModelOutput
    from .processing import ICRewardProcessor
