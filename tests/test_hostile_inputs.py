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


# ---------------------------------------------------------------------------------------------------------------------
# The human study server and its files
# ---------------------------------------------------------------------------------------------------------------------


def _tiny_study_folder(root):
    """A study folder with one reference image, two short mp4 clips and a pairs file listing two pairs."""
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 120, 40)).save(root / "ref.png")
    g = torch.Generator().manual_seed(0)
    for name in ("a.mp4", "b.mp4"):
        write_video(root / name, (torch.rand(2, 3, 16, 16, generator=g) * 255).to(torch.uint8), fps=4)
    rows = [
        dict(sample_id=f"s{i}", reference="ref.png", video_a="a.mp4", video_b="b.mp4", label_a="A", label_b="B")
        for i in range(2)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "pairs.jsonl"


def _raw_request(port, data: bytes, timeout=5.0):
    """Send raw bytes, return the status code of the answer (None: the connection closed unanswered)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None


def _post_bytes(body: bytes, path="/api/answer"):
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def test_study_server_answers_absurd_numbers_and_nesting_with_400(tmp_path):
    from icreward.evaluation.human_study import HumanStudy

    study = HumanStudy(_tiny_study_folder(tmp_path / "study"), tmp_path / "results.jsonl")
    with study.serve(request_timeout=2.0) as server:
        media = study._trials_payload("r1")["trials"][0]["left"]
        big = "9" * 5000
        cases = {
            "5000-digit trial_index": _post_bytes(f'{{"rater_id": "r1", "trial_index": {big}}}'.encode()),
            "4000-digit response time": _post_bytes(
                f'{{"rater_id": "r1", "trial_index": 0, "choice": "left", "response_time_s": {"9" * 4000}}}'.encode()
            ),
            "30000-deep JSON": _post_bytes(b"[" * 30000 + b"]" * 30000),
            "30000-deep JSON in a field": _post_bytes(b'{"rater_id": ' + b"[" * 30000 + b"]" * 30000 + b"}"),
            "5000-digit Content-Length": (
                f"POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n{{}}".encode()
            ),
            "negative Content-Length": b"POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            "5000-digit Range": f"GET {media} HTTP/1.1\r\nHost: x\r\nRange: bytes={big}-\r\n\r\n".encode(),
            "5000-digit Range end": f"GET {media} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{big}\r\n\r\n".encode(),
            "boolean trial_index": _post_bytes(b'{"rater_id": "r1", "trial_index": true, "choice": "left"}'),
        }
        for name, data in cases.items():
            TRIALS["study server"] += 1
            assert _raw_request(server.port, data) == 400, name
        # The server is still healthy and recorded nothing.
        assert _raw_request(server.port, b"GET /api/config HTTP/1.1\r\nHost: x\r\n\r\n") == 200
    assert not (tmp_path / "results.jsonl").exists()


def test_study_server_bounds_threads_and_times_out_stalled_uploads(tmp_path):
    import socket
    import threading
    import time

    from icreward.evaluation.human_study import HumanStudy

    study = HumanStudy(_tiny_study_folder(tmp_path / "study"), tmp_path / "results.jsonl")
    threads_before = threading.active_count()
    with study.serve(request_timeout=0.5, max_connections=8) as server:
        stalled = []
        for _ in range(100):  # 100 uploads that announce 100 bytes and send 10
            TRIALS["study server"] += 1
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /api/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
            stalled.append(sock)
        time.sleep(0.2)
        assert server.active_connections <= 8
        assert threading.active_count() - threads_before <= 8 + 1  # workers + the accept loop
        statuses = []
        for sock in stalled:  # every connection is answered: 503 at once when no worker is free, else 408
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            statuses.append(int(answer.split(b" ", 2)[1]) if answer else None)
            sock.close()
        assert set(statuses) <= {408, 503} and statuses.count(408) >= 1 and statuses.count(503) >= 1, statuses
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.active_connections == 0  # the stalled ones were closed after the timeout
        # An idle keep-alive connection is closed after the timeout too, and a real request is served.
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        start = time.monotonic()
        assert idle.recv(1) == b"" and time.monotonic() - start < 3
        idle.close()
        assert _raw_request(server.port, b"GET /api/config HTTP/1.1\r\nHost: x\r\n\r\n") == 200
    assert not (tmp_path / "results.jsonl").exists()


def test_torn_last_line_is_skipped_reported_and_not_continued(tmp_path):
    from icreward.evaluation.human_study import HumanStudy, load_study_results, summarize_study

    pairs, results = _tiny_study_folder(tmp_path / "study"), tmp_path / "results.jsonl"
    study = HumanStudy(pairs, results)
    study.record_answer("r1", 0, "left")
    full = results.read_bytes()
    results.write_bytes(full + full[: len(full) // 2])  # a torn row: a killed writer or a full disk
    TRIALS["study files"] += 1
    restarted = HumanStudy(pairs, results)  # the restarted server reads the file...
    assert restarted.answered_pairs("r1") == {study.trials_for("r1")[0].pair_index}
    restarted.record_answer("r1", 1, "right")  # ... and its first answer is kept, on a line of its own
    TRIALS["study files"] += 1
    summary = summarize_study(results)
    assert summary["num_choices"] == 2 and summary["damaged_lines"] == [2]
    assert "damaged line" in __import__("icreward").evaluation.human_study.study_summary_markdown(summary)
    assert len(load_study_results(results)) == 2
    again = HumanStudy(pairs, results)
    assert again.answered_pairs("r1") == {0, 1} and again.damaged_lines == [2]
    # A file damaged by a writer that continued the torn line: the row appended onto it is recovered.
    TRIALS["study files"] += 1
    lines = results.read_bytes().split(b"\n")
    results.write_bytes(lines[0] + b"\n" + lines[1] + lines[2] + b"\n")
    summary = summarize_study(results)
    assert summary["num_choices"] == 2 and summary["damaged_lines"] == [2]
    assert HumanStudy(pairs, results).answered_pairs("r1") == {0, 1}
    # Lines that are not answers at all are skipped and counted, not fatal.
    TRIALS["study files"] += 1
    with results.open("a") as f:
        f.write('5\n{"kind": "choice", "rater_id": 3}\n' + "[" * 30000 + "\n")
    summary = summarize_study(results)
    assert summary["num_choices"] == 2 and summary["num_malformed_rows"] == 1 and len(summary["damaged_lines"]) == 3


def test_two_servers_on_one_results_file_never_both_accept_an_answer(tmp_path):
    import threading

    from icreward.evaluation.human_study import HumanStudy, summarize_study

    pairs, results = _tiny_study_folder(tmp_path / "study"), tmp_path / "results.jsonl"
    first, second = HumanStudy(pairs, results), HumanStudy(pairs, results)  # as two processes would
    outcomes = []

    def answer(study, trial):
        try:
            study.record_answer("r1", trial, "left")
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("refused")

    for trial in (0, 1):
        TRIALS["study files"] += 1
        threads = [threading.Thread(target=answer, args=(s, trial)) for s in (first, second) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert outcomes.count("ok") == 2 and outcomes.count("refused") == 14
    summary = summarize_study(results)
    assert summary["num_choices"] == 2 and summary["num_duplicates_dropped"] == 0
    # Each server learned of the other's answers.
    assert first.answered_pairs("r1") == second.answered_pairs("r1") == {0, 1}


def test_study_summary_markdown_escapes_comments_ids_and_labels():
    from icreward.evaluation.human_study import study_summary_markdown, summarize_study

    hostile = [
        "nice\n| forged | 99 | 100% | - |\n",
        "<script>alert(1)</script>",
        "a | b",
        "[link](javascript:alert(1)) **bold** `code`\u2028| forged | 1 |",
    ]
    rows = []
    for i, text in enumerate(hostile):
        TRIALS["markdown escaping"] += 1
        rows.append(
            dict(
                kind="choice",
                study_id="x",
                rater_id=f"r{i}<b>",
                pair_index=i,
                sample_id=f"<img src=x onerror={i}>",
                label_a="A|<i>",
                label_b="B",
                choice_side="left",
                chosen_label="A|<i>",
                rejected_label="B",
                comment=text,
            )  # fmt: skip
        )
    rows.append(dict(kind="feedback", study_id="x", rater_id="r9", comment="<script>x</script>\n| forged |"))
    summary = summarize_study(rows)
    text = study_summary_markdown(summary)
    assert "<script" not in text and "<img" not in text and "<b>" not in text and "<i>" not in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(hostile) + 1  # header, rule, one row per sample, overall: no forged row
    import re

    unescaped_pipes = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
    assert len(unescaped_pipes) == 1  # every row has the same number of cells
    assert all("forged" not in line for line in table)


def test_pairs_file_symlink_leading_outside_its_folder_is_refused(tmp_path):
    from icreward.evaluation.human_study import HumanStudy

    pairs = _tiny_study_folder(tmp_path / "study")
    secret = tmp_path / "secret.png"
    secret.write_text("root:x:0:0")
    (tmp_path / "study" / "leak.png").symlink_to(secret)
    (tmp_path / "study" / "media").symlink_to(tmp_path)  # a symlinked folder
    (tmp_path / "study" / "inside.png").symlink_to(tmp_path / "study" / "ref.png")  # stays inside: fine
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    for key, value in [
        ("reference", "leak.png"),
        ("reference", str(tmp_path / "study" / "leak.png")),
        ("reference", "media/secret.png"),
        ("video_a", "media/study/../secret.png"),
    ]:
        TRIALS["outside its folder"] += 1
        hostile = tmp_path / "study" / "hostile.jsonl"
        hostile.write_text(json.dumps({**rows[0], key: value}) + "\n")
        with pytest.raises(ValueError, match="hostile.jsonl.*outside"):
            HumanStudy(hostile, tmp_path / "results.jsonl")
    ok = tmp_path / "study" / "ok.jsonl"
    ok.write_text(json.dumps({**rows[0], "reference": "inside.png"}) + "\n")
    HumanStudy(ok, tmp_path / "results.jsonl")


def _exported_bytes(folder):
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file()) if folder.exists() else b""


def test_vbench_export_embeds_only_the_datasets_own_images_and_videos(tmp_path):
    from datasets import Image as ImageFeature
    from test_vbench import _load, vbench  # noqa: F401  (the fixture builds VBench's layout)

    from icreward.data.vbench import VBenchFormatError, export_vbench_dataset

    vb = vbench.__wrapped__(tmp_path, torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    dd = _load(vb)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"SECRET-BYTES " * 10)
    crop = next(p for p in vb["image_root"].rglob("*") if p.is_file() and p.suffix in (".jpg", ".png")).parent
    (crop / "leak.png").symlink_to(secret)
    real_image = next(p for p in crop.iterdir() if p.is_file() and not p.is_symlink())
    Image.open(real_image).save(tmp_path / "elsewhere.png")  # an image, but not of this dataset's folder
    fake_video = tmp_path / "fake.mp4"
    fake_video.write_bytes(b"SECRET-BYTES " * 10)

    def edit(reference=None, image_name=None, video=None):
        split = dd["train"].cast_column("reference", ImageFeature(decode=False))

        def change(row, index):
            if index == 0:
                if reference is not None:
                    row["reference"] = {"path": str(reference), "bytes": None}
                if image_name is not None:
                    row["image_name"] = image_name
                if video is not None:
                    row["video"] = str(video)
            return row

        split = split.map(change, with_indices=True).cast_column("reference", ImageFeature())
        return type(dd)({"train": split})

    cases = {  # what an old loader produced for a hostile image_name, and hand-edited datasets
        "image_name ../../../": dict(
            reference=crop / os.path.relpath(secret, crop), image_name=os.path.relpath(secret, crop)
        ),
        "absolute image_name": dict(reference=secret, image_name=str(secret)),
        "symlink in the image folder": dict(reference=crop / "leak.png", image_name="leak.png"),
        "reference is not its image_name": dict(reference=secret),
        "another folder": dict(reference=tmp_path / "elsewhere.png", image_name="elsewhere.png"),
        "video that is not a video": dict(video=fake_video),
        "video named otherwise": dict(video=secret),
    }
    for i, (name, change) in enumerate(cases.items()):
        TRIALS["outside its folder"] += 1
        out = tmp_path / f"export{i}"
        with pytest.raises(VBenchFormatError, match="row 0"):
            export_vbench_dataset(edit(**change), out)
        assert b"SECRET-BYTES" not in _exported_bytes(out), name
    # Names from folders reach the dataset card as text, not markup.
    TRIALS["markdown escaping"] += 1
    from icreward.data.vbench import build_vbench_dataset_card

    card = build_vbench_dataset_card(dd, source_models=["<script>x</script>\n| forged | 1 | 1 |", "opensora"])
    assert "<script" not in card.content and "\n| forged" not in card.content and "`opensora`" in card.content
    # The untouched dataset exports (its images are embedded), also with its folder named explicitly.
    export_vbench_dataset(dd, tmp_path / "ok", image_root=crop)
    assert (tmp_path / "ok" / "data" / "train-00000-of-00001.parquet").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# A sweep of bad configs and damaged checkpoints: each is refused with OSError/ValueError naming the file or field
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    ICRewardModel(tiny_icreward_config()).save_pretrained(root / "icreward")
    MLPRewardModel(tiny_mlp_reward_config()).save_pretrained(root / "mlp")
    return root


def _deep(depth):
    return json.loads("[" * depth + "]" * depth) if depth < 500 else None


_CLIP = {**__import__("icreward").testing.tiny_clip_vision_config()}
BAD_CONFIGS = [  # (model, field changed, value, field the message must name)
    *[("icreward", "head_hidden_size", v, "head_hidden_size") for v in (0, -4, "16", 16.0, None, 10**30, [16])],
    *[("icreward", "head_num_heads", v, "head_num_heads") for v in (0, -1, 3, 2.5)],
    *[("icreward", "head_num_layers", v, "head_num_layers") for v in (-1, 10**6, "1", 1e9)],
    *[("icreward", "head_dropout", v, "head_dropout") for v in (-0.1, 1.0, "0.1", float("nan"))],
    *[("icreward", "max_frames", v, "max_frames") for v in (0, 2**40, None)],
    *[("icreward", "num_frames", v, "num_frames") for v in (0, 1.5, "4", 10**7)],
    *[("icreward", "image_size", v, "image_size") for v in (-32, 10**9, "32")],
    *[("icreward", "heads", v, "heads") for v in ("consistency", [], [1, 2], ["a", "a"], {"a": 1})],
    *[("icreward", "head_weights", v, "head_weights") for v in ([1.0], "x", {"consistency": "1"}, {"x": 1})],
    *[("icreward", "backbone_type", v, "backbone_type") for v in (5, "nope", ["transformers"])],
    *[("icreward", "backbone_config", v, "backbone_config") for v in ("x", 5, [], {}, {"model_type": "nope"})],
    *[
        ("icreward", "backbone_config", {**_CLIP, k: v}, "backbone_config")
        for k, v in (
            ("hidden_size", 0),
            ("hidden_size", -8),
            ("num_attention_heads", 0),
            ("patch_size", 0),
            ("image_size", "x"),
        )
    ],
    # A consistent but huge backbone: built on the meta device, refused by its mismatched shapes, never allocated.
    ("icreward", "backbone_config", {**_CLIP, "hidden_size": 10**7}, "shapes"),  # fmt: skip
    ("icreward", "backbone_type", "open_clip", "backbone_config"),  # a CLIP config is no open_clip config
    *[("icreward", "freeze_backbone", v, "freeze_backbone") for v in ("yes", None, 2)],
    *[("icreward", "backbone_lora", v, "backbone_lora") for v in ("x", 5, {"r": -1}, {"target_modules": ["nope"]})],
    *[("icreward", "model_type", v, "model_type") for v in (None, 5, "bert", "icreward_mlp")],
    ("icreward", "deep", None, "config.json"),  # 30000-deep nesting in config.json
    *[("mlp", "hidden_sizes", v, "hidden_sizes") for v in (5, "x", [0], [10**6], [16] * 100, [None])],
    *[("mlp", "dropout", v, "dropout") for v in (1.0, -1, None)],
    *[("mlp", "model_type", v, "model_type") for v in ("icreward", None)],
]


@pytest.mark.parametrize("model,field,value,named", BAD_CONFIGS, ids=lambda x: str(x)[:24])
def test_bad_config_is_refused_naming_the_file_and_field(saved_tiny_models, tmp_path, model, field, value, named):
    TRIALS["bad configs"] += 1
    source = saved_tiny_models / model
    folder = tmp_path / "bad_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    config = json.loads((source / "config.json").read_text())
    if field == "deep":
        text = json.dumps(config)[:-1] + ', "nested": ' + "[" * 30000 + "]" * 30000 + "}"
    else:
        config[field] = value
        text = json.dumps(config)
    (folder / "config.json").write_text(text)
    cls = ICRewardModel if model == "icreward" else MLPRewardModel
    with pytest.raises((OSError, ValueError)) as info:
        cls.from_pretrained(folder)
    assert type(info.value) in (OSError, ValueError)  # not a subclass from deep inside a library
    message = str(info.value)
    assert "bad_model" in message and named in message, message


def _safetensors_bytes_cases(data: bytes):
    import struct

    length = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]

    def with_header(edit):
        encoded = json.dumps({k: (edit(v) if k != "__metadata__" else v) for k, v in header.items()}).encode()
        return struct.pack("<Q", len(encoded)) + encoded + body

    return {
        "empty": b"",
        "7 bytes": data[:7],
        "cut in the header": data[: 8 + length // 2],
        "cut in half": data[: len(data) // 2],
        "last byte missing": data[:-1],
        "header length 2**62": struct.pack("<Q", 2**62) + data[8:],
        "random bytes": bytes(random.Random(0).getrandbits(8) for _ in range(2000)),
        "header not JSON": struct.pack("<Q", 10) + b"not json!!" + body,
        "offsets out of the file": with_header(lambda v: {**v, "data_offsets": [0, 10**12]}),
        "dtype I64 for float data": with_header(lambda v: {**v, "dtype": "I64"}),
        "unknown dtype": with_header(lambda v: {**v, "dtype": "Q99"}),
        "shape 2**40 x 2**40": with_header(lambda v: {**v, "shape": [2**40, 2**40]}),
        "30000-deep header": struct.pack("<Q", 60000) + b"[" * 30000 + b"]" * 30000,
    }


def test_damaged_safetensors_files_are_refused_naming_the_file(saved_tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    source = saved_tiny_models / "icreward"
    data = (source / "model.safetensors").read_bytes()
    weights = load_file(source / "model.safetensors")
    key = next(k for k, v in weights.items() if k.startswith("head.") and v.dim() == 2)
    cases = {name: raw for name, raw in _safetensors_bytes_cases(data).items()}
    tensors = {
        "transposed tensor": {**weights, key: weights[key].t().contiguous()},
        "scalar tensor": {**weights, key: torch.tensor(1.0)},
        "integer tensor": {**weights, key: weights[key].to(torch.int64)},
        "NaN weights": {**weights, key: torch.full_like(weights[key], float("nan"))},
        "inf weights": {**weights, key: torch.full_like(weights[key], float("inf"))},
        "no tensors of the model": {"unrelated": torch.zeros(1)},
    }
    for i, (name, content) in enumerate([*cases.items(), *tensors.items()]):
        TRIALS["damaged checkpoints"] += 1
        folder = tmp_path / f"ckpt{i}"
        folder.mkdir()
        (folder / "config.json").write_bytes((source / "config.json").read_bytes())
        if isinstance(content, bytes):
            (folder / "model.safetensors").write_bytes(content)
        else:
            save_file(content, folder / "model.safetensors")
        with pytest.raises((OSError, ValueError)) as info:
            ICRewardModel.from_pretrained(folder)
        assert type(info.value) in (OSError, ValueError), (name, type(info.value))
        assert folder.name in str(info.value), (name, str(info.value))
    # fp16 weights are floating point and finite: they load (cast to the model's dtype) and score finitely.
    folder = tmp_path / "fp16"
    folder.mkdir()
    (folder / "config.json").write_bytes((source / "config.json").read_bytes())
    save_file({k: v.half() for k, v in weights.items()}, folder / "model.safetensors")
    with torch.no_grad():
        scores = ICRewardModel.from_pretrained(folder)(
            pixel_values=torch.rand(1, 2, 3, 32, 32), reference_pixel_values=torch.rand(1, 3, 32, 32)
        ).scores
    assert torch.isfinite(scores).all()
    # strict=False still loads non-finite weights for inspection (the opt-out).
    nan_folder = tmp_path / f"ckpt{len(cases) + 3}"
    assert torch.isnan(ICRewardModel.from_pretrained(nan_folder, strict=False).state_dict()[key]).all()


def test_non_utf8_file_names_give_printable_errors(saved_tiny_models, tmp_path):
    from icreward.video import load_image, read_video

    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xffname")
    os.mkdir(folder)
    with open(os.path.join(folder, "x.png"), "wb") as f:
        f.write(b"not a png")
    with open(os.path.join(folder, "v.mp4"), "wb") as f:
        f.write(b"not an mp4")
    os.mkdir(os.path.join(folder, "model"))
    with open(os.path.join(folder, "model", "config.json"), "wb") as f:
        f.write((saved_tiny_models / "icreward" / "config.json").read_bytes())
    with open(os.path.join(folder, "model", "model.safetensors"), "wb") as f:
        f.write(b"\x00" * 7)
    calls = [
        lambda: load_image(os.path.join(folder, "x.png")),
        lambda: load_image(os.path.join(folder, "missing\udcfe.png")),
        lambda: read_video(os.path.join(folder, "v.mp4")),
        lambda: ICRewardModel.from_pretrained(os.path.join(folder, "model")),
        lambda: ICRewardModel.from_pretrained(folder),  # no weights at all
    ]
    for call in calls:
        TRIALS["non-UTF-8 names"] += 1
        with pytest.raises((OSError, ValueError)) as info:
            call()
        message = str(info.value)
        message.encode("utf-8")  # no lone surrogate: printable, loggable
        assert "bad\\xffname" in message, message


# ---------------------------------------------------------------------------------------------------------------------
# No NaN out of the public metric functions and scoring entry points
# ---------------------------------------------------------------------------------------------------------------------


def _with(value, *shape):
    t = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    t.view(-1)[0] = value
    return t


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 3e38])
def test_metrics_refuse_non_finite_inputs_by_name(value):
    from icreward import metrics

    calls = {
        "ref_features": lambda: metrics.i2v_consistency_score(_with(value, 8), torch.rand(4, 8)),
        "frame_features": lambda: metrics.i2v_consistency_scores(torch.rand(2, 8), _with(value, 2, 4, 8)),
        "frame_features ": lambda: metrics.temporal_consistency(_with(value, 4, 8)),
        "frame_features  ": lambda: metrics.subject_consistency(_with(value, 2, 4, 8)),
        "reference": lambda: metrics.clip_similarity_from_embeddings(_with(value, 8), torch.rand(4, 8)),
        "frames": lambda: metrics.clip_similarity_from_embeddings(torch.rand(8), _with(value, 4, 8)),
        "reference_face_embedding": lambda: metrics.face_similarity(_with(value, 8), torch.rand(4, 8)),
        "frame_embeddings": lambda: metrics.face_similarity(torch.rand(8), _with(value, 4, 8)),
        "predictions": lambda: metrics.reward_regression_metrics(_with(value, 6), torch.rand(6)),
        "labels": lambda: metrics.pairwise_accuracy(torch.rand(6), _with(value, 6)),
        "chosen_scores": lambda: metrics.preference_pair_metrics(_with(value, 6), torch.rand(6)),
        "mu_a": lambda: metrics.frechet_distance_from_statistics(_with(value, 4), torch.eye(4), torch.zeros(4), torch.eye(4)),
        "features_a": lambda: metrics.frechet_distance(_with(value, 6, 4), torch.rand(6, 4)),
    }  # fmt: skip
    for name, call in calls.items():
        if value == 3e38 and name in ("mu_a", "features_a", "predictions", "labels", "chosen_scores"):
            continue  # finite float64 values: these compute finite results
        TRIALS["no NaN out"] += 1
        with pytest.raises(ValueError, match=name.strip()):
            call()
    # A frame marked faceless may hold garbage: it is excluded, not refused.
    garbage = _with(float("nan"), 4, 8)
    result = metrics.face_similarity(torch.rand(8), garbage, valid=torch.tensor([False, True, True, True]))
    assert torch.isfinite(result.mean)


@pytest.mark.parametrize(
    "cls,config_fn", [(ICRewardModel, tiny_icreward_config), (MLPRewardModel, tiny_mlp_reward_config)]
)
def test_score_refuses_non_finite_pixels_and_runs_in_half_precision(cls, config_fn):
    torch.manual_seed(0)
    model = cls(config_fn()).eval()
    video, reference = torch.rand(3, 3, 32, 32), torch.rand(3, 32, 32)
    for name, ref, vid in [
        ("videos", reference, _with(float("nan"), 3, 3, 32, 32)),
        ("references", _with(float("inf"), 3, 32, 32), video),
    ]:
        TRIALS["no NaN out"] += 1
        with pytest.raises(ValueError, match=name):  # the uint8 conversion would have made NaN a black pixel
            model.score(ref, vid)
    for dtype in (torch.float16, torch.bfloat16):
        TRIALS["half precision"] += 1
        half = cls(config_fn()).eval().to(dtype)
        score = half.score(reference, video)
        assert score.dtype == torch.float32 and torch.isfinite(score)
        with torch.no_grad():
            out = half(pixel_values=torch.rand(2, 3, 3, 32, 32, dtype=dtype),
                       reference_pixel_values=torch.rand(2, 3, 32, 32, dtype=dtype))  # fmt: skip
        assert torch.isfinite(out.scores).all() and torch.isfinite(out.logits).all()


def test_real_trainer_refuses_to_resume_from_a_damaged_checkpoint(tmp_path):
    from test_reward_trainer import _args, _model, tiny_data  # noqa: F401

    from icreward import RewardFeedbackTrainer, RewardModelTrainer, VideoDPOTrainer
    from icreward.trainers.checkpointing import CompleteCheckpointMixin
    from icreward.trainers.video_grpo_trainer import VideoGRPOTrainer

    # Every trainer resumes through the same mixin, so this end-to-end check stands for all of them.
    for trainer_cls in (RewardModelTrainer, VideoDPOTrainer, RewardFeedbackTrainer, VideoGRPOTrainer):
        assert issubclass(trainer_cls, CompleteCheckpointMixin), trainer_cls

    class _Factory:  # what the module-scoped fixture expects of tmp_path_factory
        def mktemp(self, name):
            (tmp_path / name).mkdir()
            return tmp_path / name

    data = tiny_data.__wrapped__(_Factory())
    args = _args(tmp_path / "run", num_train_epochs=1, per_device_train_batch_size=4, save_strategy="steps", save_steps=1, max_steps=1)  # fmt: skip
    RewardModelTrainer(model=_model("icreward"), args=args, train_dataset=data).train()
    checkpoint = tmp_path / "run" / "out" / "checkpoint-1"
    for name, damage in [
        ("optimizer.pt", lambda p: p.unlink()),
        ("scheduler.pt", lambda p: p.unlink()),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-4])),
    ]:
        TRIALS["resume"] += 1
        path = checkpoint / name
        backup = path.read_bytes()
        damage(path)
        trainer = RewardModelTrainer(model=_model("icreward"), args=args, train_dataset=data)
        for resume in (str(checkpoint), "True", True):
            with pytest.raises(ValueError, match=name):
                trainer.train(resume_from_checkpoint=resume)
        path.write_bytes(backup)
