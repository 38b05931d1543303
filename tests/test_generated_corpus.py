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


def test_finds_animated_clips_and_never_reads_the_reserved_wheel(tmp_path, monkeypatch):
    _package(tmp_path, "comfyui_workflow_templates_media_api", {"kling_i2v-1.webp": 20, "still-2.webp": 1})
    _package(tmp_path, "comfyui_workflow_templates_media_video", {"held_out_i2v-1.webp": 20})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not RESERVED_PACKAGES & set(DEFAULT_MEDIA_PACKAGES)
    found = find_generated_clips()
    assert [c.name for c in found.clips] == ["kling_i2v-1"]
    clip = found.clips[0]
    assert (clip.num_frames, clip.width, clip.height, clip.task) == (20, 32, 24, "i2v")
    assert found.too_short == 1
    assert "comfyui_workflow_templates_media_other" in found.missing_packages
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
