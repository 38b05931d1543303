"""The paper pipeline's ``report.md`` (Figure 2, Table 1, Figure 3, Figures 5 and 6, the real-clip effects) and the
JSON-safe form of its results (``report.json``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..pipelines import TINY_POLICIES
from .pipeline_common import FEATURE_METRIC, INDEPENDENT_METRIC, MOTION_METRIC, PRETRAINED_POLICY

__all__ = ["json_safe", "write_pipeline_report"]


def json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(n: Any, noun: str) -> str:
    n = int(n or 0)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


#: What the reward models were trained and tested on, per ``reward_data``: (training data, held-out test videos).
_REWARD_DATA = {
    "generated": ("the corpus of real generated clips", "held-out source clips"),
    "photos": ("the photograph stress-test suite", "held-out source photographs"),
    "custom": ("the given dataset", "its test split"),
}


def write_pipeline_report(results: Mapping[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` (Figure 2, Table 1, Figure 3, Figures 5 and 6) from :func:`run_paper_pipeline`'s results."""
    output_dir = Path(output_dir)
    lines = _intro_lines(results) + _reward_model_lines(results["reward_models"])
    if results.get("clips"):
        lines += _clip_report_lines(results)
    else:
        settings = results["settings"]
        lines += _photo_best_of_n_lines(settings, results["best_of_n"])
        lines += _photo_dpo_lines(settings, results["dpo_pairs"], results["dpo"])
    path = output_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _intro_lines(results: Mapping[str, Any]) -> list[str]:
    """The title, the run's timings, what the numbers mean and Figure 2's heading and plot."""
    settings = results["settings"]
    reward = results["reward_models"]
    return [
        "# ICReward paper pipeline",
        "",
        f"One run of `icreward pipeline` in {results['timings_seconds']['total']:.0f} s "
        f"({results['environment']['device']}, torch {results['environment']['torch']}). Steps: reward models "
        f"{results['timings_seconds']['reward_models']:.0f} s, candidate generation "
        f"{results['timings_seconds']['generation']:.0f} s, best-of-N evaluation "
        f"{results['timings_seconds']['best_of_n']:.0f} s, "
        + (
            f"DPO pairs {results['timings_seconds']['dpo_pairs']:.0f} s, "
            if "dpo_pairs" in results["timings_seconds"]
            else ""
        )
        + f"DPO {results['timings_seconds']['dpo']:.0f} s"
        + (
            f", reward feedback {results['timings_seconds']['reward_feedback']:.0f} s. "
            if "reward_feedback" in results["timings_seconds"]
            else ". "
        )
        + "Settings and every number below are in `report.json`.",
        "",
        "## What these numbers mean",
        "",
        f"The policy is `{settings['policy']}`."
        + (
            " It has random weights, so its videos are structured noise: the best-of-N and DPO sections check that "
            "the paper's pipeline runs end to end and produces its tables and figures (plumbing), not how good "
            "ICReward is. The feature-cosine column uses real pretrained (ImageNet) weights, but on noise-like "
            "videos it too mostly measures noise."
            if settings["policy"] in TINY_POLICIES
            else ""
        )
        + (
            " It is the tiny Wan image-to-video policy shipped with icreward, pretrained on real generated clips "
            "(`icreward.policy`; its 32x32 samples are blurry videos of the reference with block artifacts, and how "
            "close they come to real clips is measured in docs/policy.md and its model card). "
            "References are first frames of real clips; every effect is measured on clips held out from the "
            "policy's pretraining and from fine-tuning (the bundled reward corpus leaves them out too) with metrics "
            "the selecting/optimised reward was not trained on."
            if settings["policy"] == PRETRAINED_POLICY
            else ""
        )
        + " Metrics labelled *random-weight* use untrained networks because no weights can be downloaded offline; "
        "pass `--clip_model` (e.g. `openai/clip-vit-base-patch32`) and `--i3d_checkpoint` (Kinetics-400 I3D, see "
        "`icreward.metrics.fvd`) for real CLIPSim and FVD. The feature-cosine column uses real pretrained "
        "(ImageNet) weights. FVD from a handful of videos is "
        "strongly biased and only comparable between the methods of one table. Figure 2 is the one section that "
        f"measures the reward models themselves: both are trained on {_REWARD_DATA[reward.get('data', 'photos')][0]} "
        f"and tested on videos of {_REWARD_DATA[reward.get('data', 'photos')][1]}.",
        "",
        "## Figure 2: reward-model training",
        "",
        f"Both models on {_REWARD_DATA[reward.get('data', 'photos')][0]} ({reward['dataset']}); test = "
        f"{_REWARD_DATA[reward.get('data', 'photos')][1]}.",
        "",
        "![validation and test MSE](reward_models/mse.png)",
        "",
    ]


def _reward_model_lines(reward: Mapping[str, Any]) -> list[str]:
    """Figure 2's test table and, with ``reward_cv_folds``, the cross-validation section."""
    columns = ["mse", "mae", "spearman", "pairwise_accuracy", "accuracy/motion_decoupled"]
    names = {"icreward": "ICReward", "mlp": "MLP baseline", "feature_cosine": "feature cosine (zero-shot)"}
    lines = ["| model | " + " | ".join(f"test {c}" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, test in reward["test"].items():
        lines.append(f"| {names.get(name, name)} | " + " | ".join(_fmt(test.get(c)) for c in columns) + " |")
    lines += [
        "",
        "More plots and per-perturbation accuracies: [reward_models/report.md](reward_models/report.md); the trained "
        "models are in `reward_models/icreward/` and `reward_models/mlp/`.",
        "",
    ]
    if reward.get("cross_validation"):
        from .reward_comparison import cross_validation_markdown

        lines += cross_validation_markdown(reward["cross_validation"], heading="###")
        lines += [
            "Full report: [reward_models/cross_validation/cv_report.md](reward_models/cross_validation/cv_report.md).",
            "",
        ]
    return lines


def _photo_best_of_n_lines(settings: Mapping[str, Any], bon: Mapping[str, Any]) -> list[str]:
    """Table 1 and Figure 3 of the photographs run (``reference_set="photos"``)."""
    labels = bon["metric_labels"]
    lines = [
        "## Table 1: best-of-N selection",
        "",
        f"{len(bon['sample_ids'])} reference images x {settings['num_candidates']} candidates from the policy "
        f"({settings['num_frames']} frames, {settings['width']}x{settings['height']}). Each method picks one video "
        "per image: `random` (seeded), `MLP` and `ICReward` (the highest reward-model score; the MLP ranks by its "
        f"average frame reward). FVD reference set: {bon['fvd_reference']}.",
        "",
    ]
    metrics = [m for m in ("clipsim", "fvd", FEATURE_METRIC, MOTION_METRIC) if m in labels]
    metrics = [m for m in metrics if any(m in bon["table1"][method] for method in bon["methods"])]
    arrows = {m: "↑" if bon["higher_is_better"].get(m, True) else "↓" for m in metrics}
    lines += [
        "| method | " + " | ".join(f"{labels[m]} {arrows[m]}" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for method in bon["methods"]:
        lines.append(f"| {method} | " + " | ".join(_fmt(bon["table1"][method].get(m)) for m in metrics) + " |")
    lines.append("| *all candidates* | " + " | ".join(_fmt(bon["all_candidates"].get(m)) for m in metrics) + " |")
    agreement = bon["agreement"]
    lines += [
        "",
        f"ICReward and the MLP pick the same video on {agreement['ICReward']['MLP']:.0%} of the images. Per-image "
        "picks: [best_of_n/report.md](best_of_n/report.md); candidates: `best_of_n/candidates/`.",
        "",
        "## Figure 3: per-image CLIPSim of the picks",
        "",
        f"{labels['clipsim']} of each method's pick, per reference image.",
        "",
        "![per-sample CLIPSim](best_of_n/per_sample_clipsim.png)",
        "",
    ]
    if FEATURE_METRIC in labels:
        lines += [f"The same with the {labels[FEATURE_METRIC]}:", ""]
        lines += [f"![per-sample feature cosine](best_of_n/per_sample_{FEATURE_METRIC}.png)", ""]
    return lines


def _photo_dpo_lines(settings: Mapping[str, Any], pairs: Mapping[str, Any], dpo: Mapping[str, Any]) -> list[str]:
    """The ICReward-vs-MLP pairs and DPO (Figures 5 and 6) of the photographs run."""
    lines = [
        "## DPO: ICReward-vs-MLP pairs",
        "",
        f"Per image, ICReward's pick is *chosen* and the MLP's pick *rejected*: {pairs['num_pairs']} pairs from "
        f"{pairs['num_images']} images ({pairs['num_same_pick']} gave none because both picked the same "
        f"video); {pairs['num_train_pairs']} for training, {pairs['num_eval_pairs']} held out (images "
        f"{', '.join(pairs['held_out_images']) or 'none'}). Pairs: `dpo/pairs.jsonl`.",
        "",
    ]
    if "skipped" in dpo:
        lines += [f"DPO was skipped: {dpo['skipped']}.", ""]
    else:
        accuracy = dpo.get("final_eval_preference_accuracy")
        lines += [
            f"LoRA (rank {settings['lora_rank']}) Flow-DPO on the policy for {dpo['steps']} steps in "
            f"{dpo['seconds']:.0f} s (mean training loss {dpo['train_loss']:.4f}); weights: "
            + ", ".join(f"`dpo/{name}`" for name in dpo["lora_weights"])
            + ".",
            "",
            "**Final held-out preference accuracy**: "
            + (
                f"{accuracy:.3f} on {_count(dpo.get('final_eval_num_pairs'), 'pair')} (the fraction of held-out pairs whose "
                "ICReward pick the fine-tuned policy prefers over the MLP pick, relative to the frozen reference)."
                if accuracy is not None
                else "n/a (no held-out pair)."
            ),
            "",
            "### Figure 5: preference accuracy over steps",
            "",
            "![preference accuracy](dpo/preference_accuracy.png)",
            "",
            "### Figure 6: running average of wins",
            "",
            "![running win rate](dpo/running_win_rate.png)",
            "",
        ]
    return lines


def _pm(diff: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not diff or diff.get("mean") is None:
        return "n/a"
    se = diff.get("se")
    return f"{diff['mean']:+.{digits}f} ± {se:.{digits}f}" if se is not None else f"{diff['mean']:+.{digits}f}"


def _beyond_noise(diff: Mapping[str, Any] | None) -> str:
    """'yes' when the paired difference is more than two standard errors above zero."""
    if not diff or diff.get("mean") is None or diff.get("se") is None:
        return "n/a"
    if diff["mean"] > 2 * diff["se"]:
        return "yes (> 2 SE above 0)"
    if diff["mean"] < -2 * diff["se"]:
        return "no: it is > 2 SE below 0"
    return "no (within 2 SE of 0)"


def _clip_report_lines(results: Mapping[str, Any]) -> list[str]:
    """Best-of-N, pairs, DPO and reward-feedback sections of the real-clip run (``reference_set="clips"``)."""
    settings = results["settings"]
    clips = results["clips"]
    return (
        _clip_best_of_n_lines(settings, clips["best_of_n"])
        + _clip_dpo_lines(settings, clips, results["dpo_pairs"], results["dpo"])
        + _reward_feedback_lines(settings, clips)
    )


def _clip_best_of_n_lines(settings: Mapping[str, Any], bon: Mapping[str, Any]) -> list[str]:
    """Table 1 on held-out real-clip references with the paired differences between the selectors."""
    labels = bon["metric_labels"]
    ind, mot = INDEPENDENT_METRIC, MOTION_METRIC
    lines = [
        "## Table 1: best-of-N selection on held-out real-clip references",
        "",
        f"{bon['num_references']} held-out references (first frames of real clips the policy never saw; the bundled "
        "reward corpus leaves them out) x "
        f"{bon['num_seeds']} seeds x {settings['num_candidates']} candidates from the policy ({settings['num_frames']} "
        f"frames, {settings['width']}x{settings['height']}, {settings['num_inference_steps']} steps). Each method "
        "picks one candidate per reference and seed: `random` (seeded), `MLP` and `ICReward` (highest reward-model "
        "score), `oracle` (highest independent consistency: the ceiling of any selector on that metric). "
        f"Independent metric: {labels[ind]}; motion: {labels[mot]}.",
        "",
        f"| method | {labels[ind]} ↑ | motion |",
        "|---|---|---|",
    ]
    for m in bon["methods"]:
        lines.append(f"| {m} | {_fmt(bon['table'][m].get(ind))} | {_fmt(bon['table'][m].get(mot))} |")
    lines += [
        "",
        "Paired differences over references x seeds (mean ± standard error; the same candidates for every method):",
        "",
        "| comparison | independent consistency | beyond seed noise? | motion |",
        "|---|---|---|---|",
    ]
    for name, diff in bon["paired_differences"].items():
        lines.append(f"| {name} | {_pm(diff[ind])} | {_beyond_noise(diff[ind])} | {_pm(diff[mot])} |")
    per_seed = ", ".join(
        f"{m}: " + "/".join(_fmt(v, 3) for v in vals) for m, vals in bon["per_seed_independent"].items()
    )
    lines += [
        "",
        f"Per-seed means of the independent consistency ({per_seed}). ICReward and the MLP pick the same video on "
        f"{bon['agreement']['ICReward']['MLP']:.0%} of the references (seed 0).",
        "",
        "![best-of-N picks](best_of_n/contact_sheet.png)",
        "",
        "Rows: per reference, the random, MLP, ICReward and oracle picks (frames left to right). Per-seed reports: "
        "`best_of_n/seed_*/report.md`.",
        "",
    ]
    return lines


def _clip_dpo_lines(
    settings: Mapping[str, Any], clips: Mapping[str, Any], pairs: Mapping[str, Any], dpo: Mapping[str, Any]
) -> list[str]:
    """The ICReward-vs-MLP pairs, DPO's held-out preference accuracy and its effect on held-out references."""
    lines = [
        "## DPO: ICReward-vs-MLP pairs",
        "",
        f"Per reference, ICReward's pick is *chosen* and the MLP's pick *rejected*: {pairs['num_train_pairs']} training "
        f"pairs from {settings['dpo_num_train_references']} training-clip references, {pairs['num_eval_pairs']} "
        f"held-out pairs from the best-of-N runs on held-out references ({pairs['num_same_pick']} references x seeds "
        "gave no pair because both picked the same video). Pairs: `dpo/pairs.jsonl`.",
        "",
    ]
    if "skipped" in dpo:
        lines += [f"DPO was skipped: {dpo['skipped']}.", ""]
    else:
        accuracy, ci = dpo.get("final_eval_preference_accuracy"), dpo.get("eval_preference_ci95")
        ci_text = f" (95% Wilson interval {ci[0]:.3f} to {ci[1]:.3f}; " if ci else " ("
        excludes = ci is not None and (ci[0] > 0.5 or ci[1] < 0.5)
        lines += [
            f"LoRA (rank {settings['lora_rank']}) Flow-DPO for {dpo['steps']} steps in {dpo['seconds']:.0f} s (mean "
            f"training loss {dpo['train_loss']:.4f}). **Held-out preference accuracy**: "
            + (
                f"{accuracy:.3f} on {_count(dpo.get('final_eval_num_pairs'), 'pair')}{ci_text}"
                + ("excludes 0.5)." if excludes else "does not exclude 0.5).")
                if accuracy is not None
                else "n/a (no held-out pair)."
            ),
            "",
            "![preference accuracy](dpo/preference_accuracy.png) ![running win rate](dpo/running_win_rate.png)",
            "",
        ]
        lines += _effect_table("DPO policy vs the pretrained policy", dpo.get("effect"), clips, settings)
        lines += ["![base vs DPO samples](dpo/contact_sheet.png)", ""]
    return lines


def _reward_feedback_lines(settings: Mapping[str, Any], clips: Mapping[str, Any]) -> list[str]:
    """Reward feedback with and without the KL term, each run's effect on held-out references."""
    lines: list[str] = []
    rf = clips.get("reward_feedback") or {}
    lines += ["## Reward feedback with the learned ICReward, with and without the KL term", ""]
    if not rf:
        lines += ["Skipped (`rf_max_steps` = 0).", ""]
    for name, info in rf.items():
        lines += [
            f"### {name.replace('_', ' ')} (kl_weight {info['kl_weight']})",
            "",
            f"{info['steps']} LoRA steps in {info['seconds']:.0f} s on training-clip references, sampling "
            f"{settings['rf_num_inference_steps']} steps with gradients through the last "
            f"{settings['rf_truncated_backprop_steps']}; training reward (ICReward) first step "
            f"{_fmt(info.get('train_reward_first'))}, last step {_fmt(info.get('train_reward_last'))}.",
            "",
        ]
        lines += _effect_table(
            f"reward feedback ({name.replace('_', ' ')}) vs the pretrained policy", info.get("effect"), clips, settings
        )
        lines += [f"![base vs {name}](reward_feedback/contact_sheet_{name}.png)", ""]
    if rf:
        lines += [
            "The face reward is not used here: at 32x32 pixels no reference has a face large enough to detect.",
            "",
        ]
    return lines


def _effect_table(title: str, effect: Mapping[str, Any] | None, clips: Mapping[str, Any], settings) -> list[str]:
    if not effect:
        return []
    labels = clips["effect_metric_labels"]
    lines = [
        f"Effect of the {title} on {settings['num_references']} held-out references x {settings['num_seeds']} seeds "
        "(same seeds before and after; paired difference after - before, mean ± standard error):",
        "",
        "| metric | before | after | difference | beyond seed noise? |",
        "|---|---|---|---|---|",
    ]
    for name, values in effect.items():
        diff = values["difference"]
        lines.append(
            f"| {labels.get(name, name)} | {_fmt(values['before'])} | {_fmt(values['after'])} | {_pm(diff)} | "
            f"{_beyond_noise(diff)} |"
        )
    motion = effect.get(MOTION_METRIC)
    if motion and motion["before"]:
        change = motion["after"] / motion["before"] - 1
        lines += ["", f"Motion changed by {change:+.1%} ({'within' if abs(change) <= 0.1 else 'outside'} 10%).", ""]
    return lines + [""]


# ---------------------------------------------------------------------------------------------------------------------
# Command line
