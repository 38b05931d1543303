import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets

from icreward.cli.stress_suite import main as stress_suite_main
from icreward.data import stress_suite as ss
from icreward.data.photos import DEFAULT_SOURCES, PHOTO_SOURCES, load_source_image
from icreward.video import read_video

# Three sources from three different photographs: one per split.
TINY = dict(
    sources=["chelsea", "coffee", "rocket"],
    severities=(0.5, 1.0),
    consistent_per_source=3,
    image_size=32,
    num_frames=4,
    fps=4.0,
)
# Even smaller, for tests that build several times.
MINI = dict(TINY, perturbations=["blur_noise"], severities=(1.0,), consistent_per_source=1)


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("stress") / "suite"
    ss.build_stress_suite(path, seed=0, **TINY)
    return path


@pytest.fixture(scope="module")
def suite(suite_dir):
    return ss.load_stress_suite(suite_dir)


@pytest.fixture(scope="module")
def all_rows(suite):
    return concatenate_datasets([suite[split] for split in suite])


def _columns(dataset, *names):
    table = dataset.select_columns(list(names))
    return [dict(zip(names, values)) for values in zip(*(table[name] for name in names))]


# ---------------------------------------------------------------------------------------------- photographs


def test_default_sources_are_bundled_colour_photographs():
    assert len(DEFAULT_SOURCES) >= 10
    assert len({PHOTO_SOURCES[s].photo for s in DEFAULT_SOURCES}) >= 7
    for source_id in DEFAULT_SOURCES:
        source = PHOTO_SOURCES[source_id]
        assert source.license and source.credit and not source.grayscale
        image = load_source_image(source_id, 24)
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8
        # Colour photographs: the channels really differ somewhere.
        assert np.abs(image[..., 0].astype(int) - image[..., 2].astype(int)).max() > 20


def test_derived_crops_of_one_photograph_share_a_split():
    for seed in range(5):
        splits = ss.split_sources(DEFAULT_SOURCES, seed=seed)
        assert sorted(s for members in splits.values() for s in members) == sorted(DEFAULT_SOURCES)
        photo_split = {}
        for split, members in splits.items():
            assert members, split
            for source in members:
                assert photo_split.setdefault(PHOTO_SOURCES[source].photo, split) == split
    with pytest.raises(ValueError, match="both"):
        ss.build_stress_suite("unused", splits={"train": ["hubble_pair"], "test": ["hubble_spiral"]})


# ---------------------------------------------------------------------------------------------- generator


def _generate(seed):
    return ss.generate_source_videos(
        "coffee", seed=seed, image_size=32, num_frames=4, consistent_per_source=2, severities=(1.0,)
    )


def test_generation_is_deterministic_per_seed():
    reference_a, videos_a = _generate(seed=0)
    reference_b, videos_b = _generate(seed=0)
    _, videos_c = _generate(seed=1)
    assert torch.equal(reference_a, reference_b)
    assert [v.perturbation for v in videos_a] == ["none", "none", *ss.PERTURBATIONS]
    for a, b in zip(videos_a, videos_b):
        assert a.frames.dtype == torch.uint8 and a.frames.shape == (4, 3, 32, 32)
        assert torch.equal(a.frames, b.frames)
        assert (a.motion, a.camera, a.score) == (b.motion, b.camera, b.score)
    assert any(not torch.equal(a.frames, c.frames) for a, c in zip(videos_a, videos_c))


def test_first_frame_is_the_reference_and_later_frames_move():
    reference, videos = _generate(seed=0)
    for video in videos:
        assert (video.frames[0].int() - reference.int()).abs().max() <= 1, video
    # A large camera move makes the last frame far from the reference even without any perturbation.
    canvas = ss.make_canvas(load_source_image("coffee"), 32)
    pan = ss.generate_stress_video(canvas, image_size=32, motion_level="large", camera="pan", num_frames=4, seed=3)
    assert pan.perturbation == "none" and pan.score == 1.0 and pan.motion_level == "large"
    assert 0.2 <= pan.motion <= 0.3 + 1e-6
    assert (pan.frames[-1].float() - reference.float()).abs().mean() > 10


def test_make_canvas_accepts_any_photograph():
    image = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    canvas = ss.make_canvas(image, 16)
    assert canvas.shape == (3, 28, 28) and canvas.dtype == torch.float32
    video = ss.generate_stress_video(canvas, image_size=16, perturbation="color_drift", severity=0.5, seed=0)
    assert video.frames.shape == (8, 3, 16, 16) and video.score == pytest.approx(1 - 0.5 * 0.7)
    with pytest.raises(ValueError, match="canvas"):
        ss.generate_stress_video(canvas, image_size=32)
    with pytest.raises(ValueError, match="even"):
        ss.make_canvas(image, 15)


def test_score_formula_is_strictly_monotone_in_severity():
    severities = np.linspace(0.0, 1.0, 11)
    for perturbation in ss.PERTURBATIONS:
        scores = [ss.perturbation_score(perturbation, s) for s in severities]
        assert scores[0] == 1.0
        assert all(a > b for a, b in zip(scores, scores[1:])), perturbation
        assert scores[-1] == pytest.approx(1 - ss.MAX_SCORE_DROP[perturbation])
    assert ss.perturbation_score("none", 0.0) == 1.0
    with pytest.raises(ValueError):
        ss.perturbation_score("none", 0.5)
    with pytest.raises(ValueError):
        ss.perturbation_score("blur_noise", 1.5)
    with pytest.raises(ValueError, match="Unknown perturbation"):
        ss.perturbation_score("melting", 0.5)


# ---------------------------------------------------------------------------------------------- built suite


def test_metadata_schema(suite, suite_dir):
    assert set(suite) == {"train", "validation", "test"}
    for split, dataset in suite.items():
        assert dataset.features == ss.STRESS_SUITE_FEATURES
        assert set(dataset["split"]) == {split}
    row = suite["train"][0]
    assert row["reference"].size == (32, 32)
    assert Path(row["video"]).is_absolute() and row["video"].endswith(".mp4")
    assert read_video(row["video"]).shape == (4, 3, 32, 32)

    lines = (suite_dir / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 3 * (3 + 7 * 2) == sum(len(d) for d in suite.values())
    record = json.loads(lines[0])
    assert set(record) == set(ss.STRESS_SUITE_FEATURES)
    # Stored relative, so the folder can be moved.
    assert not Path(record["video"]).is_absolute() and (suite_dir / record["video"]).is_file()
    info = json.loads((suite_dir / "build_info.json").read_text())
    assert info["generator_version"] == ss.GENERATOR_VERSION and info["args"]["image_size"] == 32


def test_splits_never_share_a_source(suite):
    sources = {split: set(dataset["source_id"]) for split, dataset in suite.items()}
    assert all(sources.values())
    assert not (sources["train"] & sources["validation"] or sources["train"] & sources["test"])
    assert not sources["validation"] & sources["test"]
    assert set().union(*sources.values()) == set(TINY["sources"])


def test_scores_are_monotone_within_each_perturbation(all_rows):
    groups = defaultdict(list)
    for row in _columns(all_rows, "source_id", "perturbation", "severity", "score"):
        groups[row["source_id"], row["perturbation"]].append((row["severity"], row["score"]))
    for (_, perturbation), values in groups.items():
        if perturbation == "none":
            assert values == [(0.0, 1.0)] * 3
            continue
        values.sort()
        assert [s for s, _ in values] == [0.5, 1.0]
        assert all(a[1] > b[1] for a, b in zip(values, values[1:])), perturbation
    scores = np.asarray(all_rows["score"])
    assert scores.min() < 0.3 and np.mean(scores == 1.0) < 0.25  # balanced, not all near 1


def test_first_decoded_frame_is_near_the_reference(all_rows):
    for row in all_rows:
        reference = torch.from_numpy(np.array(row["reference"])).permute(2, 0, 1).float()
        frames = read_video(row["video"]).float()
        # Only H.264 (crf 18) error on tiny 32 x 32 frames: about 2 to 5 grey levels.
        assert (frames[0] - reference).abs().mean() < 8.0, row["video_id"]
        if row["motion_level"] == "large":
            assert (frames[-1] - reference).abs().mean() > 2 * (frames[0] - reference).abs().mean()


def test_motion_levels_and_decoupling(all_rows):
    rows = _columns(all_rows, "perturbation", "motion", "motion_level", "motion_decoupled")
    for row in rows:
        assert row["motion_level"] == ss.motion_level_for(row["motion"])
        expected = row["motion_level"] == ("large" if row["perturbation"] == "none" else "static")
        assert row["motion_decoupled"] == expected
    # Both directions exist: consistent videos with large motion, inconsistent ones with a static camera.
    assert any(r["motion_decoupled"] and r["perturbation"] == "none" for r in rows)
    assert any(r["motion_decoupled"] and r["perturbation"] != "none" for r in rows)
    # Every motion level occurs for consistent and for inconsistent videos.
    for consistent in (True, False):
        levels = {r["motion_level"] for r in rows if (r["perturbation"] == "none") == consistent}
        assert levels == set(ss.MOTION_LEVELS)


def test_preference_pairs(suite):
    pairs = ss.stress_suite_pairs(suite, min_margin=0.05)
    assert set(pairs) == set(suite)
    train = pairs["train"]
    assert train.features == ss.STRESS_SUITE_PAIR_FEATURES and len(train) > 0
    levels = dict(zip(suite["train"]["video_id"], suite["train"]["motion_level"]))
    rank = {level: i for i, level in enumerate(ss.MOTION_LEVELS)}
    for row in _columns(
        train, "chosen_id", "rejected_id", "chosen_score", "rejected_score", "margin", "motion_decoupled"
    ):
        assert row["chosen_id"].split("-")[0] == row["rejected_id"].split("-")[0]
        assert row["chosen_score"] > row["rejected_score"]
        assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"]) and row["margin"] >= 0.0499
        assert row["motion_decoupled"] == (rank[levels[row["chosen_id"]]] > rank[levels[row["rejected_id"]]])
    assert train[0]["reference"].size == (32, 32)
    decoupled = ss.motion_decoupled_pairs(train)
    assert 0 < len(decoupled) < len(train) and all(decoupled["motion_decoupled"])
    # 3 consistent (tied) + 14 perturbed videos; ties and near-ties are not pairs.
    assert len(ss.stress_suite_pairs(suite["train"], min_margin=2.0)) == 0


# ---------------------------------------------------------------------------------------------- evaluation


def _video_key(video: torch.Tensor) -> str:
    return hashlib.sha1(video.numpy().tobytes()).hexdigest()


def test_evaluate_ranking_oracle_is_perfect(suite):
    dataset = suite["train"]
    labels = {_video_key(read_video(row["video"])): row["score"] for row in _columns(dataset, "video", "score")}
    assert len(labels) == len(dataset)
    metrics = ss.evaluate_ranking(lambda reference, video: labels[_video_key(video)], dataset)
    assert metrics["accuracy"] == 1.0 and metrics["accuracy/motion_decoupled"] == 1.0
    assert metrics["spearman"] == pytest.approx(1.0)
    for perturbation in ss.PERTURBATIONS:
        assert metrics[f"accuracy/{perturbation}"] == 1.0
    assert metrics["num_videos"] == len(dataset) and metrics["num_pairs"] == len(ss.stress_suite_pairs(dataset))
    # The reversed oracle is always wrong.
    assert ss.ranking_metrics(dataset, -np.asarray(dataset["score"]))["accuracy"] == 0.0


def test_evaluate_ranking_random_is_chance(suite, all_rows):
    generator = torch.Generator().manual_seed(0)
    metrics = ss.evaluate_ranking(lambda reference, video: torch.rand((), generator=generator).item(), all_rows)
    assert 0.3 < metrics["accuracy"] < 0.7
    rng = np.random.default_rng(0)
    accuracies = [ss.ranking_metrics(all_rows, rng.random(len(all_rows)))["accuracy"] for _ in range(40)]
    assert np.mean(accuracies) == pytest.approx(0.5, abs=0.03)
    # Constant predictions tie every pair.
    constant = ss.ranking_metrics(all_rows, np.zeros(len(all_rows)))
    assert constant["accuracy"] == 0.5 and np.isnan(constant["spearman"])
    with pytest.raises(ValueError, match="predictions"):
        ss.ranking_metrics(all_rows, np.zeros(3))


def test_pixel_distance_fails_on_motion_decoupled_pairs(all_rows):
    metrics = ss.evaluate_ranking(ss.pixel_similarity_score, all_rows)
    assert metrics["num_pairs/motion_decoupled"] > 0
    assert metrics["accuracy/motion_decoupled"] < 0.5


# ---------------------------------------------------------------------------------------------- building


def test_rebuild_is_reused_or_replaced(tmp_path):
    path = tmp_path / "suite"
    ss.build_stress_suite(path, seed=0, **MINI)
    marker = path / "videos" / "marker"
    marker.write_text("x")
    ss.build_stress_suite(path, seed=0, **MINI)
    assert marker.exists()  # same arguments: reused as is
    ss.build_stress_suite(path, seed=1, **MINI)
    assert not marker.exists()  # other arguments: rebuilt
    assert json.loads((path / "build_info.json").read_text())["args"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["suite"]  # no staging or old directories left


def test_incomplete_directory_is_never_reused(tmp_path):
    path = tmp_path / "suite"
    (path / "videos").mkdir(parents=True)
    (path / "metadata.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="build_info"):
        ss.load_stress_suite(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        ss.build_stress_suite(path, **MINI)
    suite = ss.build_stress_suite(path, overwrite=True, **MINI)
    assert sum(len(d) for d in suite.values()) == 3 * 2


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write_video(path, frames, *, fps):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        Path(path).write_bytes(b"")

    monkeypatch.setattr(ss, "write_video", failing_write_video)
    with pytest.raises(KeyboardInterrupt):
        ss.build_stress_suite(tmp_path / "suite", **MINI)
    assert list(tmp_path.iterdir()) == []


def test_cli_build_and_evaluate(tmp_path, capsys):
    output = tmp_path / "cli"
    argv = ["build", "--output_dir", str(output), "--image_size", "32", "--num_frames", "4", "--seed", "2"]
    argv += ["--sources", "chelsea", "coffee", "rocket", "--perturbations", "identity_change", "--severities", "1.0"]
    assert stress_suite_main(argv + ["--consistent_per_source", "2"]) == 0
    assert "train: 3" in capsys.readouterr().out
    assert json.loads((output / "build_info.json").read_text())["args"]["seed"] == 2
    assert stress_suite_main(["evaluate", "--output_dir", str(output), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["num_videos"] == 3
    assert stress_suite_main(["sources"]) == 0
    assert "retina_macula" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        stress_suite_main(["build"])


def test_default_sample_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ICREWARD_CACHE", str(tmp_path))
    assert ss.default_sample_dir() == tmp_path / f"sample_v{ss.GENERATOR_VERSION}"
    monkeypatch.delenv("ICREWARD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ss.default_sample_dir() == tmp_path / "xdg" / "icreward" / f"sample_v{ss.GENERATOR_VERSION}"
    assert set(ss.SAMPLE_CONFIG["splits"]["train"]) | set(ss.SAMPLE_CONFIG["splits"]["test"]) <= set(DEFAULT_SOURCES)
