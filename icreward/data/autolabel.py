"""Label (reference image, video) pairs with VBench++ image-to-video consistency scores.

:class:`ConsistencyAutoLabeler` reproduces VBench++'s two I2V consistency dimensions on new data, so reward-model
training sets can be built from any generator's videos without running VBench:

* ``i2v_subject``: features of a DINO ViT-B/16 (``facebook/dino-vitb16`` in transformers, the same weights as
  VBench's ``torch.hub`` ``dino_vitb16``), preprocessed as VBench's ``dino_transform_internet`` (bicubic resize
  of the shorter side to 256, center crop 224, ImageNet normalisation);
* ``i2v_background``: DreamSim embeddings (``dreamsim`` package, ``model.embed``), preprocessed as VBench's
  ``dreamsim_transform`` (bicubic resize to 224x224, values in [0, 1], no normalisation). DreamSim is not a
  transformers model: pass ``background_extractor="dreamsim"`` to load it from the ``dreamsim`` package, or any
  callable with the same contract. Without a background extractor only ``i2v_subject`` is computed.

Both scores are :func:`icreward.metrics.consistency.i2v_consistency_score` of the features. Images are resized
with ``torch.nn.functional.interpolate`` (bicubic, antialiased) where VBench uses torchvision/PIL, so scores match
VBench's up to resampling differences; with a different backbone they are a VBench-style proxy.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from icreward.metrics.consistency import I2V_CONSISTENCY_WEIGHTS, i2v_consistency_score

__all__ = [
    "DINO_PREPROCESSING",
    "DREAMSIM_PREPROCESSING",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConsistencyAutoLabeler",
    "ImagePreprocessing",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FeatureExtractor = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize, center-crop and normalise ``(N, 3, H, W)`` images for a feature extractor.

    Attributes:
        size: side of the square output.
        resize_size: the shorter side is first resized to this, keeping the aspect ratio, then the center
            ``size x size`` is cropped (torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)``). ``None``
            resizes straight to ``size x size``, ignoring the aspect ratio.
        mean, std: per-channel normalisation of the [0, 1] values; ``None`` leaves them in [0, 1].
    """

    size: int = 224
    resize_size: int | None = 256
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.resize_size is not None and self.resize_size < self.size:
            raise ValueError(f"resize_size ({self.resize_size}) must be >= size ({self.size}) to center-crop")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must be given together")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 in [0, 255] or float in [0, 1] -> ``(N, 3, size, size)`` float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        height, width = x.shape[-2:]
        if self.resize_size is None:
            x = _resize(x, (self.size, self.size))
        else:
            short, long = (height, width) if height <= width else (width, height)
            # torchvision's Resize(int) truncates the long side the same way.
            new_long = int(self.resize_size * long / short)
            new_hw = (self.resize_size, new_long) if height <= width else (new_long, self.resize_size)
            x = _resize(x, new_hw)
            top = int(round((x.shape[-2] - self.size) / 2.0))
            left = int(round((x.shape[-1] - self.size) / 2.0))
            x = x[..., top : top + self.size, left : left + self.size]
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[None, :, None, None]
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[None, :, None, None]
            x = (x - mean) / std
        return x


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    # Bicubic overshoots; VBench resizes uint8 images, which clamps to the valid range.
    return x.clamp(0.0, 1.0)


#: VBench's ``dino_transform_internet`` (``i2v_subject``).
DINO_PREPROCESSING = ImagePreprocessing(size=224, resize_size=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
#: VBench's ``dreamsim_transform`` (``i2v_background``).
DREAMSIM_PREPROCESSING = ImagePreprocessing(size=224, resize_size=None, mean=None, std=None)


class ConsistencyAutoLabeler:
    """Compute VBench++ I2V consistency scores for (reference image, video) pairs.

    Args:
        feature_extractor: the ``i2v_subject`` backbone. A transformers model id or local path (loaded with
            ``AutoModel.from_pretrained``), a ``PreTrainedModel`` instance (called as ``model(pixel_values=x)``),
            or any callable mapping a preprocessed ``(N, 3, S, S)`` float batch to ``(N, D)`` features (e.g.
            VBench's ``torch.hub.load("facebookresearch/dino:main", "dino_vitb16")``). Defaults to DINO ViT-B/16.
        background_extractor: the ``i2v_background`` backbone: ``None`` (dimension not computed), ``"dreamsim"``
            (``dreamsim.dreamsim(pretrained=True)``'s ``embed``; needs the ``dreamsim`` package and downloads its
            weights), or a callable as above receiving :data:`DREAMSIM_PREPROCESSING`-style input (values in [0, 1],
            ``background_image_size`` square).
        image_size: crop size of the subject backbone's input (VBench: 224).
        resize_size: shorter-side resize before the center crop (VBench: 256); ``None`` resizes straight to
            ``image_size x image_size``.
        image_mean, image_std: normalisation of the subject backbone's input (VBench: ImageNet statistics).
        background_image_size: square input size of the background extractor (VBench: 224).
        pooling: which output of a transformers model is the image feature. ``"cls"`` (default): the final
            (layer-normed) CLS token ``last_hidden_state[:, 0]``, which is exactly what VBench's DINO returns;
            note that ``pooler_output`` of ``ViTModel`` adds a dense+tanh layer that DINO checkpoints do not train.
            ``"pooler"``: ``pooler_output`` (e.g. for convolutional backbones). ``"mean"``: the mean of the patch
            tokens ``last_hidden_state[:, 1:]`` (or of the spatial map of a ``(N, C, H, W)`` output). Callables
            returning a tensor are used as they are.
        dimension_weights: weights of the dimensions in the combined ``"score"`` (their weighted mean); defaults to
            equal weights over the computed dimensions.
        consistency_weights: ``(w_max, w_mean, w_min)`` of the I2V formula (VBench++: ``(0.4, 0.3, 0.3)``).
        num_frames: frames sampled uniformly from each video file; ``None`` uses every frame, as VBench does.
        batch_size: frames per forward pass.
        device: where inputs go; defaults to the device of the extractor's parameters (CPU for plain callables).
        model_kwargs: keyword arguments for ``AutoModel.from_pretrained`` when ``feature_extractor`` is a string.
    """

    def __init__(
        self,
        feature_extractor: str | os.PathLike | FeatureExtractor = "facebook/dino-vitb16",
        *,
        background_extractor: Literal["dreamsim"] | FeatureExtractor | None = None,
        image_size: int = 224,
        resize_size: int | None = 256,
        image_mean: Sequence[float] | None = IMAGENET_MEAN,
        image_std: Sequence[float] | None = IMAGENET_STD,
        background_image_size: int = 224,
        pooling: Literal["cls", "pooler", "mean"] = "cls",
        dimension_weights: Mapping[str, float] | None = None,
        consistency_weights: Sequence[float] = I2V_CONSISTENCY_WEIGHTS,
        num_frames: int | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if pooling not in ("cls", "pooler", "mean"):
            raise ValueError(f"pooling must be 'cls', 'pooler' or 'mean', got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}")
        self.pooling = pooling
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.consistency_weights = tuple(float(w) for w in consistency_weights)

        self.extractors: dict[str, FeatureExtractor] = {
            "i2v_subject": _load_extractor(feature_extractor, model_kwargs)
        }
        self.preprocessing: dict[str, ImagePreprocessing] = {
            "i2v_subject": ImagePreprocessing(
                size=image_size,
                resize_size=resize_size,
                mean=None if image_mean is None else tuple(image_mean),
                std=None if image_std is None else tuple(image_std),
            )
        }
        if background_extractor is not None:
            if isinstance(background_extractor, str):
                if background_extractor != "dreamsim":
                    raise ValueError(
                        f"background_extractor must be 'dreamsim' or a callable, got {background_extractor!r}"
                    )
                background_extractor = _load_dreamsim(device)
            self.extractors["i2v_background"] = background_extractor
            self.preprocessing["i2v_background"] = ImagePreprocessing(
                size=background_image_size, resize_size=None, mean=None, std=None
            )
        self.dimension_weights = _resolve_weights(tuple(self.extractors), dimension_weights)
        self.device = torch.device(device) if device is not None else None

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions this labeler computes, in output order."""
        return tuple(self.extractors)

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, dimension: str = "i2v_subject") -> torch.Tensor:
        """``(N, 3, H, W)`` images (uint8, or float in [0, 1]) -> ``(N, D)`` float32 features of ``dimension``."""
        if dimension not in self.extractors:
            raise ValueError(f"dimension must be one of {list(self.extractors)}, got {dimension!r}")
        extractor, preprocess = self.extractors[dimension], self.preprocessing[dimension]
        device, dtype = _placement(extractor, self.device)
        features = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = preprocess(images[start : start + self.batch_size].to(device))
            output = extractor(pixel_values=batch.to(dtype)) if _is_transformers_model(extractor) else extractor(batch)
            features.append(_pool(output, self.pooling, dimension).float())
        return torch.cat(features)

    def label(self, reference: Any, video: Any) -> dict[str, float]:
        """Score one pair.

        Args:
            reference: the reference image: a path, a PIL image, a ``datasets.Image`` dict (``{"bytes", "path"}``),
                or a ``(3, H, W)`` tensor/array (uint8, or float in [0, 1]).
            video: a video file path (decoded with :func:`icreward.video.read_video`, ``num_frames`` frames) or a
                ``(F, 3, H, W)`` tensor/array (uint8, or float in [0, 1]).

        Returns:
            ``{dimension: score}`` for each computed dimension plus ``"score"``, their weighted mean; all in [0, 1].
        """
        image = _to_unit_float(_as_image(reference))[None]
        frames = _to_unit_float(_as_video(video, self.num_frames))
        result: dict[str, float] = {}
        for dimension in self.extractors:
            # Separate passes: the reference image and the frames usually differ in size.
            ref_features = self.extract_features(image, dimension)
            frame_features = self.extract_features(frames, dimension)
            score = i2v_consistency_score(ref_features[0], frame_features, weights=self.consistency_weights)
            result[dimension] = float(score)
        result["score"] = sum(self.dimension_weights[d] * result[d] for d in self.extractors) / sum(
            self.dimension_weights.values()
        )
        return result

    __call__ = label

    def label_dataset(
        self,
        dataset: Any,
        *,
        reference_column: str = "reference",
        video_column: str = "video",
        column_prefix: str = "",
        score_column: str | None = "score",
        overwrite: bool = False,
        **map_kwargs: Any,
    ) -> Any:
        """Add score columns to a :class:`datasets.Dataset` (or ``DatasetDict``) with :meth:`datasets.Dataset.map`.

        Adds one float32 column per dimension (``f"{column_prefix}{dimension}"``) and, unless ``score_column`` is
        ``None``, the combined score as ``f"{column_prefix}{score_column}"``. Existing columns of those names
        (e.g. the VBench labels of :func:`icreward.data.vbench.load_vbench_i2v`) raise unless ``overwrite=True``;
        use ``column_prefix="auto_"`` to keep both. ``map_kwargs`` (``num_proc``, ``desc``, ...) go to ``map``.
        """
        names = {d: f"{column_prefix}{d}" for d in self.extractors}
        if score_column is not None:
            names["score"] = f"{column_prefix}{score_column}"
        from datasets import DatasetDict, IterableDataset, IterableDatasetDict, Value

        splits = list(dataset.values()) if isinstance(dataset, DatasetDict | IterableDatasetDict) else [dataset]
        for split in splits:
            missing = [c for c in (reference_column, video_column) if c not in split.column_names]
            if missing:
                raise ValueError(f"dataset is missing column(s) {missing}; it has {split.column_names}")
            clash = sorted(set(names.values()) & set(split.column_names))
            if clash and not overwrite:
                raise ValueError(
                    f"dataset already has column(s) {clash}; pass overwrite=True to replace them or column_prefix= "
                    "to write new ones"
                )

        def _label(example: dict[str, Any]) -> dict[str, float]:
            scores = self.label(example[reference_column], example[video_column])
            return {column: scores[key] for key, column in names.items()}

        features = splits[0].features
        if features is not None:  # None for an IterableDataset whose features are unknown
            features = features.copy()
            for column in names.values():
                features[column] = Value("float32")
            map_kwargs.setdefault("features", features)
        if not isinstance(splits[0], IterableDataset):
            map_kwargs.setdefault("desc", "Labelling I2V consistency")
        return dataset.map(_label, **map_kwargs)


def _resolve_weights(dimensions: tuple[str, ...], weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict.fromkeys(dimensions, 1.0)
    unknown = sorted(set(weights) - set(dimensions))
    if unknown:
        raise ValueError(
            f"dimension_weights has {unknown}, but this labeler computes only {list(dimensions)} "
            "(i2v_background needs background_extractor=...)"
        )
    resolved = {d: float(weights.get(d, 0.0)) for d in dimensions}
    if any(not math.isfinite(w) or w < 0 for w in resolved.values()) or sum(resolved.values()) <= 0:
        raise ValueError(f"dimension_weights must be finite, >= 0 and not all 0, got {dict(weights)}")
    return resolved


def _is_transformers_model(extractor: Any) -> bool:
    # A PreTrainedModel instance implies transformers' modeling code is loaded; checking sys.modules avoids
    # importing transformers (seconds) just to label with a plain callable.
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    return modeling_utils is not None and isinstance(extractor, modeling_utils.PreTrainedModel)


def _load_extractor(extractor: Any, model_kwargs: Mapping[str, Any] | None) -> FeatureExtractor:
    if isinstance(extractor, str | os.PathLike):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(extractor), **dict(model_kwargs or {}))
        return model.eval()
    if model_kwargs:
        raise ValueError("model_kwargs only apply when feature_extractor is a model id or path")
    if not callable(extractor):
        raise TypeError(
            "feature_extractor must be a transformers model id/path, a PreTrainedModel or a callable "
            f"images -> features, got {type(extractor).__name__}"
        )
    if isinstance(extractor, torch.nn.Module):
        extractor.eval()
    return extractor


def _load_dreamsim(device: str | torch.device | None) -> FeatureExtractor:
    try:
        from dreamsim import dreamsim
    except ImportError as err:
        raise ImportError(
            "background_extractor='dreamsim' needs the `dreamsim` package (pip install dreamsim), which downloads "
            "its weights on first use; or pass your own callable images -> features"
        ) from err
    model, _ = dreamsim(pretrained=True, device=str(device or "cpu"))
    model.eval()
    return model.embed


def _placement(extractor: Any, device: torch.device | None) -> tuple[torch.device, torch.dtype]:
    """Where and in which float dtype the extractor wants its input."""
    module = extractor if isinstance(extractor, torch.nn.Module) else getattr(extractor, "__self__", None)
    param = next(module.parameters(), None) if isinstance(module, torch.nn.Module) else None
    if param is None:
        return device or torch.device("cpu"), torch.float32
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    return device or param.device, dtype


def _pool(output: Any, pooling: str, dimension: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        features = output
    elif pooling == "pooler":
        features = getattr(output, "pooler_output", None)
        if features is None:
            raise ValueError(f"{dimension}: pooling='pooler', but the model returned no pooler_output")
    else:
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:
            raise ValueError(f"{dimension}: the model output has no last_hidden_state; use pooling='pooler'")
        if hidden.ndim == 3 and pooling == "cls":
            features = hidden[:, 0]
        elif hidden.ndim == 3:
            features = hidden[:, 1:].mean(dim=1)
        elif hidden.ndim == 4 and pooling == "mean":
            features = hidden.mean(dim=(-2, -1))
        else:
            raise ValueError(
                f"{dimension}: pooling={pooling!r} needs a (N, tokens, D) last_hidden_state, got "
                f"{tuple(hidden.shape)}; use pooling='pooler' or 'mean' for convolutional backbones"
            )
    if features.ndim > 2:
        features = features.flatten(1)
    if features.ndim != 2:
        raise ValueError(f"{dimension}: expected (N, D) features from the extractor, got {tuple(features.shape)}")
    return features


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.float()


def _as_image(reference: Any) -> torch.Tensor:
    """Reference image -> ``(3, H, W)`` uint8, or float in [0, 1] for float input."""
    if isinstance(reference, Mapping):
        # An undecoded datasets.Image value.
        if reference.get("bytes") is not None:
            from PIL import Image

            reference = Image.open(io.BytesIO(reference["bytes"]))
        elif reference.get("path"):
            reference = reference["path"]
        else:
            raise ValueError("reference dict has neither 'bytes' nor 'path'")
    if isinstance(reference, np.ndarray):
        reference = torch.from_numpy(reference)
    if isinstance(reference, torch.Tensor):
        if reference.ndim != 3 or reference.shape[0] != 3:
            raise ValueError(f"reference tensor must have shape (3, H, W), got {tuple(reference.shape)}")
        return reference
    from icreward.video import load_image

    return load_image(reference)


def _as_video(video: Any, num_frames: int | None) -> torch.Tensor:
    """Video -> ``(F, 3, H, W)`` uint8, or float in [0, 1] for float input."""
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    if isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[1] != 3:
            raise ValueError(f"video tensor must have shape (F, 3, H, W), got {tuple(video.shape)}")
        if video.shape[0] == 0:
            raise ValueError("video tensor has no frames")
        return video
    if isinstance(video, Mapping) and video.get("path"):
        video = video["path"]  # an undecoded datasets.Video value
    if not isinstance(video, str | os.PathLike):
        raise TypeError(f"video must be a file path or a (F, 3, H, W) tensor, got {type(video).__name__}")
    from icreward.video import read_video

    return read_video(video, num_frames=num_frames)
