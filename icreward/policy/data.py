"""The real-clip corpus the tiny policy is pretrained on, with a fixed clip-level held-out split.

Clips come from :func:`icreward.data.generated_clips.find_generated_clips` (the ComfyUI workflow-template media
wheels, MIT licence; the reserved ``-media-video`` wheel is never read). Clips that
:func:`~icreward.data.generated_clips.unusable_reason` rejects (scene cuts, near-static clips, screens, side-by-side
panels) are dropped. The held-out set is fixed by clip: a clip is held out when the SHA-1 of
``"<package>/<file stem>"`` falls in the first ``1 / HELD_OUT_EVERY`` of the hash space, so the split does not
depend on which other clips are installed and no frame of a held-out clip is ever trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.generated_clips import GeneratedClip, find_generated_clips, load_clip_frames, unusable_reason

__all__ = [
    "EVAL_STRIDE",
    "HELD_OUT_EVERY",
    "ClipCorpus",
    "ShippedReferences",
    "export_references",
    "load_references",
    "is_held_out",
    "is_held_out_name",
    "load_clip_corpus",
    "load_clip_video",
    "sample_windows",
]

#: One clip in ``HELD_OUT_EVERY`` (by hash) is held out for evaluation.
HELD_OUT_EVERY = 6


def is_held_out(clip: GeneratedClip) -> bool:
    """Whether ``clip`` belongs to the fixed evaluation split (never trained on)."""
    return is_held_out_name(clip.package, clip.name)


def is_held_out_name(package: str, stem: str) -> bool:
    """:func:`is_held_out` by name: the clip ``stem`` (file name without suffix) of the media wheel ``package``."""
    digest = hashlib.sha1(f"{package}/{stem}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % HELD_OUT_EVERY == 0


def load_clip_video(path: str, size: int, max_frames: int = 96) -> np.ndarray:
    """The first ``max_frames`` frames of a clip, centre-cropped to a square and resized: ``(T, size, size, 3)`` uint8."""
    frames = []
    with Image.open(path) as image:
        total = int(getattr(image, "n_frames", 1))
        for index in range(min(total, max_frames)):
            image.seek(index)
            frame = image.convert("RGB")
            w, h = frame.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            frame = frame.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            frames.append(np.asarray(frame, dtype=np.uint8))
    return np.stack(frames)


@dataclass
class ClipCorpus:
    """Decoded clips of one split: ``videos[i]`` is ``(T_i, S, S, 3)`` uint8, ``clips[i]`` its source."""

    clips: list[GeneratedClip]
    videos: list[np.ndarray]
    rejected: dict[str, str]

    def __len__(self) -> int:
        return len(self.clips)


def load_clip_corpus(
    split: str,
    size: int,
    *,
    max_frames: int = 96,
    min_frames: int = 16,
    packages: Sequence[str] | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> ClipCorpus:
    """Decode the usable clips of ``split`` (``"train"`` or ``"eval"``) at ``size`` x ``size``.

    Raises ``FileNotFoundError`` when no media wheel is installed (``pip install icreward[clips]``).
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    kwargs = {} if packages is None else {"packages": packages}
    search = find_generated_clips(min_frames=min_frames, **kwargs)
    if not search.clips:
        raise FileNotFoundError(
            "no real clips found: the ComfyUI media wheels (comfyui-workflow-templates-media-api, -assets-01, "
            f'-assets-02, -image, -other) come with the `data` extra: pip install "icreward[data]"; missing: '
            f"{search.missing_packages}"
        )
    wanted = [c for c in search.clips if is_held_out(c) == (split == "eval")]
    if limit is not None:
        wanted = wanted[:limit]
    iterator = wanted
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(wanted, desc=f"decoding {split} clips", unit="clip")
    clips, videos, rejected = [], [], {}
    for clip in iterator:
        reason = unusable_reason(load_clip_frames(clip.path, num_frames=16, size=64))
        if reason is not None:
            rejected[clip.name] = reason
            continue
        clips.append(clip)
        videos.append(load_clip_video(clip.path, size, max_frames=max_frames))
    return ClipCorpus(clips, videos, rejected)


def sample_windows(
    videos: Sequence[np.ndarray],
    batch_size: int,
    num_frames: int,
    crop: int,
    rng: np.random.Generator,
    *,
    max_stride: int = 3,
    flip: bool = True,
) -> np.ndarray:
    """A batch of random ``num_frames`` windows (random clip, temporal stride, crop, horizontal flip):
    ``(B, num_frames, crop, crop, 3)`` uint8."""
    out = np.empty((batch_size, num_frames, crop, crop, 3), dtype=np.uint8)
    for b in range(batch_size):
        video = videos[int(rng.integers(len(videos)))]
        t, h, w = video.shape[:3]
        stride = int(rng.integers(1, max_stride + 1))
        while stride > 1 and (num_frames - 1) * stride >= t:
            stride -= 1
        span = (num_frames - 1) * stride + 1
        if span > t:
            raise ValueError(f"a clip has {t} frames, fewer than the {num_frames} a window needs")
        start = int(rng.integers(t - span + 1))
        top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        window = video[start : start + span : stride, top : top + crop, left : left + crop]
        out[b] = window[:, :, ::-1] if flip and rng.random() < 0.5 else window
    return out


#: Frame stride of the evaluation windows in :func:`export_references` (training strides are 1 to 3).
EVAL_STRIDE = 2


def export_references(
    path: str | os.PathLike,
    *,
    size: int = 32,
    num_frames: int = 9,
    eval_windows_per_clip: int = 2,
    train_windows_per_clip: int = 2,
    max_frames: int = 64,
    progress: bool = False,
) -> dict[str, int]:
    """Write the reference set shipped with the policy to ``path`` (safetensors, uint8):

    * ``eval_videos`` ``(N, num_frames, size, size, 3)``: windows of the **held-out** clips (stride
      :data:`EVAL_STRIDE`, starting at frame 0 and then evenly through the first ``max_frames`` frames); the
      first frame is the reference image, the window is the real video it should become;
    * ``eval_clip`` ``(N,)``: which held-out clip each window comes from (an index into the metadata's names);
    * ``train_references`` ``(M, size, size, 3)``: first frames of windows of the training clips (references for
      fine-tuning the policy, e.g. DPO pairs and reward feedback).

    Clip names are stored in the metadata (``eval_clips``, ``train_clips``: JSON lists of ``package/stem``).
    """
    from safetensors.numpy import save_file

    counts: dict[str, int] = {}
    tensors: dict[str, np.ndarray] = {}
    metadata: dict[str, str] = {"size": str(size), "num_frames": str(num_frames), "stride": str(EVAL_STRIDE)}
    for split in ("eval", "train"):
        corpus = load_clip_corpus(split, size, max_frames=max_frames, progress=progress)
        per_clip = eval_windows_per_clip if split == "eval" else train_windows_per_clip
        windows, owners = [], []
        for index, video in enumerate(corpus.videos):
            span = (num_frames - 1) * EVAL_STRIDE + 1
            if video.shape[0] < span:
                continue
            starts = np.linspace(0, video.shape[0] - span, per_clip).round().astype(int)
            for start in sorted(set(starts.tolist())):
                windows.append(video[start : start + span : EVAL_STRIDE])
                owners.append(index)
        names = [f"{c.package}/{c.name}" for c in corpus.clips]
        metadata[f"{split}_clips"] = json.dumps(names)
        if split == "eval":
            tensors["eval_videos"] = np.stack(windows)
            tensors["eval_clip"] = np.asarray(owners, dtype=np.int64)
        else:
            tensors["train_references"] = np.stack([w[0] for w in windows])
        counts[f"{split}_clips"] = len(set(owners))
        counts[f"{split}_windows"] = len(windows)
    save_file(tensors, os.fspath(path), metadata=metadata)
    return counts


@dataclass
class ShippedReferences:
    """The reference set of :func:`export_references`, as torch tensors."""

    eval_videos: torch.Tensor  # (N, F, 3, H, W) uint8
    eval_clip: torch.Tensor  # (N,) int64
    train_references: torch.Tensor  # (M, 3, H, W) uint8
    eval_clips: list[str]
    train_clips: list[str]

    def eval_references(self) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8: the first frame of every evaluation window."""
        return self.eval_videos[:, 0]

    def one_window_per_clip(self) -> torch.Tensor:
        """Indices of the first window of each held-out clip."""
        seen: dict[int, int] = {}
        for i, clip in enumerate(self.eval_clip.tolist()):
            seen.setdefault(clip, i)
        return torch.tensor(sorted(seen.values()), dtype=torch.long)


def load_references(path: str | os.PathLike) -> ShippedReferences:
    """Read a file written by :func:`export_references` (safetensors; no code is executed)."""
    from safetensors import safe_open

    path = os.fspath(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
        names = set(handle.keys())
        missing = {"eval_videos", "eval_clip", "train_references"} - names
        if missing:
            raise ValueError(f"{path} is not a policy reference file: missing tensors {sorted(missing)}")
        eval_videos = handle.get_tensor("eval_videos")
        eval_clip = handle.get_tensor("eval_clip")
        train = handle.get_tensor("train_references")
    if eval_videos.ndim != 5 or eval_videos.dtype != torch.uint8 or eval_videos.shape[-1] != 3:
        raise ValueError(f"{path}: eval_videos must be (N, F, H, W, 3) uint8, got {tuple(eval_videos.shape)}")
    return ShippedReferences(
        eval_videos=eval_videos.permute(0, 1, 4, 2, 3).contiguous(),
        eval_clip=eval_clip,
        train_references=train.permute(0, 3, 1, 2).contiguous(),
        eval_clips=json.loads(metadata.get("eval_clips", "[]")),
        train_clips=json.loads(metadata.get("train_clips", "[]")),
    )
