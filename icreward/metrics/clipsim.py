"""CLIPSim for image-to-video generation: CLIP image-image similarity between the reference image and each frame.

For every frame ``f_i`` of a generated video and the conditioning (reference) image ``r``::

    clipsim_i = cos(E(r), E(f_i)),        CLIPSim = mean_i clipsim_i

where ``E`` is a CLIP image encoder (the projected image embedding). This is the "CLIP-Sim" the ICReward paper
reports for best-of-N selection; values are raw cosines in ``[-1, 1]`` (some papers multiply by 100).

Images are preprocessed as the CLIP model's own pipeline does: resize the shorter side to the model's input size
(bicubic, antialiased), center-crop, scale to ``[0, 1]`` and normalise with the model's mean/std (OpenAI CLIP's
by default). Resizing runs on tensors (torchvision), which matches the PIL-based processors to within resampling
round-off, not bit for bit.

Two backends are supported, chosen from the model given:

* **transformers**: ``CLIPModel`` (or any model with ``get_image_features``, e.g. SigLIP) and
  ``CLIPVisionModelWithProjection``; load by hub id or local path with :meth:`CLIPSimilarity.from_transformers`.
* **open_clip**: any model with ``encode_image``; load by architecture name and pretrained tag or checkpoint file
  with :meth:`CLIPSimilarity.from_open_clip`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from icreward.video import to_unit_float

__all__ = [
    "CLIPSimResult",
    "CLIPSimilarity",
    "clip_similarity",
    "clip_similarity_from_embeddings",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass
class CLIPSimResult:
    """CLIPSim of one video (``per_frame (F,)``, ``mean ()``) or a batch (``per_frame (B, F)``, ``mean (B,)``)."""

    per_frame: torch.Tensor
    mean: torch.Tensor


def clip_similarity_from_embeddings(reference: torch.Tensor, frames: torch.Tensor) -> CLIPSimResult:
    """CLIPSim from precomputed embeddings (normalised here).

    Args:
        reference: ``(D,)`` or ``(B, D)`` reference-image embeddings.
        frames: ``(F, D)`` or ``(B, F, D)`` frame embeddings.
    """
    if reference.ndim == 1 and frames.ndim == 2:
        result = clip_similarity_from_embeddings(reference[None], frames[None])
        return CLIPSimResult(per_frame=result.per_frame[0], mean=result.mean[0])
    if reference.ndim != 2 or frames.ndim != 3 or reference.shape[0] != frames.shape[0]:
        raise ValueError(
            f"expected reference (D,) with frames (F, D), or (B, D) with (B, F, D); got {tuple(reference.shape)} and "
            f"{tuple(frames.shape)}"
        )
    if reference.shape[-1] != frames.shape[-1]:
        raise ValueError(f"embedding sizes differ: {reference.shape[-1]} vs {frames.shape[-1]}")
    if frames.shape[1] == 0:
        raise ValueError("frames has no frames (F == 0); CLIPSim of an empty video is undefined")
    from .consistency import check_finite

    check_finite("reference", reference)
    check_finite("frames", frames)
    per_frame = torch.einsum("bd,bfd->bf", F.normalize(reference.float(), dim=-1), F.normalize(frames.float(), dim=-1))
    return CLIPSimResult(per_frame=per_frame, mean=per_frame.mean(dim=1))


def _as_size(value: int | Sequence[int] | Mapping | None) -> int | None:
    # Image sizes come as int, (h, w) or processor dicts ({"shortest_edge": s} / {"height": h, "width": w}).
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping) or hasattr(value, "height"):  # dicts and transformers' SizeDict
        field = value.get if isinstance(value, Mapping) else lambda key: getattr(value, key, None)
        return _as_size(field("shortest_edge") or field("height"))
    sizes = list(value)
    if len(set(sizes)) != 1:
        raise ValueError(f"only square CLIP inputs are supported, got image size {tuple(sizes)}")
    return int(sizes[0])


class CLIPSimilarity(nn.Module):
    """CLIP image encoder with its preprocessing, scoring a reference image against video frames.

    Args:
        model: a transformers CLIP-like model (``get_image_features``) or ``CLIPVisionModelWithProjection``, or an
            open_clip model (``encode_image``). It is put in eval mode; gradients are not disabled, so the scores
            are differentiable with respect to the pixels when called outside ``torch.no_grad()``.
        image_size: model input side; defaults to the model's (transformers ``vision_config.image_size``, open_clip
            ``preprocess_cfg["size"]``).
        mean, std: normalisation; default to the open_clip preprocess config, or OpenAI CLIP's values.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``; defaults to the open_clip preprocess config,
            else bicubic (CLIP's).
        resize_mode: ``"shortest"`` (resize the shorter side, then center-crop; CLIP) or ``"squash"`` (resize to
            ``S x S``, e.g. SigLIP processors); defaults to the open_clip preprocess config, else ``"shortest"``.
        batch_size: images per encoder call.

    Example:
        >>> scorer = CLIPSimilarity.from_transformers("openai/clip-vit-base-patch32")  # doctest: +SKIP
        >>> result = scorer(reference_image, video)  # (3, H, W), (F, 3, H, W)          # doctest: +SKIP
        >>> result.mean, result.per_frame.shape                                          # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        resize_mode: str | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if hasattr(model, "encode_image"):
            self.backend = "open_clip"
            from ..extras import require

            open_clip = require("open_clip", "clip", "CLIPSimilarity with an open_clip model")

            cfg = open_clip.get_model_preprocess_cfg(model)
            default_size, default_mean, default_std = cfg.get("size"), cfg.get("mean"), cfg.get("std")
            default_interpolation, default_resize_mode = cfg.get("interpolation"), cfg.get("resize_mode")
        elif hasattr(model, "get_image_features") or hasattr(model, "visual_projection"):
            self.backend = "transformers"
            config = model.config
            vision_config = getattr(config, "vision_config", config)
            default_size, default_mean, default_std = getattr(vision_config, "image_size", None), None, None
            default_interpolation, default_resize_mode = None, None
        else:
            raise TypeError(
                f"{type(model).__name__} is not a supported CLIP model: expected a transformers model with "
                "`get_image_features` (e.g. CLIPModel) or `visual_projection` (CLIPVisionModelWithProjection), or "
                "an open_clip model with `encode_image`"
            )
        interpolation = interpolation or default_interpolation or "bicubic"
        resize_mode = resize_mode or default_resize_mode or "shortest"
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
        if resize_mode not in ("shortest", "squash"):
            raise ValueError(f"resize_mode must be 'shortest' or 'squash', got {resize_mode!r}")
        size = _as_size(image_size) or _as_size(default_size)
        if size is None:
            raise ValueError(f"could not infer the input size of {type(model).__name__}; pass image_size=")
        self.model = model.eval()
        self.image_size = size
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.batch_size = batch_size
        mean = tuple(mean if mean is not None else default_mean if default_mean is not None else OPENAI_CLIP_MEAN)
        std = tuple(std if std is not None else default_std if default_std is not None else OPENAI_CLIP_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------------------------------------- constructors

    @classmethod
    def from_transformers(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> CLIPSimilarity:
        """Load a transformers CLIP model (hub id or local directory) and its image-processor settings.

        The model class comes from the config (``AutoModel``): ``CLIPModel``, ``SiglipModel``, ... . Size, mean and
        std are read from the checkpoint's image processor when it has one; ``kwargs`` override them and are
        passed to :class:`CLIPSimilarity`.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, revision=revision)
        model_cls = CLIPVisionModelWithProjection if config.model_type == "clip_vision_model" else AutoModel
        model = model_cls.from_pretrained(pretrained_model_name_or_path, revision=revision, dtype=dtype)
        try:
            processor = AutoImageProcessor.from_pretrained(pretrained_model_name_or_path, revision=revision)
        except (OSError, ValueError):
            processor = None  # a bare model directory: fall back to the config's size and CLIP's mean/std
        if processor is not None:
            kwargs.setdefault("image_size", _as_size(getattr(processor, "crop_size", None)))
            kwargs.setdefault("mean", getattr(processor, "image_mean", None))
            kwargs.setdefault("std", getattr(processor, "image_std", None))
            if getattr(processor, "do_center_crop", True) is False:
                kwargs.setdefault("resize_mode", "squash")
        return cls(model, **kwargs)

    @classmethod
    def from_open_clip(cls, model_name: str, pretrained: str | os.PathLike | None = None, **kwargs) -> CLIPSimilarity:
        """Create an open_clip model by architecture name (e.g. ``"ViT-B-32"``) with ``pretrained`` weights.

        ``pretrained`` is an open_clip tag (e.g. ``"openai"``, ``"laion2b_s34b_b79k"``; downloaded through the
        Hugging Face hub cache) or a local checkpoint file. ``None`` gives random weights (tests only).
        """
        from ..extras import require

        open_clip = require("open_clip", "clip", "CLIPSimilarity.from_open_clip")
        model = open_clip.create_model(model_name, pretrained=os.fspath(pretrained) if pretrained else None)
        return cls(model, **kwargs)

    # ---------------------------------------------------------------------------------------------------- encoding

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 or float ``[0, 1]`` -> normalised ``(N, 3, S, S)`` pixel values."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        images = to_unit_float(images.to(self.mean.device), "images")
        mode = _INTERPOLATIONS[self.interpolation]
        antialias = mode != InterpolationMode.NEAREST
        if self.resize_mode == "squash":
            images = TF.resize(images, [self.image_size, self.image_size], interpolation=mode, antialias=antialias)
        else:
            images = TF.resize(images, [self.image_size], interpolation=mode, antialias=antialias)
            images = TF.center_crop(images, [self.image_size, self.image_size])
        # Bicubic overshoots; the PIL pipelines clip to the valid range before normalising.
        return (images.clamp(0.0, 1.0) - self.mean) / self.std

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        pixel_values = pixel_values.to(dtype)
        if self.backend == "open_clip":
            return self.model.encode_image(pixel_values)
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=pixel_values)
            # transformers >= 5 returns a model output whose pooler_output holds the projected embedding.
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        return self.model(pixel_values=pixel_values).image_embeds

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings ``(N, D)`` of images ``(N, 3, H, W)`` (uint8 or float ``[0, 1]``)."""
        chunks = [
            self._embed(self.preprocess(images[i : i + self.batch_size]))
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    def forward(self, reference: torch.Tensor, video: torch.Tensor) -> CLIPSimResult:
        """CLIPSim of one video ``(3, H, W)`` + ``(F, 3, H, W)``, or a batch ``(B, 3, H, W)`` + ``(B, F, 3, H, W)``.

        Reference and frames may have different resolutions; both are resized to the model input.
        """
        if reference.ndim == 3 and video.ndim == 4:
            result = self.forward(reference[None], video[None])
            return CLIPSimResult(per_frame=result.per_frame[0], mean=result.mean[0])
        if reference.ndim != 4 or video.ndim != 5 or reference.shape[0] != video.shape[0]:
            raise ValueError(
                "expected reference (3, H, W) with video (F, 3, H, W), or (B, 3, H, W) with (B, F, 3, H, W); got "
                f"{tuple(reference.shape)} and {tuple(video.shape)}"
            )
        batch, num_frames = video.shape[:2]
        ref_emb = self.encode_images(reference)
        frame_emb = self.encode_images(video.flatten(0, 1)).view(batch, num_frames, -1)
        return clip_similarity_from_embeddings(ref_emb, frame_emb)


def clip_similarity(
    reference: torch.Tensor, frames: torch.Tensor, model: CLIPSimilarity | nn.Module, **kwargs
) -> CLIPSimResult:
    """CLIPSim between a reference image and the frames of a generated video.

    Args:
        reference: ``(3, H, W)`` (or ``(B, 3, H, W)``), uint8 or float in ``[0, 1]``.
        frames: ``(F, 3, H, W)`` (or ``(B, F, 3, H, W)``), same conventions.
        model: a :class:`CLIPSimilarity`, or a transformers / open_clip CLIP model, which is then wrapped with
            ``CLIPSimilarity(model, **kwargs)``.

    Returns:
        :class:`CLIPSimResult` with the per-frame cosines ``(F,)`` and their mean (batched: ``(B, F)``, ``(B,)``).
    """
    scorer = model if isinstance(model, CLIPSimilarity) else CLIPSimilarity(model, **kwargs)
    return scorer(reference, frames)
