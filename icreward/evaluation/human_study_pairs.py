"""Pairs and trials of a human study (:mod:`icreward.evaluation.human_study`): the pairs file, its validation,
and rater ids."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

__all__ = [
    "PLAYABLE_VIDEO_SUFFIXES",
    "SERVED_IMAGE_SUFFIXES",
    "StudyPair",
    "Trial",
    "as_study_pairs",
    "check_rater_id",
    "media_name",
    "shown_value",
    "utc_now",
]

PLAYABLE_VIDEO_SUFFIXES = {".mp4": "video/mp4", ".webm": "video/webm"}
SERVED_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
_RATER_ID = re.compile(r"[\w.@+\- ]{1,64}")


@dataclass(frozen=True)
class StudyPair:
    """One comparison: the reference image and model A's and model B's videos.

    ``reference`` is a path, a PIL image or a ``(3, H, W)`` uint8 tensor; the videos are paths (files or frame
    folders) or ``(F, 3, H, W)`` tensors. ``label_a`` and ``label_b`` name the two models (e.g. ``"ICReward"``,
    ``"MLP"``) and must differ.
    """

    sample_id: str
    reference: Any
    video_a: Any
    video_b: Any
    label_a: str
    label_b: str
    prompt: str | None = None


@dataclass(frozen=True)
class Trial:
    """The ``trial_index``-th comparison shown to a rater: pair ``pair_index``, with model ``left`` on the left."""

    trial_index: int
    pair_index: int
    left: Literal["a", "b"]

    @property
    def right(self) -> Literal["a", "b"]:
        return "b" if self.left == "a" else "a"


def _read_pairs_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        elif suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise ValueError(f"cannot read pairs from {shown_value(path)}: expected a .jsonl, .json or .csv file")
    except (ValueError, RecursionError, csv.Error) as err:  # bad JSON / UTF-8, absurd nesting or numbers
        if isinstance(err, ValueError) and str(err).startswith("cannot read pairs"):
            raise
        raise ValueError(f"{shown_value(path)}: not a readable pairs file ({type(err).__name__}: {err})") from err
    if not isinstance(rows, list):
        raise ValueError(f"{shown_value(path)} must hold a JSON list of pair objects")
    # Relative media paths in a pairs file are relative to the file, so a study folder can be moved as a whole.
    root = path.parent
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue  # as_study_pairs names the row
        for key in ("reference", "video_a", "video_b"):
            value = row.get(key)
            if isinstance(value, str) and value:
                if not os.path.isabs(value):
                    value = row[key] = str(root / value)
                _check_not_redirected_outside(path, root, index, key, value)
    return rows


def shown_value(value: Any) -> str:
    """A path for a message: ``repr`` of its text, with undecodable bytes of a non-UTF-8 name as ``\\x..`` escapes
    (``os.fsdecode`` turns them into lone surrogates, which cannot be printed or logged)."""
    text = os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) else str(value)
    return repr(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def _check_not_redirected_outside(pairs_file: Path, root: Path, index: int, key: str, value: str) -> None:
    """A media path inside the pairs file's folder must resolve inside it: a symlink in the study folder that
    leads elsewhere (``clip.mp4 -> /etc/passwd``) would otherwise be served as it is. Paths the file names
    outside its folder explicitly (absolute or ``../``) are taken as written."""
    real_root = os.path.realpath(root)
    lexical = os.path.abspath(value)
    if os.path.commonpath([os.path.abspath(root), lexical]) != os.path.abspath(root):
        return
    real = os.path.realpath(value)
    if os.path.commonpath([real_root, real]) != real_root:
        raise ValueError(
            f"{shown_value(pairs_file)}, pair {index}: {key} {shown_value(value)} is a symlink (or lies under one) that "
            f"leads outside the pairs file's folder, to {shown_value(real)}; copy the file into the study folder"
        )


def as_study_pairs(pairs: Any) -> list[StudyPair]:
    if isinstance(pairs, (str, os.PathLike)):
        rows: Iterable[Any] = _read_pairs_file(Path(pairs))
    else:
        rows = pairs
    out = []
    required = ("sample_id", "reference", "video_a", "video_b", "label_a", "label_b")
    for index, row in enumerate(rows):
        if isinstance(row, StudyPair):
            out.append(row)
            continue
        if not isinstance(row, Mapping):
            raise TypeError(f"pair {index} is a {type(row).__name__}; expected a mapping or a StudyPair")
        missing = [k for k in required if row.get(k) is None or (isinstance(row.get(k), str) and not row[k])]
        if missing:
            raise ValueError(f"pair {index} has no {missing}; every pair needs {list(required)}")
        out.append(
            StudyPair(
                sample_id=str(row["sample_id"]),
                reference=row["reference"],
                video_a=row["video_a"],
                video_b=row["video_b"],
                label_a=str(row["label_a"]),
                label_b=str(row["label_b"]),
                prompt=row.get("prompt") or None,
            )
        )
    if not out:
        raise ValueError("the study has no pairs")
    for index, pair in enumerate(out):
        if pair.label_a == pair.label_b:
            raise ValueError(f"pair {index} ({pair.sample_id!r}) compares {pair.label_a!r} with itself")
        for key in ("reference", "video_a", "video_b"):
            value = getattr(pair, key)
            if isinstance(value, (str, os.PathLike)) and not os.path.exists(value):
                raise FileNotFoundError(
                    f"pair {index} ({pair.sample_id!r}): {key} {os.fspath(value)!r} does not exist"
                )
    return out


def media_name(value: Any) -> str:
    return Path(value).name if isinstance(value, (str, os.PathLike)) else "<in-memory>"


def check_rater_id(rater_id: Any) -> str:
    rater_id = str(rater_id or "").strip()
    if not _RATER_ID.fullmatch(rater_id):
        raise ValueError("a rater ID has 1 to 64 letters, digits, spaces or . @ + - _")
    return rater_id


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (
    StudyPair,
    Trial,
):
    _cls.__module__ = "icreward.evaluation.human_study"
