"""Rewards usable by the trainers: the differentiable face-identity reward (IPRO's facial scoring mechanism on
dlib's face ResNet, ported to PyTorch) and wrappers that turn reward models and callables into video rewards.
Names load on first access."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .combined import (
        BaseVideoReward,
        CallableReward,
        CombinedReward,
        CombinedRewardOutput,
        FaceReward,
        RewardModelReward,
        VideoReward,
        as_video_reward,
    )
    from .dlib_resnet import DlibFaceResNet, DlibFormatError, load_dlib_face_resnet, read_dlib_face_resnet
    from .face import FaceIdentityReward, FaceNotFoundError, FacialScore, build_face_embedder, facial_scoring
    from .face_alignment import FaceCropper, build_face_detector

__getattr__, __dir__, __all__ = lazy_package(__name__)
