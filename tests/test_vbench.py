"""load_vbench_i2v on a miniature copy of VBench++'s real file layout, built in tmp_path."""

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict, Image, Value
from PIL import Image as PILImage

from icreward.data.vbench import (
    VBenchFormatError,
    build_vbench_dataset_card,
    export_vbench_dataset,
    load_vbench_i2v,
    load_vbench_i2v_from_hub,
    push_vbench_dataset_to_hub,
    vbench_i2v_features,
)
from icreward.video import write_video

# Prompts with commas and hyphens, as VBench's: the "-{i}" suffix must be found from the right.
SUBJECT_PROMPTS = [
    "a red-haired woman, smiling at the camera",
    "a dog running on the beach",
    "a close-up of a cat's face",
    "a man riding a bike - slow motion",
]
BACKGROUND_PROMPTS = ["a view of a star trail in the night sky", "Colorful buildings on the seaside cliffs"]
NUM_VIDEOS = 5


def vbench_score(prompt_idx, i):
    """Deterministic per-video score in [0.1, 0.95]; videos 0 and 1 of every prompt are below 0.4."""
    return round(0.1 + 0.2 * i + 0.01 * prompt_idx, 4)


def _image_name(prompt):
    return f"{prompt}.jpg"


def _write_results(path, prompts_by_dim, video_root, scores=vbench_score, image_root="vbench2_beta_i2v/data/crop/1-1"):
    results = {}
    for dim, prompts in prompts_by_dim.items():
        entries = []
        for prompt_idx, prompt in prompts:
            for i in range(NUM_VIDEOS):
                entries.append(
                    {
                        "image_path": f"{image_root}/{_image_name(prompt)}",
                        "video_path": f"{video_root}/{prompt}-{i}.mp4",
                        "video_results": scores(prompt_idx, i),
                    }
                )
        mean = sum(e["video_results"] for e in entries) / len(entries)
        results[dim] = [mean, entries]
    path.write_text(json.dumps(results, indent=4))
    return path


@pytest.fixture(scope="module")
def tiny_clip():
    return torch.zeros(2, 3, 16, 16, dtype=torch.uint8)


@pytest.fixture
def vbench(tmp_path, tiny_clip):
    """VBench's layout: info JSON, data/crop/1-1 images, a flat videos folder and <name>_eval_results.json."""
    root = tmp_path / "vbench2_beta_i2v"
    info = []
    for prompt in SUBJECT_PROMPTS + BACKGROUND_PROMPTS:
        dim = "i2v_subject" if prompt in SUBJECT_PROMPTS else "i2v_background"
        info.append(
            {"prompt_en": prompt, "dimension": [dim], "image_type": "scenery", "image_name": _image_name(prompt)}
        )
        # camera_motion entries have no image_name and must be ignored.
        info.append(
            {"prompt_en": f"{prompt}, camera pans left", "dimension": ["camera_motion"], "image_type": "scenery"}
        )
    info_json = root / "vbench2_i2v_full_info.json"
    crop = root / "data" / "crop" / "1-1"
    crop.mkdir(parents=True)
    info_json.write_text(json.dumps(info, indent=4))
    for k, prompt in enumerate(SUBJECT_PROMPTS + BACKGROUND_PROMPTS):
        PILImage.new("RGB", (8, 8), (30 * k, 0, 0)).save(crop / _image_name(prompt))

    videos = tmp_path / "opensora_videos"
    for prompt in SUBJECT_PROMPTS + BACKGROUND_PROMPTS:
        for i in range(NUM_VIDEOS):
            write_video(videos / f"{prompt}-{i}.mp4", tiny_clip, fps=8.0)
    write_video(videos / f"{SUBJECT_PROMPTS[0]}, camera pans left-0.mp4", tiny_clip)  # not an I2V prompt

    # VBench writes the paths it was run with: a different root than ours.
    results = _write_results(
        tmp_path / "opensora_eval_results.json",
        {
            "i2v_subject": list(enumerate(SUBJECT_PROMPTS)),
            "i2v_background": [(len(SUBJECT_PROMPTS) + j, p) for j, p in enumerate(BACKGROUND_PROMPTS)],
        },
        video_root="/mnt/cluster/sampling/opensora",
    )
    return {
        "info_json": info_json,
        "image_root": crop,
        "videos_dir": videos,
        "eval_results": results,
        "source_model": "opensora",
        "root": root,
        "tmp": tmp_path,
    }


def _load(vb, **kwargs):
    args = {k: vb[k] for k in ("info_json", "image_root", "videos_dir", "eval_results", "source_model")}
    args.update(kwargs)
    return load_vbench_i2v(
        args.pop("info_json"), args.pop("image_root"), args.pop("videos_dir"), args.pop("eval_results"), **args
    )


def _all_rows(dd):
    return [row for split in dd.values() for row in split]


def test_loads_columns_features_and_scores(vbench):
    dd = _load(vbench, candidates_per_sample=None, split=None)
    assert isinstance(dd, DatasetDict) and list(dd) == ["train"]
    train = dd["train"]
    assert train.features == vbench_i2v_features()
    assert train.features["reference"] == Image() and train.features["video"] == Value("string")
    assert train.features["score"] == Value("float32")
    assert len(train) == 6 * NUM_VIDEOS
    assert dd.report.num_scored_videos == 30 and dd.report.skipped == {}

    all_prompts = SUBJECT_PROMPTS + BACKGROUND_PROMPTS
    for row in train.select_columns([c for c in train.column_names if c != "reference"]):
        k = all_prompts.index(row["prompt"])
        expected = vbench_score(k, row["video_index"])
        assert row["score"] == pytest.approx(expected, abs=1e-6)
        dim, other = ("i2v_subject", "i2v_background") if k < 4 else ("i2v_background", "i2v_subject")
        assert row[dim] == pytest.approx(expected, abs=1e-6) and row[other] is None
        assert (
            os.path.isfile(row["video"])
            and os.path.basename(row["video"]) == f"{row['prompt']}-{row['video_index']}.mp4"
        )
        assert row["image_name"] == _image_name(row["prompt"])
        assert row["source_model"] == "opensora" and row["image_type"] == "scenery" and row["rebalanced"] is False
    image = train[0]["reference"]
    assert image.size == (8, 8)


def test_image_root_as_data_dir_with_resolution(vbench):
    direct = _load(vbench, split=None)
    via_ratio = _load(vbench, image_root=vbench["root"] / "data", resolution="1-1", split=None)
    assert direct["train"]["reference"] == via_ratio["train"]["reference"]
    with pytest.raises(VBenchFormatError, match="image folder not found"):
        _load(vbench, image_root=vbench["root"] / "data", resolution="16-9")


def test_splits_are_by_image_and_seeded(vbench):
    dd = _load(vbench, split=(0.5, 0.25, 0.25), seed=0)
    assert list(dd) == ["train", "validation", "test"]
    images = {name: set(split["image_name"]) for name, split in dd.items()}
    assert not images["train"] & images["validation"]
    assert not images["train"] & images["test"]
    assert not images["validation"] & images["test"]
    assert sum(len(v) for v in images.values()) == 6
    assert [len(images[s]) for s in dd] == [3, 2, 1] or [len(images[s]) for s in dd] == [3, 1, 2]
    assert dd.report.split_images == {name: len(v) for name, v in images.items()}

    again = _load(vbench, split=(0.5, 0.25, 0.25), seed=0)
    assert {n: s["video"] for n, s in again.items()} == {n: s["video"] for n, s in dd.items()}
    assignments = {tuple(sorted(_load(vbench, split=(0.5, 0.5), seed=s)["train"]["image_name"])) for s in range(6)}
    assert len(assignments) > 1
    # Changing candidate selection leaves the image split alone.
    all_candidates = _load(vbench, split=(0.5, 0.25, 0.25), seed=0, candidates_per_sample=None)
    assert {n: set(s["image_name"]) for n, s in all_candidates.items()} == images


def test_candidates_per_sample(vbench):
    dd = _load(vbench, split=None, candidates_per_sample=2)
    per_prompt = Counter(dd["train"]["prompt"])
    assert set(per_prompt.values()) == {2} and len(per_prompt) == 6
    assert dd.report.num_selected == 12

    extremes = _load(vbench, split=None, candidates_per_sample=2, candidate_selection="extremes")
    chosen = {(p, i) for p, i in zip(extremes["train"]["prompt"], extremes["train"]["video_index"])}
    assert chosen == {(p, i) for p in SUBJECT_PROMPTS + BACKGROUND_PROMPTS for i in (0, NUM_VIDEOS - 1)}

    three = _load(vbench, split=None, candidates_per_sample=3, candidate_selection="extremes")
    assert sorted(three["train"].filter(lambda r: r["prompt"] == SUBJECT_PROMPTS[1])["video_index"]) == [0, 3, 4]


def test_rebalance_low_scores_adds_unselected_train_videos(vbench, caplog):
    base = _load(vbench, split=(0.5, 0.5), candidates_per_sample=1, candidate_selection="extremes")
    # "extremes" with one candidate keeps each prompt's best video, so every low-score video is unselected.
    assert min(base["train"]["score"]) >= 0.4
    dd = _load(
        vbench, split=(0.5, 0.5), candidates_per_sample=1, candidate_selection="extremes", rebalance_low_scores=2
    )
    train = dd["train"]
    added = train.filter(lambda r: r["rebalanced"])
    assert len(added) == 2 and dd.report.num_rebalanced == 2 and dd.report.rebalance_shortfall == 0
    assert all(s < 0.4 for s in added["score"])
    assert set(added["image_name"]) <= set(base["train"]["image_name"])  # only train images
    keys = list(zip(train["prompt"], train["video_index"]))
    assert len(keys) == len(set(keys))  # no duplicated video
    assert len(dd["test"]) == len(base["test"]) and not any(dd["test"]["rebalanced"])

    with caplog.at_level(logging.WARNING, logger="icreward"):
        short = _load(vbench, split=(0.5, 0.5), candidates_per_sample=1, rebalance_low_scores=100)
    assert short.report.num_rebalanced + short.report.rebalance_shortfall == 100
    # Each train image has two videos below 0.4 (indices 0 and 1); those not already selected are added.
    selected_low = sum(s < 0.4 and not r for s, r in zip(short["train"]["score"], short["train"]["rebalanced"]))
    assert short.report.num_rebalanced == 2 * short.report.split_images["train"] - selected_low
    assert "rebalance_low_scores=100" in caplog.text


def test_dimension_weights_combine_available_dimensions(vbench):
    # Give the first prompt both dimensions: background scores are 0.5 lower (clipped at 0).
    info = json.loads(vbench["info_json"].read_text())
    info[0]["dimension"] = ["i2v_subject", "i2v_background"]
    vbench["info_json"].write_text(json.dumps(info))
    extra = _write_results(
        vbench["tmp"] / "opensora_bg_eval_results.json",
        {"i2v_background": [(0, SUBJECT_PROMPTS[0])]},
        video_root="C:\\vbench\\videos",  # Windows paths resolve by basename too
        scores=lambda k, i: max(0.0, vbench_score(k, i) - 0.05),
    )
    dd = _load(
        vbench,
        eval_results=[vbench["eval_results"], extra],
        split=None,
        candidates_per_sample=None,
        dimension_weights={"i2v_subject": 3.0, "i2v_background": 1.0},
    )
    both = dd["train"].filter(lambda r: r["prompt"] == SUBJECT_PROMPTS[0])
    for row in both:
        subject, background = vbench_score(0, row["video_index"]), max(0.0, vbench_score(0, row["video_index"]) - 0.05)
        assert row["i2v_subject"] == pytest.approx(subject, abs=1e-6)
        assert row["i2v_background"] == pytest.approx(background, abs=1e-6)
        assert row["score"] == pytest.approx((3 * subject + background) / 4, abs=1e-6)
    # Videos with one dimension: the score is that dimension's score, whatever the weights.
    single = dd["train"].filter(lambda r: r["prompt"] == BACKGROUND_PROMPTS[0])
    assert single["score"] == pytest.approx(single["i2v_background"], abs=1e-6)

    only_subject = _load(vbench, split=None, dimensions=("i2v_subject",))
    assert "i2v_background" not in only_subject["train"].column_names
    assert set(only_subject["train"]["prompt"]) == set(SUBJECT_PROMPTS)
    with pytest.raises(ValueError, match="missing \\['i2v_background'\\]"):
        _load(vbench, dimension_weights={"i2v_subject": 1.0})


def test_several_models(vbench, tiny_clip):
    other = vbench["tmp"] / "cogvideox"
    for prompt in SUBJECT_PROMPTS + BACKGROUND_PROMPTS:
        for i in range(NUM_VIDEOS):
            write_video(other / f"{prompt}-{i}.mp4", tiny_clip)
    other_results = _write_results(
        vbench["tmp"] / "cogvideox_eval_results.json",
        {
            "i2v_subject": list(enumerate(SUBJECT_PROMPTS)),
            "i2v_background": [(4 + j, p) for j, p in enumerate(BACKGROUND_PROMPTS)],
        },
        video_root=str(other),
        scores=lambda k, i: vbench_score(k, NUM_VIDEOS - 1 - i),
    )
    dd = _load(
        vbench,
        videos_dir=[vbench["videos_dir"], other],
        eval_results=[vbench["eval_results"], [other_results]],
        source_model=["opensora", "cogvideox"],
        split=(0.5, 0.5),
    )
    rows = [r for split in dd.values() for r in split.select_columns(["source_model", "image_name", "video"])]
    assert Counter(r["source_model"] for r in rows) == {"opensora": 12, "cogvideox": 12}
    for row in rows:
        assert os.path.dirname(row["video"]) == str(
            (vbench["videos_dir"] if row["source_model"] == "opensora" else other).resolve()
        )
    # Both models' videos of an image are in that image's split.
    split_of = {}
    for name, split in dd.items():
        for image in split["image_name"]:
            assert split_of.setdefault(image, name) == name
    with pytest.raises(ValueError, match="one item"):
        _load(vbench, videos_dir=[vbench["videos_dir"], other], eval_results=vbench["eval_results"])
    with pytest.raises(ValueError, match="source_model must be a list of 2"):
        _load(vbench, videos_dir=[vbench["videos_dir"], other], eval_results=[vbench["eval_results"], other_results])


# ------------------------------------------------------------------------------------------------------------------
# Malformed inputs: "error" raises naming file and field; "skip" skips, counts and logs.
# ------------------------------------------------------------------------------------------------------------------


def _edit_results(vb, edit):
    data = json.loads(vb["eval_results"].read_text())
    edit(data)
    vb["eval_results"].write_text(json.dumps(data))


def _check_error_and_skip(vb, kind, match, missing_rows, caplog):
    with pytest.raises(VBenchFormatError, match=match):
        _load(vb, split=None, candidates_per_sample=None)
    with caplog.at_level(logging.WARNING, logger="icreward"):
        dd = _load(vb, split=None, candidates_per_sample=None, on_missing="skip")
    assert dd.report.skipped == {kind: 1}
    assert len(dd["train"]) == 6 * NUM_VIDEOS - missing_rows
    assert f"{kind}=1" in caplog.text
    assert any(example.startswith(f"[{kind}]") for example in dd.report.examples)
    return dd


def test_missing_video_file(vbench, caplog):
    os.remove(vbench["videos_dir"] / f"{SUBJECT_PROMPTS[1]}-3.mp4")
    _check_error_and_skip(vbench, "missing_video", f"video '{SUBJECT_PROMPTS[1]}-3.mp4' of 'opensora'", 1, caplog)


def test_score_out_of_range(vbench, caplog):
    _edit_results(vbench, lambda d: d["i2v_subject"][1][2].update(video_results=1.5))
    match = r"opensora_eval_results.json' \['i2v_subject'\]\[1\]\[2\]: field 'video_results' .* got 1.5"
    _check_error_and_skip(vbench, "score_out_of_range", match, 1, caplog)


def test_entry_without_matching_video(vbench, caplog):
    entry = {"image_path": "x.jpg", "video_path": "/somewhere/a prompt not in VBench-0.mp4", "video_results": 0.5}
    _edit_results(vbench, lambda d: d["i2v_background"][1].append(entry))
    _check_error_and_skip(vbench, "unmatched_entry", "'a prompt not in VBench-0.mp4' matches no", 0, caplog)


def test_entry_without_video_path(vbench, caplog):
    _edit_results(vbench, lambda d: d["i2v_subject"][1][0].pop("video_path"))
    # The video on disk is then unscored as well: both are counted.
    with pytest.raises(VBenchFormatError, match=r"\['i2v_subject'\]\[1\]\[0\]: field 'video_path'"):
        _load(vbench)
    dd = _load(vbench, split=None, candidates_per_sample=None, on_missing="skip")
    assert dd.report.skipped == {"malformed_entry": 1, "unscored_video": 1}
    assert len(dd["train"]) == 29


def test_image_path_of_another_image(vbench, caplog):
    _edit_results(vbench, lambda d: d["i2v_subject"][1][6].update(image_path="crop/1-1/someone else.jpg"))
    _check_error_and_skip(vbench, "image_mismatch", "field 'image_path' 'crop/1-1/someone else.jpg'", 1, caplog)


def test_unscored_video(vbench, caplog):
    _edit_results(vbench, lambda d: d["i2v_background"][1].pop(0))
    match = f"video '{BACKGROUND_PROMPTS[0]}-0.mp4' .* has no score"
    _check_error_and_skip(vbench, "unscored_video", match, 1, caplog)


def test_missing_reference_image(vbench, caplog):
    os.remove(vbench["image_root"] / _image_name(SUBJECT_PROMPTS[2]))
    dd = _check_error_and_skip(vbench, "missing_image", "reference image .* does not exist \\(5 videos\\)", 5, caplog)
    assert _image_name(SUBJECT_PROMPTS[2]) not in dd["train"]["image_name"]


def test_file_level_errors_always_raise(vbench):
    vbench["eval_results"].write_text('{"i2v_subject": [0.5, [')
    for on_missing in ("error", "skip"):
        with pytest.raises(VBenchFormatError, match="opensora_eval_results.json' is not valid JSON"):
            _load(vbench, on_missing=on_missing)
    vbench["eval_results"].write_text(json.dumps({"i2v_subject": 0.7, "i2v_background": [0.5, []]}))
    with pytest.raises(VBenchFormatError, match="key 'i2v_subject' must be \\[mean, \\["):
        _load(vbench, on_missing="skip")
    vbench["eval_results"].write_text(json.dumps({"subject_consistency": [0.5, []]}))
    with pytest.raises(VBenchFormatError, match=r"dimension\(s\) \['i2v_subject', 'i2v_background'\] not found"):
        _load(vbench, on_missing="skip")
    vbench["info_json"].write_text(json.dumps({"prompt_en": "not a list"}))
    with pytest.raises(VBenchFormatError, match="vbench2_i2v_full_info.json': expected a JSON list of prompt entries"):
        _load(vbench)


def test_info_entry_without_image_name(vbench):
    info = json.loads(vbench["info_json"].read_text())
    del info[2]["image_name"]
    vbench["info_json"].write_text(json.dumps(info))
    with pytest.raises(VBenchFormatError, match=r"entry 2 \('a dog running on the beach'\): .*'image_name'"):
        _load(vbench)
    dd = _load(vbench, on_missing="skip", split=None, candidates_per_sample=None)
    # The entry is skipped, so its results entries no longer match a prompt.
    assert dd.report.skipped == {"malformed_entry": 1, "unmatched_entry": NUM_VIDEOS}


# ------------------------------------------------------------------------------------------------------------------
# Sharing: dataset card, export folder and loading it back, push (with a stand-in HfApi: never the network)
# ------------------------------------------------------------------------------------------------------------------


def test_dataset_card(vbench, tmp_path):
    from huggingface_hub import DatasetCard

    dd = _load(vbench, split=(0.5, 0.5))
    card = build_vbench_dataset_card(dd, license="apache-2.0", pretty_name="Tiny VBench")
    text = card.content
    assert "license: apache-2.0" in text
    assert "VBench++: Comprehensive and Versatile Benchmark Suite" in text
    assert "ICReward: Learning Image-to-Video Consistency Rewards" in text
    for column in dd["train"].column_names:
        assert f"| `{column}` |" in text
    assert "`opensora`" in text
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert loaded.data.license == "apache-2.0"
    assert loaded.data.pretty_name == "Tiny VBench"
    assert loaded.data.configs[0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "test", "path": "data/test-*"},
    ]


def test_export_and_load_back(vbench, tmp_path):
    dd = _load(vbench, split=(0.5, 0.5))
    repo = export_vbench_dataset(dd, tmp_path / "repo", license="cc-by-4.0")
    assert (repo / "README.md").is_file()
    assert sorted(p.name for p in (repo / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    assert len(list((repo / "videos" / "opensora").iterdir())) == len(dd["train"]) + len(dd["test"])

    # Move the export away from the original files: it must be self-contained.
    os.rename(vbench["image_root"], vbench["tmp"] / "images_moved")
    loaded = load_vbench_i2v_from_hub(str(repo))
    assert list(loaded) == ["train", "test"]
    for name in dd:
        assert loaded[name].features == dd[name].features
        assert loaded[name]["score"] == dd[name]["score"]
        assert [os.path.basename(v) for v in loaded[name]["video"]] == [os.path.basename(v) for v in dd[name]["video"]]
        assert all(v.startswith(str(repo)) and os.path.isfile(v) for v in loaded[name]["video"])
    assert loaded["train"][0]["reference"].size == (8, 8)
    relative = load_vbench_i2v_from_hub(str(repo), download_videos=False, split="test")
    assert relative[0]["video"].startswith("videos/opensora/")
    with pytest.raises(FileExistsError):
        export_vbench_dataset(dd, repo)


def test_push_uploads_the_export_folder(vbench, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create_repo"] = (repo_id, kwargs)

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            calls["files"] = sorted(
                str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
            )
            calls["upload"] = (repo_id, kwargs)
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    dd = _load(vbench, split=None)
    assert push_vbench_dataset_to_hub(dd, "org/tiny-vbench", private=True, token="t", license="mit") == "commit-info"
    assert calls["create_repo"] == ("org/tiny-vbench", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"][0] == "org/tiny-vbench" and calls["upload"][1]["repo_type"] == "dataset"
    assert "README.md" in calls["files"] and "data/train-00000-of-00001.parquet" in calls["files"]
    assert sum(f.startswith("videos/opensora/") for f in calls["files"]) == len(dd["train"])
