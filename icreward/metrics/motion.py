"""Motion metrics: VBench's *dynamic degree* on dense optical flow.

VBench (``vbench/dynamic_degree.py``) decides whether a video moves as follows:

1. sample the video at about 8 fps (every ``round(fps / 8)``-th frame);
2. estimate optical flow between consecutive sampled frames with RAFT (``raft-things.pth``, 20 refinement
   iterations, frames padded to a multiple of 8) at the video's own resolution;
3. score every frame pair by the **mean of its top 5 % flow magnitudes** (in pixels);
4. a pair is "moving" if its score exceeds ``thres = 6.0 * min(H, W) / 256``;
5. the video is dynamic if at least ``count_num = round(4 * num_sampled_frames / 16)`` pairs are moving.

VBench reports the fraction of dynamic videos; per video it is a boolean. :func:`dynamic_degree` applies exactly
these rules and also returns the continuous motion magnitude (mean pair score) and every pair's score, which are
more useful as a reward or for ranking. One deviation: VBench's ``count_num`` is 0 for clips of at most two sampled
frames (every such clip would be "dynamic"); here at least one moving pair is required.

**Flow estimator.** RAFT weights cannot be bundled, so the default estimator is :class:`LucasKanadeFlow`, a dense,
coarse-to-fine (pyramidal) Lucas-Kanade estimator with iterative warping written in torch. It is *not* RAFT: it
recovers smooth, textured motion to a fraction of a pixel but is less accurate at motion boundaries, in textureless
regions (where it returns ~0) and under large non-translational motion, so its magnitudes and dynamic decisions
approximate VBench's rather than reproduce them. For VBench-faithful numbers, pass ``flow_estimator=RAFTFlow...``
built from torchvision's RAFT with your own weights (:meth:`RAFTFlow.from_checkpoint`); note that torchvision's
RAFT checkpoints are trained differently from the ``raft-things.pth`` that VBench uses, and the original
``princeton-vl/RAFT`` state dict does not load into torchvision's module (different parameter names).

A flow estimator is any callable ``(image1, image2) -> flow`` with images ``(N, 3, H, W)`` float in ``[0, 1]`` and
flow ``(N, 2, H, W)`` in pixels, channel 0 horizontal and channel 1 vertical, such that ``image1[y, x]`` moves to
``image2[y + flow_y, x + flow_x]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from icreward.video import to_unit_float

__all__ = [
    "DynamicDegreeResult",
    "LucasKanadeFlow",
    "RAFTFlow",
    "dynamic_degree",
    "flow_motion_score",
]

FlowEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# VBench's constants (vbench/dynamic_degree.py).
VBENCH_THRESHOLD_AT_256 = 6.0
VBENCH_TOP_FRACTION = 0.05
VBENCH_TARGET_FPS = 8.0


# ---------------------------------------------------------------------------------------------------------------------
# Flow estimators
# ---------------------------------------------------------------------------------------------------------------------


def _gaussian_kernel1d(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _separable_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(N, C, H, W)`` with replicate borders (channels blurred independently)."""
    kernel = _gaussian_kernel1d(sigma, x.device, x.dtype)
    radius = kernel.numel() // 2
    channels = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    ky = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kx, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), ky, groups=channels)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives (per pixel, i.e. divided by 8) of ``(N, 1, H, W)``."""
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1) / 8.0
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads[:, :1], grads[:, 1:]


def _warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` at ``p + flow(p)`` (bilinear, border clamping); also return where ``p + flow(p)`` is inside."""
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=image.device, dtype=image.dtype),
        torch.arange(width, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    inside = ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).unsqueeze(1)
    # align_corners=True maps -1/1 to the centres of the first/last pixels.
    grid = torch.stack([2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0], dim=-1)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped, inside


def _median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-channel ``size x size`` median of ``(N, C, H, W)`` with replicate borders."""
    radius = size // 2
    batch, channels, height, width = x.shape
    patches = F.unfold(F.pad(x, (radius,) * 4, mode="replicate"), kernel_size=size)
    return patches.view(batch, channels, size * size, height * width).median(dim=2).values.view_as(x)


def _luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class LucasKanadeFlow(nn.Module):
    """Dense pyramidal Lucas-Kanade optical flow with iterative warping (no learned weights).

    At every pyramid level, coarse to fine, the current flow is upsampled, the second image is warped towards the
    first, and a flow increment is solved per pixel from the Gaussian-weighted 2x2 structure tensor
    ``sum w [Ix^2, IxIy; IxIy, Iy^2] d = -sum w [IxIt; IyIt]`` (Tikhonov-regularised so that textureless pixels
    get ~0 increments instead of noise). Gradients are Sobel derivatives of the average of both images; pixels
    whose current match lies outside the second image are left out of the sums.

    Args:
        num_levels: maximum pyramid levels; fewer are used when the coarsest level would be smaller than
            ``min_size`` pixels. Each level doubles the largest recoverable displacement.
        min_size: smallest side of the coarsest level.
        num_iterations: warping iterations per level.
        window_sigma: standard deviation (pixels) of the Gaussian integration window.
        regularization: added to the structure tensor's diagonal, in units of squared intensity gradient
            (intensities in ``[0, 1]``).
        presmooth_sigma: Gaussian blur applied to both images before anything else, against noise and aliasing.
        median_size: side of the median filter applied to the flow at the end of every level (1 disables it).
    """

    def __init__(
        self,
        num_levels: int = 5,
        min_size: int = 16,
        num_iterations: int = 4,
        window_sigma: float = 2.0,
        regularization: float = 1e-4,
        presmooth_sigma: float = 1.0,
        median_size: int = 5,
    ):
        super().__init__()
        if num_levels < 1 or num_iterations < 1 or window_sigma <= 0 or regularization <= 0:
            # regularization > 0 keeps the 2x2 systems invertible in textureless regions.
            raise ValueError("num_levels, num_iterations, window_sigma and regularization must be positive")
        if median_size < 1 or median_size % 2 == 0:
            raise ValueError(f"median_size must be a positive odd number, got {median_size}")
        self.num_levels = num_levels
        self.min_size = min_size
        self.num_iterations = num_iterations
        self.window_sigma = window_sigma
        self.regularization = regularization
        self.presmooth_sigma = presmooth_sigma
        self.median_size = median_size

    def _pyramid(self, image: torch.Tensor) -> list[torch.Tensor]:
        levels = [image]
        while len(levels) < self.num_levels and min(levels[-1].shape[-2:]) // 2 >= self.min_size:
            # Blur before decimating so the coarse levels are not aliased.
            levels.append(F.avg_pool2d(_separable_blur(levels[-1], 1.0), kernel_size=2, ceil_mode=True))
        return levels

    def _refine(self, first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_iterations):
            warped, inside = _warp(second, flow)
            grad_x, grad_y = _gradients((first + warped) / 2.0)
            # Pixels whose match left the frame carry no information about their motion (their warped value is a
            # clamped border pixel); dropping them from the data term lets their neighbours decide their flow
            # instead of pulling it towards arbitrary values.
            weight = inside.to(first.dtype)
            grad_x, grad_y = grad_x * weight, grad_y * weight
            diff_t = (warped - first) * weight
            moments = _separable_blur(
                torch.cat([grad_x * grad_x, grad_x * grad_y, grad_y * grad_y, grad_x * diff_t, grad_y * diff_t], 1),
                self.window_sigma,
            )
            sxx, sxy, syy, sxt, syt = moments.unbind(dim=1)
            sxx = sxx + self.regularization
            syy = syy + self.regularization
            det = sxx * syy - sxy * sxy
            # Closed-form inverse of the 2x2 system; det > 0 thanks to the regularisation.
            du = -(syy * sxt - sxy * syt) / det
            dv = -(sxx * syt - sxy * sxt) / det
            flow = flow + torch.stack([du, dv], dim=1)
        # Pixels that move out of the frame have no data term at all; without this their flow keeps whatever the
        # coarser levels extrapolated (it overshoots near the borders, which is exactly where the top-5 % score
        # looks). Fill them by normalised convolution of the flow of the pixels that stay inside.
        _, inside = _warp(second, flow)
        weight = inside.to(flow.dtype)
        support = _separable_blur(weight, 2.0 * self.window_sigma)
        filled = _separable_blur(flow * weight, 2.0 * self.window_sigma) / support.clamp_min(1e-6)
        flow = torch.where(inside | (support < 1e-3), flow, filled)
        if self.median_size > 1:
            # Median filtering removes isolated outliers before they are propagated to the finer levels
            # (Sun, Roth & Black, "Secrets of Optical Flow Estimation and Their Principles", CVPR 2010).
            flow = _median_filter(flow, self.median_size)
        return flow

    @torch.no_grad()
    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Flow ``(N, 2, H, W)`` in pixels from ``image1`` to ``image2`` (both ``(N, 3, H, W)`` in ``[0, 1]``)."""
        if image1.shape != image2.shape or image1.ndim != 4 or image1.shape[1] != 3:
            raise ValueError(f"expected two (N, 3, H, W) images of equal shape, got {image1.shape} and {image2.shape}")
        first, second = _luma(image1.float()), _luma(image2.float())
        if self.presmooth_sigma > 0:
            first, second = _separable_blur(first, self.presmooth_sigma), _separable_blur(second, self.presmooth_sigma)
        pyramid1, pyramid2 = self._pyramid(first), self._pyramid(second)

        flow = torch.zeros(first.shape[0], 2, *pyramid1[-1].shape[-2:], device=first.device, dtype=first.dtype)
        for level in reversed(range(len(pyramid1))):
            size = pyramid1[level].shape[-2:]
            if flow.shape[-2:] != size:
                # Displacements scale with the resolution when moving to the finer level.
                scale = torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]], device=flow.device)
                flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * scale.view(1, 2, 1, 1)
            flow = self._refine(pyramid1[level], pyramid2[level], flow)
        return flow


class RAFTFlow(nn.Module):
    """torchvision's RAFT behind the flow-estimator interface, with VBench's inference settings.

    Images are padded to a multiple of 8 with replicated borders (as RAFT's ``InputPadder``), mapped to
    ``[-1, 1]``, run with ``num_flow_updates`` refinement iterations (VBench: 20), and the final flow is cropped back.

    Args:
        model: a ``torchvision.models.optical_flow.RAFT`` (``raft_large`` / ``raft_small``).
        num_flow_updates: refinement iterations.
    """

    def __init__(self, model: nn.Module, num_flow_updates: int = 20):
        super().__init__()
        self.model = model.eval()
        self.num_flow_updates = num_flow_updates

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, variant: str = "large", num_flow_updates: int = 20
    ) -> RAFTFlow:
        """Build torchvision's ``raft_large`` / ``raft_small`` and load a state dict in torchvision's layout.

        ``path`` is a ``.safetensors`` file or a ``torch.save``-d state dict (read with ``weights_only=True``), e.g.
        the files behind ``torchvision.models.optical_flow.Raft_Large_Weights``. Raises ``ValueError`` when the
        file cannot be read or its keys/shapes do not match the architecture.
        """
        from torchvision.models.optical_flow import raft_large, raft_small

        from icreward.metrics.fvd import load_weights_only_state_dict

        if variant not in ("large", "small"):
            raise ValueError(f"variant must be 'large' or 'small', got {variant!r}")
        model = (raft_large if variant == "large" else raft_small)(weights=None)
        state_dict = load_weights_only_state_dict(path, what="RAFT checkpoint")
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{os.fspath(path)!r} is not a torchvision raft_{variant} state dict: {len(missing)} missing keys "
                f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]} (the original princeton-vl RAFT "
                "checkpoints use different names and do not load into torchvision's RAFT)"
            )
        wrong = [k for k, v in state_dict.items() if v.shape != expected[k].shape]
        if wrong:
            raise ValueError(f"{os.fspath(path)!r} has tensors of the wrong shape for raft_{variant}: {wrong[:5]}")
        model.load_state_dict(state_dict)
        return cls(model, num_flow_updates=num_flow_updates)

    @torch.no_grad()
    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Flow ``(N, 2, H, W)`` in pixels from ``image1`` to ``image2`` (both ``(N, 3, H, W)`` in ``[0, 1]``)."""
        height, width = image1.shape[-2:]
        pad_h, pad_w = (-height) % 8, (-width) % 8
        if height + pad_h < 128 or width + pad_w < 128:
            # RAFT's 4-level correlation pyramid runs at 1/8 resolution and needs 16 cells per side.
            raise ValueError(f"RAFT needs frames of at least 128 x 128 pixels, got {height} x {width}")
        # Centred padding, as RAFT's InputPadder in its default ("sintel") mode.
        pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        dtype = next(self.model.parameters()).dtype
        image1, image2 = (F.pad(im.to(dtype) * 2.0 - 1.0, pad, mode="replicate") for im in (image1, image2))
        flow = self.model(image1, image2, num_flow_updates=self.num_flow_updates)[-1]
        return flow[..., pad[2] : pad[2] + height, pad[0] : pad[0] + width].float()


# ---------------------------------------------------------------------------------------------------------------------
# Dynamic degree
# ---------------------------------------------------------------------------------------------------------------------


def flow_motion_score(flow: torch.Tensor, top_fraction: float = VBENCH_TOP_FRACTION) -> torch.Tensor:
    """VBench's per-pair motion score: mean of the largest ``top_fraction`` of flow magnitudes.

    Args:
        flow: ``(N, 2, H, W)`` flows in pixels.
        top_fraction: fraction of pixels averaged (VBench: 5 %, i.e. ``int(H * W * 0.05)`` pixels; at least one).

    Returns:
        ``(N,)`` scores in pixels.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (N, 2, H, W), got {tuple(flow.shape)}")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    magnitude = flow.float().norm(dim=1).flatten(1)
    k = max(1, int(magnitude.shape[1] * top_fraction))
    return magnitude.topk(k, dim=1).values.mean(dim=1)


@dataclass
class DynamicDegreeResult:
    """Outcome of :func:`dynamic_degree` for one video.

    Attributes:
        magnitude: mean of the pair scores, in pixels at the video's resolution (0.0 with fewer than two frames).
        pair_scores: ``(P,)`` VBench score (top-5 % mean flow magnitude) of each consecutive sampled pair.
        is_dynamic: VBench's decision: at least ``count_required`` pairs score above ``threshold``.
        threshold: ``6.0 * min(H, W) / 256`` pixels.
        count_required: ``max(1, round(4 * num_sampled_frames / 16))``.
        num_moving: number of pairs above the threshold.
        frame_indices: indices (in the input video) of the sampled frames.
    """

    magnitude: float
    pair_scores: torch.Tensor
    is_dynamic: bool
    threshold: float
    count_required: int
    num_moving: int
    frame_indices: list[int] = field(default_factory=list)


def dynamic_degree(
    video: torch.Tensor,
    *,
    flow_estimator: FlowEstimator | None = None,
    fps: float | None = None,
    target_fps: float = VBENCH_TARGET_FPS,
    batch_size: int = 8,
) -> DynamicDegreeResult | list[DynamicDegreeResult]:
    """VBench's dynamic degree of a video, with the continuous motion magnitude.

    Args:
        video: ``(F, 3, H, W)`` or a batch ``(B, F, 3, H, W)``, uint8 or float in ``[0, 1]``.
        flow_estimator: see the module docstring; defaults to :class:`LucasKanadeFlow` (an approximation of
            VBench's RAFT; say so when reporting numbers).
        fps: frame rate of ``video``. Frames are subsampled every ``max(1, round(fps / target_fps))`` as VBench
            does; ``None`` uses every frame (the video is taken to be at about ``target_fps`` already).
        target_fps: VBench samples at 8 fps.
        batch_size: frame pairs per flow-estimator call.

    Returns:
        A :class:`DynamicDegreeResult`, or a list of them for a batch.
    """
    if video.ndim == 5:
        return [
            dynamic_degree(v, flow_estimator=flow_estimator, fps=fps, target_fps=target_fps, batch_size=batch_size)
            for v in video
        ]
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (F, 3, H, W) or (B, F, 3, H, W), got {tuple(video.shape)}")
    if fps is not None and (fps <= 0 or target_fps <= 0):
        raise ValueError(f"fps and target_fps must be positive, got {fps} and {target_fps}")
    estimator = flow_estimator if flow_estimator is not None else LucasKanadeFlow()

    interval = 1 if fps is None else max(1, round(fps / target_fps))
    frame_indices = list(range(0, video.shape[0], interval))
    frames = to_unit_float(video[frame_indices], "videos")
    height, width = frames.shape[-2:]
    threshold = VBENCH_THRESHOLD_AT_256 * min(height, width) / 256.0
    count_required = max(1, round(4 * len(frame_indices) / 16))

    scores = []
    for start in range(0, len(frame_indices) - 1, batch_size):
        stop = min(start + batch_size, len(frame_indices) - 1)
        flow = estimator(frames[start:stop], frames[start + 1 : stop + 1])
        if flow.shape != (stop - start, 2, height, width):
            raise ValueError(
                f"flow estimator returned {tuple(flow.shape)}, expected {(stop - start, 2, height, width)}"
            )
        scores.append(flow_motion_score(flow))
    pair_scores = torch.cat(scores).cpu() if scores else torch.zeros(0)
    num_moving = int((pair_scores > threshold).sum())
    return DynamicDegreeResult(
        magnitude=float(pair_scores.mean()) if pair_scores.numel() else 0.0,
        pair_scores=pair_scores,
        is_dynamic=num_moving >= count_required,
        threshold=threshold,
        count_required=count_required,
        num_moving=num_moving,
        frame_indices=frame_indices,
    )
