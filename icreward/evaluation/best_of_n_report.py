"""The report of a best-of-N run (:mod:`icreward.evaluation.best_of_n`): summary, per-sample values, JSON,
markdown, plots and human-study pairs."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["CLIPSIM_METRIC", "FVD_METRIC", "BestOfNReport", "finite_mean", "format_number", "json_safe"]

#: Report names of the CLIPSim and FVD metrics.
CLIPSIM_METRIC = _CLIPSIM = "clipsim"
FVD_METRIC = _FVD = "fvd"


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _nan(values: Iterable[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def finite_mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def format_number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class BestOfNReport:
    """Everything :func:`run_best_of_n` measured.

    Attributes:
        methods: selection-method names, in the order given.
        sample_ids: one per image.
        video_ids, video_paths: per image, per candidate (paths are ``None`` for in-memory videos).
        reference_paths, prompts: per image.
        selections: ``method -> picked candidate index per image``.
        selector_scores: ``method -> per image, the selector's score of every candidate`` (``None`` for random).
        candidate_metrics: ``metric -> per image, the metric of every candidate`` (``clipsim``, the oracle label,
            the custom metrics). Selections are evaluated by looking these up.
        summary: ``method -> metric -> mean over images of the picked candidate's metric``, plus ``fvd``.
        all_candidates: the same, averaged over every candidate (the expected value of a random pick) and the FVD
            of all candidates together; a baseline that does not depend on one random draw.
        higher_is_better: ``metric -> direction`` (FVD: lower is better).
        settings: how the run was configured (FVD reference set, frame counts, seed, ...).
    """

    methods: list[str]
    sample_ids: list[str]
    video_ids: list[list[str]]
    video_paths: list[list[str | None]]
    reference_paths: list[str | None]
    prompts: list[str | None]
    selections: dict[str, list[int]]
    selector_scores: dict[str, list[list[float]] | None]
    candidate_metrics: dict[str, list[list[float]]]
    summary: dict[str, dict[str, float | None]]
    all_candidates: dict[str, float | None]
    higher_is_better: dict[str, bool]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        """Per-video metrics, then ``fvd`` if it was computed."""
        names = list(self.candidate_metrics)
        if any(_FVD in s for s in self.summary.values()):
            names.append(_FVD)
        return names

    def per_sample(self, metric: str = _CLIPSIM) -> dict[str, list[float]]:
        """``method -> the picked candidate's metric for every image`` (Figure 3's bars)."""
        if metric not in self.candidate_metrics:
            raise KeyError(f"no per-video metric {metric!r}; available: {list(self.candidate_metrics)}")
        values = self.candidate_metrics[metric]
        return {m: [values[g][k] for g, k in enumerate(self.selections[m])] for m in self.methods}

    def agreement(self) -> dict[str, dict[str, float]]:
        """Fraction of images on which two methods picked the same candidate."""
        n = len(self.sample_ids)
        return {
            a: {b: sum(x == y for x, y in zip(self.selections[a], self.selections[b])) / n for b in self.methods}
            for a in self.methods
        }

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "methods": self.methods,
                "summary": self.summary,
                "all_candidates": self.all_candidates,
                "higher_is_better": self.higher_is_better,
                "agreement": self.agreement(),
                "settings": self.settings,
                "samples": [
                    {
                        "sample_id": sid,
                        "prompt": self.prompts[g],
                        "reference": self.reference_paths[g],
                        "video_ids": self.video_ids[g],
                        "video_paths": self.video_paths[g],
                        "selections": {m: self.selections[m][g] for m in self.methods},
                        "selector_scores": {m: s[g] for m, s in self.selector_scores.items() if s is not None},
                        "metrics": {name: values[g] for name, values in self.candidate_metrics.items()},
                    }
                    for g, sid in enumerate(self.sample_ids)
                ],
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BestOfNReport:
        samples = data["samples"]
        methods = list(data["methods"])
        metric_names = list(samples[0]["metrics"]) if samples else []
        scored = {m for s in samples for m in s["selector_scores"]}
        return cls(
            methods=methods,
            sample_ids=[s["sample_id"] for s in samples],
            video_ids=[list(s["video_ids"]) for s in samples],
            video_paths=[list(s["video_paths"]) for s in samples],
            reference_paths=[s["reference"] for s in samples],
            prompts=[s["prompt"] for s in samples],
            selections={m: [int(s["selections"][m]) for s in samples] for m in methods},
            selector_scores={
                m: ([_nan(s["selector_scores"][m]) for s in samples] if m in scored else None) for m in methods
            },
            candidate_metrics={name: [_nan(s["metrics"][name]) for s in samples] for name in metric_names},
            summary={m: dict(v) for m, v in data["summary"].items()},
            all_candidates=dict(data["all_candidates"]),
            higher_is_better=dict(data["higher_is_better"]),
            settings=dict(data.get("settings", {})),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The report as JSON (written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BestOfNReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_markdown(self) -> str:
        """Table 1 (means over images, FVD of the picked set), the per-image picks and method agreement."""
        metrics = self.metric_names
        arrows = {m: "↑" if self.higher_is_better.get(m, True) else "↓" for m in metrics}
        n_candidates = sorted({len(v) for v in self.video_ids})
        lines = [
            "# Best-of-N selection",
            "",
            f"{len(self.sample_ids)} images, {'/'.join(map(str, n_candidates))} candidates per image.",
        ]
        if _FVD in metrics:
            lines.append(f"FVD reference set: {self.settings.get('fvd_reference', 'n/a')}.")
        lines += [
            "",
            "| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for method in self.methods:
            lines.append(
                f"| {method} | " + " | ".join(format_number(self.summary[method].get(m)) for m in metrics) + " |"
            )
        lines.append(
            "| *all candidates* | " + " | ".join(format_number(self.all_candidates.get(m)) for m in metrics) + " |"
        )
        lines += ["", "## Picks per image", "", "| image | " + " | ".join(self.methods) + " |"]
        lines.append("|---|" + "---|" * len(self.methods))
        first = self.metric_names[0] if self.candidate_metrics else None
        for g, sid in enumerate(self.sample_ids):
            cells = []
            for method in self.methods:
                k = self.selections[method][g]
                value = f" ({first} {format_number(self.candidate_metrics[first][g][k], 3)})" if first else ""
                cells.append(f"{self.video_ids[g][k]}{value}")
            lines.append(f"| {sid} | " + " | ".join(cells) + " |")
        agreement = self.agreement()
        lines += ["", "## Agreement (fraction of images with the same pick)", ""]
        lines.append("| | " + " | ".join(self.methods) + " |")
        lines.append("|---|" + "---|" * len(self.methods))
        for a in self.methods:
            lines.append(f"| {a} | " + " | ".join(f"{agreement[a][b]:.2f}" for b in self.methods) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, output_dir: str | os.PathLike, *, max_samples: int | None = None) -> list[Path]:
        """Write ``per_sample_<metric>.png`` (Figure 3: per image, one bar per method, value on each bar) for every
        per-video metric, and ``summary.png`` (one panel per metric: each method's mean as a labelled point).

        ``max_samples``: at most this many images per figure (default: all); when fewer than all are drawn, the
        title says how many of how many (every image is in ``report.md`` / ``report.json``). Notes per metric in
        ``settings["metric_notes"]`` (e.g. ``"random-weight CLIP"``) are printed in the panel titles.
        """
        from ..extras import require

        require("matplotlib", "plots", "The best-of-N figures")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        colors = {m: f"C{i}" for i, m in enumerate(self.methods)}
        notes = dict(self.settings.get("metric_notes") or {})
        written = []
        total = len(self.sample_ids)
        shown = total if max_samples is None else min(max_samples, total)
        samples = self.sample_ids[:shown]
        for metric in self.candidate_metrics:
            values = self.per_sample(metric)
            fig = Figure(figsize=(max(4.0, 1.2 + 0.45 * len(samples) * len(self.methods)), 3.8), layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            width = 0.8 / len(self.methods)
            x = np.arange(len(samples))
            for i, method in enumerate(self.methods):
                heights = [v if math.isfinite(v) else 0.0 for v in values[method][: len(samples)]]
                bars = ax.bar(
                    x + (i - (len(self.methods) - 1) / 2) * width, heights, width, label=method, color=colors[method]
                )
                # Picks often differ in the second or third decimal (CLIPSim near 1): print the values.
                ax.bar_label(bars, fmt="%.3f", fontsize="xx-small", rotation=90, padding=2)
            ax.margins(y=0.2)
            ax.set_xticks(
                x, samples, rotation=30 if len(samples) > 4 else 0, ha="right" if len(samples) > 4 else "center"
            )
            ax.set_xlabel("reference image")
            ax.set_ylabel(metric + (f" ({notes[metric]})" if metric in notes else ""))
            title = f"{metric} of the top-1 video per image"
            if shown < total:
                title += f" (first {shown} of {total} images; all in report.md)"
            ax.set_title(title, fontsize="medium")
            # Above the axes, outside the bars: a legend inside would cover the values.
            fig.legend(loc="outside upper center", ncols=len(self.methods), fontsize="small", frameon=False)
            path = output_dir / f"per_sample_{_safe_name(metric)}.png"
            fig.savefig(path, dpi=120)
            written.append(path)

        metrics = self.metric_names
        if metrics:
            fig = Figure(figsize=(3.4 * len(metrics), 3.6), layout="constrained")
            FigureCanvasAgg(fig)
            for i, metric in enumerate(metrics):
                ax = fig.add_subplot(1, len(metrics), i + 1)
                points = [(k, self.summary[m].get(metric)) for k, m in enumerate(self.methods)]
                points = [(k, v) for k, v in points if v is not None and math.isfinite(v)]
                for k, value in points:
                    method = self.methods[k]
                    ax.plot([k], [value], "o", color=colors[method], markersize=8)
                    ax.annotate(f"{value:.4g}", (k, value), textcoords="offset points", xytext=(0, 7), ha="center")
                if points:  # the axis spans the values (a difference in the third decimal stays visible)
                    low, high = min(v for _, v in points), max(v for _, v in points)
                    pad = 0.25 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
                    ax.set_ylim(low - pad, high + 2 * pad)
                ax.set_xlim(-0.5, len(self.methods) - 0.5)
                ax.set_xticks(range(len(self.methods)), self.methods, rotation=30, ha="right")
                ax.set_xlabel("selection method")
                direction = "higher is better" if self.higher_is_better.get(metric, True) else "lower is better"
                ax.set_ylabel(f"mean {metric} of the picks")
                ax.set_title(
                    f"{metric} ({direction})" + (f"\n{notes[metric]}" if metric in notes else ""), fontsize="medium"
                )
            path = output_dir / "summary.png"
            fig.savefig(path, dpi=120)
            written.append(path)
        return written

    def save(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and the plots to ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.to_json(output_dir / "report.json")
        (output_dir / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        paths = {"json": output_dir / "report.json", "markdown": output_dir / "report.md"}
        for path in self.plot(output_dir):
            paths[path.stem] = path
        return paths

    def human_study_pairs(self, method_a: str, method_b: str, *, include_same_pick: bool = False) -> list[dict]:
        """Pairs for :class:`icreward.evaluation.human_study.HumanStudy`: per image, ``method_a``'s pick vs
        ``method_b``'s (Figure 4). Images where both picked the same video are left out unless ``include_same_pick``.
        """
        for method in (method_a, method_b):
            if method not in self.selections:
                raise KeyError(f"no method {method!r}; available: {self.methods}")
        pairs = []
        for g, sid in enumerate(self.sample_ids):
            a, b = self.selections[method_a][g], self.selections[method_b][g]
            if a == b and not include_same_pick:
                continue
            paths = self.video_paths[g]
            if paths[a] is None or paths[b] is None or self.reference_paths[g] is None:
                raise ValueError(
                    f"sample {sid!r} has in-memory videos or reference; a human study needs files "
                    "(generate the candidates with generate_candidates(..., output_dir=...))"
                )
            pairs.append(
                {
                    "sample_id": sid,
                    "reference": self.reference_paths[g],
                    "prompt": self.prompts[g],
                    "video_a": paths[a],
                    "video_b": paths[b],
                    "label_a": method_a,
                    "label_b": method_b,
                }
            )
        return pairs


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (BestOfNReport,):
    _cls.__module__ = "icreward.evaluation.best_of_n"
