"""Reading VBench++'s own files (:mod:`icreward.data.vbench`): the prompt suite, the ``<name>_eval_results.json``
files and the flat folders of generated videos, matched into scored videos; problems raise or are counted."""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Problems",
    "PromptInfo",
    "VBenchFormatError",
    "VBenchVideo",
    "load_json",
    "read_info_json",
    "read_source",
    "resolve_image_dir",
    "resolve_sources",
    "short_repr",
]

PathLike = str | os.PathLike

# Scores are sums of clamped cosines with weights summing to one, so float round-off can overshoot [0, 1] by a
# few ulps; anything further out is a genuine format error.
_SCORE_TOLERANCE = 1e-6
_MAX_EXAMPLES = 20


class VBenchFormatError(ValueError):
    """A VBench file does not have the layout VBench writes, or refers to a file that does not exist."""


class Problems:
    """Raises on the first problem (``on_missing="error"``) or counts it (``"skip"``)."""

    def __init__(self, on_missing: str) -> None:
        if on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        self.on_missing = on_missing
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        if self.on_missing == "error":
            raise VBenchFormatError(f"{message} (pass on_missing='skip' to skip such items and count them)")
        self.counts[kind] += 1
        if sum(1 for e in self.examples if e.startswith(f"[{kind}]")) < _MAX_EXAMPLES:
            self.examples.append(f"[{kind}] {message}")


@dataclass(frozen=True)
class PromptInfo:
    prompt: str
    image_name: str
    image_type: str
    dimensions: tuple[str, ...]


@dataclass
class VBenchVideo:
    source_model: str
    prompt: PromptInfo
    index: int
    path: str
    scores: dict[str, float]
    score: float = 0.0


def resolve_sources(
    videos_dir: PathLike | Sequence[PathLike],
    eval_results: PathLike | Sequence[Any],
    source_model: str | Sequence[str] | None,
) -> list[tuple[str, Path, list[Path]]]:
    """Normalise the one-model and several-models call forms to ``[(name, videos folder, results files)]``."""
    if isinstance(videos_dir, str | os.PathLike):
        folders = [Path(videos_dir)]
        results = [eval_results]
        names = [source_model] if source_model is None or isinstance(source_model, str) else list(source_model)
    else:
        folders = [Path(p) for p in videos_dir]
        if isinstance(eval_results, str | os.PathLike) or len(eval_results) != len(folders):
            raise ValueError(
                f"with {len(folders)} videos folders, eval_results must be a list with one item (a path or a list "
                "of paths) per folder"
            )
        results = list(eval_results)
        if source_model is None:
            names = [None] * len(folders)
        elif isinstance(source_model, str) or len(source_model) != len(folders):
            raise ValueError(
                f"with {len(folders)} videos folders, source_model must be a list of {len(folders)} names"
            )
        else:
            names = list(source_model)
    if len(names) != len(folders):
        raise ValueError(f"source_model must be one name for videos_dir {str(folders[0])!r}, got {source_model!r}")
    sources = []
    for name, folder, result in zip(names, folders, results):
        if not folder.is_dir():
            raise VBenchFormatError(f"videos_dir {str(folder)!r} is not a directory")
        files = [Path(result)] if isinstance(result, str | os.PathLike) else [Path(p) for p in result]
        if not files:
            raise ValueError(f"no eval_results file given for videos_dir {str(folder)!r}")
        sources.append((name if name is not None else folder.resolve().name, folder, files))
    seen = Counter(name for name, _, _ in sources)
    if any(count > 1 for count in seen.values()):
        raise ValueError(f"source_model names must be unique, got {[name for name, _, _ in sources]}")
    return sources


def resolve_image_dir(image_root: Path, resolution: str | None) -> Path:
    if resolution is None:
        candidates = [image_root]
    else:
        candidates = [image_root / "crop" / resolution, image_root / resolution]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise VBenchFormatError(f"image folder not found; looked for {[str(c) for c in candidates]}")


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise VBenchFormatError(f"VBench file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VBenchFormatError(f"VBench file {str(path)!r} is not valid JSON: {err}") from err


def read_info_json(path: Path, dimensions: tuple[str, ...], problems: Problems) -> dict[str, PromptInfo]:
    """``prompt_en -> PromptInfo`` for the info entries that use one of ``dimensions``."""
    entries = load_json(path)
    if not isinstance(entries, list):
        raise VBenchFormatError(
            f"{str(path)!r}: expected a JSON list of prompt entries (vbench2_i2v_full_info.json), "
            f"got {type(entries).__name__}"
        )
    prompts: dict[str, PromptInfo] = {}
    for idx, entry in enumerate(entries):
        where = f"{str(path)!r} entry {idx}"
        if not isinstance(entry, dict):
            problems("malformed_entry", f"{where}: expected an object, got {type(entry).__name__}")
            continue
        dims = entry.get("dimension")
        if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
            problems("malformed_entry", f"{where}: field 'dimension' must be a list of strings, got {dims!r}")
            continue
        used = tuple(d for d in dims if d in dimensions)
        if not used:
            continue
        prompt, image_name = entry.get("prompt_en"), entry.get("image_name")
        if not isinstance(prompt, str) or not prompt:
            problems("malformed_entry", f"{where}: field 'prompt_en' must be a non-empty string, got {prompt!r}")
            continue
        if not isinstance(image_name, str) or not image_name:
            problems(
                "malformed_entry",
                f"{where} ({prompt!r}): I2V entries need a non-empty string field 'image_name', got {image_name!r}",
            )
            continue
        image_type = entry.get("image_type", "")
        info = PromptInfo(prompt, image_name, image_type if isinstance(image_type, str) else str(image_type), used)
        previous = prompts.get(prompt)
        if previous is not None and previous.image_name != image_name:
            raise VBenchFormatError(
                f"{where}: prompt {prompt!r} appears twice with different images "
                f"({previous.image_name!r} and {image_name!r}); videos named after it would be ambiguous"
            )
        if previous is not None:
            info = PromptInfo(prompt, image_name, info.image_type, tuple(dict.fromkeys(previous.dimensions + used)))
        prompts[prompt] = info
    if not prompts:
        raise VBenchFormatError(f"{str(path)!r} has no entry for the dimensions {list(dimensions)}")
    return prompts


_BASENAME = re.compile(r"[^\\/]+$")


def _basename(path: str) -> str:
    """File name of a path written on any OS (VBench writes whatever path it was run with)."""
    match = _BASENAME.search(path)
    return match.group(0) if match else ""


def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_source(
    name: str,
    folder: Path,
    result_files: list[Path],
    prompts: dict[str, PromptInfo],
    dimensions: tuple[str, ...],
    videos_per_image: int,
    problems: Problems,
) -> list[VBenchVideo]:
    """Match one generator's results entries to its video files; return the videos with >= 1 usable score."""
    expected = {f"{p}-{i}": (info, i) for p, info in prompts.items() for i in range(videos_per_image)}
    # stem -> file name; several extensions of one stem are resolved through the results' exact basenames.
    on_disk: dict[str, list[str]] = defaultdict(list)
    for entry in os.scandir(folder):
        if entry.is_file():
            on_disk[os.path.splitext(entry.name)[0]].append(entry.name)

    table = _ScoreTable(expected, videos_per_image, problems)
    found_dims: set[str] = set()
    for file in result_files:
        data = load_json(file)
        if not isinstance(data, dict):
            raise VBenchFormatError(
                f"{str(file)!r}: expected a JSON object {{dimension: [mean, [entries]]}} (<name>_eval_results.json), "
                f"got {type(data).__name__}"
            )
        for dim in dimensions:
            if dim not in data:
                continue
            found_dims.add(dim)
            value = data[dim]
            if not isinstance(value, list) or len(value) < 2 or not isinstance(value[1], list):
                raise VBenchFormatError(
                    f"{str(file)!r}: key {dim!r} must be [mean, [{{'image_path', 'video_path', 'video_results'}}, "
                    f"...]], got {type(value).__name__} {short_repr(value)}"
                )
            for idx, entry in enumerate(value[1]):
                table.add(file, dim, idx, entry)

    absent = [d for d in dimensions if d not in found_dims]
    if absent:
        raise VBenchFormatError(
            f"dimension(s) {absent} not found in the eval results of {name!r} ({[str(f) for f in result_files]}); "
            "pass dimensions=... with the dimensions VBench evaluated"
        )
    return _match_videos(name, folder, result_files, table, on_disk, problems)


class _ScoreTable:
    """The usable scores of one generator's results entries, by video file name and dimension."""

    def __init__(self, expected: dict[str, tuple[PromptInfo, int]], videos_per_image: int, problems: Problems):
        self.expected, self.videos_per_image, self.problems = expected, videos_per_image, problems
        self.scores: dict[str, dict[str, float]] = defaultdict(dict)  # basename -> dim -> score
        self.where_scored: dict[tuple[str, str], str] = {}
        self.bad: set[str] = set()  # basenames with a problem: skipped whole, even if another dimension is fine
        self.mentioned: set[str] = set()  # stems some results entry refers to, usable or not

    def add(self, file: Path, dim: str, idx: int, entry: Any) -> None:
        """Record the score of one results entry, or the problem with it."""
        problems = self.problems
        where = f"{str(file)!r} [{dim!r}][1][{idx}]"
        video_path = entry.get("video_path") if isinstance(entry, dict) else None
        if not isinstance(video_path, str) or not _basename(video_path):
            problems("malformed_entry", f"{where}: field 'video_path' must be a file path, got {short_repr(entry)}")
            return
        basename = _basename(video_path)
        stem = os.path.splitext(basename)[0]
        if stem not in self.expected:
            problems(
                "unmatched_entry",
                f"{where}: video {basename!r} matches no f'{{prompt_en}}-{{i}}' with i < {self.videos_per_image} "
                "of the info JSON's I2V prompts",
            )
            return
        info, _ = self.expected[stem]
        self.mentioned.add(stem)
        score = entry.get("video_results")
        if not _is_score(score) or not -_SCORE_TOLERANCE <= score <= 1 + _SCORE_TOLERANCE:
            problems(
                "score_out_of_range",
                f"{where}: field 'video_results' of {basename!r} must be a number in [0, 1], got {score!r}",
            )
            self.bad.add(basename)
            return
        image_path = entry.get("image_path")
        if image_path is not None and _basename(str(image_path)) != info.image_name:
            problems(
                "image_mismatch",
                f"{where}: field 'image_path' {image_path!r} is not the info JSON's image "
                f"{info.image_name!r} of prompt {info.prompt!r}",
            )
            self.bad.add(basename)
            return
        score = min(max(float(score), 0.0), 1.0)
        previous = self.scores[basename].get(dim)
        if previous is not None and not math.isclose(previous, score, abs_tol=1e-9):
            problems(
                "conflicting_score",
                f"{where}: {basename!r} has {dim}={score} here but {previous} in {self.where_scored[(basename, dim)]}",
            )
            self.bad.add(basename)
            return
        self.scores[basename][dim] = score
        self.where_scored[(basename, dim)] = str(file)


def _match_videos(
    name: str,
    folder: Path,
    result_files: list[Path],
    table: _ScoreTable,
    on_disk: dict[str, list[str]],
    problems: Problems,
) -> list[VBenchVideo]:
    """The scored videos found on disk; scored videos not on disk and unscored videos on disk are problems."""
    videos: list[VBenchVideo] = []
    for basename in sorted(table.scores):
        stem = os.path.splitext(basename)[0]
        if basename in table.bad:
            continue
        if basename not in on_disk.get(stem, ()):
            problems("missing_video", f"video {basename!r} of {name!r} is scored but not in {str(folder)!r}")
            continue
        info, index = table.expected[stem]
        videos.append(VBenchVideo(name, info, index, str((folder / basename).resolve()), table.scores[basename]))

    # A video file of an I2V prompt that no results entry scores would be dropped silently otherwise.
    for stem in sorted(set(on_disk) & set(table.expected) - table.mentioned):
        info, _ = table.expected[stem]
        problems(
            "unscored_video",
            f"video {on_disk[stem][0]!r} in {str(folder)!r} has no score for {list(info.dimensions)} in "
            f"{[str(f) for f in result_files]}",
        )
    return videos


def short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (VBenchFormatError,):
    _cls.__module__ = "icreward.data.vbench"
