"""Reward models (ICReward and the MLP baseline), their configs, processor, backbones and model cards.

Names load on first access. The Auto-class registration (``AutoModel.from_pretrained`` on a saved reward model) is
done by ``import icreward`` (see ``icreward._lazy``), which always runs before this package is imported.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .backbones import BackboneFeatures, VisionBackbone, backbone_normalization, build_backbone, resolve_backbone
    from .configuration import ICRewardConfig, MLPRewardConfig
    from .efficientnet_lite import EfficientNetLite, load_efficientnet_lite
    from .feature_cache import FeatureCache
    from .feature_cosine import FeatureCosineReward
    from .model_card import create_reward_model_card
    from .modeling import ICRewardModel, ImageConsistencyHead, MLPRewardModel, RewardModelOutput
    from .processing import ICRewardProcessor

__getattr__, __dir__, __all__ = lazy_package(__name__)
