"""A zero-shot baseline: cosine similarity between pooled backbone features of the reference and the frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone, load_pretrained_backbone, resolve_backbone
from .processing import ICRewardProcessor

__all__ = ["FeatureCosineReward"]


class FeatureCosineReward(nn.Module):
    """Score = mean over frames of ``max(0, cos(f(reference), f(frame)))`` with a pretrained backbone; no training.

    This is the "feature distance" a learned reward must beat: it cannot tell camera motion from drift.
    """

    def __init__(self, backbone: str = "efficientnet-lite0", image_size: int = 224, num_frames: int = 8):
        super().__init__()
        backbone_type, backbone_config = resolve_backbone(backbone)
        self.backbone = build_backbone(backbone_type, backbone_config)
        load_pretrained_backbone(self.backbone, backbone_type, backbone)
        self.backbone.eval().requires_grad_(False)
        self.processor = ICRewardProcessor.from_model_config(
            _Cfg(backbone_type, backbone_config, image_size, num_frames)
        )

    @torch.no_grad()
    def forward(
        self, pixel_values: torch.Tensor, reference_pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, frames = pixel_values.shape[:2]
        mask = torch.ones(batch, frames, dtype=torch.bool) if frame_mask is None else frame_mask.bool()
        ref = self.backbone(reference_pixel_values).pooled
        frm = self.backbone(pixel_values.flatten(0, 1)).pooled.view(batch, frames, -1)
        return self.score_features(ref, frm, mask)

    @staticmethod
    def score_features(
        reference_features: torch.Tensor, frame_features: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        """``(B, D)`` and ``(B, F, D)`` pooled features -> ``(B,)`` scores in [0, 1]."""
        cos = F.cosine_similarity(frame_features, reference_features[:, None], dim=-1).clamp(min=0)
        mask = frame_mask.to(cos.dtype)
        return (cos * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    @torch.no_grad()
    def score(self, references, videos) -> torch.Tensor:
        inputs = self.processor(videos=videos, reference_images=references)
        return self(**inputs)


class _Cfg:
    def __init__(self, backbone_type, backbone_config, image_size, num_frames):
        self.backbone_type, self.backbone_config = backbone_type, backbone_config
        self.image_size, self.num_frames = image_size, num_frames
