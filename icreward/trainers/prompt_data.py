"""The rows of the prompt-based trainers (reward feedback, GRPO): ``image`` / ``prompt`` / optional
``ground_truth`` datasets, their stable row ids, and the collator."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from datasets import Dataset

from .adapter_lora import image_identity, row_id

__all__ = [
    "RewardFeedbackCollator",
    "load_ground_truth_frames",
    "load_prompt_dataset",
    "prompt_row_id",
    "with_row_keys",
]

ROW_KEY_COLUMN = "__reward_row_key"
_ROW_ID_COLUMN = "__reward_row_id"


def load_prompt_dataset(data: Any) -> Dataset:
    """Rows of ``image`` (path or PIL), ``prompt`` and optional ``ground_truth`` as a ``datasets.Dataset``.

    Accepts a ``Dataset``, a list of dicts, or a ``.jsonl`` / ``.json`` file (relative paths in ``image`` and
    ``ground_truth`` are resolved against the file's folder). ``ground_truth`` is a video file, a folder of frames,
    or a list of frame images: the real clip whose faces form IPRO's face pool.
    """
    base_dir: Path | None = None
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".json":
            rows = json.loads(text)
        else:
            raise ValueError(f"unsupported dataset file {path}: use .jsonl or .json (or pass a datasets.Dataset)")
        data, base_dir = rows, path.parent
    if isinstance(data, (list, tuple)):
        if not data or not all(isinstance(row, Mapping) for row in data):
            raise ValueError("a dataset given as a list must be a non-empty list of dicts (image, prompt, ...)")
        rows = [dict(row) for row in data]
        if base_dir is not None:
            for row in rows:
                for column in ("image", "ground_truth"):
                    row[column] = _resolve_paths(row.get(column), base_dir)
        data = Dataset.from_list(rows)
    if not isinstance(data, Dataset):
        raise TypeError(
            f"expected a datasets.Dataset, a list of dicts or a .jsonl/.json path, got {type(data).__name__} "
            "(iterable datasets are not supported: rows are checked before training)"
        )
    missing = [c for c in ("image", "prompt") if c not in data.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; rows need image, prompt and optionally ground_truth")
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    return data


def _resolve_paths(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base_dir / value)
    if isinstance(value, list):
        return [_resolve_paths(v, base_dir) for v in value]
    return value


def open_image(image: Any) -> PIL.Image.Image | str | os.PathLike:
    """A row's image as something :func:`icreward.video.load_image` reads (datasets' undecoded dicts included)."""
    if isinstance(image, Mapping):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if image.get("bytes"):
            return PIL.Image.open(io.BytesIO(image["bytes"]))
        if image.get("path"):
            return image["path"]
        raise ValueError("image dict has neither bytes nor path")
    return image


def load_ground_truth_frames(value: Any, *, max_frames: int | None = None) -> torch.Tensor | None:
    """A row's ``ground_truth`` as ``uint8 (P, 3, H, W)`` at its own resolution, or None when the row has none.

    ``value``: a video file or a folder of frames (read with :func:`icreward.video.read_video`, ``max_frames`` evenly
    spaced frames), or a list of frame images (paths or PIL). All frames must share one size.
    """
    from ..video import load_image, read_video

    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, (str, os.PathLike)):
        return read_video(value, max_frames=max_frames)
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        frames = [load_image(open_image(frame)) for frame in value]
        if max_frames is not None and len(frames) > max_frames:
            from ..video import sample_frame_indices

            frames = [frames[i] for i in sample_frame_indices(len(frames), max_frames)]
        for i, frame in enumerate(frames):
            if frame.shape != frames[0].shape:
                raise ValueError(
                    f"ground-truth frames must share one size: frame {i} is {frame.shape[2]}x{frame.shape[1]} but "
                    f"frame 0 is {frames[0].shape[2]}x{frames[0].shape[1]}"
                )
        return torch.stack(frames)
    raise ValueError(
        f"ground_truth must be a video path, a frame folder or a list of frames, got {type(value).__name__}"
    )


def _row_key(row: Mapping[str, Any]) -> str:
    """Stable id of a row's (reference image, ground truth): per-row reward state (face pools) is cached under it."""
    image = row["image"]
    if isinstance(image, (str, os.PathLike)):
        image_id = os.path.abspath(os.fspath(image))
    else:
        opened = open_image(image)
        if isinstance(opened, PIL.Image.Image):
            digest = hashlib.sha1(opened.convert("RGB").tobytes())
            digest.update(repr(opened.size).encode())
            image_id = digest.hexdigest()
        else:
            image_id = os.path.abspath(os.fspath(opened))
    ground_truth = row.get("ground_truth")
    return hashlib.sha1(json.dumps([image_id, repr(ground_truth)]).encode()).hexdigest()


def prompt_row_id(row: Mapping[str, Any]) -> str:
    """A stable identifier of a row, used to seed its sampling noise and frame window: a
    :func:`~icreward.trainers.adapter_lora.row_id` of the row's own ``row_id`` column when it has one (ids that
    survive moving the files), else of its prompt and image (the path as given, or a digest of an in-memory image's
    content). The trainer disambiguates repeated rows (``#2``, ``#3`` ...).
    """
    if row.get("row_id") is not None:
        return row_id("row_id", str(row["row_id"]))
    return row_id(str(row.get("prompt")), image_identity(row["image"]))


class RewardFeedbackCollator:
    """Collate ``image`` / ``prompt`` / ``ground_truth`` rows into what the trainer and the rewards read.

    Returns ``images`` (RGB PIL, cover-resized to ``height x width``, the conditioning images), ``reference_images``
    (the same as ``(B, 3, H, W)`` float in ``[0, 1]``), ``prompts``, ``keys`` (ids of the reference image and ground
    truth, under which the rewards keep per-row state such as face pools), ``row_ids`` (ids of the rows, which seed
    their noise: :func:`prompt_row_id`, or the trainer's precomputed column), ``ground_truth`` (the raw column) and,
    with ``load_ground_truth_frames``, ``ground_truth_frames`` (``uint8`` clips at their own resolution, or None).
    A custom collator may leave out ``row_ids``: the trainer then seeds noise per micro-batch and process.
    """

    def __init__(
        self,
        *,
        height: int,
        width: int,
        load_ground_truth_frames: bool = False,
        ground_truth_max_frames: int | None = None,
    ):
        self.height, self.width = height, width
        self.load_ground_truth_frames = load_ground_truth_frames
        self.ground_truth_max_frames = ground_truth_max_frames

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import numpy as np

        from ..data.dpo_pairs import load_reference_image

        images = [load_reference_image(open_image(r["image"]), height=self.height, width=self.width) for r in rows]
        reference = torch.stack([torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1) for image in images])
        batch = {
            "images": images,
            "reference_images": reference.float() / 255.0,
            "prompts": [r["prompt"] for r in rows],
            "keys": [r[ROW_KEY_COLUMN] if ROW_KEY_COLUMN in r else _row_key(r) for r in rows],
            "row_ids": [r[_ROW_ID_COLUMN] if _ROW_ID_COLUMN in r else prompt_row_id(r) for r in rows],
            "ground_truth": [r.get("ground_truth") for r in rows],
        }
        if self.load_ground_truth_frames:
            batch["ground_truth_frames"] = [
                load_ground_truth_frames(r.get("ground_truth"), max_frames=self.ground_truth_max_frames) for r in rows
            ]
        return batch


def with_row_keys(dataset: Dataset) -> Dataset:
    """Add the reward-state key and the noise id of every row as columns (computed once, read by the collator).

    Repeated rows (same prompt and image) get distinct noise ids, ``prompt_row_id(row) + "#k"`` for the k-th
    repeat in dataset order, so that an upsampled row is not sampled twice from the same noise in one step.
    """
    keys, ids, seen = [], [], Counter()
    for row in dataset:
        keys.append(_row_key(row))
        base = prompt_row_id(row)
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    existing = [c for c in (ROW_KEY_COLUMN, _ROW_ID_COLUMN) if c in dataset.column_names]
    if existing:
        dataset = dataset.remove_columns(existing)
    return dataset.add_column(ROW_KEY_COLUMN, keys).add_column(_ROW_ID_COLUMN, ids)


def describe_value(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, PIL.Image.Image):
        return f"<PIL image {value.size[0]}x{value.size[1]}>"
    if isinstance(value, (list, tuple)):
        return f"<{len(value)} frames>"
    return f"<{type(value).__name__}>"
