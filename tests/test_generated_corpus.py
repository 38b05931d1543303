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
