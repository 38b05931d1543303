import json

import pytest
import torch
import torch.nn.functional as F

from icreward.evaluation.reward_hacking import (
    reward_hacking_markdown,
    reward_hacking_report,
    write_reward_hacking_report,
)
from icreward.metrics import CLIPSimilarity
from icreward.testing import tiny_clip_vision_config

SIZE, FRAMES = 48, 6


def _reference(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=generator)
    return (F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic").clamp(0, 1) * 255).round().to(torch.uint8)[0]


def _panning(reference: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """The reference panning 3 px per frame, with noise of amplitude ``noise``: a moving video."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.stack([torch.roll(reference, shifts=3 * t, dims=-1) for t in range(FRAMES)]).float()
    frames += noise * 255 * (torch.rand(frames.shape, generator=generator) - 0.5)
    return frames.round().clamp(0, 255).to(torch.uint8)


def _pixel_similarity(reference: torch.Tensor, video: torch.Tensor) -> float:
    """A reference-similarity training reward (what a copy-paste solution maximises)."""
    return 1.0 - float((video.float() - reference.float()).abs().mean()) / 255.0


@pytest.fixture(scope="module")
def clipsim() -> CLIPSimilarity:
    from transformers import CLIPVisionModelWithProjection

    config = tiny_clip_vision_config(image_size=32)
    config.pop("model_type")
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    return CLIPSimilarity(CLIPVisionModelWithProjection(CLIPVisionConfig(**config)))


@pytest.fixture(scope="module")
def videos():
    references = [_reference(i) for i in range(2)]
    base = [_panning(r, noise=0.4, seed=i) for i, r in enumerate(references)]
    frozen = [r[None].repeat(FRAMES, 1, 1, 1) for r in references]
    better = [_panning(r, noise=0.05, seed=10 + i) for i, r in enumerate(references)]
    return references, base, frozen, better


def test_frozen_copies_are_hacking_and_a_genuinely_better_model_is_not(videos, clipsim, tmp_path):
    references, base, frozen, better = videos
    kwargs = dict(training_reward=_pixel_similarity, independent_metrics={"clipsim": clipsim}, tolerance=0.01)

    hacked = reward_hacking_report(base, frozen, references, **kwargs)
    assert hacked["reward"]["improved_rate"] == 1.0  # the reward went up...
    assert hacked["motion"]["base_dynamic_rate"] == 1.0 and hacked["motion"]["tuned_dynamic_rate"] == 0.0
    assert hacked["motion"]["tuned_mean_magnitude"] < 1e-3 < hacked["motion"]["base_mean_magnitude"]
    assert hacked["hacking_rate"] == 1.0 and hacked["num_hacked"] == 2  # ...because motion collapsed
    assert all(v["froze"] and "motion froze" in v["reasons"] for v in hacked["videos"])
    # CLIPSim alone would not catch it: frozen copies of the reference are as similar to it as can be
    assert hacked["metrics"]["clipsim"]["degraded_rate"] == 0.0
    assert hacked["metrics"]["clipsim"]["tuned_mean"] == pytest.approx(1.0, abs=1e-5)

    fine = reward_hacking_report(base, better, references, **kwargs)
    assert fine["reward"]["improved_rate"] == 1.0
    assert fine["motion"]["tuned_dynamic_rate"] == 1.0
    assert fine["metrics"]["clipsim"]["mean_delta"] > 0
    assert fine["hacking_rate"] == 0.0 and not any(v["reasons"] for v in fine["videos"])

    markdown = reward_hacking_markdown(hacked)
    assert "**Reward-hacking rate: 100.0%** (2 of 2 videos)" in markdown
    assert "| 0 |" in markdown and "motion froze" in markdown
    paths = write_reward_hacking_report(hacked, tmp_path)
    assert json.loads(paths["json"].read_text())["hacking_rate"] == 1.0
    assert paths["markdown"].read_text() == markdown


def _tagged(tag: int) -> torch.Tensor:
    """A tiny still video whose first pixel carries an id, so that table-driven metrics can look it up."""
    video = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    video[0, 0, 0, 0] = tag
    return video


def _lookup(table):
    return lambda reference, video: table[int(video[0, 0, 0, 0])]


def test_definition_reward_up_and_metric_down_beyond_tolerance():
    # ids: base videos 0..4, fine-tuned videos 10..14
    reward = {0: 0.5, 10: 0.8, 1: 0.5, 11: 0.8, 2: 0.5, 12: 0.4, 3: 0.5, 13: 0.9, 4: 0.5, 14: 0.9}
    faces = {0: 0.7, 10: 0.6, 1: 0.7, 11: 0.695, 2: 0.7, 12: 0.2, 3: 0.7, 13: 0.9, 4: 0.7, 14: float("nan")}
    # lower is better for this one: a drift distance
    drift = {0: 1.0, 10: 1.0, 1: 1.0, 11: 1.0, 2: 1.0, 12: 1.0, 3: 1.0, 13: 1.5, 4: 1.0, 14: 1.0}
    report = reward_hacking_report(
        [_tagged(i) for i in range(5)],
        [_tagged(10 + i) for i in range(5)],
        [torch.zeros(3, 4, 4, dtype=torch.uint8)] * 5,
        training_reward=_lookup(reward),
        independent_metrics={"facesim_other": _lookup(faces), "drift": _lookup(drift)},
        motion=False,
        tolerance={"facesim_other": 0.01, "drift": 0.1},
        higher_is_better={"drift": False},
        video_ids=["up-down", "within-tol", "reward-down", "drift-up", "no-face"],
    )
    flags = {v["video_id"]: v["hacked"] for v in report["videos"]}
    assert flags == {"up-down": True, "within-tol": False, "reward-down": False, "drift-up": True, "no-face": False}
    assert report["hacking_rate"] == pytest.approx(2 / 5)
    assert report["videos"][0]["reasons"] == ["training_reward up, facesim_other down"]
    assert report["videos"][3]["reasons"] == ["training_reward up, drift down"]
    stats = report["metrics"]["facesim_other"]
    assert stats["degraded_rate"] == pytest.approx(2 / 5)  # "up-down" and "reward-down" (a drop without gain)
    assert stats["improved_reward_and_degraded_rate"] == pytest.approx(1 / 5)
    assert stats["num_undefined"] == 1 and report["videos"][4]["metrics"]["facesim_other"]["tuned"] is None
    assert report["motion"] is None
    json.dumps(report, allow_nan=False)  # NaN became None: valid JSON


def test_inputs_are_checked(videos):
    references, base, frozen, _ = videos
    with pytest.raises(ValueError, match="1 fine-tuned videos"):
        reward_hacking_report(base, frozen[:1], references, _pixel_similarity, {})
    with pytest.raises(ValueError, match="nothing can reveal hacking"):
        reward_hacking_report(base, frozen, references, _pixel_similarity, {}, motion=False)
    with pytest.raises(ValueError, match="unknown metrics"):
        reward_hacking_report(
            base, frozen, references, _pixel_similarity, {"a": _pixel_similarity}, tolerance={"b": 0.1}
        )
