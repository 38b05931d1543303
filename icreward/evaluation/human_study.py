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

Command line (``icreward human-study ...``, parsed in :mod:`icreward.cli.human_study`)::

    icreward human-study pairs --report outputs/best_of_n/report.json --method_a ICReward --method_b MLP \\
        --output study/pairs.jsonl
    icreward human-study serve --pairs study/pairs.jsonl --results study/results.jsonl --port 8000
    icreward human-study summarize --results study/results.jsonl --output_dir study/summary

The server binds to ``127.0.0.1`` by default (only this machine). ``--host 0.0.0.0`` exposes it to the local
network for raters on other machines; it has no authentication, so do that only on a trusted network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mimetypes
import os
import random
import secrets
import shutil
import tempfile
import threading
import webbrowser
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from icreward.evaluation.human_study_pairs import (
    PLAYABLE_VIDEO_SUFFIXES,
    SERVED_IMAGE_SUFFIXES,
    StudyPair,
    Trial,
    as_study_pairs,
    check_rater_id,
    media_name,
    shown_value,
    utc_now,
)
from icreward.evaluation.human_study_results import (
    is_choice_row,
    load_study_results,
    locked_file,
    parse_result_lines,
    plot_study_summary,
    short_text,
    study_summary_markdown,
    summarize_study,
    wilson_interval,
    write_study_summary,
)
from icreward.evaluation.human_study_server import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT,
    StudyHTTPServer,
    StudyRequestHandler,
    StudyServer,
)

logger = logging.getLogger(__name__)

__all__ = [
    "HumanStudy",
    "StudyPair",
    "StudyServer",
    "Trial",
    "load_study_results",
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

_MAX_COMMENT_CHARS = 5000


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
        self.pairs = as_study_pairs(pairs)
        self.results_path = Path(results_path)
        self.seed = int(seed)
        self.title, self.question, self.instructions = title, question, instructions
        self.shuffle = shuffle
        self.transcode = transcode
        self.video_fps = video_fps
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        identity = [
            (p.sample_id, p.label_a, p.label_b, media_name(p.video_a), media_name(p.video_b)) for p in self.pairs
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
        rng = random.Random(f"{self.seed}:{check_rater_id(rater_id)}")
        order = list(range(len(self.pairs)))
        if self.shuffle:
            rng.shuffle(order)
        return [Trial(t, p, "a" if rng.random() < 0.5 else "b") for t, p in enumerate(order)]

    def answered_pairs(self, rater_id: str) -> set[int]:
        """Pair indices the rater has answered (from this session and earlier ones in the results file)."""
        with self._lock:
            return set(self._answered.get(check_rater_id(rater_id), set()))

    def _load_existing_answers(self) -> None:
        if not self.results_path.exists():
            return
        with locked_file(self.results_path, "rb", exclusive=False) as f:
            self._catch_up(f, initial=True)

    def _catch_up(self, f, initial: bool = False) -> bool:
        """Read the rows other writers appended since the last call (the file is locked); return whether the file
        ends with a newline (or is empty)."""
        f.seek(self._offset)
        data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn tail stays unread until a newline completes it
        rows = parse_result_lines(complete, self.results_path, self._line_number + 1, self.damaged_lines)
        self._offset += len(complete)
        self._line_number += complete.count(b"\n")
        for row in rows:
            if row.get("study_id") != self.study_id:
                if initial:
                    raise ValueError(
                        f"{shown_value(self.results_path)} holds answers of another study (study_id "
                        f"{row.get('study_id')!r}, this study is {self.study_id!r}: its pairs differ); use a new "
                        "results file"
                    )
                continue
            if row.get("kind") == "choice" and is_choice_row(row):
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
        with locked_file(self.results_path, "a+b", exclusive=True) as f:
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
        rater_id = check_rater_id(rater_id)
        trials = self.trials_for(rater_id)
        if isinstance(trial_index, bool) or not isinstance(trial_index, int) or not 0 <= trial_index < len(trials):
            raise ValueError(f"trial_index must be an integer in [0, {len(trials)}), got {short_text(trial_index)}")
        if choice not in ("left", "right"):
            raise ValueError(f"choice must be 'left' or 'right', got {short_text(choice)}")
        if response_time_s is not None and not (
            isinstance(response_time_s, (int, float))
            and not isinstance(response_time_s, bool)
            and abs(response_time_s) < 1e12  # also keeps a 5000-digit integer from reaching float()
            and math.isfinite(response_time_s)
        ):
            raise ValueError(f"response_time_s must be a finite number, got {short_text(response_time_s)}")
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
            "timestamp": utc_now(),
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
            "rater_id": check_rater_id(rater_id),
            "comment": comment,
            "timestamp": utc_now(),
        }
        with self._lock:
            self._append(record)
        return record

    # ------------------------------------------------------------------------------------------------------ media

    def _register(self, path: Path, mime: str) -> str:
        if not path.is_file():  # a FIFO or device named clip.mp4 would hang or flood the server
            raise ValueError(f"{shown_value(path)} is not a regular file; the study serves only files")
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
        if isinstance(image, (str, os.PathLike)) and Path(image).suffix.lower() in SERVED_IMAGE_SUFFIXES:
            path = Path(image)
            return self._register(path, mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        from PIL import Image

        from .best_of_n_candidates import as_image_tensor

        Image.fromarray(as_image_tensor(image).permute(1, 2, 0).numpy()).save(target)
        return self._register(target, "image/png")

    def _prepare_video(self, video: Any, target: Path) -> str:
        from ..video import read_video_with_info, write_video

        suffix = Path(video).suffix.lower() if isinstance(video, (str, os.PathLike)) else ""
        if suffix in PLAYABLE_VIDEO_SUFFIXES and not self.transcode:
            return self._register(Path(video), PLAYABLE_VIDEO_SUFFIXES[suffix])
        if isinstance(video, (str, os.PathLike)):
            frames, info = read_video_with_info(video)
            fps = info.fps or self.video_fps
        else:
            from .best_of_n_candidates import as_video_tensor

            frames, fps = as_video_tensor(video), self.video_fps
        # 4:2:0 H.264 (what every browser plays) needs even sizes: drop a last odd row/column rather than let the
        # encoder fall back to 4:4:4, which Chrome and Firefox refuse.
        height, width = frames.shape[-2] // 2 * 2, frames.shape[-1] // 2 * 2
        write_video(target, frames[..., :height, :width], fps=fps)
        return self._register(target, "video/mp4")

    def _trials_payload(self, rater_id: str) -> dict[str, Any]:
        rater_id = check_rater_id(rater_id)
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
        httpd = StudyHTTPServer(
            (host, port),
            StudyRequestHandler,
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
