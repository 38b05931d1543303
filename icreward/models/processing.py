"""``ICRewardProcessor``: turns reference images and videos into the tensors both reward models take."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_base import ImageProcessingMixin

__all__ = ["ICRewardProcessor", "is_single_video"]


def is_single_video(videos: Any) -> bool:
    """True when ``videos`` is one video (a path, a ``(F, 3, H, W)`` tensor/array, a list of PIL frames)."""
    if isinstance(videos, (str, Path)):
        return True
    if isinstance(videos, (torch.Tensor, np.ndarray)):
        return videos.ndim == 4
    if isinstance(videos, (list, tuple)) and videos:
        from PIL import Image

        return isinstance(videos[0], Image.Image)
    return False


def _to_uint8_chw(array: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """(…, 3, H, W) tensor (uint8 or float in [0, 1]) or (…, H, W, 3) numpy array -> uint8 torch (…, 3, H, W)."""
    if isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.shape[-1] in (1, 3, 4) and tensor.shape[-3] not in (1, 3, 4):
            tensor = tensor.movedim(-1, -3)  # numpy images are channels-last
    else:
        tensor = array
    if tensor.shape[-3] != 3:
        raise ValueError(f"{what} must have 3 (RGB) channels in dimension -3, got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.is_floating_point():
        return (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
    raise ValueError(f"{what} must be uint8 or float in [0, 1], got dtype {tensor.dtype}")


MAX_RESIZE_FACTOR = 16
"""Centre-crop resizing scales by the short side only while the scaled frame stays within this many times the
output's pixels; beyond (extreme aspect ratios) it crops first, so memory stays bounded."""


class ICRewardProcessorKwargs(TypedDict, total=False):
    """The processor's settings: transformers >= 5.25 reads ``valid_kwargs`` in ``from_dict`` / ``from_pretrained``
    (keyword overrides of a saved processor), older versions ignore it."""

    image_size: int
    num_frames: int
    resize_mode: str
    image_mean: list[float] | None
    image_std: list[float] | None


class ICRewardProcessor(ImageProcessingMixin):
    r"""Frame sampling, resizing, normalisation and padding for :class:`ICRewardModel` and :class:`MLPRewardModel`.

    Args:
        image_size (`int`, defaults to 224): Output height and width.
        num_frames (`int`, defaults to 8): Frames sampled uniformly from each video (shorter videos keep all their
            frames and are padded; see ``frame_mask``).
        resize_mode (`str`, defaults to `"crop"`): `"crop"` resizes the short side then centre-crops; `"squash"`
            resizes both sides (keeps the whole field of view, distorts the aspect ratio).
        image_mean / image_std (`list[float]`): Normalisation of the backbone (see ``backbone_normalization``).

    Calling it returns a :class:`~transformers.BatchFeature` with ``pixel_values (B, F, 3, S, S)``,
    ``frame_mask (B, F)`` and ``reference_pixel_values (B, 3, S, S)``.
    """

    model_input_names = ["pixel_values", "frame_mask", "reference_pixel_values"]
    valid_kwargs = ICRewardProcessorKwargs

    def __init__(
        self,
        image_size: int = 224,
        num_frames: int = 8,
        resize_mode: str = "crop",
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resize_mode not in ("crop", "squash"):
            raise ValueError(f"resize_mode must be 'crop' or 'squash', got {resize_mode!r}")
        if image_size <= 0 or num_frames <= 0:
            raise ValueError(f"image_size and num_frames must be positive, got {image_size} and {num_frames}")
        self.image_size = int(image_size)
        self.num_frames = int(num_frames)
        self.resize_mode = resize_mode
        self.image_mean = list(image_mean) if image_mean is not None else [0.5, 0.5, 0.5]
        self.image_std = list(image_std) if image_std is not None else [0.5, 0.5, 0.5]

    @classmethod
    def from_model_config(cls, config, **kwargs) -> ICRewardProcessor:
        """The processor matching a reward model config (its backbone's normalisation, size and frame count)."""
        from .backbones import backbone_normalization

        mean, std = backbone_normalization(config.backbone_type, config.backbone_config)
        return cls(
            image_size=kwargs.pop("image_size", config.image_size),
            num_frames=kwargs.pop("num_frames", config.num_frames),
            image_mean=kwargs.pop("image_mean", mean),
            image_std=kwargs.pop("image_std", std),
            **kwargs,
        )

    # -- loading -------------------------------------------------------------------------------------------
    def load_video(self, video: Any) -> torch.Tensor:
        """Any supported video input -> uint8 ``(F, 3, H, W)`` with at most ``num_frames`` uniformly sampled frames."""
        from ..video import read_video, sample_frame_indices

        if isinstance(video, (str, Path)):
            return read_video(video, max_frames=self.num_frames)  # shorter clips keep all frames (padded)
        if isinstance(video, (list, tuple)):
            from PIL import Image

            if not video:
                raise ValueError("a video given as a list of frames must contain at least one frame")
            if all(isinstance(f, Image.Image) for f in video):
                video = np.stack([np.asarray(f.convert("RGB")) for f in video])
            else:
                video = torch.stack([torch.as_tensor(f) for f in video])
        if not isinstance(video, (torch.Tensor, np.ndarray)) or video.ndim != 4:
            shape = tuple(getattr(video, "shape", ()))
            raise ValueError(
                f"a video must be a path, a list of frames or a 4-d (F, 3, H, W) array; got {type(video).__name__} {shape}"
            )
        frames = _to_uint8_chw(video, "video")
        if frames.shape[0] == 0:
            raise ValueError("video has zero frames")
        if frames.shape[0] > self.num_frames:
            frames = frames[sample_frame_indices(frames.shape[0], self.num_frames)]
        return frames

    def load_reference(self, image: Any) -> torch.Tensor:
        """A path, PIL image, ``(3, H, W)`` tensor or ``(H, W, 3)`` array -> uint8 ``(3, H, W)``."""
        from PIL import Image

        from ..video import load_image

        if isinstance(image, (str, Path, Image.Image)):
            return load_image(image)
        if isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim == 3:
            return _to_uint8_chw(image, "reference image")
        shape = tuple(getattr(image, "shape", ()))
        raise ValueError(
            f"a reference image must be a path, a PIL image or a 3-d (3, H, W) array; got {type(image).__name__} {shape}"
        )

    # -- transforms ----------------------------------------------------------------------------------------
    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` -> float ``(N, 3, S, S)`` in [0, 1]."""
        x = images.float() / 255.0
        height, width = x.shape[-2:]
        size = self.image_size
        if self.resize_mode == "squash":
            return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(
                0, 1
            )
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        if new_h * new_w > MAX_RESIZE_FACTOR * size * size:
            # Extreme aspect ratio (a 1 x 100000 frame would ask for size x 3.2M pixels): crop the centred square
            # first, then resize it; the same view, with memory bounded by the output size.
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            x = x[..., top : top + side, left : left + side]
            return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(
                0, 1
            )
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return x[..., top : top + size, left : left + size].clamp(0, 1)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_mean, dtype=images.dtype).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=images.dtype).view(3, 1, 1)
        return (images - mean) / std

    def __call__(
        self, videos: Any, reference_images: Any, return_tensors: str | None = "pt", **kwargs
    ) -> BatchFeature:
        """Process one or a batch of (video, reference image) pairs; videos of different lengths are padded."""
        if is_single_video(videos):
            videos, reference_images = [videos], [reference_images]
        elif not isinstance(reference_images, (list, tuple)):
            reference_images = [reference_images]
        videos, reference_images = list(videos), list(reference_images)
        if len(videos) != len(reference_images):
            raise ValueError(
                f"got {len(reference_images)} reference images for {len(videos)} videos; expected one reference per video"
            )
        if not videos:
            raise ValueError("no videos to process")
        clips = [self.normalize(self.resize(self.load_video(v))) for v in videos]
        refs = torch.stack([self.normalize(self.resize(self.load_reference(r)[None]))[0] for r in reference_images])
        max_frames = max(c.shape[0] for c in clips)
        pixel_values = torch.zeros(len(clips), max_frames, 3, self.image_size, self.image_size)
        frame_mask = torch.zeros(len(clips), max_frames, dtype=torch.bool)
        for i, clip in enumerate(clips):
            pixel_values[i, : clip.shape[0]] = clip
            frame_mask[i, : clip.shape[0]] = True
        data = {"pixel_values": pixel_values, "frame_mask": frame_mask, "reference_pixel_values": refs}
        return BatchFeature(data=data, tensor_type=return_tensors)
