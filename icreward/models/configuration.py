"""Configurations of the two reward models (``PretrainedConfig`` subclasses, registered with ``AutoConfig``)."""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

__all__ = ["ICRewardConfig", "MLPRewardConfig"]


def _check_int(field: str, value: Any, low: int, high: int = 1 << 20) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"config field `{field}` must be an integer in [{low}, {high}], got {value!r}")


def _check_prob(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"config field `{field}` must be a number in [0, 1), got {value!r}")


_DEFAULT_BACKBONE = ("efficientnet_lite", {"variant": "efficientnet-lite0"}, "efficientnet-lite0")


class _RewardBackboneConfigMixin:
    """Backbone fields shared by both reward models."""

    def _init_backbone(
        self,
        backbone_type: str | None,
        backbone_config: dict[str, Any] | None,
        backbone_name_or_path: str | None,
    ) -> None:
        if backbone_type is None and backbone_config is None:
            backbone_type, backbone_config, default_name = _DEFAULT_BACKBONE
            backbone_name_or_path = backbone_name_or_path or default_name
        from .backbones import BACKBONE_TYPES

        if backbone_type not in BACKBONE_TYPES:
            raise ValueError(f"backbone_type must be one of {BACKBONE_TYPES}, got {backbone_type!r}")
        if backbone_config is not None and hasattr(backbone_config, "to_dict"):
            model_type = backbone_config.model_type
            backbone_config = backbone_config.to_dict()
            backbone_config["model_type"] = model_type
        self.backbone_type = backbone_type
        self.backbone_config = dict(backbone_config or {})
        self.backbone_name_or_path = backbone_name_or_path


class ICRewardConfig(_RewardBackboneConfigMixin, PretrainedConfig):
    r"""Configuration of :class:`ICRewardModel`: a vision backbone plus the attention-based Image Consistency head.

    Args:
        backbone_type (`str`, *optional*, defaults to `"efficientnet_lite"`):
            `"efficientnet_lite"`, `"transformers"` (CLIP vision, SigLIP vision, DINOv2, ...), `"open_clip"` or
            `"qwen2_vl"` (a Qwen2-VL / Qwen2.5-VL VLM reading the reference and the video together; its frame
            features are per temporal patch of `temporal_patch_size` frames).
        backbone_config (`dict`, *optional*):
            Architecture of the backbone (a transformers config dict with `model_type`, or `{"variant": ...}`).
            Use :meth:`ICRewardModel.from_pretrained_backbone` to fill it from a hub id or local path.
        backbone_name_or_path (`str`, *optional*): Where the backbone weights came from (for the model card).
        freeze_backbone (`bool`, defaults to `True`): Keep the backbone frozen (and in eval mode) while training.
        backbone_lora (`dict`, *optional*): A `peft.LoraConfig` as a dict; its adapters are injected into the
            backbone at construction, so a saved model reloads with the same parameter layout.
        head_hidden_size (`int`, defaults to 256): Width of the head.
        head_num_heads (`int`, defaults to 4): Attention heads in the head's cross-attention.
        head_num_layers (`int`, defaults to 2): Cross-attention blocks (frame tokens attend to reference tokens).
        head_dropout (`float`, defaults to 0.1): Dropout inside the head.
        max_frames (`int`, defaults to 64): Length of the learned frame-index embedding.
        heads (`list[str]`, defaults to `["consistency"]`): Output heads, e.g. `["subject", "background", "motion"]`
            (the paper's multi-dimensional future work). Each gives a score in [0, 1].
        head_weights (`dict[str, float]`, *optional*): Weights of the overall score, a weighted mean of head
            scores (defaults to equal weights).
        num_frames (`int`, defaults to 8) / image_size (`int`, defaults to 224): defaults for the processor.
    """

    model_type = "icreward"

    def __init__(
        self,
        backbone_type: str | None = None,
        backbone_config: dict[str, Any] | None = None,
        backbone_name_or_path: str | None = None,
        freeze_backbone: bool = True,
        backbone_lora: dict[str, Any] | None = None,
        head_hidden_size: int = 256,
        head_num_heads: int = 4,
        head_num_layers: int = 2,
        head_dropout: float = 0.1,
        max_frames: int = 64,
        heads: list[str] | None = None,
        head_weights: dict[str, float] | None = None,
        num_frames: int = 8,
        image_size: int = 224,
        **kwargs,
    ):
        self._init_backbone(backbone_type, backbone_config, backbone_name_or_path)
        self.freeze_backbone = freeze_backbone
        self.backbone_lora = backbone_lora
        for field, value, low in (
            ("head_hidden_size", head_hidden_size, 1),
            ("head_num_heads", head_num_heads, 1),
            ("head_num_layers", head_num_layers, 0),
            ("max_frames", max_frames, 1),
            ("num_frames", num_frames, 1),
            ("image_size", image_size, 1),
        ):
            _check_int(field, value, low)
        _check_prob("head_dropout", head_dropout)
        if head_hidden_size % head_num_heads:
            raise ValueError(
                f"head_hidden_size ({head_hidden_size}) must be divisible by head_num_heads ({head_num_heads})"
            )
        self.head_hidden_size = head_hidden_size
        self.head_num_heads = head_num_heads
        self.head_num_layers = head_num_layers
        self.head_dropout = head_dropout
        self.max_frames = max_frames
        self.heads = list(heads) if heads else ["consistency"]
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be unique, got {self.heads}")
        head_weights = dict(head_weights) if head_weights else {name: 1.0 for name in self.heads}
        unknown = set(head_weights) - set(self.heads)
        if (
            unknown
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in head_weights.values())
            or not all(math.isfinite(w) and w >= 0 for w in head_weights.values())
            or sum(head_weights.values()) <= 0
        ):
            raise ValueError(f"head_weights must be non-negative weights over heads {self.heads}, got {head_weights}")
        self.head_weights = {name: float(head_weights.get(name, 0.0)) for name in self.heads}
        self.num_frames = num_frames
        self.image_size = image_size
        super().__init__(**kwargs)


class MLPRewardConfig(_RewardBackboneConfigMixin, PretrainedConfig):
    r"""Configuration of :class:`MLPRewardModel`, the paper's baseline: an MLP over concatenated (CLIP) features
    of the reference image and each frame; the video score is the average frame reward.

    Args:
        backbone_type / backbone_config / backbone_name_or_path: as in :class:`ICRewardConfig` (the paper uses
            CLIP: `"open_clip"` or a transformers CLIP vision tower; offline default EfficientNet-Lite0).
        freeze_backbone (`bool`, defaults to `True`).
        hidden_sizes (`list[int]`, defaults to `[512, 128]`): MLP widths.
        dropout (`float`, defaults to 0.1).
        num_frames (`int`, defaults to 8) / image_size (`int`, defaults to 224): defaults for the processor.
    """

    model_type = "icreward_mlp"

    def __init__(
        self,
        backbone_type: str | None = None,
        backbone_config: dict[str, Any] | None = None,
        backbone_name_or_path: str | None = None,
        freeze_backbone: bool = True,
        hidden_sizes: list[int] | None = None,
        dropout: float = 0.1,
        num_frames: int = 8,
        image_size: int = 224,
        **kwargs,
    ):
        self._init_backbone(backbone_type, backbone_config, backbone_name_or_path)
        self.freeze_backbone = freeze_backbone
        for i, size in enumerate(hidden_sizes or []):
            _check_int(f"hidden_sizes[{i}]", size, 1)
        _check_prob("dropout", dropout)
        _check_int("num_frames", num_frames, 1)
        _check_int("image_size", image_size, 1)
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes else [512, 128]
        self.dropout = dropout
        self.num_frames = num_frames
        self.image_size = image_size
        super().__init__(**kwargs)
