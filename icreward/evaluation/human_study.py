"""A local two-alternative forced-choice (2AFC) human preference study (the ICReward paper's Figure 4).

Each trial shows a reference image and two candidate videos side by side (for example the video ICReward picked
and the one the MLP baseline picked, see :meth:`~icreward.evaluation.best_of_n.BestOfNReport.human_study_pairs`)
and asks which one is more consistent with the image. Raters click one of the two, may write why, and submit.

How it works:

* :class:`HumanStudy` serves one self-contained page (``assets/human_study.html``, no external resources) with
  Python's standard-library ``http.server`` (a threading server, on ``127.0.0.1`` and a free port by default).
  Nothing is installed on the raters' side; any recent browser works. Videos are played with ``<video>`` tags as
  H.264 MP4 (or WebM): files with those suffixes are served as they are (pass ``transcode=True`` to re-encode
  files whose codec browsers may not play, e.g. 4:4:4 H.264 or HEVC) and anything else (frame folders, GIFs,
  tensors) is encoded to 4:2:0 H.264 once, into a cache folder. Media are served under random URLs and the page
  only knows "left" and "right", so the model names never reach the browser.
* **Randomisation**, seeded per rater: every rater gets the pairs in their own random order and, per trial, a
  random left/right placement, both drawn from ``random.Random(f"{seed}:{rater_id}")``: reproducible, different
  between raters, and unchanged when a rater resumes after closing the page.
* **Recording**: every answer is appended to a JSON Lines file as one row and flushed to disk (``fsync``) before
  the page moves on, so a crash loses nothing. The left/right click is mapped back to model A/B on the server,
  and both are stored. A rater can answer each pair once; the optional final free-text feedback is a row of its
  own (``kind == "feedback"``). :func:`load_study_results` reads the file as a :class:`datasets.Dataset`.
* **Analysis**: :func:`summarize_study` gives, overall and per sample, each model's preference share with a
  Wilson score confidence interval (95 % by default) and an exact two-sided binomial test of "no preference";
  it also reports the share of "left" choices (position bias) and collects the comments.
  :func:`plot_study_summary` draws the Figure 4 style bar chart.

Command line (``icreward human-study ...``)::

    icreward human-study pairs --report outputs/best_of_n/report.json --method_a ICReward --method_b MLP \\
        --output study/pairs.jsonl
    icreward human-study serve --pairs study/pairs.jsonl --results study/results.jsonl --port 8000
    icreward human-study summarize --results study/results.jsonl --output_dir study/summary

The server binds to ``127.0.0.1`` by default (only this machine). ``--host 0.0.0.0`` exposes it to the local
network for raters on other machines; it has no authentication, so do that only on a trusted network.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import logging
import math
import mimetypes
import os
import random
import re
import secrets
import shutil
import statistics
import tempfile
import threading
import webbrowser
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

try:  # POSIX: the answers file is locked while an answer is checked and appended (several servers, one file)
    import fcntl
except ImportError:  # pragma: no cover - Windows: only this process's lock applies
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = [
    "HumanStudy",
    "StudyPair",
    "StudyServer",
    "Trial",
    "load_study_results",
    "main",
    "plot_study_summary",
    "study_summary_markdown",
    "summarize_study",
    "wilson_interval",
    "write_study_summary",
]

DEFAULT_TITLE = "Image-to-video consistency study"
DEFAULT_QUESTION = "Which video is more consistent with the reference image?"
DEFAULT_INSTRUCTIONS = (
    "You will see a reference image and two videos generated from it.\n"
    "Pick the video that stays more faithful to the image: the same subject (identity, shape, colours, "
    "accessories), the same background and style, without drifting or degrading over time.\n"
    "There is no right answer; go with your impression. You can explain your choice in the text box."
)

_PLAYABLE_VIDEO_SUFFIXES = {".mp4": "video/mp4", ".webm": "video/webm"}
_SERVED_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
_RATER_ID = re.compile(r"[\w.@+\- ]{1,64}")
_MAX_BODY_BYTES = 64 * 1024
_MAX_COMMENT_CHARS = 5000
_CHUNK = 64 * 1024
#: Seconds a connection may stay silent (while sending a request or reading a response) before it is closed.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Connections served at once; beyond that the server answers 503 at once instead of starting another thread.
DEFAULT_MAX_CONNECTIONS = 64
_MAX_RANGE_DIGITS = 18  # byte offsets beyond 10**18 are not numbers a media file can have

#: Columns of the results file (and of :func:`load_study_results`); rows of ``kind == "feedback"`` only fill
#: ``kind``, ``study_id``, ``rater_id``, ``comment`` and ``timestamp``.
RESULT_COLUMNS = {
    "kind": "string",
    "study_id": "string",
    "seed": "int64",
    "rater_id": "string",
    "trial_index": "int32",
    "pair_index": "int32",
    "sample_id": "string",
    "prompt": "string",
    "label_a": "string",
    "label_b": "string",
    "left": "string",
    "choice_side": "string",
    "choice": "string",
    "chosen_label": "string",
    "rejected_label": "string",
    "comment": "string",
    "response_time_s": "float64",
    "timestamp": "string",
}


# ---------------------------------------------------------------------------------------------------------------------
# Pairs and trials
# ---------------------------------------------------------------------------------------------------------------------


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
            raise ValueError(f"cannot read pairs from {_shown(path)}: expected a .jsonl, .json or .csv file")
    except (ValueError, RecursionError, csv.Error) as err:  # bad JSON / UTF-8, absurd nesting or numbers
        if isinstance(err, ValueError) and str(err).startswith("cannot read pairs"):
            raise
        raise ValueError(f"{_shown(path)}: not a readable pairs file ({type(err).__name__}: {err})") from err
    if not isinstance(rows, list):
        raise ValueError(f"{_shown(path)} must hold a JSON list of pair objects")
    # Relative media paths in a pairs file are relative to the file, so a study folder can be moved as a whole.
    root = path.parent
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue  # _as_pairs names the row
        for key in ("reference", "video_a", "video_b"):
            value = row.get(key)
            if isinstance(value, str) and value:
                if not os.path.isabs(value):
                    value = row[key] = str(root / value)
                _check_not_redirected_outside(path, root, index, key, value)
    return rows


def _shown(value: Any) -> str:
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
            f"{_shown(pairs_file)}, pair {index}: {key} {_shown(value)} is a symlink (or lies under one) that "
            f"leads outside the pairs file's folder, to {_shown(real)}; copy the file into the study folder"
        )


def _as_pairs(pairs: Any) -> list[StudyPair]:
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


def _media_name(value: Any) -> str:
    return Path(value).name if isinstance(value, (str, os.PathLike)) else "<in-memory>"


def _check_rater_id(rater_id: Any) -> str:
    rater_id = str(rater_id or "").strip()
    if not _RATER_ID.fullmatch(rater_id):
        raise ValueError("a rater ID has 1 to 64 letters, digits, spaces or . @ + - _")
    return rater_id


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------------------------------


class HumanStudy:
    """A forced-choice preference study over ``pairs``, recording to ``results_path``.

    Args:
        pairs: rows with ``sample_id``, ``reference``, ``video_a``, ``video_b``, ``label_a``, ``label_b`` and
            optionally ``prompt``: a :class:`datasets.Dataset`, a list of dicts or :class:`StudyPair`, or a
            ``.jsonl`` / ``.json`` / ``.csv`` file (relative media paths are relative to the file).
        results_path: the JSON Lines file answers are appended to. Existing answers of the same study are kept:
            raters resume where they stopped. A file holding answers of a *different* study (other pairs) is
            refused, so two studies never mix in one file.
        seed: seeds each rater's trial order and left/right placements (with the rater ID).
        title, question, instructions: texts shown on the page.
        shuffle: present the pairs in a random order per rater (else in the given order; sides are still random).
        transcode: re-encode every video to H.264 MP4 instead of serving ``.mp4`` / ``.webm`` files as they are.
        video_fps: frame rate of videos encoded from tensors (files keep their own rate).
        cache_dir: where encoded media go; default a temporary folder removed when the server shuts down.

    Example:
        >>> study = HumanStudy("study/pairs.jsonl", "study/results.jsonl", seed=0)  # doctest: +SKIP
        >>> server = study.serve(port=8000)                                          # doctest: +SKIP
        >>> print(server.url)  # share it with the raters; server.shutdown() when done  # doctest: +SKIP
    """

    def __init__(
        self,
        pairs: Any,
        results_path: str | os.PathLike,
        seed: int = 0,
        *,
        title: str = DEFAULT_TITLE,
        question: str = DEFAULT_QUESTION,
        instructions: str = DEFAULT_INSTRUCTIONS,
        shuffle: bool = True,
        transcode: bool = False,
        video_fps: float = 8.0,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.pairs = _as_pairs(pairs)
        self.results_path = Path(results_path)
        self.seed = int(seed)
        self.title, self.question, self.instructions = title, question, instructions
        self.shuffle = shuffle
        self.transcode = transcode
        self.video_fps = video_fps
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        identity = [
            (p.sample_id, p.label_a, p.label_b, _media_name(p.video_a), _media_name(p.video_b)) for p in self.pairs
        ]
        self.study_id = hashlib.sha1(json.dumps(identity).encode("utf-8")).hexdigest()[:12]
        self._lock = threading.Lock()
        self._answered: dict[str, set[int]] = {}
        self._offset = 0  # bytes of the results file already read into _answered
        self._line_number = 0
        #: Line numbers of damaged lines in the results file (a torn last line after a crash or a full disk):
        #: skipped with a warning, never fatal.
        self.damaged_lines: list[int] = []
        self._load_existing_answers()
        self._media: dict[str, tuple[Path, str]] = {}
        self._urls: list[dict[str, str]] = []
        self._own_cache: Path | None = None

    def __repr__(self) -> str:
        return (
            f"HumanStudy(num_pairs={len(self.pairs)}, study_id={self.study_id!r}, seed={self.seed}, "
            f"results_path={os.fspath(self.results_path)!r})"
        )

    # ----------------------------------------------------------------------------------------------------- trials

    def trials_for(self, rater_id: str) -> list[Trial]:
        """The rater's trials: their pair order and left/right placements (deterministic in seed and rater ID)."""
        rng = random.Random(f"{self.seed}:{_check_rater_id(rater_id)}")
        order = list(range(len(self.pairs)))
        if self.shuffle:
            rng.shuffle(order)
        return [Trial(t, p, "a" if rng.random() < 0.5 else "b") for t, p in enumerate(order)]

    def answered_pairs(self, rater_id: str) -> set[int]:
        """Pair indices the rater has answered (from this session and earlier ones in the results file)."""
        with self._lock:
            return set(self._answered.get(_check_rater_id(rater_id), set()))

    def _load_existing_answers(self) -> None:
        if not self.results_path.exists():
            return
        with _locked(self.results_path, "rb", exclusive=False) as f:
            self._catch_up(f, initial=True)

    def _catch_up(self, f, initial: bool = False) -> bool:
        """Read the rows other writers appended since the last call (the file is locked); return whether the file
        ends with a newline (or is empty)."""
        f.seek(self._offset)
        data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn tail stays unread until a newline completes it
        rows = _parse_lines(complete, self.results_path, self._line_number + 1, self.damaged_lines)
        self._offset += len(complete)
        self._line_number += complete.count(b"\n")
        for row in rows:
            if row.get("study_id") != self.study_id:
                if initial:
                    raise ValueError(
                        f"{_shown(self.results_path)} holds answers of another study (study_id "
                        f"{row.get('study_id')!r}, this study is {self.study_id!r}: its pairs differ); use a new "
                        "results file"
                    )
                continue
            if row.get("kind") == "choice" and _is_choice_row(row):
                self._answered.setdefault(row["rater_id"], set()).add(int(row["pair_index"]))
        end = self._offset + len(data) - len(complete)
        if end == 0:
            return True
        f.seek(end - 1)
        return f.read(1) == b"\n"

    # -------------------------------------------------------------------------------------------------- recording

    def _append(self, record: dict[str, Any], unique_pair: int | None = None) -> None:
        """Append one row, on a line of its own, and fsync it before returning.

        Called with ``self._lock`` held; the file is also locked (``flock``) while the rows other processes
        appended are read, the (rater, pair) is checked against them and the row is written, so two servers on
        one results file cannot both accept the same answer. A torn last line left by a crash is closed with a
        newline first (it is reported and skipped when read) instead of being continued by this row.
        """
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.results_path, "a+b", exclusive=True) as f:
            ends_with_newline = self._catch_up(f)
            if unique_pair is not None and unique_pair in self._answered.get(record["rater_id"], set()):
                raise RuntimeError(f"rater {record['rater_id']!r} already answered trial {record['trial_index']}")
            data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            if not ends_with_newline:
                logger.warning("%s: the last line is incomplete (a crash?); starting a new line", self.results_path)
                data = b"\n" + data
            f.seek(0, os.SEEK_END)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0, os.SEEK_END)
            self._catch_up(f)  # reads our own row (and marks the damaged line, if any)

    def record_answer(
        self,
        rater_id: str,
        trial_index: int,
        choice: Literal["left", "right"],
        comment: str = "",
        response_time_s: float | None = None,
    ) -> dict[str, Any]:
        """Record the rater's choice on one of their trials and return the stored row.

        The web page calls this through ``POST /api/answer``; scripts can call it directly (e.g. to import answers
        collected elsewhere). ``choice`` is the side the rater clicked; it is mapped to model A or B here.

        Raises:
            ValueError: unknown rater ID format, trial index or choice.
            RuntimeError: the rater already answered this pair (answers are final).
        """
        rater_id = _check_rater_id(rater_id)
        trials = self.trials_for(rater_id)
        if isinstance(trial_index, bool) or not isinstance(trial_index, int) or not 0 <= trial_index < len(trials):
            raise ValueError(f"trial_index must be an integer in [0, {len(trials)}), got {_short(trial_index)}")
        if choice not in ("left", "right"):
            raise ValueError(f"choice must be 'left' or 'right', got {_short(choice)}")
        if response_time_s is not None and not (
            isinstance(response_time_s, (int, float))
            and not isinstance(response_time_s, bool)
            and abs(response_time_s) < 1e12  # also keeps a 5000-digit integer from reaching float()
            and math.isfinite(response_time_s)
        ):
            raise ValueError(f"response_time_s must be a finite number, got {_short(response_time_s)}")
        trial = trials[trial_index]
        pair = self.pairs[trial.pair_index]
        picked = trial.left if choice == "left" else trial.right
        labels = {"a": pair.label_a, "b": pair.label_b}
        record = {
            "kind": "choice",
            "study_id": self.study_id,
            "seed": self.seed,
            "rater_id": rater_id,
            "trial_index": trial_index,
            "pair_index": trial.pair_index,
            "sample_id": pair.sample_id,
            "prompt": pair.prompt,
            "label_a": pair.label_a,
            "label_b": pair.label_b,
            "left": trial.left,
            "choice_side": choice,
            "choice": picked,
            "chosen_label": labels[picked],
            "rejected_label": labels["b" if picked == "a" else "a"],
            "comment": str(comment or "").strip()[:_MAX_COMMENT_CHARS],
            "response_time_s": None if response_time_s is None else float(response_time_s),
            "timestamp": _now(),
        }
        with self._lock:
            if trial.pair_index in self._answered.get(rater_id, set()):
                raise RuntimeError(f"rater {rater_id!r} already answered trial {trial_index}")
            self._append(record, unique_pair=trial.pair_index)
        return record

    def record_feedback(self, rater_id: str, comment: str) -> dict[str, Any]:
        """Record a rater's free-text feedback on the whole study (a row with ``kind == "feedback"``)."""
        comment = str(comment or "").strip()[:_MAX_COMMENT_CHARS]
        if not comment:
            raise ValueError("the feedback is empty")
        record = {
            "kind": "feedback",
            "study_id": self.study_id,
            "seed": self.seed,
            "rater_id": _check_rater_id(rater_id),
            "comment": comment,
            "timestamp": _now(),
        }
        with self._lock:
            self._append(record)
        return record

    # ------------------------------------------------------------------------------------------------------ media

    def _register(self, path: Path, mime: str) -> str:
        if not path.is_file():  # a FIFO or device named clip.mp4 would hang or flood the server
            raise ValueError(f"{_shown(path)} is not a regular file; the study serves only files")
        token = secrets.token_urlsafe(12) + path.suffix.lower()
        self._media[token] = (path, mime)
        return f"/media/{token}"

    def _prepare_media(self) -> None:
        """Give every reference and video a random URL, encoding what browsers cannot show directly."""
        if self._urls:
            return
        cache = self.cache_dir
        if cache is None:
            cache = self._own_cache = Path(tempfile.mkdtemp(prefix="icreward-study-"))
        cache.mkdir(parents=True, exist_ok=True)
        for index, pair in enumerate(self.pairs):
            self._urls.append(
                {
                    "reference": self._prepare_image(pair.reference, cache / f"{index:05d}_reference.png"),
                    "a": self._prepare_video(pair.video_a, cache / f"{index:05d}_a.mp4"),
                    "b": self._prepare_video(pair.video_b, cache / f"{index:05d}_b.mp4"),
                }
            )

    def _prepare_image(self, image: Any, target: Path) -> str:
        if isinstance(image, (str, os.PathLike)) and Path(image).suffix.lower() in _SERVED_IMAGE_SUFFIXES:
            path = Path(image)
            return self._register(path, mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        from PIL import Image

        from .best_of_n import _as_image_tensor

        Image.fromarray(_as_image_tensor(image).permute(1, 2, 0).numpy()).save(target)
        return self._register(target, "image/png")

    def _prepare_video(self, video: Any, target: Path) -> str:
        from ..video import read_video_with_info, write_video

        suffix = Path(video).suffix.lower() if isinstance(video, (str, os.PathLike)) else ""
        if suffix in _PLAYABLE_VIDEO_SUFFIXES and not self.transcode:
            return self._register(Path(video), _PLAYABLE_VIDEO_SUFFIXES[suffix])
        if isinstance(video, (str, os.PathLike)):
            frames, info = read_video_with_info(video)
            fps = info.fps or self.video_fps
        else:
            from .best_of_n import _as_video_tensor

            frames, fps = _as_video_tensor(video), self.video_fps
        # 4:2:0 H.264 (what every browser plays) needs even sizes: drop a last odd row/column rather than let the
        # encoder fall back to 4:4:4, which Chrome and Firefox refuse.
        height, width = frames.shape[-2] // 2 * 2, frames.shape[-1] // 2 * 2
        write_video(target, frames[..., :height, :width], fps=fps)
        return self._register(target, "video/mp4")

    def _trials_payload(self, rater_id: str) -> dict[str, Any]:
        rater_id = _check_rater_id(rater_id)
        answered = self.answered_pairs(rater_id)
        trials = []
        for trial in self.trials_for(rater_id):
            urls, pair = self._urls[trial.pair_index], self.pairs[trial.pair_index]
            trials.append(
                {
                    "trial_index": trial.trial_index,
                    "reference": urls["reference"],
                    "left": urls[trial.left],
                    "right": urls[trial.right],
                    "prompt": pair.prompt,
                    "answered": trial.pair_index in answered,
                }
            )
        return {"rater_id": rater_id, "trials": trials}

    def _config_payload(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "question": self.question,
            "instructions": self.instructions,
            "num_trials": len(self.pairs),
        }

    # ---------------------------------------------------------------------------------------------------- serving

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        open_browser: bool = False,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> StudyServer:
        """Start the study's web server in a background thread and return it.

        Args:
            host: interface to bind (``127.0.0.1``: this machine only; ``0.0.0.0``: the local network, no auth).
            port: TCP port; ``0`` picks a free one (see ``server.url``).
            open_browser: open the page in the default browser.
            request_timeout: seconds a connection may stay silent (mid-request, or idle between keep-alive
                requests) before it is closed; a stalled upload is answered ``408`` and dropped.
            max_connections: connections served at once, each by one thread; a connection beyond them is
                answered ``503`` (with ``Retry-After``) at once, so stalled clients cannot pile up threads.

        Returns:
            A :class:`StudyServer`; call ``.shutdown()`` (or use it as a context manager) to stop it.
        """
        self._prepare_media()
        page = resources.files("icreward.evaluation").joinpath("assets/human_study.html").read_bytes()
        if not (isinstance(request_timeout, (int, float)) and 0 < request_timeout < math.inf):
            raise ValueError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive integer, got {max_connections!r}")
        httpd = _StudyHTTPServer(
            (host, port),
            _StudyRequestHandler,
            study=self,
            page=page,
            request_timeout=float(request_timeout),
            max_connections=max_connections,
        )
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        server = StudyServer(httpd, thread, cleanup=self._cleanup)
        logger.info("human study %s: %d pairs, serving at %s", self.study_id, len(self.pairs), server.url)
        if open_browser:
            webbrowser.open(server.url)
        return server

    def _cleanup(self) -> None:
        if self._own_cache is not None:
            shutil.rmtree(self._own_cache, ignore_errors=True)
            self._own_cache = None
            self._urls, self._media = [], {}


class StudyServer:
    """A running study server: ``url`` to share, ``shutdown()`` to stop (also on leaving a ``with`` block)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread, cleanup=None):
        self._httpd = httpd
        self._thread = thread
        self._cleanup = cleanup
        self.host, self.port = httpd.server_address[:2]

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds one worker thread; at most ``max_connections``)."""
        return self._httpd.active_connections if self._httpd is not None else 0

    @property
    def url(self) -> str:
        # A wildcard bind is reachable locally through the loopback address.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def shutdown(self) -> None:
        """Stop serving, close the socket and remove the temporary media cache (idempotent)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None
        if self._cleanup is not None:
            self._cleanup()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._httpd is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def __enter__(self) -> StudyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"StudyServer(url={self.url!r}, running={self._httpd is not None})"


class _StudyHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; each connection's socket has a timeout."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections from browsers must not hold up shutdown()
    # The kernel completes this many connections before they are accepted (socketserver's default is 5): with
    # more waiting, clients sit in SYN retries instead of getting an answer (a 503 when every worker is busy).
    request_queue_size = 128

    def __init__(
        self, address, handler, *, study: HumanStudy, page: bytes, request_timeout: float, max_connections: int
    ):
        self.study = study
        self.page = page
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active = 0
        self._count_lock = threading.Lock()
        self.num_refused = 0  # connections answered 503 because every slot was taken
        super().__init__(address, handler)

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds one thread)."""
        return self._active

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.num_refused += 1
            body = b'{"error": "the study server is busy; retry in a moment"}'
            try:  # a fresh socket's send buffer takes this at once; never wait on the client from this thread
                request.setblocking(False)
                request.send(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._count_lock:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._active -= 1
        self._slots.release()

    def handle_error(self, request, client_address) -> None:
        logger.debug("human study: error on a connection from %s", client_address, exc_info=True)


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class _StudyRequestHandler(BaseHTTPRequestHandler):
    server: _StudyHTTPServer
    server_version = "icreward-human-study"
    protocol_version = "HTTP/1.1"  # keep-alive and byte ranges, which <video> relies on (Safari requires ranges)

    def setup(self) -> None:
        # StreamRequestHandler.setup() puts this timeout on the socket: every read and write of this connection
        # (request line, headers, body, and the wait for the next keep-alive request) gives up after it.
        self.timeout = self.server.request_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s - %s", self.address_string(), format % args)

    # --------------------------------------------------------------------------------------------------- routing

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _dispatch(self, route) -> None:
        try:
            route(urlsplit(self.path))
        except _HTTPError as err:
            # The request body may be unread: do not parse its leftovers as the next request on this connection.
            self.close_connection = True
            self._send_json({"error": str(err)}, err.status)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dropped the connection (common when a <video> changes source)
        except TimeoutError:
            self.close_connection = True  # the client stopped reading (or sending) for request_timeout seconds

    def _get(self, url) -> None:
        study = self.server.study
        if url.path in ("/", "/index.html"):
            self._send_bytes(self.server.page, "text/html; charset=utf-8")
        elif url.path == "/api/config":
            self._send_json(study._config_payload())
        elif url.path == "/api/trials":
            rater = parse_qs(url.query).get("rater", [""])[0]
            try:
                self._send_json(study._trials_payload(rater))
            except ValueError as err:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, str(err)) from err
        elif url.path.startswith("/media/"):
            media = study._media.get(url.path[len("/media/") :])
            if media is None:
                raise _HTTPError(HTTPStatus.NOT_FOUND, "no such media")
            self._send_file(*media)
        else:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def _post(self, url) -> None:
        study = self.server.study
        body = self._read_json()
        try:
            if url.path == "/api/answer":
                trial_index = body.get("trial_index")
                record = study.record_answer(
                    body.get("rater_id"),
                    trial_index,
                    body.get("choice"),
                    comment=body.get("comment") or "",
                    response_time_s=body.get("response_time_s"),
                )
                answered = len(study.answered_pairs(record["rater_id"]))
                self._send_json({"ok": True, "num_answered": answered, "num_trials": len(study.pairs)})
            elif url.path == "/api/feedback":
                study.record_feedback(body.get("rater_id"), body.get("comment") or "")
                self._send_json({"ok": True})
            else:
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
        except ValueError as err:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, str(err)) from err
        except RuntimeError as err:
            raise _HTTPError(HTTPStatus.CONFLICT, str(err)) from err

    # -------------------------------------------------------------------------------------------------- helpers

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 < length <= _MAX_BODY_BYTES:
            raise _HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > 0 else HTTPStatus.BAD_REQUEST, "bad body size"
            )
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time") from None
        if len(data) < length:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request body is shorter than its Content-Length")
        try:
            body = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, a 5000-digit integer, 30000-deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else "not JSON"
            if isinstance(err, ValueError) and "integer string conversion" in str(err):
                reason = "an integer with too many digits"
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"the body is {reason}") from None
        if not isinstance(body, dict):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def _send_bytes(self, data: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send_bytes(json.dumps(payload).encode("utf-8"), "application/json", status)

    def _send_file(self, path: Path, content_type: str) -> None:
        try:
            size = path.stat().st_size
        except OSError:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "the media file is gone") from None
        start, end, status = 0, size - 1, HTTPStatus.OK
        header = self.headers.get("Range")
        if header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if match is not None and max(map(len, match.groups())) > _MAX_RANGE_DIGITS:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"a Range offset has more than {_MAX_RANGE_DIGITS} digits")
            if match is None or match.groups() == ("", ""):
                self._send_unsatisfiable(size)
                return
            first, last = match.groups()
            if first == "":  # "bytes=-N": the last N bytes
                start = max(size - int(last), 0)
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start > end or start >= size:
                self._send_unsatisfiable(size)
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Cache-Control", "private, max-age=3600")
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _send_unsatisfiable(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()


# ---------------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------------


class _locked:
    """``open(path, mode)`` holding an ``flock`` on the file (exclusive or shared) until it is closed."""

    def __init__(self, path: Path, mode: str, exclusive: bool):
        self.path, self.mode, self.exclusive = path, mode, exclusive

    def __enter__(self):
        self.file = open(self.path, self.mode)  # noqa: SIM115 - closed in __exit__
        if fcntl is not None:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
            except BaseException:
                self.file.close()
                raise
        return self.file

    def __exit__(self, *exc) -> None:
        self.file.close()  # closing releases the lock


_CHOICE_FIELDS = {"rater_id": str, "pair_index": int, "sample_id": str, "label_a": str, "label_b": str,
                  "chosen_label": str, "choice_side": str}  # fmt: skip


def _is_choice_row(row: Mapping[str, Any]) -> bool:
    return all(isinstance(row.get(k), t) and not isinstance(row.get(k), bool) for k, t in _CHOICE_FIELDS.items())


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters (a 5000-digit number is not echoed back;
    ``repr`` of such an int would raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"<an integer of more than {limit} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ROW_START = re.compile(rb'\{"kind": ?"')


def _parse_lines(data: bytes, path: Path, first_line: int, damaged: list[int]) -> list[dict[str, Any]]:
    """Rows of complete JSON Lines ``data``; a damaged line is reported (``damaged`` gets its number) and
    skipped. A row appended onto a torn line (by a writer that did not start a new line) is recovered."""
    rows = []
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        row = _json_row(line)
        if row is None:
            # A torn row followed by a whole one: parse from the last start of a row.
            starts = [m.start() for m in _ROW_START.finditer(line) if m.start() > 0]
            row = _json_row(line[starts[-1] :]) if starts else None
            damaged.append(number)
            logger.warning(
                "%s, line %d: damaged line skipped%s", _shown(path), number,
                "; the row appended onto it was recovered" if row is not None else "",
            )  # fmt: skip
            if row is None:
                continue
        rows.append(row)
    return rows


def _json_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, absurd nesting or numbers
        return None
    return row if isinstance(row, dict) else None


def _read_jsonl(path: Path, damaged: list[int] | None = None) -> list[dict[str, Any]]:
    """The rows of a results file. Damaged lines (a torn last line after a crash, or one that a later row was
    appended onto) are skipped with a warning, and their numbers added to ``damaged``."""
    with _locked(path, "rb", exclusive=False) as f:
        data = f.read()
    damaged = [] if damaged is None else damaged
    rows = _parse_lines(data, path, 1, damaged)
    return rows


def _result_rows(results: Any, damaged: list[int] | None = None) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.exists():
            raise FileNotFoundError(f"no results file at {_shown(path)}")
        return _read_jsonl(path, damaged)
    return [dict(r) for r in results]


def load_study_results(path: str | os.PathLike):
    """Read a results file as a :class:`datasets.Dataset` with the columns of :data:`RESULT_COLUMNS`.

    Rows with ``kind == "choice"`` are answers, ``kind == "feedback"`` free-text feedback on the whole study.
    """
    from datasets import Dataset, Features, Value

    features = Features({name: Value(dtype) for name, dtype in RESULT_COLUMNS.items()})
    rows = _result_rows(path)
    columns = {name: [row.get(name) for row in rows] for name in RESULT_COLUMNS}
    return Dataset.from_dict(columns, features=features)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    ``(center -+ half) `` with ``center = (p + z^2 / 2n) / (1 + z^2 / n)`` and
    ``half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)``, ``z`` the two-sided normal quantile. Unlike
    the normal (Wald) interval it stays inside ``[0, 1]`` and is usable for small ``n`` and shares near 0 or 1.
    ``n == 0`` gives ``(0.0, 1.0)`` (nothing is known).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At p = 0 (p = 1) the bound is exactly 0 (1); say so instead of returning round-off like 2.8e-17.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def _share(wins: int, n: int, confidence: float) -> dict[str, Any]:
    low, high = wilson_interval(wins, n, confidence)
    return {"wins": wins, "n": n, "share": wins / n if n else None, "ci_low": low, "ci_high": high}


def _binomial_p_value(wins: int, n: int) -> float | None:
    if n == 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def _preferences(rows: list[dict[str, Any]], labels: list[str], confidence: float) -> dict[str, Any]:
    wins = {label: 0 for label in labels}
    total = {label: 0 for label in labels}
    for row in rows:
        wins[row["chosen_label"]] += 1
        total[row["label_a"]] += 1
        total[row["label_b"]] += 1
    present = [label for label in labels if total[label]]
    result: dict[str, Any] = {
        "n": len(rows),
        "preferences": {label: _share(wins[label], total[label], confidence) for label in present},
    }
    # "No preference" is one binomial test only when every comparison is between the same two models.
    first = present[0] if present else None
    result["p_value"] = _binomial_p_value(wins[first], total[first]) if len(present) == 2 else None
    return result


def summarize_study(results: Any, *, confidence: float = 0.95) -> dict[str, Any]:
    """Preference shares per model, overall and per sample, with Wilson confidence intervals.

    Args:
        results: a results file, a :class:`datasets.Dataset` from :func:`load_study_results`, or row dicts.
        confidence: level of the Wilson intervals.

    Returns:
        A JSON-serialisable dict:

        * ``labels``: the models, in order of appearance in the pairs; ``num_choices``, ``num_raters``, ``num_samples``;
        * ``overall`` and ``per_sample[sample_id]``: ``n`` (comparisons), ``preferences[label]`` with ``wins``,
          ``n`` (comparisons the model took part in), ``share``, ``ci_low``, ``ci_high``, and ``p_value`` of an
          exact two-sided binomial test of equal preference (``None`` unless exactly two models are compared);
        * ``left``: share of choices of the left video (position bias; about 0.5 expected);
        * ``per_rater``: answers per rater; ``comments`` (per-trial texts) and ``feedback`` (study-level texts);
        * ``num_duplicates_dropped``: repeated answers by a rater to the same pair (the first one is kept);
        * ``damaged_lines``: line numbers of damaged lines of a results file (a torn line after a crash), and
          ``num_malformed_rows``: answer rows without the fields of an answer; both are skipped and reported
          rather than failing the whole file.
    """
    damaged: list[int] = []
    rows = _result_rows(results, damaged)
    choices, seen, duplicates, malformed = [], set(), 0, 0
    for number, row in enumerate(rows, start=1):
        if row.get("kind") != "choice":
            continue
        if not _is_choice_row(row) or row["chosen_label"] not in (row["label_a"], row["label_b"]):
            logger.warning("results row %d is not a well-formed answer; skipped", number)
            malformed += 1
            continue
        key = (row.get("study_id"), row["rater_id"], row["pair_index"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        choices.append(row)
    labels: list[str] = []
    # Model order: as in the pairs (pair 0's model A first), not as in the answers, which are shuffled.
    for row in sorted(choices, key=lambda r: r["pair_index"]):
        for label in (row["label_a"], row["label_b"]):
            if label not in labels:
                labels.append(label)
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for row in choices:
        by_sample.setdefault(row["sample_id"], []).append(row)
    per_rater: dict[str, int] = {}
    for row in choices:
        per_rater[row["rater_id"]] = per_rater.get(row["rater_id"], 0) + 1
    lefts = sum(row["choice_side"] == "left" for row in choices)
    return {
        "confidence": confidence,
        "labels": labels,
        "num_choices": len(choices),
        "num_raters": len(per_rater),
        "num_samples": len(by_sample),
        "num_duplicates_dropped": duplicates,
        "damaged_lines": damaged,
        "num_malformed_rows": malformed,
        "overall": _preferences(choices, labels, confidence),
        "per_sample": {sid: _preferences(sample_rows, labels, confidence) for sid, sample_rows in by_sample.items()},
        "left": _share(lefts, len(choices), confidence),
        "per_rater": per_rater,
        "comments": [
            {k: row.get(k) for k in ("rater_id", "sample_id", "chosen_label", "rejected_label", "comment")}
            for row in choices
            if row.get("comment")
        ],
        "feedback": [
            {"rater_id": row.get("rater_id"), "comment": row.get("comment")}
            for row in rows
            if row.get("kind") == "feedback"
        ],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}|~#!])")


def _md(value: Any) -> str:
    """Text from raters or pairs files as inert markdown: one line (a newline could end a table row and start a
    forged one), HTML special characters as entities (no ``<script>``, no tags), markdown syntax escaped (no
    ``|`` cell breaks, links, emphasis or code)."""
    text = " ".join(str(value).split())  # every kind of line break and whitespace run -> one space
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", text), quote=False)


def study_summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as markdown: one table row per sample (and overall), one column per model.

    Every text that comes from the raters or the pairs file (comments, sample IDs, model labels, rater IDs) is
    escaped, so it renders as the text it is (no forged table rows, no HTML).
    """
    labels = summary["labels"]
    level = round(100 * summary["confidence"])
    lines = [
        "# Human preference study",
        "",
        f"{summary['num_choices']} forced choices by {summary['num_raters']} "
        f"rater{'' if summary['num_raters'] == 1 else 's'} on {summary['num_samples']} "
        f"samples. Shares with Wilson {level}% confidence intervals; p: exact two-sided binomial test of no "
        "preference.",
        "",
        "| sample | n | " + " | ".join(_md(label) for label in labels) + " | p |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    entries = [*((_md(k), v) for k, v in summary["per_sample"].items()), ("**overall**", summary["overall"])]
    for name, entry in entries:
        cells = []
        for label in labels:
            stats = entry["preferences"].get(label)
            cells.append(
                "-"
                if stats is None
                else f"{_pct(stats['share'])} [{_pct(stats['ci_low'])}, {_pct(stats['ci_high'])}] ({stats['wins']}/{stats['n']})"
            )
        p_value = "-" if entry["p_value"] is None else f"{entry['p_value']:.3g}"
        lines.append(f"| {name} | {entry['n']} | " + " | ".join(cells) + f" | {p_value} |")
    left = summary["left"]
    lines += [
        "",
        f"Left video chosen in {_pct(left['share'])} of trials [{_pct(left['ci_low'])}, {_pct(left['ci_high'])}] "
        "(position bias check; about 50% expected).",
    ]
    if summary["num_duplicates_dropped"]:
        lines.append(f"{summary['num_duplicates_dropped']} repeated answers were dropped (first answer kept).")
    damaged, malformed = summary.get("damaged_lines") or [], summary.get("num_malformed_rows") or 0
    if damaged or malformed:
        lines.append(
            f"Skipped {len(damaged)} damaged line(s) of the results file (line {', '.join(map(str, damaged[:20]))}) "
            f"and {malformed} malformed answer row(s)."
            if damaged
            else f"Skipped {malformed} malformed answer row(s)."
        )
    if summary["comments"]:
        lines += ["", "## Comments", ""]
        lines += [
            f"- **{_md(c['sample_id'])}** ({_md(c['rater_id'])}, chose {_md(c['chosen_label'])}): {_md(c['comment'])}"
            for c in summary["comments"]
        ]
    if summary["feedback"]:
        lines += ["", "## Feedback", ""]
        lines += [f"- {_md(f['rater_id'])}: {_md(f['comment'])}" for f in summary["feedback"]]
    return "\n".join(lines) + "\n"


def plot_study_summary(
    summary: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None, max_samples: int = 20
) -> Path:
    """Figure 4 style bar chart: per sample (the first ``max_samples``) and overall, each model's preference share
    with its Wilson interval, annotated with ``wins/n``. Written as PNG to ``path``."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = summary["labels"]
    entries = [*list(summary["per_sample"].items())[:max_samples], ("overall", summary["overall"])]
    fig = Figure(figsize=(max(4.5, 1.0 + 0.9 * len(entries) * max(len(labels), 1) / 2), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(entries))
    for i, label in enumerate(labels):
        shares, lows, highs, notes = [], [], [], []
        for _, entry in entries:
            stats = entry["preferences"].get(label)
            share = stats["share"] if stats and stats["share"] is not None else 0.0
            shares.append(share)
            lows.append(share - stats["ci_low"] if stats else 0.0)
            highs.append(stats["ci_high"] - share if stats else 0.0)
            notes.append(f"{stats['wins']}/{stats['n']}" if stats else "")
        offset = x + (i - (len(labels) - 1) / 2) * width
        bars = ax.bar(offset, shares, width, yerr=[lows, highs], capsize=3, label=label, color=f"C{i}")
        ax.bar_label(bars, notes, label_type="center", fontsize="x-small", color="white")
    ax.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    rotate = len(entries) > 3 or max((len(str(name)) for name, _ in entries), default=0) > 12  # long ids overlap
    ax.set_xticks(x, [name for name, _ in entries], rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlabel("sample")
    ax.set_ylim(0, 1.15)  # headroom for the legend above the bars
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("preference share")
    level = round(100 * summary["confidence"])
    raters = summary["num_raters"]
    ax.set_title(title or f"Human preference ({raters} rater{'' if raters == 1 else 's'}; Wilson {level}% CI)")
    ax.legend(fontsize="small", loc="upper center", ncols=max(len(labels), 1), frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def write_study_summary(summary: Mapping[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``summary.json``, ``summary.md`` and ``preference.png`` to ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "summary.json", "markdown": output_dir / "summary.md"}
    paths["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(study_summary_markdown(summary), encoding="utf-8")
    paths["plot"] = plot_study_summary(summary, output_dir / "preference.png")
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icreward human-study", description="Forced-choice human preference study between two models' videos."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Serve the study page and record answers until Ctrl-C.")
    serve.add_argument(
        "--pairs",
        required=True,
        help="Pairs file (.jsonl/.json/.csv): sample_id, reference, video_a, video_b, label_a, label_b[, prompt].",
    )
    serve.add_argument("--results", required=True, help="JSON Lines file the answers are appended to.")
    serve.add_argument("--host", default="127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the study (no auth).")
    serve.add_argument("--port", type=int, default=8000, help="Port (0: any free port).")
    serve.add_argument("--seed", type=int, default=0, help="Seeds each rater's order and left/right placements.")
    serve.add_argument("--title", default=DEFAULT_TITLE)
    serve.add_argument("--question", default=DEFAULT_QUESTION)
    serve.add_argument("--instructions", default=DEFAULT_INSTRUCTIONS)
    serve.add_argument("--no_shuffle", action="store_true", help="Show the pairs in file order (sides stay random).")
    serve.add_argument("--transcode", action="store_true", help="Re-encode every video to H.264 MP4.")
    serve.add_argument("--cache_dir", default=None, help="Where encoded media go (default: a temporary folder).")
    serve.add_argument("--open_browser", action="store_true", help="Open the page in the default browser.")
    serve.add_argument(
        "--request_timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        help="Seconds a connection may stay silent before it is closed.",
    )
    serve.add_argument(
        "--max_connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="Connections served at once (one thread each); more are answered 503.",
    )

    summarize = commands.add_parser("summarize", help="Preference shares with Wilson intervals; JSON, markdown, PNG.")
    summarize.add_argument("--results", required=True, help="The study's results file.")
    summarize.add_argument(
        "--output_dir", default=None, help="Write summary.json, summary.md and preference.png here."
    )
    summarize.add_argument("--confidence", type=float, default=0.95)

    pairs = commands.add_parser("pairs", help="Build the pairs file from a best-of-N report (two methods' picks).")
    pairs.add_argument("--report", required=True, help="report.json written by the best-of-N evaluation.")
    pairs.add_argument("--method_a", required=True)
    pairs.add_argument("--method_b", required=True)
    pairs.add_argument("--output", required=True, help="Pairs file to write (.jsonl).")
    pairs.add_argument("--include_same_pick", action="store_true", help="Keep images where both methods agree.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``icreward human-study ...``)."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "serve":
        study = HumanStudy(
            args.pairs,
            args.results,
            args.seed,
            title=args.title,
            question=args.question,
            instructions=args.instructions,
            shuffle=not args.no_shuffle,
            transcode=args.transcode,
            cache_dir=args.cache_dir,
        )
        server = study.serve(
            args.host,
            args.port,
            open_browser=args.open_browser,
            request_timeout=args.request_timeout,
            max_connections=args.max_connections,
        )
        print(f"Human study with {len(study.pairs)} pairs at {server.url} (answers -> {args.results}); Ctrl-C stops.")
        server.wait()
        return 0
    if args.command == "summarize":
        summary = summarize_study(args.results, confidence=args.confidence)
        print(study_summary_markdown(summary))
        if args.output_dir:
            paths = write_study_summary(summary, args.output_dir)
            print(f"Summary written to {', '.join(str(p) for p in paths.values())}")
        return 0
    if args.command == "pairs":
        from .best_of_n import BestOfNReport

        report = BestOfNReport.from_json(args.report)
        try:
            rows = report.human_study_pairs(args.method_a, args.method_b, include_same_pick=args.include_same_pick)
        except KeyError as error:  # an unknown method name: say which names the report has, without a traceback
            raise SystemExit(f"icreward human-study pairs: {error.args[0]}") from None
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{len(rows)} pairs ({args.method_a} vs {args.method_b}) written to {output}")
        return 0
    raise AssertionError(args.command)  # argparse enforces the choices


if __name__ == "__main__":
    raise SystemExit(main())
