"""Optional dependencies: each extra of pyproject.toml is known to icreward.extras, and a missing one is named."""

import sys
import tomllib
from pathlib import Path

import pytest

from icreward.extras import EXTRAS, MissingExtraError, require

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_every_feature_extra_is_declared_and_all_installs_them():
    declared = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    for extra in EXTRAS:
        assert set(declared[extra]) <= set(declared["all"]), extra
    core = " ".join(PYPROJECT["project"]["dependencies"])
    for name in ("matplotlib", "scikit-image", "facenet-pytorch", "comfyui", "open_clip"):
        assert name not in core, f"{name} should be an extra, not a core dependency"


def test_a_missing_module_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an uninstalled package looks like to import
    with pytest.raises(
        MissingExtraError, match=r'The best figures needs `matplotlib`.*pip install "icreward\[plots\]"'
    ):
        require("matplotlib", "plots", "The best figures")
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", "nope", "x")
    assert require("json", "plots", "x").__name__ == "json"


def test_reports_and_photographs_say_which_extra_is_missing(monkeypatch, tmp_path):
    from icreward.data import photos
    from icreward.evaluation.reward_comparison_report import write_comparison_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"icreward\[plots\]"):
        write_comparison_report({"models": {}}, tmp_path)
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    photos.load_photo.cache_clear()
    with pytest.raises(MissingExtraError, match=r"icreward\[data\]"):
        photos.load_photo(sorted(photos._PHOTO_LOADERS)[0])
    photos.load_photo.cache_clear()


def test_face_detection_and_open_clip_name_their_extras(monkeypatch):
    from icreward.metrics.clipsim import CLIPSimilarity
    from icreward.rewards.face_alignment import MTCNNFaceDetector

    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    with pytest.raises(MissingExtraError, match=r"icreward\[face\]"):
        MTCNNFaceDetector()
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingExtraError, match=r"icreward\[clip\]"):
        CLIPSimilarity.from_open_clip("ViT-B-32")
