"""Video and image IO: decode media to ``uint8`` RGB tensors, sample frames, and encode videos atomically.

Every reader returns ``torch.uint8`` tensors in RGB order, laid out ``(frames, 3, height, width)`` for videos and
``(3, height, width)`` for images. Use [`to_float`] / [`to_uint8`] to move between that and ``[0, 1]`` floats.

Supported sources:

- container files decoded with PyAV (FFmpeg): ``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.webm``, ``.avi``, ``.gif``, and
  any other file FFmpeg can demux. Whatever the pixel format (yuv420p, 10-bit, pal8, rgba, ...), frames are converted to
  ``rgb24`` honouring the stream's colour matrix and range tags; alpha is dropped.
- a directory of frames (``.png``, ``.jpg``, ``.jpeg``, ``.webp``, ``.bmp``), sorted naturally so ``frame_2`` comes
  before ``frame_10``. Hidden files and subdirectories are ignored. Frames are decoded like [`load_image`] (EXIF
  orientation applied, transparency composited over white) and must all have the same size. A frame directory has no
  frame rate.

Container rotation metadata (the display matrix of phone videos) is not applied: frames come out as stored.

Anything that cannot be read raises a [`MediaReadError`] subclass ([`VideoReadError`] or [`ImageReadError`]) whose
message names the file and the reason; FFmpeg and Pillow exceptions never escape the readers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageOps

from icreward.video_convert import to_float, to_uint8, to_unit_float
from icreward.video_write import VIDEO_EXTENSIONS, check_positive_float, write_video

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""Suffixes (case-insensitive) of the frame files picked up from a frame directory."""

# Still images that `read_video` refuses (pointing to `load_image`) instead of decoding them as 1-frame videos.
_STILL_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS | {".tif", ".tiff"}

# Errors PyAV raises for unreadable input: FFmpegError subclasses (some are also OSError/ValueError/EOFError), plus
# plain OSError / UnicodeDecodeError from the Python layer.
_AV_READ_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError, EOFError, ValueError)


def printable_text(text: str) -> str:
    """``text`` that can always be printed, logged or encoded as UTF-8: the undecodable bytes of a non-UTF-8 file
    name (which ``os.fsdecode`` turns into lone surrogates) become ``\\xff``-style escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class MediaReadError(ValueError):
    """A video or image could not be read.

    The message names the file and the reason; both are also available as the ``path`` and ``reason`` attributes.
    The message is always printable (:func:`printable_text`), even for a non-UTF-8 file name; ``path`` is kept
    as given.
    """

    _kind = "media"

    def __init__(self, path: PathLike | str, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        shown = os.fsdecode(self.path) if isinstance(self.path, bytes) else self.path
        super().__init__(printable_text(f"cannot read {self._kind} '{shown}': {reason}"))

    def __reduce__(self):
        # The default reduce would call `cls(message)`; keep the exception picklable for DataLoader workers.
        return (type(self), (self.path, self.reason))


class VideoReadError(MediaReadError):
    """A video (container file or frame directory) could not be read: missing, empty, corrupt or without frames."""

    _kind = "video"


class ImageReadError(MediaReadError):
    """An image could not be read: missing, empty, corrupt, too large or of an unsupported mode."""

    _kind = "image"


@dataclass(frozen=True)
class VideoInfo:
    """Properties of a video source.

    Args:
        num_frames: Number of frames (from the container index, or counted by demuxing when the container has none).
        fps: Average frame rate. ``0.0`` when the source has no frame rate (frame directories).
        width: Frame width in pixels.
        height: Frame height in pixels.
        duration: Duration in seconds. ``0.0`` when unknown (frame directories).
    """

    num_frames: int
    fps: float
    width: int
    height: int
    duration: float


# --------------------------------------------------------------------------------------------------------------------
# Frame sampling
# --------------------------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; `num_frames=True` is a bug, not a request for one frame.
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def _uniform_indices(total: int, count: int) -> list[int]:
    # Centre of each of `count` equal segments; integer arithmetic avoids float drift on long videos.
    return [((2 * i + 1) * total) // (2 * count) for i in range(count)]


def sample_frame_indices(
    total_frames: int,
    num_frames: int | None = None,
    *,
    video_fps: float | None = None,
    target_fps: float | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Choose which frames of a ``total_frames``-long video to keep.

    Three modes:

    - **by count** (``num_frames``): the centres of ``num_frames`` equal segments spanning the whole clip, so the
      samples are evenly spaced and symmetric about the middle. When ``num_frames > total_frames`` the nearest frame is
      repeated (e.g. 3 frames sampled to 6 gives ``[0, 0, 1, 1, 2, 2]``), so the result always has ``num_frames``
      entries.
    - **by frame rate** (``target_fps`` with the source's ``video_fps``): frame ``floor(i * video_fps / target_fps)``
      for ``i = 0, 1, ...`` while inside the clip, i.e. one frame every ``video_fps / target_fps`` frames starting at
      the first. A ``target_fps`` above ``video_fps`` repeats frames. This assumes a constant frame rate.
    - **all frames** (neither given): ``0 .. total_frames - 1``.

    ``max_frames`` caps the result by keeping ``max_frames`` evenly spaced entries of it (again segment centres), so
    the sampled span still covers the whole clip at a lower density rather than being truncated.

    Args:
        total_frames: Number of frames in the video (at least 1).
        num_frames: Number of frames to sample. Mutually exclusive with ``target_fps``.
        video_fps: Frame rate of the video; required with ``target_fps``.
        target_fps: Frame rate to sample at.
        max_frames: Upper bound on the number of returned indices.

    Returns:
        Non-decreasing frame indices in ``[0, total_frames)``.

    Raises:
        ValueError: If an argument is not positive, both ``num_frames`` and ``target_fps`` are given, or
            ``target_fps`` is given without a positive ``video_fps``.

    Example:
        ```python
        >>> sample_frame_indices(10, 4)
        [1, 3, 6, 8]
        >>> sample_frame_indices(10, video_fps=30, target_fps=10)
        [0, 3, 6, 9]
        ```
    """
    total_frames = _check_positive_int("total_frames", total_frames)
    if num_frames is not None and target_fps is not None:
        raise ValueError("Pass either `num_frames` or `target_fps`, not both.")
    if max_frames is not None:
        max_frames = _check_positive_int("max_frames", max_frames)

    if num_frames is not None:
        count = _check_positive_int("num_frames", num_frames)
        if max_frames is not None:
            # Same as thinning, but sampling the capped count directly keeps the result symmetric.
            count = min(count, max_frames)
        step = None
    elif target_fps is not None:
        target_fps = check_positive_float("target_fps", target_fps)
        if video_fps is None:
            raise ValueError(
                "Sampling at `target_fps` needs the video's frame rate `video_fps` "
                "(frame directories have none; sample them by `num_frames`)."
            )
        video_fps = check_positive_float("video_fps", video_fps)
        step = video_fps / target_fps
        # Number of i with i * step < total_frames; the epsilon absorbs float error when the ratio is exact.
        count = max(1, math.ceil(total_frames / step - 1e-9))
    else:
        count = total_frames
        step = 1.0

    # Positions (into the uncapped sequence) that survive `max_frames`; computed before materialising the sequence so
    # a huge uncapped request stays cheap.
    positions = _uniform_indices(count, max_frames) if max_frames is not None and count > max_frames else range(count)
    if step is None:
        return [((2 * p + 1) * total_frames) // (2 * count) for p in positions]
    return [min(int(math.floor(p * step + 1e-9)), total_frames - 1) for p in positions]


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> tuple[list[int | str], str]:
    # re.split with a capture group alternates text/number, so ints and strs never get compared to each other.
    parts = [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
    return parts, name


def _list_frame_files(directory: Path) -> list[Path]:
    files = [
        entry
        for entry in directory.iterdir()
        # Skip hidden files such as macOS "._frame_001.png" resource forks.
        if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()
    ]
    return sorted(files, key=lambda entry: _natural_key(entry.name))


def _check_source_path(path: PathLike, error_cls: type[MediaReadError], allow_directory: bool) -> Path:
    path = Path(os.fspath(path))
    if not path.exists():
        raise error_cls(path, "no such file or directory")
    if path.is_dir():
        if allow_directory:
            return path
        raise error_cls(path, "is a directory")
    if not path.is_file():
        raise error_cls(path, "not a regular file")
    if path.stat().st_size == 0:
        raise error_cls(path, "file is empty")
    return path


def _open_input_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(os.fspath(path), mode="r", metadata_errors="ignore")
    except _AV_READ_ERRORS as err:
        raise VideoReadError(path, f"cannot decode file: {err}") from err


def _select_video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    # Skip cover art (attached pictures) that some files carry as a one-frame video stream.
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoReadError(path, "contains no video stream")
    return streams[0]


def _count_packets(path: Path) -> int:
    # Containers such as Matroska/WebM store no frame count; demuxing (no decoding) counts one packet per frame.
    with _open_input_container(path) as container:
        stream = _select_video_stream(container, path)
        try:
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
        except _AV_READ_ERRORS as err:
            raise VideoReadError(path, f"cannot demux file: {err}") from err


def _probe_container(path: Path) -> VideoInfo:
    with _open_input_container(path) as container:
        stream = _select_video_stream(container, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        num_frames = stream.frames
        fps = 0.0
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate is not None and rate > 0:
                fps = float(rate)
                break
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and container.duration > 0:
            duration = container.duration / av.time_base
    if width <= 0 or height <= 0:
        raise VideoReadError(path, f"invalid frame size {width}x{height}")
    if num_frames <= 0:
        num_frames = _count_packets(path)
    if num_frames <= 0:
        raise VideoReadError(path, "no frames: the video stream is empty")
    if fps == 0.0 and duration > 0:
        fps = num_frames / duration
    if duration == 0.0 and fps > 0:
        duration = num_frames / fps
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height, duration=duration)


def _frame_files_or_raise(directory: Path) -> list[Path]:
    files = _list_frame_files(directory)
    if not files:
        raise VideoReadError(directory, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in directory")
    return files


def _probe_frame_directory(files: list[Path]) -> VideoInfo:
    first = files[0]
    try:
        with Image.open(first) as image:
            width, height = image.size
            # EXIF orientations 5-8 rotate by 90 degrees; frames are returned upright, like `load_image`.
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    except Exception as err:  # Pillow raises many unrelated types (OSError, SyntaxError, struct.error) on bad files
        raise VideoReadError(first, f"cannot decode frame: {err}") from err
    return VideoInfo(num_frames=len(files), fps=0.0, width=width, height=height, duration=0.0)


def probe_video(path: PathLike) -> VideoInfo:
    """Read the frame count, frame rate, size and duration of a video without decoding it.

    Args:
        path: A video file or a directory of frames (see the module docstring).

    Returns:
        The [`VideoInfo`] of the source.

    Raises:
        VideoReadError: If the path is missing, empty, a still image, not decodable, or holds no frames.
    """
    path = _check_video_path(path)
    if path.is_dir():
        return _probe_frame_directory(_frame_files_or_raise(path))
    return _probe_container(path)


def _check_video_path(path: PathLike) -> Path:
    path = _check_source_path(path, VideoReadError, allow_directory=True)
    if path.is_file() and path.suffix.lower() in _STILL_IMAGE_EXTENSIONS:
        raise VideoReadError(path, "this is a still image, not a video; use `load_image` to read it")
    return path


def _allocate_frames(path: Path, count: int, height: int, width: int) -> torch.Tensor:
    try:
        return torch.empty((count, 3, height, width), dtype=torch.uint8)
    except RuntimeError as err:  # the CPU allocator reports out-of-memory as RuntimeError
        gib = count * 3 * height * width / 2**30
        raise MemoryError(
            f"Reading {count} frames of {width}x{height} from '{path}' needs {gib:.1f} GiB; "
            "request fewer frames with `num_frames`, `fps` or `max_frames`."
        ) from err


def _slots_by_index(indices: list[int]) -> dict[int, list[int]]:
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(indices):
        slots.setdefault(index, []).append(slot)
    return slots


def _decode_container_frames(path: Path, indices: list[int], info: VideoInfo) -> torch.Tensor | int:
    """Decode the frames at ``indices``; return them, or the number of frames found if the stream ends too early."""
    out = _allocate_frames(path, len(indices), info.height, info.width)
    slots = _slots_by_index(indices)
    last = indices[-1]  # indices are non-decreasing
    position = -1
    with _open_input_container(path) as container:
        stream = _select_video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            for position, frame in enumerate(container.decode(stream)):
                targets = slots.get(position)
                if targets:
                    # Only needed frames are converted; the size arguments also absorb mid-stream resolution changes.
                    rgb = frame.to_ndarray(format="rgb24", width=info.width, height=info.height)
                    out[targets] = torch.from_numpy(rgb).permute(2, 0, 1)
                if position >= last:
                    # Inter-coded streams must be decoded in order, but nothing after the last needed frame is.
                    return out
        except _AV_READ_ERRORS as err:
            raise VideoReadError(path, f"cannot decode frame {position + 1}: {err}") from err
    return position + 1


def _read_container(
    path: Path, num_frames: int | None, fps: float | None, max_frames: int | None
) -> tuple[torch.Tensor, VideoInfo]:
    info = _probe_container(path)
    indices = sample_frame_indices(
        info.num_frames, num_frames, video_fps=info.fps, target_fps=fps, max_frames=max_frames
    )
    frames = _decode_container_frames(path, indices, info)
    if isinstance(frames, torch.Tensor):
        return frames, info

    # The container index promised more frames than the stream holds (e.g. trimmed or damaged files): resample
    # against the frames that really exist rather than silently returning a shorter or repeated tail.
    decoded = frames
    if decoded == 0:
        raise VideoReadError(path, "no frames decoded")
    logger.warning(
        "'%s' declares %d frames but only %d could be decoded; sampling from the decodable frames.",
        path,
        info.num_frames,
        decoded,
    )
    duration = decoded / info.fps if info.fps > 0 else info.duration
    info = dataclasses.replace(info, num_frames=decoded, duration=duration)
    indices = sample_frame_indices(decoded, num_frames, video_fps=info.fps, target_fps=fps, max_frames=max_frames)
    frames = _decode_container_frames(path, indices, info)
    if not isinstance(frames, torch.Tensor):
        raise VideoReadError(path, f"decoding is not repeatable: found {decoded} frames, then {frames}")
    return frames, info


def _read_frame_directory(
    path: Path, num_frames: int | None, fps: float | None, max_frames: int | None
) -> tuple[torch.Tensor, VideoInfo]:
    if fps is not None:
        raise ValueError(
            f"Cannot sample '{path}' at fps={fps}: a directory of frames has no frame rate; use `num_frames`."
        )
    files = _frame_files_or_raise(path)
    info = _probe_frame_directory(files)
    indices = sample_frame_indices(info.num_frames, num_frames, max_frames=max_frames)
    out = _allocate_frames(path, len(indices), info.height, info.width)
    for index, targets in _slots_by_index(indices).items():
        rgb = _load_image_file(files[index], VideoReadError, background=(255, 255, 255))
        if rgb.shape[:2] != (info.height, info.width):
            raise VideoReadError(
                files[index],
                f"frame is {rgb.shape[1]}x{rgb.shape[0]} but the first frame of the directory is "
                f"{info.width}x{info.height}",
            )
        out[targets] = torch.from_numpy(rgb).permute(2, 0, 1)
    return out, info


def read_video_with_info(
    path: PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> tuple[torch.Tensor, VideoInfo]:
    """Decode a video and also return the properties of its source.

    The returned [`VideoInfo`] describes the *source*, not the sampling. The frame rate of the returned frames is
    ``fps`` when sampling by ``fps`` (unless ``max_frames`` thinned them), and in general
    ``len(frames) / info.duration`` for sampling that spans the clip (``num_frames``, ``max_frames`` or all frames).

    Args:
        path: A video file or a directory of frames.
        num_frames: Sample this many evenly spaced frames (see [`sample_frame_indices`]).
        fps: Sample at this frame rate instead. Not available for frame directories, which have no frame rate.
        max_frames: Keep at most this many evenly spaced frames of the sampling.

    Returns:
        ``(frames, info)`` where ``frames`` is a ``uint8`` RGB tensor of shape ``(num_sampled, 3, height, width)``.

    Raises:
        VideoReadError: If the source is missing, empty, a still image, corrupt or holds no frames.
        ValueError: If the sampling arguments are invalid.
    """
    path = _check_video_path(path)
    if path.is_dir():
        return _read_frame_directory(path, num_frames, fps, max_frames)
    return _read_container(path, num_frames, fps, max_frames)


def read_video(
    path: PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> torch.Tensor:
    """Decode a video file or frame directory into a ``uint8`` RGB tensor of shape ``(frames, 3, height, width)``.

    Only the sampled frames are converted to RGB, and decoding stops after the last one. Without ``num_frames`` or
    ``fps`` every frame is returned (subject to ``max_frames``). See [`read_video_with_info`] for the arguments.

    Raises:
        VideoReadError: If the source is missing, empty, a still image, corrupt or holds no frames.
        ValueError: If the sampling arguments are invalid.

    Example:
        ```python
        >>> frames = read_video("clip.mp4", num_frames=16)  # doctest: +SKIP
        >>> frames.shape, frames.dtype  # doctest: +SKIP
        (torch.Size([16, 3, 480, 832]), torch.uint8)
        ```
    """
    frames, _ = read_video_with_info(path, num_frames=num_frames, fps=fps, max_frames=max_frames)
    return frames


# --------------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------------


def _pil_to_rgb_array(image: Image.Image, background: tuple[int, int, int] | None) -> np.ndarray:
    """Convert any Pillow image to an upright ``(H, W, 3)`` uint8 RGB array."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I"):
        # 16-bit ("I;16*") and 32-bit ("I") integer images hold 16-bit samples (that is how Pillow opens 16-bit PNG
        # and TIFF); Pillow's own conversion clips them at 255, so scale 0..65535 onto 0..255 with rounding.
        data = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = ((data * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        # Float images are on Pillow's 0..255 scale; round instead of Pillow's truncation.
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "La":
        image = image.convert("LA")  # Pillow has no direct premultiplied-La -> RGBA conversion
    has_alpha = "A" in image.getbands() or "a" in mode or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        if background is None:
            return np.array(rgba.convert("RGB"))
        backdrop = Image.new("RGBA", rgba.size, (*background, 255))
        return np.array(Image.alpha_composite(backdrop, rgba).convert("RGB"))
    # Handles L, P, 1, CMYK (naive conversion, embedded ICC profiles are not applied), YCbCr, LAB, HSV, ...
    return np.array(image.convert("RGB"))


MAX_DECODED_PIXELS = 64_000_000
"""Largest image (width x height) decoded from a file; checked from the header before decoding (8K UHD is 33M)."""


def _load_image_file(
    path: Path, error_cls: type[MediaReadError], background: tuple[int, int, int] | None
) -> np.ndarray:
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: refuse before decoding anything
            if width * height > MAX_DECODED_PIXELS:
                raise Image.DecompressionBombError(
                    f"{width}x{height} = {width * height} pixels is above icreward.video.MAX_DECODED_PIXELS "
                    f"({MAX_DECODED_PIXELS})"
                )
            image.load()
            return _pil_to_rgb_array(image, background)
    except Image.DecompressionBombError as err:
        raise error_cls(path, f"image is too large: {err}") from err
    except Exception as err:  # Pillow raises many unrelated types (OSError, SyntaxError, struct.error) on bad files
        raise error_cls(path, f"cannot decode image: {err}") from err


def load_image(
    image: PathLike | Image.Image, *, background: tuple[int, int, int] | None = (255, 255, 255)
) -> torch.Tensor:
    """Load an image as an upright ``uint8`` RGB tensor of shape ``(3, height, width)``.

    Mode handling:

    - EXIF orientation is applied, as in `diffusers.utils.load_image`.
    - Transparent images (RGBA, LA, palette or RGB with a transparency key) are composited over ``background``
      (white by default); ``background=None`` drops the alpha channel instead, which matches ``Image.convert("RGB")``.
    - 16-bit grayscale (``I;16``, and ``I``, read as 16-bit samples) is scaled to 8 bit, so 65535 becomes 255.
    - ``F`` (float) is read on Pillow's 0..255 scale, rounded and clipped.
    - Grayscale, palette, bilevel, CMYK and YCbCr images go through Pillow's RGB conversion (no ICC colour management).
    - For animated formats, the first frame is used.

    Args:
        image: A path to an image file, or a `PIL.Image.Image`.
        background: RGB colour that transparent pixels are composited over, or ``None`` to drop alpha.

    Returns:
        A ``torch.uint8`` tensor of shape ``(3, height, width)``.

    Raises:
        ImageReadError: If the file is missing, empty, corrupt, larger than Pillow's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``), or of a mode that cannot be converted to RGB.
    """
    if background is not None and (len(background) != 3 or not all(0 <= int(c) <= 255 for c in background)):
        raise ValueError(f"`background` must be an RGB triple of 0..255 values or None, got {background!r}")
    if isinstance(image, Image.Image):
        try:
            rgb = _pil_to_rgb_array(image, background)
        except Exception as err:  # same contract as for files: only ImageReadError leaves this function
            raise ImageReadError(f"<PIL.Image mode={image.mode} size={image.size}>", str(err)) from err
    else:
        path = _check_source_path(image, ImageReadError, allow_directory=False)
        rgb = _load_image_file(path, ImageReadError, background)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageReadError",
    "MediaReadError",
    "VideoInfo",
    "VideoReadError",
    "load_image",
    "probe_video",
    "read_video",
    "read_video_with_info",
    "sample_frame_indices",
    "to_float",
    "to_uint8",
    "to_unit_float",
    "write_video",
]
