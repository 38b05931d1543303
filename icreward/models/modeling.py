"""The two reward models: :class:`ICRewardModel` (attention Image Consistency head) and :class:`MLPRewardModel`.

Both take a reference image and a video and return :class:`RewardModelOutput` with ``scores`` of shape
``(batch,)`` in ``[0, 1]`` (and ``loss``, the MSE to ``labels``, when labels are given). Both can run from pixels
or from precomputed backbone features (``reference_features`` / ``frame_features``, see ``extract_features``),
which is what makes frozen-backbone training cheap.
"""

from __future__ import annotations

import torch

from .checkpoint_checks import (  # noqa: F401  (re-exported: the old import paths keep working)
    STRICT_KEYS,
    check_loaded_weights,
    check_model_type,
    check_safetensors_files,
    check_shard_index,
)
from .configuration import ICRewardConfig
from .consistency_head import CrossAttentionBlock, ImageConsistencyHead, matching_stats  # noqa: F401
from .modeling_base import (  # noqa: F401
    EPS,
    RewardModelOutput,
    RewardPreTrainedModel,
    check_finite_input,
    reward_mse_loss,
    validate_features,
    validate_inputs,
    validate_mask,
)
from .modeling_mlp import MLPRewardModel  # noqa: F401

__all__ = ["ICRewardModel", "ImageConsistencyHead", "MLPRewardModel", "RewardModelOutput"]


class ICRewardModel(RewardPreTrainedModel):
    """ICReward: reference image + video -> image-consistency score in ``[0, 1]``.

    A vision backbone encodes the reference image once and all valid frames in one batch; the
    :class:`ImageConsistencyHead` lets frame tokens attend to the reference tokens and pools over space and
    time. With several ``config.heads`` (e.g. subject / background / motion), ``scores`` is their weighted mean
    (``config.head_weights``).

    Example:
    ```python
    >>> from icreward import ICRewardModel
    >>> model = ICRewardModel.from_pretrained_backbone("efficientnet-lite0")  # or "facebook/dinov2-small"
    >>> model.score("reference.png", "video.mp4")
    ```
    """

    config_class = ICRewardConfig
    base_model_prefix = "icreward"
    feature_kind = "tokens"  # the attention head works on spatial tokens

    def __init__(self, config: ICRewardConfig):
        super().__init__(config)
        self.backbone = self._build_backbone(config)
        self.head = ImageConsistencyHead(
            in_dim=self.backbone.hidden_size,
            hidden=config.head_hidden_size,
            num_heads=config.head_num_heads,
            num_layers=config.head_num_layers,
            dropout=config.head_dropout,
            max_frames=config.max_frames,
            num_outputs=len(config.heads),
        )
        self._mark_head(self.head)
        self.post_init()
        self.head.init_as_feature_cosine()
        self._apply_backbone_freezing()

    @property
    def head_gradient_checkpointing(self) -> bool:
        return self.head.gradient_checkpointing

    @head_gradient_checkpointing.setter
    def head_gradient_checkpointing(self, value: bool) -> None:
        self.head.gradient_checkpointing = value

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        reference_pixel_values: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        head_labels: torch.Tensor | None = None,
        reference_features: torch.Tensor | None = None,
        frame_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RewardModelOutput | tuple:
        r"""
        Args:
            pixel_values: ``(B, F, 3, H, W)`` frames, normalised by :class:`ICRewardProcessor`.
            reference_pixel_values: ``(B, 3, H, W)`` reference images.
            frame_mask: ``(B, F)`` True at real (non-padded) frames.
            labels: ``(B,)`` target overall scores in ``[0, 1]`` (NaN = missing); gives ``loss`` (MSE).
            head_labels: ``(B, num_heads)`` per-head targets (NaN = missing), added to the loss.
            reference_features / frame_features: precomputed backbone tokens from :meth:`extract_features`,
                used instead of pixels.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ref_tokens, frame_tokens, frame_mask = self._forward_features(
            pixel_values, reference_pixel_values, frame_mask, reference_features, frame_features
        )

        head_logits = self.head(ref_tokens, frame_tokens, frame_mask)  # (B, num_heads)
        head_scores = torch.sigmoid(head_logits.float())
        weights = torch.tensor([self.config.head_weights[h] for h in self.config.heads], device=head_scores.device)
        if head_scores.shape[1] == 1:
            scores, logits = head_scores[:, 0], head_logits[:, 0].float()
        else:
            scores = (head_scores * weights).sum(dim=1) / weights.sum()
            logits = torch.logit(scores.clamp(EPS, 1 - EPS))

        loss = None
        if labels is not None:
            loss = reward_mse_loss(scores, labels)
        if head_labels is not None:
            head_loss = reward_mse_loss(head_scores, head_labels)
            loss = head_loss if loss is None else loss + head_loss
        output = RewardModelOutput(loss=loss, scores=scores, logits=logits, head_scores=head_scores)
        return output if return_dict else output.to_tuple()
