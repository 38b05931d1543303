"""Rewards usable by the trainers: the differentiable face-identity reward (IPRO's facial scoring mechanism on
dlib's face ResNet, ported to PyTorch) and wrappers that turn reward models and callables into video rewards."""

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
from .face import (
    FaceIdentityReward,
    FaceNotFoundError,
    FacialScore,
    build_face_embedder,
    facial_scoring,
)
from .face_alignment import FaceCropper, build_face_detector

__all__ = [
    "BaseVideoReward",
    "CallableReward",
    "CombinedReward",
    "CombinedRewardOutput",
    "FaceReward",
    "RewardModelReward",
    "VideoReward",
    "as_video_reward",
    "DlibFaceResNet",
    "DlibFormatError",
    "FaceCropper",
    "FaceIdentityReward",
    "FaceNotFoundError",
    "FacialScore",
    "build_face_detector",
    "build_face_embedder",
    "facial_scoring",
    "load_dlib_face_resnet",
    "read_dlib_face_resnet",
]
