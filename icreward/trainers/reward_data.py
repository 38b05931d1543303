"""Collation and frozen-backbone feature caching for reward-model training."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

logger = logging.getLogger("icreward")

__all__ = ["CachedFeatureDataset", "RewardDataCollator", "backbone_fingerprint", "encode_dataset_features"]

POINTWISE_COLUMNS = ("reference", "video", "score")
PAIRWISE_COLUMNS = ("reference", "chosen", "rejected")


def check_columns(dataset, pairwise: bool, name: str = "dataset", extra: tuple[str, ...] = ()) -> None:
    """Raise a clear error when a training/eval dataset lacks the columns the loss needs (plus ``extra`` ones)."""
    columns = set(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else ()))
    needed = (PAIRWISE_COLUMNS if pairwise else POINTWISE_COLUMNS) + tuple(extra)
    missing = [c for c in needed if c not in columns]
    if missing:
        kind = "pairwise (loss_type 'bt'/'bt_ties')" if pairwise else "pointwise (loss_type 'mse')"
        raise ValueError(f"{name} is missing column(s) {missing} needed for {kind} training; it has {sorted(columns)}")
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")


def _pad_frames(tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    max_frames = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros(len(tensors), max_frames, *tensors[0].shape[1:])
    mask = torch.zeros(len(tensors), max_frames, dtype=torch.bool)
    for i, (t, m) in enumerate(zip(tensors, masks)):
        out[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = m
    return out, mask


class RewardDataCollator:
    """Turns dataset rows into model inputs.

    Pointwise rows (``reference``, ``video``, ``score``) give ``pixel_values``, ``frame_mask``,
    ``reference_pixel_values`` and ``labels``. Pairwise rows (``reference``, ``chosen``, ``rejected``, optional
    ``is_tie``) give the same inputs prefixed ``chosen_`` / ``rejected_``, ``ties`` and, with ``weight_column``,
    ``weights``. Rows already holding cached
    backbone features (see :func:`encode_dataset_features`) are padded and stacked instead of read from disk.
    """

    def __init__(
        self,
        processor,
        pairwise: bool = False,
        score_column: str = "score",
        group_column: str | None = None,
        weight_column: str | None = None,
    ):
        self.processor = processor
        self.pairwise = pairwise
        self.score_column = score_column
        self.group_column = group_column
        self.weight_column = weight_column

    def _videos(self, rows: list[dict], column: str, prefix: str) -> dict[str, torch.Tensor]:
        if f"{column}__frame_features" in rows[0]:
            frames, mask = _pad_frames(
                [r[f"{column}__frame_features"] for r in rows], [r[f"{column}__frame_mask"] for r in rows]
            )
            refs = torch.stack([r[f"{column}__reference_features"] for r in rows])
            return {
                f"{prefix}frame_features": frames,
                f"{prefix}frame_mask": mask,
                f"{prefix}reference_features": refs,
            }
        batch = self.processor(videos=[r[column] for r in rows], reference_images=[r["reference"] for r in rows])
        return {f"{prefix}{k}": v for k, v in batch.items()}

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.pairwise:
            out = {**self._videos(rows, "chosen", "chosen_"), **self._videos(rows, "rejected", "rejected_")}
            out["ties"] = torch.tensor([bool(r.get("is_tie", False)) for r in rows])
            if self.weight_column:
                out["weights"] = torch.tensor([float(r[self.weight_column]) for r in rows], dtype=torch.float32)
            return out
        out = self._videos(rows, "video", "")
        out["labels"] = torch.tensor([float(r[self.score_column]) for r in rows], dtype=torch.float32)
        if self.group_column and all(self.group_column in r for r in rows):
            # Videos of the same source image share an id: the in-batch ranking term compares only those.
            ids: dict[Any, int] = {}
            out["groups"] = torch.tensor([ids.setdefault(r[self.group_column], len(ids)) for r in rows])
        return out


def backbone_fingerprint(model, processor) -> str:
    """Hash of everything the cached features depend on: backbone architecture, weights and preprocessing."""
    h = hashlib.sha256()
    h.update(
        json.dumps([model.config.backbone_type, model.config.backbone_config], sort_keys=True, default=str).encode()
    )
    h.update(processor.to_json_string().encode())
    for name, tensor in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class CachedFeatureDataset(Dataset):
    """A dataset whose video columns were replaced by cached backbone features; other columns are kept."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.rows[idx]


@torch.no_grad()
def encode_dataset_features(
    model,
    dataset,
    processor,
    *,
    video_columns: tuple[str, ...] = ("video",),
    batch_size: int = 16,
    store: dict | None = None,
    show_progress: bool = True,
    process_index: int = 0,
    num_processes: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
) -> CachedFeatureDataset:
    """Encode every (reference, video) of ``dataset`` once with the model's frozen backbone.

    ``store`` (any dict) memoises encodings across models and datasets by backbone fingerprint and video, so an
    ICReward and an MLP model on the same backbone encode each video only once (the comparison command does).

    With ``num_processes > 1`` (every process calls this with the same dataset and store) process ``process_index``
    encodes only its share ``todo[process_index::num_processes]`` of the videos not yet in ``store``; ``gather``
    (an all-gather of one picklable object per process; default ``torch.distributed.all_gather_object``) then
    gives every process the full, identical store, filled in the order one process would fill it. The progress bar
    shows on process 0 only.
    """
    if model.backbone_is_trainable:
        raise ValueError("feature caching needs a frozen backbone; this model's backbone is trainable")
    store = {} if store is None else store
    fingerprint = backbone_fingerprint(model, processor)
    kind = model.feature_kind
    was_training = model.training
    model.eval()
    device = model.device
    rows = [dict(dataset[i]) for i in range(len(dataset))]
    for column in video_columns:
        keys = [(fingerprint, _media_key(r["reference"]), _media_key(r[column])) for r in rows]
        first: dict[Any, int] = {}  # each missing (reference, video) once, at its first row
        for i, key in enumerate(keys):
            if key not in store:
                first.setdefault(key, i)
        todo = list(first.values())
        if num_processes > 1:
            shared, todo = todo, todo[process_index::num_processes]
        starts = range(0, len(todo), batch_size)
        show = show_progress and process_index == 0
        for start in tqdm(starts, desc=f"encoding {column} videos", disable=not todo or not show, unit="batch"):
            idx = todo[start : start + batch_size]
            batch = processor(
                videos=[rows[i][column] for i in idx], reference_images=[rows[i]["reference"] for i in idx]
            )
            ref, frm, mask = model._encode_pair(
                batch["pixel_values"].to(device),
                batch["reference_pixel_values"].to(device),
                batch["frame_mask"].to(device),
            )
            offsets = mask.sum(dim=1).cumsum(0).tolist()
            begin = 0
            for j, i in enumerate(idx):
                end = offsets[j]
                store[keys[i]] = {
                    "ref_tokens": ref.tokens[j].cpu(),
                    "ref_pooled": ref.pooled[j].cpu(),
                    "frame_tokens": frm.tokens[begin:end].cpu(),
                    "frame_pooled": frm.pooled[begin:end].cpu(),
                }
                begin = end
        if num_processes > 1 and shared:
            _exchange(store, [keys[i] for i in shared], [keys[i] for i in todo], gather)
        for row, key in zip(rows, keys):
            entry = store[key]
            row[f"{column}__reference_features"] = entry[f"ref_{kind}"]
            row[f"{column}__frame_features"] = entry[f"frame_{kind}"]
            row[f"{column}__frame_mask"] = torch.ones(entry[f"frame_{kind}"].shape[0], dtype=torch.bool)
    model.train(was_training)
    return CachedFeatureDataset(rows)


def _all_gather_object(obj: Any) -> list[Any]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError("sharded feature encoding needs torch.distributed initialised, or a `gather` function")
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _exchange(store: dict, order: list, mine: list, gather: Callable[[Any], list[Any]] | None) -> None:
    """Share this process's new encodings with the others; add everyone's to ``store`` in ``order``."""
    parts = (gather or _all_gather_object)({key: store[key] for key in mine})
    merged: dict = {}
    for part in parts:
        merged.update(part)
    for key in order:
        store.pop(key, None)  # re-insert in the order one process would have filled the store
        store[key] = merged[key]


def _media_key(value: Any) -> str:
    """A hashable identity for a video/image cell: its path, or a digest of its pixels."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("path"):
        return value["path"]
    filename = getattr(value, "filename", None)
    if filename:
        return filename
    try:
        import numpy as np

        array = np.asarray(value)
        return "sha:" + hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()
    except Exception as err:  # noqa: BLE001 - report what could not be keyed
        raise TypeError(f"cannot build a cache key for a {type(value).__name__} cell") from err
