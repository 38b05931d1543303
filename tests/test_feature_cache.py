"""The persistent feature cache: a second encoding reads the disk instead of the backbone, with identical features."""

import shutil

import pytest
import torch

from icreward.models import ICRewardModel, ICRewardProcessor
from icreward.models.feature_cache import FeatureCache, default_feature_store
from icreward.testing.tiny_backbones import tiny_icreward_config
from icreward.trainers.reward_data import encode_dataset_features
from icreward.video import write_video


@pytest.fixture
def setup(tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    Image.fromarray(torch.randint(0, 255, (32, 32, 3), generator=gen, dtype=torch.uint8).numpy()).save(
        tmp_path / "ref.png"
    )
    rows = []
    for k in range(3):
        write_video(tmp_path / f"v{k}.mp4", torch.randint(0, 255, (4, 3, 32, 32), generator=gen, dtype=torch.uint8))
        rows.append({"reference": str(tmp_path / "ref.png"), "video": str(tmp_path / f"v{k}.mp4"), "score": 0.5})
    model = ICRewardModel(tiny_icreward_config())
    return tmp_path, rows, model, ICRewardProcessor.from_model_config(model.config)


def _features(dataset):
    return [(r["video__reference_features"], r["video__frame_features"]) for r in dataset.rows]


def test_second_encoding_hits_the_disk_and_gives_identical_features(setup, monkeypatch):
    root, rows, model, processor = setup
    first = FeatureCache(root / "cache")
    encoded = encode_dataset_features(model, rows, processor, store=first, show_progress=False)
    assert (first.writes, first.hits) == (3, 0)
    assert len(list((root / "cache").rglob("*.safetensors"))) == 3

    # A new process would start with an empty memory: a new FeatureCache on the same folder, and no backbone calls.
    def no_encoding(*args, **kwargs):
        raise AssertionError("the backbone ran although every video is cached")

    monkeypatch.setattr(model, "_encode_pair", no_encoding)
    second = FeatureCache(root / "cache")
    again = encode_dataset_features(model, rows, processor, store=second, show_progress=False)
    assert (second.hits, second.writes) == (3, 0)
    for (ref_a, frames_a), (ref_b, frames_b) in zip(_features(encoded), _features(again)):
        assert torch.equal(ref_a, ref_b) and torch.equal(frames_a, frames_b)


def test_addresses_follow_content_weights_and_preprocessing(setup):
    root, rows, model, processor = setup
    cache = FeatureCache(root / "cache")
    encode_dataset_features(model, rows[:1], processor, store=cache, show_progress=False)

    moved = dict(rows[0], video=str(root / "renamed.mp4"))  # same bytes under another name: a hit
    shutil.copy(rows[0]["video"], moved["video"])
    fresh = FeatureCache(root / "cache")
    encode_dataset_features(model, [moved], processor, store=fresh, show_progress=False)
    assert (fresh.hits, fresh.writes) == (1, 0)

    other_size = ICRewardProcessor.from_model_config(model.config, num_frames=2)  # other preprocessing: a miss
    fresh = FeatureCache(root / "cache")
    encode_dataset_features(model, rows[:1], other_size, store=fresh, show_progress=False)
    assert (fresh.hits, fresh.writes) == (0, 1)

    with torch.no_grad():  # other backbone weights: a miss
        next(model.backbone.parameters()).add_(1.0)
    fresh = FeatureCache(root / "cache")
    encode_dataset_features(model, rows[:1], processor, store=fresh, show_progress=False)
    assert (fresh.hits, fresh.writes) == (0, 1)


def test_environment_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("ICREWARD_FEATURE_CACHE", "0")
    assert type(default_feature_store()) is dict
    monkeypatch.setenv("ICREWARD_FEATURE_CACHE", str(tmp_path / "here"))
    store = default_feature_store()
    assert isinstance(store, FeatureCache) and store.cache_dir == tmp_path / "here"
