"""Tests for `icreward.video`: sampling, decoding, encoding round trips, image modes and error reporting."""

import dataclasses
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import icreward.video as video_module
import icreward.video_write as video_write_module
from icreward.video import (
    ImageReadError,
    MediaReadError,
    VideoInfo,
    VideoReadError,
    load_image,
    probe_video,
    read_video,
    read_video_with_info,
    sample_frame_indices,
    to_float,
    to_uint8,
    write_video,
)

NUM_FRAMES, HEIGHT, WIDTH = 12, 32, 48


def synthetic_video(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Smooth colour gradients with a square moving right 2 px per frame; every frame differs."""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    frames = torch.empty(num_frames, 3, height, width)
    for t in range(num_frames):
        frames[t, 0] = 0.2 + 0.6 * x
        frames[t, 1] = 0.2 + 0.6 * y
        frames[t, 2] = 0.3 + 0.4 * t / max(num_frames - 1, 1)
        frames[t, :, 10:20, 2 + 2 * t : 10 + 2 * t] = torch.tensor([0.9, 0.8, 0.3]).view(3, 1, 1)
    return to_uint8(frames)


def mean_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def leftover_temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return synthetic_video()


@pytest.fixture(scope="module")
def mp4_path(tmp_path_factory, video) -> Path:
    return write_video(tmp_path_factory.mktemp("mp4") / "clip.mp4", video, fps=8)


@pytest.fixture(scope="module")
def frame_dir(tmp_path_factory, video) -> Path:
    return write_video(tmp_path_factory.mktemp("dir") / "frames", video)


# ---------------------------------------------------------------------------------------------------------------------
# sample_frame_indices
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "num", "expected"),
    [
        (10, 4, [1, 3, 6, 8]),  # centres of 4 segments of 2.5 frames
        (12, 12, list(range(12))),
        (12, 1, [6]),
        (3, 6, [0, 0, 1, 1, 2, 2]),  # more than available: nearest frames repeated
        (1, 3, [0, 0, 0]),
    ],
)
def test_sample_by_count(total, num, expected):
    assert sample_frame_indices(total, num) == expected


def test_sample_by_count_is_evenly_spaced_over_clip():
    indices = sample_frame_indices(1000, 7)
    assert len(indices) == 7
    # Segment centres, floored: evenly spaced and symmetric about the middle up to that rounding.
    assert {b - a for a, b in zip(indices, indices[1:])} <= {142, 143}
    assert all(abs((999 - a) - b) <= 1 for a, b in zip(reversed(indices), indices))
    assert indices[0] == 71 and indices[-1] == 928


@pytest.mark.parametrize(
    ("total", "video_fps", "target_fps", "expected"),
    [
        (10, 30, 10, [0, 3, 6, 9]),
        (12, 8, 4, [0, 2, 4, 6, 8, 10]),
        (12, 8, 8, list(range(12))),
        (30, 29.97, 10, [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29]),  # 2.997-frame step
        (3, 10, 20, [0, 0, 1, 1, 2, 2]),  # upsampling repeats frames
        (5, 30, 1, [0]),  # clip shorter than one target period
    ],
)
def test_sample_by_fps(total, video_fps, target_fps, expected):
    assert sample_frame_indices(total, video_fps=video_fps, target_fps=target_fps) == expected


def test_sample_all_frames_and_max_frames():
    assert sample_frame_indices(5) == [0, 1, 2, 3, 4]
    # max_frames thins the sampling evenly over the whole clip instead of truncating it.
    assert sample_frame_indices(10, max_frames=3) == [1, 5, 8]
    # Thinning the 4-fps grid [0, 2, 4, 6, 8, 10] keeps the centres of 3 equal parts of it.
    assert sample_frame_indices(12, video_fps=8, target_fps=4, max_frames=3) == [2, 6, 10]
    assert sample_frame_indices(100, 8, max_frames=4) == sample_frame_indices(100, 4)
    assert sample_frame_indices(100, 3, max_frames=4) == sample_frame_indices(100, 3)


def test_sample_huge_request_capped_without_materialising():
    # 10**14 candidate frames before the cap: must be computed lazily, not built as a list.
    indices = sample_frame_indices(100, video_fps=1.0, target_fps=1e12, max_frames=4)
    assert indices == [12, 37, 62, 87]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_frames": 0, "num_frames": 4},
        {"total_frames": 10, "num_frames": 0},
        {"total_frames": 10, "num_frames": -2},
        {"total_frames": 10, "num_frames": 2.5},
        {"total_frames": 10, "num_frames": True},
        {"total_frames": 10, "num_frames": 4, "video_fps": 30, "target_fps": 10},
        {"total_frames": 10, "target_fps": 10},
        {"total_frames": 10, "video_fps": 0, "target_fps": 10},
        {"total_frames": 10, "video_fps": 30, "target_fps": 0},
        {"total_frames": 10, "video_fps": 30, "target_fps": float("nan")},
        {"total_frames": 10, "video_fps": float("inf"), "target_fps": 10},
        {"total_frames": 10, "max_frames": 0},
    ],
)
def test_sample_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_frame_indices(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------------


# Tolerances: mean absolute error on the 0..255 scale. H.264/VP9 at crf 18 lose a little to quantisation and 4:2:0
# chroma; GIF to the 256-colour palette; PNG folders are lossless.
@pytest.mark.parametrize(
    ("suffix", "tolerance"),
    [(".mp4", 3.0), (".mkv", 3.0), (".mov", 3.0), (".avi", 3.0), (".webm", 3.5), (".gif", 2.5), ("", 0.0)],
)
def test_round_trip(tmp_path, video, suffix, tolerance):
    if suffix == ".webm" and "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this PyAV/FFmpeg build has no libvpx-vp9 encoder")
    path = write_video(tmp_path / f"clip{suffix}", video, fps=8)
    assert path == tmp_path / f"clip{suffix}"

    frames, info = read_video_with_info(path)
    assert frames.dtype == torch.uint8
    assert frames.shape == video.shape
    assert frames.is_contiguous()
    assert info.num_frames == NUM_FRAMES and (info.width, info.height) == (WIDTH, HEIGHT)
    error = mean_abs_error(frames, video)
    assert error <= tolerance, f"mean abs error {error:.2f} > {tolerance}"
    if suffix:
        # GIF delays are whole centiseconds, so 8 fps is stored as alternating 120/130 ms frames.
        assert info.fps == pytest.approx(8.0, abs=0.5 if suffix == ".gif" else 1e-6)
        assert info.duration == pytest.approx(NUM_FRAMES / 8.0, abs=0.05)
    else:
        assert torch.equal(frames, video)
        assert (info.fps, info.duration) == (0.0, 0.0)
    assert probe_video(path) == info
    assert leftover_temp_files(tmp_path) == []


def test_mp4_pixel_format_and_colour_tags(tmp_path, video):
    even = write_video(tmp_path / "even.mp4", video)
    odd_video = synthetic_video(height=31, width=47)
    odd = write_video(tmp_path / "odd.mp4", odd_video)
    for path, expected_pix_fmt in [(even, "yuv420p"), (odd, "yuv444p")]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert stream.codec_context.pix_fmt == expected_pix_fmt
            frame = next(container.decode(stream))
            assert (frame.colorspace, frame.color_range) == (1, 1)  # BT.709, limited range
    # Odd sizes are kept exactly rather than padded or cropped.
    frames = read_video(odd)
    assert frames.shape == odd_video.shape
    assert mean_abs_error(frames, odd_video) < 3.0


def test_write_accepts_float_and_numpy(tmp_path, video):
    as_float = to_float(video)
    write_video(tmp_path / "float", as_float)
    write_video(tmp_path / "numpy", video.numpy())
    assert torch.equal(read_video(tmp_path / "float"), video)
    assert torch.equal(read_video(tmp_path / "numpy"), video)


def test_gif_written_by_pillow_is_read(tmp_path, video):
    images = [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in video]
    path = tmp_path / "pillow.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    frames = read_video(path)
    assert frames.shape == video.shape
    assert mean_abs_error(frames, video) < 4.0


# ---------------------------------------------------------------------------------------------------------------------
# Sampling while reading
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["mp4_path", "frame_dir"])
@pytest.mark.parametrize("num_frames", [1, 5, NUM_FRAMES, 20])
def test_read_by_count_matches_full_read(request, source, num_frames):
    path = request.getfixturevalue(source)
    full = read_video(path)
    frames = read_video(path, num_frames=num_frames)
    assert frames.shape == (num_frames, 3, HEIGHT, WIDTH)
    assert torch.equal(frames, full[sample_frame_indices(NUM_FRAMES, num_frames)])


def test_read_by_fps_matches_full_read(mp4_path):
    full = read_video(mp4_path)
    frames, info = read_video_with_info(mp4_path, fps=4)
    assert info.fps == 8.0
    assert torch.equal(frames, full[[0, 2, 4, 6, 8, 10]])
    capped = read_video(mp4_path, fps=4, max_frames=3)
    assert torch.equal(capped, full[[2, 6, 10]])
    assert torch.equal(read_video(mp4_path, max_frames=2), full[[3, 9]])


def test_read_resamples_when_container_overstates_frame_count(mp4_path, monkeypatch, caplog):
    # Trimmed or damaged files can declare more frames than they decode; sampling must use the real count.
    real_probe = video_module._probe_container
    monkeypatch.setattr(
        video_module, "_probe_container", lambda path: dataclasses.replace(real_probe(path), num_frames=20)
    )
    full = read_video(mp4_path)
    assert full.shape[0] == NUM_FRAMES
    frames, info = read_video_with_info(mp4_path, num_frames=4)
    assert torch.equal(frames, full[sample_frame_indices(NUM_FRAMES, 4)])
    assert info.num_frames == NUM_FRAMES and info.duration == pytest.approx(NUM_FRAMES / 8)
    assert "declares 20 frames but only 12" in caplog.text


def test_read_reports_oversized_requests_as_memory_error(mp4_path, monkeypatch):
    def failing_empty(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(torch, "empty", failing_empty)
    with pytest.raises(MemoryError, match="request fewer frames"):
        read_video(mp4_path, num_frames=10**6)


def test_frame_directory_rejects_fps_sampling(frame_dir):
    with pytest.raises(ValueError, match="no frame rate"):
        read_video(frame_dir, fps=4)


def test_read_invalid_sampling_arguments(mp4_path):
    with pytest.raises(ValueError, match="num_frames"):
        read_video(mp4_path, num_frames=0)
    with pytest.raises(ValueError, match="not both"):
        read_video(mp4_path, num_frames=2, fps=4)


def test_frame_directory_natural_sort(tmp_path):
    # Solid frames whose red value encodes the intended position; lexicographic order would put 10 before 2.
    for number in [1, 2, 10, 9, 11]:
        Image.new("RGB", (4, 2), (number * 10, 0, 0)).save(tmp_path / f"frame_{number}.png")
    Image.new("RGB", (4, 2), (255, 255, 255)).save(tmp_path / "._frame_0.png")  # hidden: ignored
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()

    frames = read_video(tmp_path)
    assert frames[:, 0, 0, 0].tolist() == [10, 20, 90, 100, 110]
    assert probe_video(tmp_path) == VideoInfo(num_frames=5, fps=0.0, width=4, height=2, duration=0.0)


def test_natural_sort_key():
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "a.png"]
    assert sorted(names, key=video_module._natural_key) == ["a.png", "IMG1.png", "img2.png", "img2b.png", "img10.png"]


def test_frame_directory_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "frame_0.jpg", exif=exif)
    frames, info = read_video_with_info(tmp_path)
    assert (info.width, info.height) == (2, 4)
    assert frames.shape == (1, 3, 4, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Read errors
# ---------------------------------------------------------------------------------------------------------------------


def _zero_frame_mkv(path: Path) -> Path:
    # A video stream that never receives a packet, muxed next to a short audio track.
    with av.open(str(path), "w") as container:
        video_stream = container.add_stream("libx264", rate=8)
        video_stream.width, video_stream.height, video_stream.pix_fmt = 48, 32, "yuv420p"
        audio_stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(audio_stream.encode(frame))
        container.mux(audio_stream.encode(None))
    return path


def _audio_only_mkv(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        audio_stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(audio_stream.encode(frame))
        container.mux(audio_stream.encode(None))
    return path


def _make_bad_source(kind: str, tmp_path: Path, mp4_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "missing.mp4"
    if kind == "empty":
        path = tmp_path / "empty.mp4"
        path.touch()
        return path
    if kind == "random_bytes":
        path = tmp_path / "random.mp4"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path
    if kind == "truncated_header":
        path = tmp_path / "truncated_header.mp4"
        path.write_bytes(mp4_path.read_bytes()[:100])
        return path
    if kind == "truncated_data":
        # The index is at the front (faststart), so the file opens but the frame data ends midway.
        path = tmp_path / "truncated_data.mp4"
        data = mp4_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    if kind == "zero_frames":
        return _zero_frame_mkv(tmp_path / "zero_frames.mkv")
    if kind == "audio_only":
        return _audio_only_mkv(tmp_path / "audio.mkv")
    if kind == "empty_directory":
        path = tmp_path / "empty_dir"
        path.mkdir()
        return path
    if kind == "directory_without_images":
        path = tmp_path / "no_images"
        path.mkdir()
        (path / "readme.txt").write_text("x")
        return path
    if kind == "still_image":
        path = tmp_path / "still.png"
        Image.new("RGB", (4, 4)).save(path)
        return path
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("empty", "file is empty"),
        ("random_bytes", "cannot decode"),
        ("truncated_header", "no video stream"),  # cut inside the index: the stream is never declared
        ("truncated_data", "cannot decode"),
        ("zero_frames", "no frames"),
        ("audio_only", "no video stream"),
        ("empty_directory", "no image files"),
        ("directory_without_images", "no image files"),
        ("still_image", "load_image"),
    ],
)
def test_read_errors_name_file_and_reason(tmp_path, mp4_path, kind, reason):
    path = _make_bad_source(kind, tmp_path, mp4_path)
    with pytest.raises(VideoReadError, match=reason) as excinfo:
        read_video(path)
    assert str(path) in str(excinfo.value)
    assert excinfo.value.path == str(path)
    if kind != "truncated_data":  # the index is intact, so only decoding notices
        with pytest.raises(VideoReadError) as excinfo:
            probe_video(path)
        assert str(path) in str(excinfo.value)


def test_corrupt_and_mismatched_frames_in_directory(tmp_path):
    Image.new("RGB", (4, 2)).save(tmp_path / "frame_0.png")
    (tmp_path / "frame_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(VideoReadError, match="cannot decode") as excinfo:
        read_video(tmp_path)
    assert "frame_1.png" in str(excinfo.value)

    Image.new("RGB", (6, 2)).save(tmp_path / "frame_1.png")
    with pytest.raises(VideoReadError, match="6x2 but the first frame") as excinfo:
        read_video(tmp_path)
    assert "frame_1.png" in str(excinfo.value)


def test_read_errors_are_value_errors_and_picklable(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        read_video(tmp_path / "missing.mp4")
    error = excinfo.value
    assert isinstance(error, MediaReadError)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is VideoReadError and str(restored) == str(error)


# ---------------------------------------------------------------------------------------------------------------------
# load_image
# ---------------------------------------------------------------------------------------------------------------------


def test_load_image_rgb_from_path_and_pil(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "rgb.png")
    expected = torch.from_numpy(array).permute(2, 0, 1)
    for source in [tmp_path / "rgb.png", str(tmp_path / "rgb.png"), Image.fromarray(array)]:
        image = load_image(source)
        assert image.dtype == torch.uint8 and image.shape == (3, 5, 7)
        assert torch.equal(image, expected)


def test_load_image_rgba_composites_or_drops_alpha():
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = [200, 100, 0, 255]  # opaque
    rgba[0, 1] = [200, 100, 0, 0]  # fully transparent
    rgba[0, 2] = [0, 0, 0, 128]  # half-transparent black
    image = Image.fromarray(rgba, mode="RGBA")

    on_white = load_image(image)[:, 0].T.tolist()
    assert on_white[0] == [200, 100, 0]
    assert on_white[1] == [255, 255, 255]
    assert all(abs(c - 127) <= 1 for c in on_white[2])
    assert load_image(image, background=(0, 0, 255))[:, 0, 1].tolist() == [0, 0, 255]
    assert load_image(image, background=None)[:, 0].T.tolist() == [[200, 100, 0], [200, 100, 0], [0, 0, 0]]


def test_load_image_grayscale_palette_and_cmyk():
    gray = Image.fromarray(np.array([[0, 128, 255]], np.uint8), mode="L")
    assert load_image(gray).tolist() == [[[0, 128, 255]]] * 3

    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    assert load_image(palette_image)[:, 0].T.tolist() == [[255, 0, 0], [0, 0, 255]]

    palette_image.info["transparency"] = 1  # index 1 transparent -> background
    assert load_image(palette_image)[:, 0].T.tolist() == [[255, 0, 0], [255, 255, 255]]

    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in naive CMYK
    assert load_image(cmyk)[:, 0, 0].tolist() == [255, 0, 0]


def test_load_image_16_bit_is_scaled(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    expected = [0, 1, 128, 255]  # v * 255 / 65535, rounded
    assert load_image(path)[0, 0].tolist() == expected
    assert load_image(Image.fromarray(values.astype(np.int32), mode="I"))[1, 0].tolist() == expected


def test_load_image_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").shape == (3, 4, 2)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("missing", "no such file"), ("empty", "file is empty"), ("corrupt", "cannot decode"), ("dir", "directory")],
)
def test_load_image_errors(tmp_path, kind, reason):
    path = tmp_path / "image.png"
    if kind == "empty":
        path.touch()
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif kind == "dir":
        path.mkdir()
    with pytest.raises(ImageReadError, match=reason) as excinfo:
        load_image(path)
    assert str(path) in str(excinfo.value)


def test_load_image_too_large(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 px > 2 * limit: Pillow's hard error
    with pytest.raises(ImageReadError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("mode", ["LA", "La", "RGBa", "PA"])
def test_load_image_other_alpha_modes(mode):
    # Fully transparent everywhere: every mode must composite to the background.
    image = Image.new("RGBA", (2, 1), (10, 20, 30, 0)).convert(mode) if mode != "La" else Image.new("La", (2, 1))
    assert load_image(image, background=(1, 2, 3))[:, 0, 0].tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------------
# to_float / to_uint8
# ---------------------------------------------------------------------------------------------------------------------


def test_float_uint8_conversions():
    levels = torch.arange(256, dtype=torch.uint8)
    as_float = to_float(levels)
    assert as_float.dtype == torch.float32 and as_float.min() == 0 and as_float.max() == 1
    assert torch.equal(to_uint8(as_float), levels)
    assert torch.equal(to_uint8(to_float(levels, dtype=torch.bfloat16)), levels)
    assert torch.equal(to_uint8(levels), levels)
    assert to_uint8(torch.tensor([-0.5, 0.5 / 255, 0.6 / 255, 2.0, float("nan")])).tolist() == [0, 0, 1, 255, 0]
    with pytest.raises(ValueError, match="uint8"):
        to_float(as_float)
    with pytest.raises(ValueError, match="floating"):
        to_uint8(levels.to(torch.int64))


def test_to_unit_float_accepts_uint8_and_unit_floats():
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(video_module.to_unit_float(levels), levels.float() / 255.0)  # the metrics' former copies
    doubles = torch.rand(3, dtype=torch.float64)
    assert video_module.to_unit_float(doubles).dtype == torch.float32
    assert video_module.to_unit_float(doubles, dtype=None) is doubles  # kept as given (FaceSim's behaviour)
    with pytest.raises(ValueError, match="videos must be uint8 or floating point"):
        video_module.to_unit_float(levels.to(torch.int32), "videos")


# ---------------------------------------------------------------------------------------------------------------------
# write_video validation and atomicity
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), {}, "channels-last"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), {}, r"\(frames, 3, height, width\)"),
        (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), {}, "non-empty"),
        (torch.zeros(2, 3, 0, 8, dtype=torch.uint8), {}, "non-empty"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), {}, "dtype"),
        (torch.full((2, 3, 8, 8), float("nan")), {}, "NaN"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {"fps": 0}, "fps"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {"crf": 99}, "crf"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {"codec": "no-such-encoder"}, "not available"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {"codec": "gif"}, "gif"),
    ],
)
def test_write_rejects_bad_input(tmp_path, frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "out.mp4", frames, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_bad_paths(tmp_path, video):
    with pytest.raises(ValueError, match="Unsupported video suffix"):
        write_video(tmp_path / "out.xyz", video)
    (tmp_path / "taken.mp4").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        write_video(tmp_path / "taken.mp4", video)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_video(tmp_path / "file", video)
    with pytest.raises(TypeError):
        write_video(tmp_path / "out.mp4", [[0]])


def test_failed_write_keeps_existing_file_and_leaves_no_temp(tmp_path, video, monkeypatch):
    path = write_video(tmp_path / "clip.gif", video)
    original = path.read_bytes()

    # Invalid frames fail before anything touches the disk.
    with pytest.raises(ValueError):
        write_video(path, video.permute(0, 2, 3, 1))
    assert path.read_bytes() == original

    # A crash midway through encoding, after packets have been written (the GIF encoder has no delay, unlike x264's
    # lookahead), must not reach the destination.
    real_quantize = video_write_module._quantize_to_pal8
    calls = {"n": 0}

    def crashing_quantize(rgb):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("simulated crash")
        return real_quantize(rgb)

    monkeypatch.setattr(video_write_module, "_quantize_to_pal8", crashing_quantize)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_video(path, torch.flip(video, dims=[0]))
    assert calls["n"] == 6
    assert path.read_bytes() == original
    assert leftover_temp_files(tmp_path) == []


def test_overwrite_replaces_file(tmp_path, video):
    path = write_video(tmp_path / "clip.gif", video)
    write_video(path, video[:3])
    assert read_video(path).shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif"]


def test_frame_directory_overwrite_rules(tmp_path, video):
    path = write_video(tmp_path / "frames", video)
    write_video(path, video[:2])  # a previous frame folder is replaced, stale frames included
    assert sorted(p.name for p in path.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    assert torch.equal(read_video(path), video[:2])

    (path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not frame_"):
        write_video(path, video)
    assert (path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_failed_frame_directory_write_keeps_existing_frames(tmp_path, video, monkeypatch):
    path = write_video(tmp_path / "frames", video)

    def crashing_fromarray(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Image, "fromarray", crashing_fromarray)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_video(path, video[:2])
    monkeypatch.undo()
    assert torch.equal(read_video(path), video)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
