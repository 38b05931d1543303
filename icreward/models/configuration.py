"""Configurations of the two reward models (``PretrainedConfig`` subclasses, registered with ``AutoConfig``)."""

from __future__ import annotations

import math
import os
from typing import Any

from transformers import PretrainedConfig

__all__ = ["ICRewardConfig", "MLPRewardConfig"]


#: Upper bounds of the size fields: far above any published model, low enough that a mistyped or hostile
#: config.json cannot ask for terabytes (``head_num_layers: 1000000`` would build a million blocks).
LIMITS = {
    "head_hidden_size": 16384,
    "head_num_heads": 256,
    "head_num_layers": 64,
    "max_frames": 16384,
    "num_frames": 4096,
    "image_size": 8192,
    "hidden_sizes": 65536,  # each MLP width
    "num_hidden_sizes": 32,
    "num_heads": 64,  # output heads
}


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"<an integer of more than {limit} digits>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a 30000-deep list, an int beyond the repr digit limit
        text = f"<a {type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_int(field: str, value: Any, low: int, high: int | None = None) -> None:
    high = LIMITS.get(field, 1 << 20) if high is None else high
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"config field `{field}` must be an integer in [{low}, {high}], got {_short(value)}")


def _check_prob(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"config field `{field}` must be a number in [0, 1), got {_short(value)}")


def _check_type(field: str, value: Any, types: tuple[type, ...], what: str) -> None:
    if not isinstance(value, types):
        raise ValueError(f"config field `{field}` must be {what}, got {_short(value)}")


_DEFAULT_BACKBONE = ("efficientnet_lite", {"variant": "efficientnet-lite0"}, "efficientnet-lite0")


class _RewardBackboneConfigMixin:
    """Backbone fields shared by both reward models."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PretrainedConfig.from_pretrained``; a config.json that cannot be read or fails a field check is
        refused with a ``ValueError`` naming the file (and the field)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError) as err:
            from ..video import printable_text

            name = os.fsdecode(pretrained_model_name_or_path)
            where = (
                name if name.endswith(".json") else os.path.join(name, kwargs.get("subfolder") or "", "config.json")
            )
            message = printable_text(str(err)) if not isinstance(err, RecursionError) else "nested too deeply"
            raise ValueError(printable_text(f"{where}: invalid {cls.__name__} config ({message})")) from err

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

        if not isinstance(backbone_type, str) or backbone_type not in BACKBONE_TYPES:
            raise ValueError(
                f"config field `backbone_type` must be one of {BACKBONE_TYPES}, got {_short(backbone_type)}"
            )
        if backbone_config is not None and hasattr(backbone_config, "to_dict"):
            model_type = backbone_config.model_type
            backbone_config = backbone_config.to_dict()
            backbone_config["model_type"] = model_type
        _check_type("backbone_config", backbone_config, (dict, type(None)), "a dict (the backbone's architecture)")
        _check_type("backbone_name_or_path", backbone_name_or_path, (str, type(None)), "a string")
        if backbone_type == "transformers" and not isinstance((backbone_config or {}).get("model_type"), str):
            raise ValueError("config field `backbone_config` of a transformers backbone needs a string `model_type`")
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
        _check_type("freeze_backbone", freeze_backbone, (bool,), "true or false")
        if backbone_lora is not None and hasattr(backbone_lora, "to_dict"):  # a peft.LoraConfig
            backbone_lora = backbone_lora.to_dict()
        _check_type("backbone_lora", backbone_lora, (dict, type(None)), "a dict (a peft.LoraConfig as a dict)")
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
                f"config field `head_hidden_size` ({head_hidden_size}) must be divisible by `head_num_heads` "
                f"({head_num_heads})"
            )
        self.head_hidden_size = head_hidden_size
        self.head_num_heads = head_num_heads
        self.head_num_layers = head_num_layers
        self.head_dropout = head_dropout
        self.max_frames = max_frames
        if heads is not None and (
            not isinstance(heads, (list, tuple))
            or not 0 < len(heads) <= LIMITS["num_heads"]
            or not all(isinstance(h, str) and h for h in heads)
        ):
            raise ValueError(
                f"config field `heads` must be a list of 1 to {LIMITS['num_heads']} names, got {_short(heads)}"
            )
        self.heads = list(heads) if heads else ["consistency"]
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"config field `heads` must be unique, got {self.heads}")
        _check_type("head_weights", head_weights, (dict, type(None)), "a dict of head name -> weight")
        head_weights = dict(head_weights) if head_weights else {name: 1.0 for name in self.heads}
        unknown = set(head_weights) - set(self.heads)
        if (
            unknown
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in head_weights.values())
            or not all(math.isfinite(w) and w >= 0 for w in head_weights.values())
            or sum(head_weights.values()) <= 0
        ):
            raise ValueError(
                f"config field `head_weights` must be non-negative weights over heads {self.heads}, got "
                f"{_short(head_weights)}"
            )
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
        num_frames / image_size: as in :class:`ICRewardConfig` (the processor's defaults, 8 and 224).
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
        _check_type("freeze_backbone", freeze_backbone, (bool,), "true or false")
        self.freeze_backbone = freeze_backbone
        if hidden_sizes is not None and (
            not isinstance(hidden_sizes, (list, tuple)) or len(hidden_sizes) > LIMITS["num_hidden_sizes"]
        ):
            raise ValueError(
                f"config field `hidden_sizes` must be a list of at most {LIMITS['num_hidden_sizes']} widths, got "
                f"{_short(hidden_sizes)}"
            )
        for i, size in enumerate(hidden_sizes or []):
            _check_int(f"hidden_sizes[{i}]", size, 1, LIMITS["hidden_sizes"])
        _check_prob("dropout", dropout)
        _check_int("num_frames", num_frames, 1)
        _check_int("image_size", image_size, 1)
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes else [512, 128]
        self.dropout = dropout
        self.num_frames = num_frames
        self.image_size = image_size
        super().__init__(**kwargs)
