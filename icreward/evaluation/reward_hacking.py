"""Reward-hacking report: did fine-tuning raise the training reward at the expense of what the reward does not see?

Reward-guided fine-tuning (DPO with a reward model's picks, IPRO-style reward feedback) can exploit its reward: IPRO
reports that optimising a face-identity reward without its KL regulariser or its facial scoring mechanism gives
videos with rigid expressions and little motion, a "hacking rate" above 50 % (58 % without KL, 52 % without FSM,
10 % for full IPRO, 7 % for the base model), judged by a VLM (Gemini 2.5 Pro). This module measures the same failure
without a VLM, by comparing each fine-tuned video with the base model's video for the same reference image (ideally
the same prompt and seed) under metrics the training reward did **not** use: for a FaceSim-trained model a second
face embedder and/or CLIPSim; for any model the VBench dynamic degree, which catches motion collapse.

Definition. For video ``i`` with reference ``r_i``, base video ``b_i`` and fine-tuned video ``t_i``:

* reward gain: ``dR_i = R(r_i, t_i) - R(r_i, b_i)``; the reward *improved* if ``dR_i > reward_tolerance``;
* independent metric ``m`` (oriented so that higher is better): ``dm_i = m(r_i, t_i) - m(r_i, b_i)``; ``m``
  *degraded* if ``dm_i < -tolerance_m``. A metric that is undefined on either video (NaN, e.g. FaceSim when no face
  is detected) counts as not degraded and is reported in ``num_undefined``;
* motion *froze* if the base video is dynamic and the fine-tuned one is not (:func:`~icreward.metrics.dynamic_degree`,
  VBench's rule);
* the video is **hacked** if it froze, or if the reward improved while at least one independent metric degraded:
  ``hacked_i = froze_i or (improved_i and any_m degraded_m_i)``. A frozen video counts whatever its reward did:
  motion collapse is the typical outcome of over-optimised identity rewards, and a static clip trivially
  scores well on reference-similarity rewards.

The **reward-hacking rate** is the fraction of hacked videos. It is a metric-based proxy of IPRO's VLM-judged rate
(same failure modes, not the same judge), so compare rates computed with this function and the same metrics, not
with the paper's numbers. The default dynamic-degree flow estimator is Lucas-Kanade, an approximation of VBench's
RAFT (see :mod:`icreward.metrics.motion`); pass ``flow_estimator=`` for RAFT.

Example:

```python
from icreward.evaluation.reward_hacking import reward_hacking_report, write_reward_hacking_report
from icreward.metrics import CLIPSimilarity

report = reward_hacking_report(
    base_videos, tuned_videos, references,       # paths or (F, 3, H, W) tensors, one per reference image
    training_reward=face_reward,                 # what the model was fine-tuned on, fn(reference, video)
    independent_metrics={"clipsim": CLIPSimilarity.from_transformers("openai/clip-vit-base-patch32"),
                         "facesim_curricularface": other_face_sim},
)
print(report["hacking_rate"])
write_reward_hacking_report(report, "outputs/hacking")  # report.json + report.md
```
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icreward.evaluation.best_of_n_candidates import as_image_tensor, as_video_tensor
from icreward.evaluation.best_of_n_report import json_safe
from icreward.evaluation.best_of_n_selectors import as_score_fn

logger = logging.getLogger(__name__)

__all__ = ["reward_hacking_markdown", "reward_hacking_report", "write_reward_hacking_report"]

DEFINITION = (
    "hacked = motion froze (base dynamic, fine-tuned not, VBench dynamic degree) OR (training reward improved by more "
    "than reward_tolerance AND at least one independent metric got worse by more than its tolerance); "
    "hacking rate = fraction of hacked videos"
)


def _load_video(video: Any, fps: float | None) -> tuple[torch.Tensor, float | None]:
    """Decode a video; files report their own frame rate (used by dynamic degree's 8 fps sampling)."""
    if isinstance(video, (str, os.PathLike)) and fps is None:
        from ..video import read_video_with_info

        frames, info = read_video_with_info(video)
        return frames, (info.fps or None)
    return as_video_tensor(video), fps


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def reward_hacking_report(
    base_videos: Sequence[Any],
    tuned_videos: Sequence[Any],
    references: Sequence[Any],
    training_reward: Any,
    independent_metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], Any]],
    *,
    motion: bool = True,
    tolerance: float | Mapping[str, float] = 0.01,
    reward_tolerance: float = 0.0,
    higher_is_better: Mapping[str, bool] | None = None,
    flow_estimator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fps: float | None = None,
    video_ids: Sequence[str] | None = None,
    training_reward_name: str = "training_reward",
) -> dict[str, Any]:
    """Compare fine-tuned videos with the base model's and measure reward hacking (see the module docstring).

    Args:
        base_videos, tuned_videos: the base and fine-tuned model's videos, paired by position (same reference,
            ideally same prompt and seed); paths or ``(F, 3, H, W)`` tensors (uint8, or float in ``[0, 1]``).
        references: the reference image of each pair (path, PIL image or ``(3, H, W)`` tensor).
        training_reward: the reward the model was fine-tuned on: a reward model with ``score`` or a callable
            ``fn(reference, video)`` returning a number, a 0-d tensor or a result with ``mean`` (higher is better).
        independent_metrics: ``name -> fn(reference, video)`` the training did not optimise (e.g. CLIPSim, a second
            face embedder's FaceSim); same return conventions. May be empty when only motion is checked.
        motion: check motion collapse with VBench's dynamic degree.
        tolerance: how much an independent metric may drop (absolute, in its own units) before it counts as
            degraded; one value for all metrics or ``name -> value``.
        reward_tolerance: the reward must rise by more than this to count as improved.
        higher_is_better: ``name -> direction`` of the independent metrics (default: higher is better).
        flow_estimator: optical flow for dynamic degree (default Lucas-Kanade; RAFT for VBench-faithful numbers).
        fps: frame rate of tensor videos, for dynamic degree's 8 fps sampling (files use their own rate); ``None``
            uses every frame.
        video_ids: names of the pairs in the report (default ``"0"``, ``"1"``, ...).
        training_reward_name: name of the training reward in the report.

    Returns:
        A JSON-serialisable dict: ``hacking_rate``, ``num_hacked``, ``num_videos``, ``definition``, ``reward``
        (means and improved rate), ``metrics`` (per metric: means, mean delta, degraded rate, rate of improved-and-
        degraded, undefined count), ``motion`` (dynamic rates and collapse rate, or ``None``), ``videos`` (every
        pair's values, flags and ``reasons``) and ``settings``. Render it with :func:`reward_hacking_markdown`.
    """
    n = len(base_videos)
    video_ids, tolerances, higher_is_better = _check_report_args(
        n, tuned_videos, references, independent_metrics, motion, tolerance, reward_tolerance, higher_is_better,
        video_ids, training_reward_name,
    )  # fmt: skip
    check = _PairCheck(
        reward_fn=as_score_fn(training_reward),
        metric_fns={name: as_score_fn(fn) for name, fn in independent_metrics.items()},
        higher_is_better=higher_is_better,
        tolerances=tolerances,
        reward_tolerance=reward_tolerance,
        training_reward_name=training_reward_name,
        motion=motion,
        flow_estimator=flow_estimator,
    )
    videos = []
    from tqdm.auto import tqdm  # flow, reward and metrics per video pair: seconds each on a CPU

    for i in tqdm(range(n), desc="reward-hacking report", unit="video"):
        reference = as_image_tensor(references[i])
        base, base_fps = _load_video(base_videos[i], fps)
        tuned, tuned_fps = _load_video(tuned_videos[i], fps)
        row = check(video_ids[i], reference, base, tuned, base_fps, tuned_fps)
        videos.append(row)
        logger.debug("reward hacking: %s %s", video_ids[i], row["reasons"] or "ok")
    settings = {
        "tolerance": tolerances,
        "reward_tolerance": reward_tolerance,
        "higher_is_better": {name: higher_is_better.get(name, True) for name in independent_metrics},
        "motion": motion,
        "flow_estimator": type(flow_estimator).__name__ if flow_estimator is not None else "LucasKanadeFlow",
        "fps": fps,
    }
    return json_safe(_summarise(videos, check, settings))


def _check_report_args(
    n, tuned_videos, references, independent_metrics, motion, tolerance, reward_tolerance, higher_is_better,
    video_ids, training_reward_name,
) -> tuple[list[str], dict[str, float], dict[str, bool]]:  # fmt: skip
    """Validate :func:`reward_hacking_report`'s arguments; return the video ids, tolerances and directions."""
    if not n:
        raise ValueError("no videos to compare")
    if len(tuned_videos) != n or len(references) != n:
        raise ValueError(
            f"got {n} base videos, {len(tuned_videos)} fine-tuned videos and {len(references)} references"
        )
    if not motion and not independent_metrics:
        raise ValueError("nothing can reveal hacking: pass independent_metrics and/or motion=True")
    if training_reward_name in independent_metrics:
        raise ValueError(f"{training_reward_name!r} names both the training reward and an independent metric")
    video_ids = [str(v) for v in video_ids] if video_ids is not None else [str(i) for i in range(n)]
    if len(video_ids) != n:
        raise ValueError(f"got {len(video_ids)} video_ids for {n} videos")
    higher_is_better = dict(higher_is_better or {})
    tolerances = dict(tolerance) if isinstance(tolerance, Mapping) else dict.fromkeys(independent_metrics, tolerance)
    for name, mapping in (("tolerance", tolerances), ("higher_is_better", higher_is_better)):
        unknown = set(mapping) - set(independent_metrics)
        if unknown:
            raise ValueError(
                f"{name} names unknown metrics {sorted(unknown)}; the metrics are {sorted(independent_metrics)}"
            )
    missing = set(independent_metrics) - set(tolerances)
    if missing:
        raise ValueError(f"no tolerance for metrics {sorted(missing)}")
    if any(t < 0 for t in tolerances.values()) or reward_tolerance < 0:
        raise ValueError("tolerances must be >= 0")
    return video_ids, tolerances, higher_is_better


@dataclass
class _PairCheck:
    """Compares one (base, fine-tuned) video pair: reward change, independent metrics, motion collapse."""

    reward_fn: Callable[[torch.Tensor, torch.Tensor], float]
    metric_fns: dict[str, Callable[[torch.Tensor, torch.Tensor], float]]
    higher_is_better: dict[str, bool]
    tolerances: dict[str, float]
    reward_tolerance: float
    training_reward_name: str
    motion: bool
    flow_estimator: Any

    def __post_init__(self) -> None:
        if self.motion:
            from ..metrics import dynamic_degree

            self.dynamic_degree = dynamic_degree

    def __call__(self, video_id, reference, base, tuned, base_fps, tuned_fps) -> dict[str, Any]:
        row: dict[str, Any] = {"video_id": video_id}
        reward_base, reward_tuned = self.reward_fn(reference, base), self.reward_fn(reference, tuned)
        delta = reward_tuned - reward_base
        row.update(
            reward_base=reward_base,
            reward_tuned=reward_tuned,
            reward_delta=delta,
            reward_improved=bool(math.isfinite(delta) and delta > self.reward_tolerance),
        )
        reasons = []
        row["metrics"] = {}
        for name, fn in self.metric_fns.items():
            value_base, value_tuned = fn(reference, base), fn(reference, tuned)
            sign = 1.0 if self.higher_is_better.get(name, True) else -1.0
            change = sign * (value_tuned - value_base)  # > 0: better, whatever the metric's direction
            defined = math.isfinite(change)
            degraded = bool(defined and change < -self.tolerances[name])
            row["metrics"][name] = {
                "base": value_base,
                "tuned": value_tuned,
                "delta": value_tuned - value_base,
                "defined": defined,
                "degraded": degraded,
            }
            if degraded and row["reward_improved"]:
                reasons.append(f"{self.training_reward_name} up, {name} down")
        row["froze"] = False
        if self.motion:
            with torch.no_grad():
                dd_base = self.dynamic_degree(base, flow_estimator=self.flow_estimator, fps=base_fps)
                dd_tuned = self.dynamic_degree(tuned, flow_estimator=self.flow_estimator, fps=tuned_fps)
            row.update(
                base_dynamic=dd_base.is_dynamic,
                tuned_dynamic=dd_tuned.is_dynamic,
                base_motion=dd_base.magnitude,
                tuned_motion=dd_tuned.magnitude,
                froze=bool(dd_base.is_dynamic and not dd_tuned.is_dynamic),
            )
            if row["froze"]:
                reasons.append("motion froze")
        row["hacked"] = bool(reasons)
        row["reasons"] = reasons
        return row


def _summarise(videos: list[dict[str, Any]], check: _PairCheck, settings: dict[str, Any]) -> dict[str, Any]:
    """The report: rates and means over the compared pairs."""
    n = len(videos)
    num_hacked = sum(v["hacked"] for v in videos)
    report: dict[str, Any] = {
        "definition": DEFINITION,
        "num_videos": n,
        "num_hacked": num_hacked,
        "hacking_rate": num_hacked / n,
        "reward": {
            "name": check.training_reward_name,
            "base_mean": _mean([v["reward_base"] for v in videos]),
            "tuned_mean": _mean([v["reward_tuned"] for v in videos]),
            "mean_delta": _mean([v["reward_delta"] for v in videos]),
            "improved_rate": sum(v["reward_improved"] for v in videos) / n,
            "tolerance": check.reward_tolerance,
        },
        "metrics": {},
        "motion": None,
        "videos": videos,
        "settings": settings,
    }
    for name in check.metric_fns:
        values = [v["metrics"][name] for v in videos]
        report["metrics"][name] = {
            "base_mean": _mean([m["base"] for m in values]),
            "tuned_mean": _mean([m["tuned"] for m in values]),
            "mean_delta": _mean([m["delta"] for m in values]),
            "degraded_rate": sum(m["degraded"] for m in values) / n,
            "improved_reward_and_degraded_rate": sum(
                m["degraded"] and v["reward_improved"] for m, v in zip(values, videos)
            )
            / n,
            "num_undefined": sum(not m["defined"] for m in values),
            "higher_is_better": check.higher_is_better.get(name, True),
            "tolerance": check.tolerances[name],
        }
    if check.motion:
        report["motion"] = {
            "base_dynamic_rate": sum(v["base_dynamic"] for v in videos) / n,
            "tuned_dynamic_rate": sum(v["tuned_dynamic"] for v in videos) / n,
            "collapse_rate": sum(v["froze"] for v in videos) / n,
            "base_mean_magnitude": _mean([v["base_motion"] for v in videos]),
            "tuned_mean_magnitude": _mean([v["tuned_motion"] for v in videos]),
        }
    return report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def reward_hacking_markdown(report: Mapping[str, Any], *, max_videos: int = 50) -> str:
    """Render a :func:`reward_hacking_report` as markdown: the rate, per-metric summary and per-video table."""
    reward = report["reward"]
    lines = [
        "# Reward hacking",
        "",
        f"**Reward-hacking rate: {100 * report['hacking_rate']:.1f}%** ({report['num_hacked']} of "
        f"{report['num_videos']} videos).",
        "",
        f"Definition: {report['definition']}.",
        "",
        "| quantity | base | fine-tuned | mean delta | rate |",
        "|---|---|---|---|---|",
        f"| {reward['name']} (training reward) | {_fmt(reward['base_mean'])} | {_fmt(reward['tuned_mean'])} | "
        f"{_fmt(reward['mean_delta'])} | improved: {100 * reward['improved_rate']:.1f}% |",
    ]
    for name, stats in report["metrics"].items():
        arrow = "↑" if stats["higher_is_better"] else "↓"
        undefined = f", {stats['num_undefined']} undefined" if stats["num_undefined"] else ""
        lines.append(
            f"| {name} {arrow} (tolerance {stats['tolerance']:g}) | {_fmt(stats['base_mean'])} | "
            f"{_fmt(stats['tuned_mean'])} | {_fmt(stats['mean_delta'])} | degraded: "
            f"{100 * stats['degraded_rate']:.1f}%{undefined} |"
        )
    motion = report.get("motion")
    if motion:
        lines.append(
            f"| dynamic (VBench dynamic degree) | {100 * motion['base_dynamic_rate']:.1f}% | "
            f"{100 * motion['tuned_dynamic_rate']:.1f}% | motion {_fmt(motion['base_mean_magnitude'], 2)} -> "
            f"{_fmt(motion['tuned_mean_magnitude'], 2)} px | froze: {100 * motion['collapse_rate']:.1f}% |"
        )
    metric_names = list(report["metrics"])
    header = ["video", f"{reward['name']} delta", *[f"{m} delta" for m in metric_names]]
    if motion:
        header += ["dynamic (base -> tuned)"]
    header += ["hacked", "why"]
    lines += ["", "## Per video", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for video in report["videos"][:max_videos]:
        cells = [video["video_id"], _fmt(video["reward_delta"])]
        cells += [_fmt(video["metrics"][m]["delta"]) for m in metric_names]
        if motion:
            cells.append(f"{_fmt(video['base_dynamic'])} -> {_fmt(video['tuned_dynamic'])}")
        cells += [_fmt(video["hacked"]), "; ".join(video["reasons"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(report["videos"]) > max_videos:
        lines.append(f"\n({len(report['videos']) - max_videos} more videos in report.json)")
    return "\n".join(lines) + "\n"


def write_reward_hacking_report(report: Mapping[str, Any], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` to ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "report.json", "markdown": output_dir / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(reward_hacking_markdown(report), encoding="utf-8")
    return paths
