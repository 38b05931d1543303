"""The ICReward paper's baseline reward model, :class:`MLPRewardModel` (an MLP over reference and frame features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import MLPRewardConfig
from .modeling_base import EPS, RewardModelOutput, RewardPreTrainedModel, reward_mse_loss

__all__ = ["MLPRewardModel"]


class MLPRewardModel(RewardPreTrainedModel):
    """The ICReward paper's baseline: an MLP over concatenated (CLIP) features of the reference and each frame.

    Each frame gets a reward ``sigmoid(MLP([f(ref), f(frame)]))``; the video's score is the average frame reward
    over valid frames, as the paper ranks videos.
    """

    config_class = MLPRewardConfig
    base_model_prefix = "icreward_mlp"
    feature_kind = "pooled"

    def __init__(self, config: MLPRewardConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        dims: Sequence[int] = [2 * self.backbone.hidden_size, *config.hidden_sizes]
        layers: list[nn.Module] = [nn.LayerNorm(dims[0])]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.GELU(), nn.Dropout(config.dropout)]
        layers.append(nn.Linear(dims[-1], 1))
        self.mlp = nn.Sequential(*layers)
        self.head_gradient_checkpointing = False
        self._mark_head(self.mlp)
        self.post_init()
        self._apply_backbone_freezing()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        reference_pixel_values: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reference_features: torch.Tensor | None = None,
        frame_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RewardModelOutput | tuple:
        r"""Same inputs as :meth:`ICRewardModel.forward`; features are pooled: ``(B, D)`` and ``(B, F, D)``."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ref_feat, frame_feat, frame_mask = self._forward_features(
            pixel_values, reference_pixel_values, frame_mask, reference_features, frame_features
        )

        # Normalised in float32, then in the head's dtype (fp16/bf16 inference).
        head_dtype = self.mlp[0].weight.dtype
        ref_feat = F.normalize(ref_feat.float(), dim=-1).to(head_dtype)
        frame_feat = F.normalize(frame_feat.float(), dim=-1).to(head_dtype)
        pairs = torch.cat([ref_feat[:, None].expand_as(frame_feat), frame_feat], dim=-1)
        frame_scores = torch.sigmoid(self.mlp(pairs).squeeze(-1).float()) * frame_mask  # scores in float32
        scores = frame_scores.sum(dim=1) / frame_mask.sum(dim=1)
        logits = torch.logit(scores.clamp(EPS, 1 - EPS))
        loss = reward_mse_loss(scores, labels) if labels is not None else None
        output = RewardModelOutput(loss=loss, scores=scores, logits=logits, frame_scores=frame_scores)
        return output if return_dict else output.to_tuple()
