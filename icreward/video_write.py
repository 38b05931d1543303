"""Encoding videos atomically (:func:`write_video`, re-exported by :mod:`icreward.video`): container files through
PyAV, or folders of PNG frames."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from icreward.video_convert import to_uint8

logger = logging.getLogger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "check_positive_float", "write_video"]

PathLike = str | os.PathLike[str]

_MP4_FAMILY = frozenset({".mp4", ".m4v", ".mov"})
_DEFAULT_ENCODERS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".avi": "libx264",
    ".webm": "libvpx-vp9",
    ".gif": "gif",
}

VIDEO_EXTENSIONS: frozenset[str] = frozenset(_DEFAULT_ENCODERS)
"""Suffixes [`write_video`] can encode. [`read_video`] also tries FFmpeg on any other non-image file."""
# Encoders with a constant-quality `crf` option; others ignore `crf` and use their own rate-control defaults.
_CRF_ENCODERS = frozenset({"libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"})
# Encoders that accept odd frame sizes in 4:2:0 (the chroma plane is rounded up); libx264/libx265 reject them.
_ODD_SIZE_420_ENCODERS = frozenset({"libvpx-vp9", "libvpx", "libaom-av1"})
_FRAME_FILE_PATTERN = re.compile(r"frame_\d+\.png")


def check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}")
    return float(value)


def _frames_to_hwc_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """Validate ``(F, 3, H, W)`` frames and return them as a contiguous ``(F, H, W, 3)`` uint8 array."""
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"frames must be uint8, or floating with values in [0, 1]; got dtype {frames.dtype}")
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    elif isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
    else:
        raise TypeError(f"frames must be a torch.Tensor or numpy.ndarray, got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if frames.ndim != 4 or shape[1] != 3:
        hint = " (it looks channels-last: permute it to (F, C, H, W))" if frames.ndim == 4 and shape[-1] == 3 else ""
        raise ValueError(f"frames must have shape (frames, 3, height, width), got {shape}{hint}")
    if 0 in shape:
        raise ValueError(f"frames must be non-empty, got shape {shape}")
    if frames.is_floating_point():
        if not torch.isfinite(frames).all():
            raise ValueError("frames contain NaN or infinite values")
        frames = to_uint8(frames)
    elif frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, or floating with values in [0, 1]; got dtype {frames.dtype}")
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


def _choose_pixel_format(codec: av.codec.Codec, width: int, height: int) -> str:
    supported = [fmt.name for fmt in codec.video_formats or []]
    even = width % 2 == 0 and height % 2 == 0
    # yuv420p is what every player decodes; 4:2:0 needs even sizes in x264/x265, so odd sizes use yuv444p, which
    # keeps the exact size (and full chroma) at the cost of some hardware/browser players.
    preferred = ["yuv420p"] if even or codec.name in _ODD_SIZE_420_ENCODERS else []
    preferred += ["yuv444p", "rgb24"]
    for name in preferred:
        if name in supported:
            return name
    if not supported:
        raise ValueError(f"Encoder {codec.name!r} reports no supported pixel formats.")
    return supported[0]


def _quantize_to_pal8(rgb: np.ndarray) -> av.VideoFrame:
    # Per-frame adaptive 256-colour palette (median cut, no dithering: dithering adds noise that hurts round trips).
    # PyAV's own rgb24 -> pal8 conversion uses a fixed 3-3-2 palette, which bands badly.
    quantized = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colors = np.asarray(quantized.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # PyAV takes the palette as opaque ARGB
    palette[: len(colors), 1:] = colors
    return av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")


def _encode_container(path: Path, tmp_path: Path, frames: np.ndarray, fps: float, codec_name: str, crf: int) -> None:
    try:
        codec = av.codec.Codec(codec_name, "w")
    except av.codec.codec.UnknownCodecError as err:
        raise ValueError(f"Encoder {codec_name!r} is not available in this PyAV/FFmpeg build.") from err
    if codec.type != "video":
        raise ValueError(f"{codec_name!r} is a {codec.type} encoder, not a video encoder.")

    height, width = frames.shape[1:3]
    suffix = path.suffix.lower()
    pix_fmt = "pal8" if codec.name == "gif" else _choose_pixel_format(codec, width, height)
    if pix_fmt == "yuv444p" and codec.name in ("libx264", "libx265"):
        logger.info("'%s' is %dx%d (odd size): encoding yuv444p to keep the exact size.", path, width, height)

    options: dict[str, str] = {}
    if codec.name in _CRF_ENCODERS:
        options["crf"] = str(crf)
    if codec.name == "libvpx-vp9":
        # b=0 selects pure constant-quality mode; cpu-used 4 is libvpx's usual speed/quality trade-off.
        options.update({"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"})
    # Put the index first so the file plays while streaming; it also makes truncation detectable.
    container_options = {"movflags": "+faststart"} if suffix in _MP4_FAMILY else {}
    is_yuv = pix_fmt.startswith("yuv")

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(tmp_path), mode="w", options=container_options) as container:
        stream = container.add_stream(codec.name, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        if is_yuv:
            # Tag BT.709 limited range (and convert with it below) so players do not guess the matrix from the size.
            ctx = stream.codec_context
            ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # AVCOL_*_BT709
            ctx.color_range = 1  # AVCOL_RANGE_MPEG
        try:
            stream.codec_context.open()
        except av.error.FFmpegError as err:
            raise ValueError(
                f"Cannot open encoder {codec.name!r} for {width}x{height} {pix_fmt} at {fps} fps: {err}"
            ) from err
        for index, rgb in enumerate(frames):
            if codec.name == "gif":
                frame = _quantize_to_pal8(rgb)
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                if is_yuv:
                    frame = frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_frame_directory(path: Path, frames: np.ndarray) -> None:
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"Cannot write frames to '{path}': it exists and is not a directory.")
        foreign = [entry.name for entry in path.iterdir() if not _FRAME_FILE_PATTERN.fullmatch(entry.name)]
        if foreign:
            # Replacing the directory would delete these; refuse rather than destroy unrelated data.
            raise ValueError(
                f"Cannot write frames to '{path}': it holds files that are not frame_*.png ({', '.join(foreign[:3])})."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp_dir = path.with_name(f".{path.name}.{token}.tmp")
    tmp_dir.mkdir()
    try:
        for index, rgb in enumerate(frames):
            Image.fromarray(rgb).save(tmp_dir / f"frame_{index:05d}.png")
        if path.exists():
            # A directory cannot be swapped in one atomic step: move the old one aside first, then delete it.
            old_dir = path.with_name(f".{path.name}.{token}.old")
            os.replace(path, old_dir)
            os.replace(tmp_dir, path)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.replace(tmp_dir, path)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def _atomic_output_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it over ``path`` only if the block succeeds."""
    if path.is_dir():
        raise ValueError(f"Cannot write video '{path}': it is a directory.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: FFmpeg picks the muxer from it. Not `mkstemp`, which would create the file 0600.
    tmp_path = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_video(
    path: PathLike,
    frames: torch.Tensor | np.ndarray,
    *,
    fps: float = 8.0,
    codec: str | None = None,
    crf: int = 18,
) -> Path:
    """Encode frames to a video file, a GIF, or a directory of PNG frames.

    The output kind follows the suffix of ``path``:

    - ``.mp4`` / ``.m4v`` / ``.mov`` / ``.mkv`` / ``.avi``: H.264 (libx264) at constant quality ``crf``, yuv420p,
      tagged BT.709 limited range; MP4/MOV get the index at the front ("faststart"). Odd widths or heights, which
      4:2:0 H.264 cannot represent, are encoded yuv444p so the size is kept exactly (some browsers and hardware
      players do not play 4:4:4; pass even sizes for maximum compatibility).
    - ``.webm``: VP9 (libvpx-vp9) at constant quality ``crf``, yuv420p (odd sizes are fine).
    - ``.gif``: a 256-colour palette per frame (median cut, no dithering), looping forever. GIF delays are whole
      centiseconds, so the stored rate is only close to ``fps`` (8 fps alternates 120 ms and 130 ms frames).
    - no suffix: a directory of lossless ``frame_00000.png``, ``frame_00001.png``, ... (``fps`` is not stored). An
      existing directory is replaced only if it holds nothing but such frame files.

    The output is written to a hidden temporary file (or directory) next to ``path`` and moved into place at the end,
    so a crash or an error never leaves a partial file behind or damages an existing one.

    Args:
        path: Output path; its parent directories are created.
        frames: ``(frames, 3, height, width)`` RGB frames, ``uint8`` or floating in ``[0, 1]`` (clamped and rounded),
            as a torch tensor (any device) or numpy array.
        fps: Frame rate.
        codec: FFmpeg encoder name overriding the default for the suffix (e.g. ``"libx265"``, ``"mpeg4"``).
        crf: Constant rate factor (lower is better quality; 18 is visually lossless for H.264) for encoders that
            support it (libx264, libx265, libvpx-vp9, libsvtav1, libaom-av1); ignored otherwise.

    Returns:
        The output path.

    Raises:
        TypeError: If ``frames`` is not a tensor or array.
        ValueError: If the frames have the wrong shape, dtype or non-finite values, ``fps``/``crf``/``codec`` are
            invalid, the suffix is not supported, or the encoder rejects the frame size.
    """
    path = Path(os.fspath(path))
    array = _frames_to_hwc_uint8(frames)
    fps = check_positive_float("fps", fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
        raise ValueError(f"`crf` must be an integer in [0, 63], got {crf!r}")
    suffix = path.suffix.lower()

    if not suffix:
        if codec is not None:
            raise ValueError(f"`codec` does not apply to a frame directory ('{path}'); frames are written as PNG.")
        _write_frame_directory(path, array)
        return path
    if suffix not in VIDEO_EXTENSIONS:
        supported = ", ".join(sorted(VIDEO_EXTENSIONS))
        raise ValueError(f"Unsupported video suffix {path.suffix!r} for '{path}'; use one of {supported}, or none.")
    codec_name = codec or _DEFAULT_ENCODERS[suffix]
    if (suffix == ".gif") != (codec_name == "gif"):
        raise ValueError(f"The 'gif' encoder and the .gif suffix go together; got codec {codec_name!r} for '{path}'.")
    with _atomic_output_file(path) as tmp_path:
        _encode_container(path, tmp_path, array, fps, codec_name, crf)
    return path
