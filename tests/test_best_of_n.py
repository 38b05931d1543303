import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from icreward.evaluation.best_of_n import (
    BestOfNReport,
    CandidateGroup,
    RandomSelector,
    RewardModelSelector,
    ScoreSelector,
    as_selector,
    generate_candidates,
    load_candidates,
    pipeline_generator,
    run_best_of_n,
)
from icreward.metrics import CLIPSimilarity, FrechetVideoDistance, InceptionI3d
from icreward.testing import tiny_clip_vision_config

NUM_FRAMES = 4
SIZE = 32


def _smooth_image(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=generator)
    return (F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear") * 255).round().to(torch.uint8)[0]


def _moving(reference: torch.Tensor, step: int, noise: float, seed: int) -> torch.Tensor:
    """The reference panning ``step`` px per frame, with additive noise of amplitude ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.stack([torch.roll(reference, shifts=step * t, dims=-1) for t in range(NUM_FRAMES)]).float()
    frames = frames + noise * 255 * (torch.rand(frames.shape, generator=generator) - 0.5)
    return frames.round().clamp(0, 255).to(torch.uint8)


def _static(reference: torch.Tensor) -> torch.Tensor:
    return reference[None].repeat(NUM_FRAMES, 1, 1, 1)


@pytest.fixture(scope="module")
def groups() -> list[CandidateGroup]:
    """Three images with four candidates each. The frozen copy of the reference sits at a different position in
    every group, and the oracle label (known by construction: minus the noise level) is highest elsewhere."""
    out = []
    for g in range(3):
        reference = _smooth_image(g)
        noises = [0.05, 0.3, 0.6]
        videos = [_moving(reference, 2, n, seed=10 * g + i) for i, n in enumerate(noises)]
        labels = [1.0 - n for n in noises]
        position = g % 4
        videos.insert(position, _static(reference))
        labels.insert(position, 0.1)  # frozen: a bad video by the label, though pixel-identical to the reference
        order = [(k + 2 * g) % 4 for k in range(4)]  # rotate: the copy and the best label move around
        out.append(
            CandidateGroup(
                sample_id=f"img{g}",
                reference=reference,
                videos=[videos[k] for k in order],
                labels=[labels[k] for k in order],
                prompt=f"prompt {g}",
            )
        )
    return out


@pytest.fixture(scope="module")
def clipsim() -> CLIPSimilarity:
    from transformers import CLIPConfig, CLIPModel

    vision = tiny_clip_vision_config(image_size=SIZE)
    vision.pop("model_type")
    text = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    return CLIPSimilarity(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)))


@pytest.fixture(scope="module")
def fvd() -> FrechetVideoDistance:
    torch.manual_seed(0)
    return FrechetVideoDistance(InceptionI3d().eval(), num_frames=NUM_FRAMES, image_size=SIZE)


def _closest_to_reference(reference: torch.Tensor, video: torch.Tensor) -> float:
    return -float((video.float() - reference.float()).abs().mean())


def test_oracle_picks_the_highest_label(groups):
    report = run_best_of_n(groups, {"oracle": "oracle", "random": "random"})
    expected = [max(range(4), key=lambda k: g.labels[k]) for g in groups]
    assert report.selections["oracle"] == expected
    assert report.summary["oracle"]["oracle_label"] == pytest.approx(sum(max(g.labels) for g in groups) / 3)
    assert report.all_candidates["oracle_label"] == pytest.approx(sum(sum(g.labels) for g in groups) / 12)
    assert report.selector_scores["oracle"][0] == groups[0].labels
    assert report.selector_scores["random"] is None


def test_random_selection_is_seeded_per_image():
    many = [
        CandidateGroup(f"s{i}", torch.zeros(3, 4, 4, dtype=torch.uint8), [f"v{k}.mp4" for k in range(5)])
        for i in range(30)
    ]

    def picks(selector, group_list):
        return [selector(g, None, g.videos).index for g in group_list]

    first = picks(RandomSelector(seed=3), many)
    assert first == picks(RandomSelector(seed=3), many)
    assert first != picks(RandomSelector(seed=4), many)
    assert len(set(first)) > 1  # not a constant pick
    # the pick of an image depends on the seed and its id only, not on which other images are evaluated
    assert picks(RandomSelector(seed=3), many[::-1][:7]) == first[::-1][:7]


def test_selector_preferring_the_reference_copy_gets_clipsim_one_and_zero_fvd(groups, clipsim, fvd):
    report = run_best_of_n(
        groups,
        {"random": "random", "copy": _closest_to_reference, "oracle": "oracle"},
        clipsim=clipsim,
        fvd=fvd,
    )
    frozen = [next(k for k, v in enumerate(g.videos) if torch.equal(v, _static(g.reference))) for g in groups]
    assert report.selections["copy"] == frozen
    assert report.summary["copy"]["clipsim"] == pytest.approx(1.0, abs=1e-5)
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in report.per_sample("clipsim")["copy"])
    # The default FVD reference set is the reference images as static videos: the frozen copies match it exactly.
    assert "static videos" in report.settings["fvd_reference"]
    assert report.summary["copy"]["fvd"] == pytest.approx(0.0, abs=1e-3)
    # random I3D weights give small logits, hence the small absolute scale
    assert report.summary["oracle"]["fvd"] > 1e-3 + 10 * report.summary["copy"]["fvd"]
    assert report.summary["oracle"]["clipsim"] < 1.0 - 1e-4
    assert report.higher_is_better == {"clipsim": True, "oracle_label": True, "fvd": False}


def test_fvd_against_real_videos(groups):
    # any (B, 3, T, H, W) -> (B, D) module can stand in for I3D; this one is cheap (mean colour per quadrant)
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d((1, 2, 2)), torch.nn.Flatten())
    fvd = FrechetVideoDistance(extractor, num_frames=NUM_FRAMES, image_size=SIZE, device="cpu")
    real = [g.videos[k] for g in groups for k in range(2)]
    report = run_best_of_n(groups, {"oracle": "oracle"}, fvd=fvd, real_videos=real)
    assert report.settings["fvd_reference"] == "6 real videos"
    features = fvd.extract_features([g.videos[k] for g, k in zip(groups, report.selections["oracle"])])
    from icreward.metrics import frechet_distance

    assert report.summary["oracle"]["fvd"] == pytest.approx(frechet_distance(fvd.extract_features(real), features))


def test_report_files_and_json_roundtrip(groups, clipsim, tmp_path):
    dynamic = {"motion": lambda r, v: float((v[1:].float() - v[:-1].float()).abs().mean())}
    report = run_best_of_n(
        groups,
        {"random": "random", "copy": _closest_to_reference, "oracle": "oracle"},
        clipsim=clipsim,
        metrics=dynamic,
        output_dir=tmp_path,
    )
    for name in ("report.json", "report.md", "per_sample_clipsim.png", "per_sample_motion.png", "summary.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "per_sample_clipsim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.summary["copy"]["motion"] == 0.0  # frozen copies do not move
    assert report.summary["oracle"]["motion"] > 0.0

    data = json.loads((tmp_path / "report.json").read_text())
    assert data["methods"] == ["random", "copy", "oracle"]
    assert [s["selections"]["oracle"] for s in data["samples"]] == report.selections["oracle"]
    loaded = BestOfNReport.from_json(tmp_path / "report.json")
    assert loaded.selections == report.selections
    assert loaded.summary.keys() == report.summary.keys()
    for method in report.methods:
        for metric, value in report.summary[method].items():
            assert loaded.summary[method][metric] == pytest.approx(value)
    assert loaded.to_markdown() == report.to_markdown()

    markdown = (tmp_path / "report.md").read_text()
    assert "| method | clipsim ↑ | oracle_label ↑ | motion ↑ |" in markdown
    assert f"| copy | {report.summary['copy']['clipsim']:.4f} |" in markdown
    assert "*all candidates*" in markdown
    assert report.agreement()["copy"]["copy"] == 1.0


def test_reward_model_selector_ranks_by_model_score(groups):
    from icreward.models import MLPRewardModel
    from icreward.testing import tiny_mlp_reward_config

    torch.manual_seed(0)
    model = MLPRewardModel(tiny_mlp_reward_config()).eval()
    selector = as_selector(model)
    assert isinstance(selector, RewardModelSelector)
    group = groups[0]
    selection = selector(group, group.load_reference(), group.load_videos())
    expected = model.score([group.reference] * 4, group.videos)
    assert selection.scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert selection.index == int(torch.argmax(expected))


def test_score_selector_direction_and_nan():
    group = CandidateGroup(
        "s",
        torch.zeros(3, 2, 2, dtype=torch.uint8),
        [torch.full((1, 3, 2, 2), v, dtype=torch.uint8) for v in (3, 9, 5)],
    )
    brightness = lambda r, v: float(v.float().mean())  # noqa: E731
    assert ScoreSelector(brightness)(group, None, group.videos).index == 1
    assert ScoreSelector(brightness, higher_is_better=False)(group, None, group.videos).index == 0
    nan_for_brightest = lambda r, v: math.nan if v.float().mean() > 8 else float(v.float().mean())  # noqa: E731
    assert ScoreSelector(nan_for_brightest)(group, None, group.videos).index == 2  # NaN never wins


def test_metric_values_from_numbers_tensors_and_results():
    import numpy as np

    from icreward.evaluation.best_of_n import metric_value
    from icreward.metrics import face_similarity

    assert metric_value(np.float64(0.5)) == 0.5 and metric_value(torch.tensor(0.25)) == 0.25
    embeddings = torch.eye(3)
    assert metric_value(face_similarity(embeddings[0], embeddings)) == pytest.approx(1 / 3)
    no_face = face_similarity(embeddings[0], embeddings, valid=torch.zeros(3, dtype=torch.bool))
    assert math.isnan(metric_value(no_face))  # undefined, not a fake 0
    with pytest.raises(ValueError, match="one value per video"):
        metric_value(torch.ones(2))
    with pytest.raises(TypeError, match="expected a number"):
        metric_value("0.5")


def test_generated_candidates_roundtrip_through_folders_and_datasets(tmp_path):
    calls = []

    def generate(image, prompt, num_videos, seed):
        calls.append((prompt, num_videos, seed))
        reference = torch.as_tensor(image)
        return [_moving(reference, 1 + k, 0.0, seed) for k in range(num_videos)]

    images = [_smooth_image(1), _smooth_image(2)]
    groups = generate_candidates(
        images, generate, prompts=["a cat", "a dog"], num_videos=3, seed=7, output_dir=tmp_path
    )
    assert calls == [("a cat", 3, 7), ("a dog", 3, 1007)]
    assert groups[0].video_paths == [str(tmp_path / "image_00000" / f"candidate_{k}.mp4") for k in range(3)]
    assert all(Path(v).exists() for g in groups for v in g.video_paths)
    (tmp_path / "image_00001" / "labels.json").write_text(json.dumps({f"candidate_{k}.mp4": k for k in range(3)}))
    with pytest.raises(ValueError, match="oracle selector needs labels, but sample 'image_00000'"):
        run_best_of_n(tmp_path, {"oracle": "oracle"})
    (tmp_path / "image_00000" / "labels.json").write_text(json.dumps({"candidate_0.mp4": 0.0}))
    with pytest.raises(ValueError, match=r"no label for \['candidate_1.mp4', 'candidate_2.mp4'\]"):
        load_candidates(tmp_path)
    (tmp_path / "image_00000" / "labels.json").write_text(json.dumps({f"candidate_{k}.mp4": -k for k in range(3)}))

    loaded = load_candidates(tmp_path)
    assert [g.sample_id for g in loaded] == ["image_00000", "image_00001"]
    assert loaded[0].prompt == "a cat" and loaded[1].labels == [0.0, 1.0, 2.0]
    assert loaded[1].video_ids == ["candidate_0", "candidate_1", "candidate_2"]
    assert torch.equal(loaded[0].load_reference(), images[0])
    assert loaded[0].load_videos()[0].shape == (NUM_FRAMES, 3, SIZE, SIZE)
    report = run_best_of_n(tmp_path, {"oracle": "oracle"})
    assert report.selections["oracle"] == [0, 2]

    # The same candidates as a datasets.Dataset, one row per video; no id column, so rows group by image path.
    rows = [
        {"image": g.reference, "prompt": g.prompt, "video": v, "score": float(s)}
        for g in loaded
        for v, s in zip(g.videos, g.labels)
    ]
    from_dataset = load_candidates(Dataset.from_list(rows), label_column="score")
    assert [len(g) for g in from_dataset] == [3, 3]
    assert [g.labels for g in from_dataset] == [g.labels for g in loaded]
    # PIL images without paths group by their pixels
    from PIL import Image

    pil_rows = [{**r, "image": Image.fromarray(images[i // 3].permute(1, 2, 0).numpy())} for i, r in enumerate(rows)]
    assert [len(g) for g in load_candidates(pil_rows)] == [3, 3]
    with pytest.raises(ValueError, match="label_column"):
        run_best_of_n(Dataset.from_list(rows), {"oracle": "oracle"})

    # Figure 4 follows Table 1: each image's two picks become a human-study pair (same picks are left out).
    report = run_best_of_n(tmp_path, {"oracle": "oracle", "first": lambda r, v: 0.0})
    pairs = report.human_study_pairs("oracle", "first")
    assert [p["sample_id"] for p in pairs] == ["image_00001"]
    assert pairs[0]["video_a"].endswith("candidate_2.mp4") and pairs[0]["video_b"].endswith("candidate_0.mp4")
    assert pairs[0]["reference"].endswith("reference.png") and pairs[0]["label_a"] == "oracle"


def test_pipeline_generator_calls_the_pipeline_once_per_seeded_video():
    class FakePipeline:
        def __init__(self):
            self.calls = []

        def __call__(self, **kwargs):
            self.calls.append(kwargs)
            seed = kwargs["generator"].initial_seed()
            frames = torch.full((1, kwargs["num_frames"], 3, kwargs["height"], kwargs["width"]), seed / 100.0)
            return type("Output", (), {"frames": frames})()

    pipe = FakePipeline()
    generate = pipeline_generator(pipe, num_frames=5, height=8, width=12, num_inference_steps=2)
    videos = generate(_smooth_image(0), "a cat", 3, 40)
    assert [v.shape for v in videos] == [(5, 3, 8, 12)] * 3
    assert [int(v[0, 0, 0, 0]) for v in videos] == [round(s / 100 * 255) for s in (40, 41, 42)]
    call = pipe.calls[0]
    assert call["output_type"] == "pt" and call["prompt"] == "a cat" and call["num_inference_steps"] == 2
    assert call["image"].size == (SIZE, SIZE)  # a PIL image, as diffusers expects
    with pytest.raises(ValueError, match="output_type"):
        pipeline_generator(pipe, num_frames=5, height=8, width=12, output_type="pil")


def test_clear_errors(groups):
    with pytest.raises(ValueError, match="unknown selector"):
        as_selector("best")
    unlabeled = [CandidateGroup("s", groups[0].reference, groups[0].videos)]
    with pytest.raises(ValueError, match="oracle selector needs labels"):
        run_best_of_n(unlabeled, {"oracle": "oracle"})
    with pytest.raises(ValueError, match="2 labels for 4"):
        CandidateGroup("s", groups[0].reference, groups[0].videos, labels=[1.0, 2.0])
    with pytest.raises(ValueError, match="higher_is_better names unknown"):
        run_best_of_n(groups, {"random": "random"}, higher_is_better={"clipsimm": True})
