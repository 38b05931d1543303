"""Finding real generated clips in the ComfyUI media wheels (here: fake packages in the same layout)."""

import numpy as np
import pytest
from PIL import Image

from icreward.data.generated_clips import (
    DEFAULT_MEDIA_PACKAGES,
    RESERVED_PACKAGES,
    ReservedPackageError,
    find_generated_clips,
)


def _webp(path, n_frames):
    rng = np.random.default_rng(n_frames)
    frames = [Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)) for _ in range(n_frames)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def _package(root, name, files):
    pkg = root / name
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for file, n in files.items():
        _webp(pkg / "templates" / file, n)


FAKE_PACKAGES = ("comfyui_workflow_templates_media_api", "comfyui_workflow_templates_media_other")


def _use_fake_packages(monkeypatch, root):
    """Put the fake wheels first on sys.path, hiding installed ones (and any already imported)."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(root))
    for name in (*FAKE_PACKAGES, "comfyui_workflow_templates_media_video"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()


def test_finds_animated_clips_and_never_reads_the_reserved_wheel(tmp_path, monkeypatch):
    _package(tmp_path, "comfyui_workflow_templates_media_api", {"kling_i2v-1.webp": 20, "still-2.webp": 1})
    _package(tmp_path, "comfyui_workflow_templates_media_video", {"held_out_i2v-1.webp": 20})
    _use_fake_packages(monkeypatch, tmp_path)
    assert not RESERVED_PACKAGES & set(DEFAULT_MEDIA_PACKAGES)
    found = find_generated_clips([FAKE_PACKAGES[0], "comfyui_workflow_templates_media_none"])
    assert [c.name for c in found.clips] == ["kling_i2v-1"]
    clip = found.clips[0]
    assert (clip.num_frames, clip.width, clip.height, clip.task) == (20, 32, 24, "i2v")
    assert found.too_short == 1
    assert found.missing_packages == ["comfyui_workflow_templates_media_none"]
    assert all("media_video" not in c.path for c in found.clips)
    with pytest.raises(ReservedPackageError):
        find_generated_clips(["comfyui-workflow-templates-media-video"])


def _moving(t=16, size=64, seed=0):
    # A smooth scene panned 1 px per frame: real, small frame-to-frame motion.
    y, x = np.mgrid[0:size, 0 : 2 * size].astype(np.float32)
    f = 12.0 + 5.0 * seed
    base = np.stack([0.5 + 0.4 * np.sin(x / f + c + seed) * np.cos(y / (f + 3)) for c in (0.0, 1.0, 2.0)], axis=-1)
    return np.stack([base[:, i : i + size] for i in range(t)])


def test_unusable_reason_names_each_filter():
    from icreward.data.generated_clips import unusable_reason

    clip = _moving()
    assert unusable_reason(clip) is None
    static = np.repeat(clip[:1], 16, axis=0)
    assert unusable_reason(static) == "near_static"
    cut = clip.copy()
    cut[8:] = _moving(seed=1)[8:]
    assert unusable_reason(cut) == "scene_cut"
    ui = clip.copy()
    ui[:, 24:] = 0.95  # a flat screen under a strip of changing content
    ui[:, :24] = np.random.default_rng(0).random(ui[:, :24].shape)
    assert unusable_reason(ui) == "text_or_ui"
    panels = clip.copy()
    panels[:, :, 32:] = 1.0 - panels[:, :, 32:] * 0.2  # a bright second panel
    assert unusable_reason(panels) == "side_by_side"
    with pytest.raises(ValueError, match="frames must be"):
        unusable_reason(clip[:1])


# ---------------------------------------------------------------------------------------------------------------
# The corpus builder, on fake media packages in the wheels' layout
# ---------------------------------------------------------------------------------------------------------------


def _save_clip(path, frames):
    images = [Image.fromarray((np.clip(f, 0, 1) * 255).astype(np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0, lossless=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Fake wheels: 5 usable clip groups (one with two outputs), a duplicate, a near-static and a scene-cut clip,
    a still, and the reserved package (never to be read)."""
    root = tmp_path_factory.mktemp("media")
    api = root / "comfyui_workflow_templates_media_api" / "templates"
    other = root / "comfyui_workflow_templates_media_other" / "templates"
    video = root / "comfyui_workflow_templates_media_video" / "templates"
    for folder in (api, other, video):
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
    for seed, name in enumerate(["kling_i2v-1", "kling_i2v-2", "wan_t2v-1", "ltx_i2v-1", "veo_t2v-1", "luma_i2v-1"]):
        _save_clip(api / f"{name}.webp", _moving(t=20, seed=seed, size=48))
    _save_clip(other / "copy_of_wan_t2v-1.webp", _moving(t=20, seed=2, size=48))
    still = np.repeat(_moving(t=1, seed=7, size=48), 20, axis=0)
    still[np.arange(20), 0, 0, 0] = np.linspace(0, 1, 20)  # one changing pixel: distinct frames, no motion
    _save_clip(other / "still_i2v-1.webp", still)
    cut = _moving(t=20, seed=8, size=48)
    cut[10:] = 1.0 - cut[10:]
    _save_clip(other / "cut_t2v-1.webp", cut)
    _save_clip(other / "poster-1.webp", _moving(t=1, seed=9, size=48))
    _save_clip(video / "held_out_i2v-1.webp", _moving(t=20, seed=10, size=48))
    return root


CORPUS_ARGS = dict(
    num_frames=4, image_size=32, severities=(0.5, 1.0), frozen_inconsistent_per_clip=2, fps=4.0, packages=FAKE_PACKAGES
)


@pytest.fixture(scope="module")
def corpus(media, tmp_path_factory):
    from icreward.data.generated_corpus import build_generated_corpus

    mp = pytest.MonkeyPatch()
    _use_fake_packages(mp, media)
    try:
        out = tmp_path_factory.mktemp("corpus") / "corpus"
        return out, build_generated_corpus(out, **CORPUS_ARGS)
    finally:
        mp.undo()


def _rows(dataset_dict):
    return [row for split in dataset_dict.values() for row in split.to_list()]


def test_corpus_drops_unusable_clips_with_reasons_and_never_reads_the_reserved_wheel(corpus):
    import json

    out, data = corpus
    info = json.loads((out / "build_info.json").read_text())
    assert info["dropped_counts"] == {"duplicate": 1, "near_static": 1, "scene_cut": 1}
    assert info["dropped"]["comfyui_workflow_templates_media_other/copy_of_wan_t2v-1.webp"] == "duplicate"
    rows = _rows(data)
    assert sorted({r["file"] for r in rows}) == sorted(
        f"{n}.webp" for n in ["kling_i2v-1", "kling_i2v-2", "wan_t2v-1", "ltx_i2v-1", "veo_t2v-1", "luma_i2v-1"]
    )
    assert all("media_video" not in r["package"] and "held_out" not in r["video"] for r in rows)
    assert {r["license"] for r in rows} == {"MIT"}
    card = (out / "README.md").read_text()
    assert "license: mit" in card and "| comfyui_workflow_templates_media_other/cut_t2v-1.webp | scene_cut |" in card


def test_corpus_rows_labels_and_splits_by_clip_group(corpus):
    from icreward.data.generated_corpus import GENERATED_PERTURBATIONS, corpus_score

    _, data = corpus
    rows = _rows(data)
    per_clip = 3 + len(GENERATED_PERTURBATIONS) * 2 + 2
    clips = {r["source_id"] for r in rows}
    assert len(clips) == 6 and len(rows) == 6 * per_clip
    for row in rows:
        assert row["score"] == pytest.approx(corpus_score(row["perturbation"], row["severity"]))
        assert 0.0 <= row["score"] <= 1.0
        assert (row["perturbation"] == "none") == (row["severity"] == 0.0) == (row["onset"] == 0)
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["clip_group"], row["split"]) == row["split"]
    assert {r["clip_group"] for r in rows if r["file"].startswith("kling_i2v")} == {"kling_i2v"}
    assert set(split_of.values()) == {"train", "validation", "test"}
    for row in rows:  # donors come from the same split, never from the clip's own group
        if row["donor"] and row["donor"] != "self_rot180_reversed":
            donor = next(r for r in rows if r["source_id"] == row["donor"])
            assert donor["split"] == row["split"] and donor["clip_group"] != row["clip_group"]


def test_inconsistent_variants_keep_the_real_motion_and_start_after_the_first_frames(corpus):
    from icreward.video import read_video

    _, data = corpus
    rows = _rows(data)
    clip = rows[0]["source_id"]
    mine = [r for r in rows if r["source_id"] == clip]
    real = next(r for r in mine if r["perturbation"] == "none" and r["camera"] == "real")
    consistent = read_video(real["video"]).float()
    for row in mine:
        if row["camera"] != "real" or row["perturbation"] == "none":
            continue
        assert row["motion"] == real["motion"] and row["motion_level"] == real["motion_level"]
        frames = read_video(row["video"]).float()
        before = (frames[: row["onset"]] - consistent[: row["onset"]]).abs().mean()  # codec crosstalk only
        after = (frames[-1] - consistent[-1]).abs().mean()
        assert before < 2.0 and after > max(1.0, 3 * before), (row["perturbation"], float(before), float(after))
    for kind in ("color_drift", "unrelated_video"):  # graded: severity 1 drifts further than severity 0.5
        drift = {
            r["severity"]: (read_video(r["video"]).float()[-1] - consistent[-1]).abs().mean()
            for r in mine
            if r["perturbation"] == kind and r["camera"] == "real"
        }
        assert drift[1.0] > drift[0.5]


def test_motion_decoupled_rows_pair_a_moving_consistent_clip_with_a_still_inconsistent_one(corpus):
    from icreward.data.stress_suite import motion_decoupled_pairs, stress_suite_pairs

    _, data = corpus
    rows = _rows(data)
    for row in rows:
        if row["camera"] == "frozen":
            assert row["motion_level"] == "static" and row["motion"] < 0.02
        if row["camera"] == "real":
            assert row["motion"] > 0.05  # the fake clips pan 1 px per frame over 20 frames
    frozen_bad = [r for r in rows if r["camera"] == "frozen" and r["perturbation"] != "none"]
    assert len(frozen_bad) == 12 and all(r["motion_decoupled"] for r in frozen_bad)
    assert any(r["camera"] == "frozen" and r["perturbation"] == "none" for r in rows)  # "still" is no shortcut
    pairs = motion_decoupled_pairs(stress_suite_pairs(data))
    train = pairs["train"]
    assert len(train) > 0
    assert all(c > r for c, r in zip(train["chosen_score"], train["rejected_score"]))


def test_corpus_is_cached_loaded_by_the_suite_loader_and_built_from_the_command_line(corpus, media, monkeypatch):
    from icreward.cli.stress_suite import main
    from icreward.data.generated_corpus import build_generated_corpus, load_generated_corpus
    from icreward.data.stress_suite import load_stress_suite

    out, data = corpus
    stamp = (out / "build_info.json").stat().st_mtime_ns
    _use_fake_packages(monkeypatch, media)
    again = build_generated_corpus(out, **CORPUS_ARGS)  # reused, not rebuilt
    assert (out / "build_info.json").stat().st_mtime_ns == stamp
    assert again["test"]["video_id"] == data["test"]["video_id"]
    assert load_stress_suite(out)["train"].column_names == load_generated_corpus(out)["train"].column_names
    cli_out = out.parent / "cli"
    args = ["build", "--source", "generated", "--output_dir", str(cli_out), "--num_frames", "4", "--image_size", "32"]
    args += ["--packages", *FAKE_PACKAGES]
    assert main([*args, "--max_clips", "4", "--perturbations", "color_drift", "unrelated_video"]) == 0
    built = load_generated_corpus(cli_out)
    assert len({r["source_id"] for r in _rows(built)}) == 4
    assert {r["perturbation"] for r in _rows(built)} == {"none", "color_drift", "unrelated_video"}
    with pytest.raises(ReservedPackageError):
        build_generated_corpus(out.parent / "bad", packages=["comfyui-workflow-templates-media-video"])
