"""Hostile inputs: generated malformed files and tensors through the loaders and the reward models.

Every case must end in a *documented* exception type (``MediaReadError`` subclasses for media, ``ValueError`` /
``TypeError`` for bad arguments, ``OSError`` for a model directory without safetensors) or succeed: never a hang,
an error from deep inside torch/PyAV/PIL, or silent garbage (NaN scores).
"""

import collections
import io
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from icreward import ICRewardModel, MLPRewardModel
from icreward.testing import tiny_icreward_config, tiny_mlp_reward_config
from icreward.video import ImageReadError, MediaReadError, VideoReadError, load_image, read_video, write_video

DOCUMENTED = (MediaReadError, ValueError, TypeError)

# What the suite tried, per category (printed at the end of the session by the last test in this file).
TRIALS: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_trials():
    """After the module, print what the suite tried (``pytest -s`` shows it)."""
    yield
    print(f"\nhostile-input trials: {sum(TRIALS.values())} {dict(sorted(TRIALS.items()))}")


def _valid_mp4(path, frames=6):
    g = torch.Generator().manual_seed(0)
    return write_video(path, (torch.rand(frames, 3, 32, 32, generator=g) * 255).to(torch.uint8), fps=4)


def _malformed_video_files(root):
    """At least 40 malformed video inputs: garbage, truncations, empty files and folders, wrong kinds."""
    rng = random.Random(0)
    good = _valid_mp4(root / "good.mp4")
    data = good.read_bytes()
    cases = []
    for i, suffix in enumerate([".mp4", ".webm", ".gif", ".mkv", ".avi", ".mov"] * 3):
        p = root / f"garbage{i}{suffix}"
        p.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))))
        cases.append(p)
    for i, cut in enumerate([1, 8, 16, 32, 64, 128, 256, 512, len(data) // 4, len(data) // 2]):
        p = root / f"truncated{i}.mp4"
        p.write_bytes(data[:cut])
        cases.append(p)
    for i, suffix in enumerate([".mp4", ".gif", ".webm"]):
        p = root / f"empty{i}{suffix}"
        p.write_bytes(b"")
        cases.append(p)
    text = root / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    cases.append(text)
    png_as_mp4 = root / "image.mp4"
    Image.new("RGB", (8, 8)).save(png_as_mp4, format="PNG")
    cases.append(png_as_mp4)
    still = root / "still.png"
    Image.new("RGB", (8, 8)).save(still)
    cases.append(still)
    empty_dir = root / "empty_dir"
    empty_dir.mkdir()
    cases.append(empty_dir)
    junk_dir = root / "junk_dir"
    junk_dir.mkdir()
    (junk_dir / "notes.txt").write_text("no frames here")
    cases.append(junk_dir)
    mixed_dir = root / "mixed_sizes"
    mixed_dir.mkdir()
    Image.new("RGB", (8, 8)).save(mixed_dir / "frame_0.png")
    Image.new("RGB", (9, 8)).save(mixed_dir / "frame_1.png")
    cases.append(mixed_dir)
    corrupt_dir = root / "corrupt_frame"
    corrupt_dir.mkdir()
    Image.new("RGB", (8, 8)).save(corrupt_dir / "frame_0.png")
    (corrupt_dir / "frame_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cases.append(corrupt_dir)
    cases.append(root / "does_not_exist.mp4")
    # flipped bytes in the middle of a valid file
    for i in range(5):
        corrupted = bytearray(data)
        for _ in range(64):
            corrupted[rng.randrange(len(corrupted) // 3, len(corrupted))] ^= 0xFF
        p = root / f"bitflip{i}.mp4"
        p.write_bytes(bytes(corrupted))
        cases.append(p)
    return cases


def _odd_images(root):
    """Images of odd modes and broken image files."""
    arrays = {
        "RGBA": Image.fromarray(np.random.default_rng(0).integers(0, 255, (10, 12, 4), dtype=np.uint8), "RGBA"),
        "L": Image.fromarray(np.random.default_rng(1).integers(0, 255, (10, 12), dtype=np.uint8), "L"),
        "I;16": Image.fromarray(np.random.default_rng(2).integers(0, 65535, (10, 12), dtype=np.uint16)),
        "1": Image.new("1", (12, 10), 1),
        "P": Image.new("RGB", (12, 10), (10, 200, 30)).convert("P"),
        "CMYK": Image.new("CMYK", (12, 10), (0, 50, 100, 0)),
        "LA": Image.new("LA", (12, 10), (128, 64)),
    }
    paths = []
    for mode, image in arrays.items():
        p = root / f"mode_{mode.replace(';', '_')}.png" if mode != "CMYK" else root / "mode_cmyk.jpg"
        image.save(p)
        paths.append(("ok", p))
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    paths.append(("bad", bad))
    empty = root / "empty.jpg"
    empty.write_bytes(b"")
    paths.append(("bad", empty))
    paths.append(("bad", root / "missing.png"))
    return paths


def test_at_least_50_malformed_inputs_raise_only_documented_errors(tmp_path):
    videos = _malformed_video_files(tmp_path)
    images = _odd_images(tmp_path)
    assert len(videos) + len(images) >= 50
    for path in videos:
        # FFmpeg legitimately decodes damaged streams partially (bit flips, a cut after some frames): then the
        # result must still be a well-formed clip; everything else must raise the documented error.
        # (FFmpeg also sniffs content: a PNG named .mp4 is a valid one-frame clip.)
        may_decode = path.name.startswith("bitflip") or path.name in {"truncated8.mp4", "truncated9.mp4", "image.mp4"}
        try:
            frames = read_video(path, num_frames=4)
        except VideoReadError as err:
            assert path.name in str(err)  # the message names the file
            continue
        assert may_decode, f"{path.name} decoded without error"
        assert frames.dtype == torch.uint8 and frames.shape[1] == 3 and frames.shape[0] == 4
    for expected, path in images:
        if expected == "ok":
            image = load_image(path)
            assert image.dtype == torch.uint8 and image.shape[0] == 3
        else:
            with pytest.raises(ImageReadError) as info:
                load_image(path)
            assert path.name in str(info.value)


def test_16_bit_and_alpha_images_are_converted_not_mangled(tmp_path):
    array = np.full((4, 4), 65535, dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "white16.png")
    assert load_image(tmp_path / "white16.png").min().item() == 255
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> composited on white
    rgba.save(tmp_path / "transparent.png")
    assert load_image(tmp_path / "transparent.png")[:, 0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "cls,config_fn", [(ICRewardModel, tiny_icreward_config), (MLPRewardModel, tiny_mlp_reward_config)]
)
def test_reward_models_reject_hostile_tensors_and_never_return_nan(cls, config_fn):
    torch.manual_seed(0)
    model = cls(config_fn()).eval()
    good_v, good_r = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 32, 32)
    hostile = [
        dict(pixel_values=good_v[0], reference_pixel_values=good_r),  # 4-d video
        dict(pixel_values=good_v, reference_pixel_values=good_r[0]),  # 3-d reference
        dict(pixel_values=good_v[:, :, :1], reference_pixel_values=good_r),  # grayscale frames
        dict(pixel_values=torch.rand(2, 3, 4, 32, 32), reference_pixel_values=torch.rand(2, 4, 32, 32)),  # RGBA
        dict(pixel_values=good_v[:, :0], reference_pixel_values=good_r),  # zero frames
        dict(pixel_values=good_v, reference_pixel_values=good_r[:1]),  # mismatched batch
        dict(pixel_values=good_v, reference_pixel_values=good_r, frame_mask=torch.zeros(2, 3, dtype=torch.bool)),
        dict(pixel_values=good_v, reference_pixel_values=good_r, frame_mask=torch.ones(2, 4, dtype=torch.bool)),
        dict(pixel_values=None, reference_pixel_values=good_r),
        dict(frame_features=torch.rand(2, 3, 5), reference_features=None),
    ]
    for kwargs in hostile:
        with pytest.raises(DOCUMENTED):
            with torch.no_grad():
                model(**kwargs)
    # Non-finite or absurd pixels/features are refused by name, never turned into NaN scores.
    nan_v = good_v.clone()
    nan_v[0, 0, 0, 0, 0] = float("nan")
    inf_r = good_r.clone()
    inf_r[1, 2, 3, 4] = float("inf")
    tokens = cls is ICRewardModel
    feat_v = torch.rand(2, 3, 4, 16) if tokens else torch.rand(2, 3, 16)
    feat_r = torch.rand(2, 4, 16) if tokens else torch.rand(2, 16)
    non_finite = [
        ("pixel_values", dict(pixel_values=nan_v, reference_pixel_values=good_r)),
        ("reference_pixel_values", dict(pixel_values=good_v, reference_pixel_values=inf_r)),
        ("pixel_values", dict(pixel_values=torch.full_like(good_v, 1e30), reference_pixel_values=good_r)),
        ("frame_features", dict(frame_features=feat_v.clone().fill_(float("nan")), reference_features=feat_r)),
        ("frame_features", dict(frame_features=feat_v.clone().fill_(3e38), reference_features=feat_r)),
        ("reference_features", dict(frame_features=feat_v, reference_features=feat_r.clone().fill_(float("inf")))),
    ]
    for field, kwargs in non_finite:
        TRIALS["non-finite inputs"] += 1
        with pytest.raises(ValueError, match=field):
            with torch.no_grad():
                model(**kwargs)


def test_model_directory_without_safetensors_is_refused_without_unpickling(tmp_path):
    model = ICRewardModel(tiny_icreward_config())
    model.save_pretrained(tmp_path)
    # Replace the weights with a pickle that would execute code if it were ever unpickled.
    os.remove(tmp_path / "model.safetensors")

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    import pickle

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Exploit()}))
    from transformers import AutoModel

    with pytest.raises(OSError, match="safetensors"):
        AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors"):
        ICRewardModel.from_pretrained(tmp_path, use_safetensors=False)
    assert not (tmp_path / "pwned").exists()


def test_malformed_config_json_gives_a_clear_error(tmp_path):
    model = ICRewardModel(tiny_icreward_config())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["backbone_type"] = "not-a-backbone"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="backbone_type"):
        ICRewardModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises((OSError, ValueError)):
        ICRewardModel.from_pretrained(tmp_path)


def test_processor_rejects_hostile_python_inputs():
    processor = ICRewardModel(tiny_icreward_config()).get_processor()
    ref = torch.rand(3, 32, 32)
    cases = [
        dict(videos=[], reference_images=[]),
        dict(videos=[torch.rand(2, 3, 32, 32)], reference_images=[ref, ref]),
        dict(videos=[torch.rand(2, 2, 32, 32)], reference_images=[ref]),
        dict(videos=[torch.rand(2, 3, 32, 32)], reference_images=[torch.rand(2, 32, 32)]),
        dict(videos=[torch.zeros(2, 3, 32, 32, dtype=torch.int64)], reference_images=[ref]),
        dict(videos=[12345], reference_images=[ref]),
        dict(videos=[[]], reference_images=[ref]),
        dict(videos=[torch.rand(2, 3, 32, 32)], reference_images=[None]),
        dict(videos=[io.BytesIO(b"abc")], reference_images=[ref]),
    ]
    for kwargs in cases:
        with pytest.raises(DOCUMENTED):
            processor(**kwargs)


def _saved_tiny(tmp_path, cls=ICRewardModel, config_fn=tiny_icreward_config):
    torch.manual_seed(0)
    model = cls(config_fn())
    model.save_pretrained(tmp_path)
    return model


def test_damaged_checkpoints_are_refused_naming_the_folder(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _saved_tiny(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "config.json").read_text())
    bias = next(k for k in weights if k.startswith("head.") and k.endswith(".bias"))
    cases = []
    for i, (name, mutate) in enumerate(
        [
            ("missing head", lambda w: {k: v for k, v in w.items() if not k.startswith("head.")}),
            ("one tensor missing", lambda w: dict(list(w.items())[1:])),
            ("unexpected tensor", lambda w: {**w, "head.extra": torch.zeros(3)}),
            ("mismatched shape", lambda w: {k: (torch.zeros(7) if k == bias else v) for k, v in w.items()}),
        ]
    ):
        folder = tmp_path / f"damaged{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        save_file({k: v.contiguous() for k, v in mutate(weights).items()}, folder / "model.safetensors")
        cases.append((name, folder))
    for _name, folder in cases:
        TRIALS["damaged checkpoints"] += 1
        with pytest.raises(OSError, match=str(folder.name)):
            ICRewardModel.from_pretrained(folder)
    # The opt-out loads what is there.
    loaded = ICRewardModel.from_pretrained(cases[2][1], strict=False)
    assert torch.equal(loaded.state_dict()[bias], model.state_dict()[bias])
    # Wrong model_type / wrong class.
    for model_type in ("icreward_mlp", "bert"):
        TRIALS["damaged checkpoints"] += 1
        folder = tmp_path / f"type_{model_type}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        (folder / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes())
        with pytest.raises(ValueError, match="model_type"):
            ICRewardModel.from_pretrained(folder)
    TRIALS["damaged checkpoints"] += 1
    with pytest.raises((OSError, ValueError), match="model_type|icreward"):
        MLPRewardModel.from_pretrained(tmp_path)
    # A sound folder still loads to identical weights.
    reloaded = ICRewardModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize(
    "field,value",
    [
        ("head_num_layers", -1),
        ("head_num_heads", 0),
        ("head_hidden_size", "64"),
        ("max_frames", 0),
        ("head_dropout", 1.5),
        ("num_frames", True),
        ("head_weights", {"consistency": float("nan")}),
        ("head_weights", {"consistency": float("inf")}),
    ],
)
def test_invalid_config_fields_are_refused_by_name(field, value):
    TRIALS["invalid configs"] += 1
    kwargs = tiny_icreward_config().to_dict()
    kwargs[field] = value
    from icreward import ICRewardConfig

    with pytest.raises(ValueError, match=field):
        ICRewardConfig(**{k: v for k, v in kwargs.items() if k not in ("transformers_version",)})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_gives_finite_scores(dtype):
    TRIALS["half precision"] += 1
    torch.manual_seed(0)
    model = ICRewardModel(tiny_icreward_config()).eval().to(dtype)
    with torch.no_grad():
        scores = model(
            pixel_values=torch.rand(2, 3, 3, 32, 32, dtype=dtype),
            reference_pixel_values=torch.rand(2, 3, 32, 32, dtype=dtype),
        ).scores
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    score = model.score(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), torch.rand(3, 3, 32, 32))
    assert score.shape == () and torch.isfinite(score)


def test_resume_argument_and_incomplete_checkpoints(tmp_path):
    from icreward.trainers.checkpointing import (
        CHECKPOINT_COMPLETE_NAME,
        _manifest,
        parse_resume_from_checkpoint,
        verify_checkpoint,
    )

    for text, expected in [("True", True), ("true", True), ("False", None), ("", None)]:
        TRIALS["resume"] += 1
        assert parse_resume_from_checkpoint(text) is expected
    assert parse_resume_from_checkpoint(str(tmp_path)) == str(tmp_path)
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    for name, size in [("optimizer.pt", 40), ("scheduler.pt", 10), ("adapter_model.safetensors", 90)]:
        (ckpt / name).write_bytes(b"x" * size)
    (ckpt / CHECKPOINT_COMPLETE_NAME).write_text(json.dumps({"global_step": 2, "files": _manifest(str(ckpt))}))
    verify_checkpoint(str(ckpt))  # complete
    for name, damage in [
        ("optimizer.pt", lambda p: p.unlink()),
        ("scheduler.pt", lambda p: p.unlink()),
        ("adapter_model.safetensors", lambda p: p.write_bytes(b"x" * 60)),  # a tensor dropped
    ]:
        TRIALS["resume"] += 1
        backup = (ckpt / name).read_bytes()
        damage(ckpt / name)
        with pytest.raises(ValueError, match=name):
            verify_checkpoint(str(ckpt))
        (ckpt / name).write_bytes(backup)
    # A marker from before manifests: optimizer and scheduler are still required.
    TRIALS["resume"] += 1
    (ckpt / CHECKPOINT_COMPLETE_NAME).write_text(json.dumps({"global_step": 2}))
    (ckpt / "optimizer.pt").unlink()
    with pytest.raises(ValueError, match="optimizer.pt"):
        verify_checkpoint(str(ckpt))


@pytest.mark.parametrize(
    "shard", ["pytorch_model-00001.bin", "../elsewhere.safetensors", "/etc/passwd", "link.safetensors"]
)
def test_shard_index_names_only_safetensors_inside_the_folder(tmp_path, shard):
    TRIALS["shard index"] += 1
    folder = tmp_path / "model"
    _saved_tiny(folder)
    from safetensors.torch import load_file

    keys = list(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (folder / "link.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    index = {"metadata": {}, "weight_map": {k: shard for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for strict in (True, False):
        with pytest.raises(ValueError, match="model.safetensors.index.json"):
            ICRewardModel.from_pretrained(folder, strict=strict)


def test_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    TRIALS["resources"] += 1
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # a few KB on disk, 144M pixels decoded
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageReadError, match="bomb.png"):
        load_image(path)


@pytest.mark.parametrize("shape", [(4, 3, 1, 100000), (4, 3, 100000, 1), (4, 3, 2, 50000)])
def test_extreme_aspect_ratio_resize_is_bounded(shape, monkeypatch):
    TRIALS["resources"] += 1
    processor = ICRewardModel(tiny_icreward_config()).get_processor()
    requested = []
    interpolate = torch.nn.functional.interpolate

    def recording_interpolate(x, size=None, **kwargs):
        requested.append(x.shape[0] * x.shape[1] * size[0] * size[1])
        return interpolate(x, size=size, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", recording_interpolate)
    out = processor.resize(torch.zeros(shape, dtype=torch.uint8))
    assert out.shape == (4, 3, processor.image_size, processor.image_size)
    # The resize asks for a bounded multiple of what it returns (the old short-side scaling asked for ~size x N).
    from icreward.models.processing import MAX_RESIZE_FACTOR

    assert max(requested) <= MAX_RESIZE_FACTOR * out.numel()


@pytest.mark.parametrize("image_name", ["../../../secret.txt", "/etc/passwd", "sub/../../../secret.txt"])
def test_vbench_image_name_outside_the_image_folder_is_refused(tmp_path, image_name):
    TRIALS["outside its folder"] += 1
    from test_vbench import _load, vbench  # noqa: F401  (the fixture builds VBench's layout)

    from icreward.data.vbench import VBenchFormatError

    vb = vbench.__wrapped__(tmp_path, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    (vb["root"] / "secret.txt").write_text("secret")  # what ../../../ reaches from data/crop/1-1
    info = json.loads(vb["info_json"].read_text())
    info[0]["image_name"] = image_name
    vb["info_json"].write_text(json.dumps(info))
    results = json.loads(vb["eval_results"].read_text())  # results without image_path: nothing cross-checks it
    for entry in results["i2v_subject"][1]:
        entry.pop("image_path", None)
    vb["eval_results"].write_text(json.dumps(results))
    for on_missing in ("error", "skip"):
        with pytest.raises(VBenchFormatError, match="outside"):
            _load(vb, on_missing=on_missing)
