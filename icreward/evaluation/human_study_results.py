"""Results of a human study (:mod:`icreward.evaluation.human_study`): the answers file (locked, damage-tolerant
reading), the dataset of answers, preference shares with Wilson intervals, markdown, plot and files."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:  # POSIX: the answers file is locked while an answer is checked and appended (several servers, one file)
    import fcntl
except ImportError:  # pragma: no cover - Windows: only this process's lock applies
    fcntl = None

from icreward.evaluation.human_study_pairs import shown_value
from icreward.markdown import inert_markdown

logger = logging.getLogger(__name__)

__all__ = [
    "RESULT_COLUMNS",
    "is_choice_row",
    "load_study_results",
    "locked_file",
    "parse_result_lines",
    "plot_study_summary",
    "read_jsonl",
    "result_rows",
    "short_text",
    "study_summary_markdown",
    "summarize_study",
    "wilson_interval",
    "write_study_summary",
]

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
# Results
# ---------------------------------------------------------------------------------------------------------------------


class locked_file:
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


def is_choice_row(row: Mapping[str, Any]) -> bool:
    return all(isinstance(row.get(k), t) and not isinstance(row.get(k), bool) for k, t in _CHOICE_FIELDS.items())


def short_text(value: Any, limit: int = 80) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters (a 5000-digit number is not echoed back;
    ``repr`` of such an int would raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"<an integer of more than {limit} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ROW_START = re.compile(rb'\{"kind": ?"')


def parse_result_lines(data: bytes, path: Path, first_line: int, damaged: list[int]) -> list[dict[str, Any]]:
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
                "%s, line %d: damaged line skipped%s", shown_value(path), number,
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


def read_jsonl(path: Path, damaged: list[int] | None = None) -> list[dict[str, Any]]:
    """The rows of a results file. Damaged lines (a torn last line after a crash, or one that a later row was
    appended onto) are skipped with a warning, and their numbers added to ``damaged``."""
    with locked_file(path, "rb", exclusive=False) as f:
        data = f.read()
    damaged = [] if damaged is None else damaged
    rows = parse_result_lines(data, path, 1, damaged)
    return rows


def result_rows(results: Any, damaged: list[int] | None = None) -> list[dict[str, Any]]:
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if not path.exists():
            raise FileNotFoundError(f"no results file at {shown_value(path)}")
        return read_jsonl(path, damaged)
    return [dict(r) for r in results]


def load_study_results(path: str | os.PathLike):
    """Read a results file as a :class:`datasets.Dataset` with the columns of :data:`RESULT_COLUMNS`.

    Rows with ``kind == "choice"`` are answers, ``kind == "feedback"`` free-text feedback on the whole study.
    """
    from datasets import Dataset, Features, Value

    features = Features({name: Value(dtype) for name, dtype in RESULT_COLUMNS.items()})
    rows = result_rows(path)
    columns = {name: [row.get(name) for row in rows] for name in RESULT_COLUMNS}
    return Dataset.from_dict(columns, features=features)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n`` (:meth:`scipy.stats.binomtest`'s
    ``proportion_ci(method="wilson")``).

    Unlike the normal (Wald) interval it stays inside ``[0, 1]`` and is usable for small ``n`` and shares near 0
    or 1. ``n == 0`` gives ``(0.0, 1.0)`` (nothing is known).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest  # scipy.stats takes seconds to import: only when needed

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    # At p = 0 (p = 1) the bound is exactly 0 (1); say so instead of returning round-off like 2.8e-17.
    low = 0.0 if successes == 0 else max(0.0, float(interval.low))
    high = 1.0 if successes == n else min(1.0, float(interval.high))
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
    rows = result_rows(results, damaged)
    choices, seen, duplicates, malformed = [], set(), 0, 0
    for number, row in enumerate(rows, start=1):
        if row.get("kind") != "choice":
            continue
        if not is_choice_row(row) or row["chosen_label"] not in (row["label_a"], row["label_b"]):
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
        "| sample | n | " + " | ".join(inert_markdown(label) for label in labels) + " | p |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    entries = [
        *((inert_markdown(k), v) for k, v in summary["per_sample"].items()),
        ("**overall**", summary["overall"]),
    ]
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
            f"- **{inert_markdown(c['sample_id'])}** ({inert_markdown(c['rater_id'])}, chose {inert_markdown(c['chosen_label'])}): {inert_markdown(c['comment'])}"
            for c in summary["comments"]
        ]
    if summary["feedback"]:
        lines += ["", "## Feedback", ""]
        lines += [f"- {inert_markdown(f['rater_id'])}: {inert_markdown(f['comment'])}" for f in summary["feedback"]]
    return "\n".join(lines) + "\n"


def plot_study_summary(
    summary: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None, max_samples: int = 20
) -> Path:
    """Figure 4 style bar chart: per sample (the first ``max_samples``) and overall, each model's preference share
    with its Wilson interval, annotated with ``wins/n``. Written as PNG to ``path``."""
    import numpy as np

    from ..extras import require

    require("matplotlib", "plots", "The human-study figure")
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
