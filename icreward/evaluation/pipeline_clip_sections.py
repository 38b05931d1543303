"""Steps 2-5 of the paper pipeline on real-clip references (``reference_set="clips"``, the default): best-of-N with an
oracle on held-out clips, ICReward-vs-MLP pairs from training clips, DPO and reward feedback, every effect a paired
difference on held-out clips."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .pipeline_common import (
    INDEPENDENT_METRIC,
    MOTION_METRIC,
    candidate_rows,
    load_policy,
    logger,
    lora_config,
    paired_difference,
    policy_generator,
    run_dpo,
    torch_threads,
    training_arguments,
    with_row_ids,
)
from .pipeline_settings import PipelineSettings

__all__ = ["run_clip_sections"]

_CLIP_PROMPT = "a video"


def _clip_reference_set(settings: PipelineSettings) -> dict[str, Any]:
    from ..policy import PRETRAINED_DIR
    from ..policy.data import load_references

    refs = load_references(PRETRAINED_DIR / "references.safetensors")
    order = refs.one_window_per_clip()
    if settings.num_references > len(order):
        raise ValueError(f"num_references={settings.num_references} but only {len(order)} held-out clips are shipped")
    windows = refs.eval_videos[order[: settings.num_references]]
    names = [refs.eval_clips[int(refs.eval_clip[i])].split("/")[-1] for i in order[: settings.num_references]]
    # Fine-tuning references: one window per training clip first (the first window of each), then the others.
    train = refs.train_references
    order_train = list(range(0, len(train), 2)) + list(range(1, len(train), 2))
    n_train = min(settings.dpo_num_train_references, len(train))
    return {
        "eval_videos": windows,
        "eval_references": [w[0].contiguous() for w in windows],
        "eval_ids": [f"heldout_{i:03d}_{n}"[:80] for i, n in enumerate(names)],
        "train_references": [train[i].contiguous() for i in order_train[:n_train]],
        "train_ids": [f"train_{i:03d}" for i in range(n_train)],
    }


def _independent_consistency(settings: PipelineSettings) -> tuple[Any, str]:
    """Feature cosine of frames ``1 ..`` to the reference with another pretrained backbone than the reward models'."""
    from ..models import FeatureCosineReward

    model = FeatureCosineReward(
        settings.independent_backbone, image_size=settings.independent_image_size, num_frames=settings.num_frames - 1
    ).eval()

    def score(reference: torch.Tensor, video: torch.Tensor) -> float:
        return float(model.score([reference], [video[1:]]).reshape(-1)[0])

    label = f"independent consistency ({settings.independent_backbone} feature cosine, frames 1..)"
    return score, label


def _mean_abs_motion(reference: torch.Tensor, video: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames, in [0, 1] pixel units (independent of every reward)."""
    v = video.float() / 255.0 if video.dtype == torch.uint8 else video.float()
    return float(v.diff(dim=0).abs().mean())


def _generate(pipeline, images, ids, settings: PipelineSettings, seed: int, output_dir: Path | None):
    from .best_of_n import generate_candidates

    generate = policy_generator(pipeline, settings)
    return generate_candidates(
        images,
        generate,
        prompts=[_CLIP_PROMPT] * len(images),
        num_videos=settings.num_candidates,
        seed=seed,
        sample_ids=ids,
        output_dir=output_dir,
    )


def _sample_once(pipeline, images, settings: PipelineSettings, seed: int) -> list[torch.Tensor]:
    """One uint8 video per reference, reference ``i`` with generator seed ``seed + i``."""
    generate = policy_generator(pipeline, settings)
    return [generate(image, _CLIP_PROMPT, 1, seed + 7919 * i)[0] for i, image in enumerate(images)]


def _policy_effect(
    videos_after: Sequence[torch.Tensor],
    videos_before: Sequence[torch.Tensor],
    references: Sequence[torch.Tensor],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Per metric: the mean before and after and the paired difference (after - before) over the videos."""
    out: dict[str, Any] = {}
    for name, fn in metrics.items():
        after = [fn(r, v) for r, v in zip(references, videos_after)]
        before = [fn(r, v) for r, v in zip(references, videos_before)]
        out[name] = {
            "before": sum(before) / len(before),
            "after": sum(after) / len(after),
            "difference": paired_difference(after, before),
        }
    return out


def _sample_references(pipeline, references, settings: PipelineSettings) -> tuple[list, list]:
    """Every reference sampled once per seed: (videos, matching references), seeds outermost."""
    videos, refs = [], []
    for s in range(settings.num_seeds):
        videos += _sample_once(pipeline, references, settings, seed=settings.seed + 100_003 * (s + 1))
        refs += list(references)
    return videos, refs


def _run_clip_best_of_n(
    pipeline, reward_models, settings: PipelineSettings, clips: dict[str, Any], output_dir: Path
) -> dict[str, Any]:
    """Best-of-N over the policy's candidates on held-out references, once per seed; random / MLP / ICReward /
    oracle (the candidate with the highest independent consistency: the upper bound of any selector)."""
    from .best_of_n import RandomSelector, RewardModelSelector, run_best_of_n

    independent, independent_label = _independent_consistency(settings)
    metrics = {INDEPENDENT_METRIC: independent, MOTION_METRIC: _mean_abs_motion}
    labels = {
        INDEPENDENT_METRIC: independent_label,
        MOTION_METRIC: "motion (mean absolute frame change, [0, 1] pixels)",
    }
    reports = []
    for s in range(settings.num_seeds):
        seed = settings.seed + 1000 * s
        groups = _generate(
            pipeline,
            clips["eval_references"],
            clips["eval_ids"],
            settings,
            seed,
            output_dir / f"seed_{s}" / "candidates",
        )
        for group in groups:
            group.labels = [independent(group.load_reference(), v) for v in group.load_videos()]
        selectors = {
            "random": RandomSelector(seed),
            "MLP": RewardModelSelector(reward_models["MLP"]),
            "ICReward": RewardModelSelector(reward_models["ICReward"]),
            "oracle": "oracle",
        }
        reports.append(
            run_best_of_n(
                groups,
                selectors,
                metrics=metrics,
                label_name="oracle_label",
                seed=seed,
                output_dir=output_dir / f"seed_{s}",
                progress=False,
            )
        )
    methods = list(reports[0].methods)
    per_method = {
        m: {k: [x for r in reports for x in r.per_sample(k)[m]] for k in (INDEPENDENT_METRIC, MOTION_METRIC)}
        for m in methods
    }
    comparisons = {}
    for a, b in (("ICReward", "random"), ("ICReward", "MLP"), ("MLP", "random"), ("oracle", "random")):
        comparisons[f"{a} - {b}"] = {
            k: paired_difference(per_method[a][k], per_method[b][k]) for k in (INDEPENDENT_METRIC, MOTION_METRIC)
        }
    table = {m: {k: sum(v) / len(v) for k, v in per_method[m].items()} for m in methods}
    per_seed = {m: [r.summary[m].get(INDEPENDENT_METRIC) for r in reports] for m in methods}
    _best_of_n_sheet(reports[0], output_dir / "contact_sheet.png")
    return {
        "reports": reports,
        "methods": methods,
        "metric_labels": labels,
        "table": table,
        "per_seed_independent": per_seed,
        "paired_differences": comparisons,
        "agreement": reports[0].agreement(),
        "num_references": len(clips["eval_references"]),
        "num_seeds": settings.num_seeds,
        "contact_sheet": "best_of_n/contact_sheet.png",
    }


def _best_of_n_sheet(report, path: Path, max_rows: int = 6) -> None:
    """Rows: per reference, the random, MLP, ICReward and oracle picks (frames left to right)."""
    from ..policy.evaluate import save_contact_sheet
    from .best_of_n import as_video_tensor

    rows, labels = [], []
    for g in range(min(max_rows, len(report.sample_ids))):
        for method in report.methods:
            k = report.selections[method][g]
            rows.append(as_video_tensor(report.video_paths[g][k]))
            labels.append(f"{g} {method}")
    save_contact_sheet(rows, path, labels=labels)


def _pairs_rows(report, split: str) -> list[dict[str, Any]]:
    return candidate_rows(report, lambda g, sample_id: f"{split}:{sample_id}", split=split)


def _build_clip_pairs(train_report, eval_reports, output_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """ICReward pick = chosen, MLP pick = rejected: training pairs from training-clip references, held-out pairs
    from the best-of-N runs on held-out references (every seed)."""
    from ..data.dpo_pairs import load_dpo_pairs
    from ..data.pairs import pairs_from_reward_model_picks

    out = {}
    same = {}
    for split, reports in (("train", [train_report]), ("eval", eval_reports)):
        rows = []
        for s, report in enumerate(reports):
            rows += [dict(r, image_index=f"{r['image_index']}:{s}") for r in _pairs_rows(report, split)]
        pairs, build = pairs_from_reward_model_picks(
            rows, "icreward_score", "mlp_score", group_by="image_index", return_stats=True
        )
        # a pair's noise is seeded from its row_id (its reference and seed), not from paths under output_dir
        out[split] = with_row_ids(load_dpo_pairs(pairs)) if len(pairs) else pairs
        same[split] = int(build.dropped.get("same_pick", 0))
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "pairs.jsonl", "w", encoding="utf-8") as f:
        for split in ("train", "eval"):
            for row in out[split]:
                row = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
                row["split"] = split
                f.write(json.dumps(row) + "\n")
    stats = {
        "num_images": len(train_report.sample_ids) + sum(len(r.sample_ids) for r in eval_reports),
        "num_pairs": len(out["train"]) + len(out["eval"]),
        "num_same_pick": same["train"] + same["eval"],
        "num_train_pairs": len(out["train"]),
        "num_eval_pairs": len(out["eval"]),
        "held_out_images": sorted({s for r in eval_reports for s in r.sample_ids}),
    }
    return out["train"], out["eval"], stats


def _run_reward_feedback(
    settings: PipelineSettings, reward_model: Any, references: list[torch.Tensor], kl_weight: float, output_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """A short RewardFeedbackTrainer run (LoRA) on a fresh copy of the policy, optimising the learned ICReward."""
    from PIL import Image

    from ..rewards.combined import RewardModelReward
    from ..trainers import RewardFeedbackConfig, RewardFeedbackTrainer

    data_dir = output_dir / "references"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ref in enumerate(references):
        path = data_dir / f"{i:03d}.png"
        Image.fromarray(ref.permute(1, 2, 0).numpy()).save(path)
        rows.append({"image": str(path), "prompt": _CLIP_PROMPT, "row_id": f"reference:{i:03d}"})
    import datasets

    pipeline = load_policy(settings.policy, seed=settings.seed)
    args = RewardFeedbackConfig(
        output_dir=str(output_dir),
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.rf_num_inference_steps,
        truncated_backprop_steps=settings.rf_truncated_backprop_steps,
        kl_weight=kl_weight,
        reward_weights=[settings.rf_reward_weight],
        guidance_scale=1.0,
        learning_rate=settings.rf_learning_rate,
        max_steps=settings.rf_max_steps,
        per_device_train_batch_size=settings.rf_batch_size,
        gradient_accumulation_steps=1,
        logging_steps=1,
        **training_arguments(settings),
    )
    start = time.perf_counter()
    trainer = RewardFeedbackTrainer(
        model=pipeline,
        reward_funcs={"icreward": RewardModelReward(reward_model)},
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        peft_config=lora_config(settings),
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return trainer, {
        "kl_weight": kl_weight,
        "steps": int(trainer.state.global_step),
        "seconds": time.perf_counter() - start,
        "train_reward_first": _first_key(logs[:1], "rewards/icreward"),
        "train_reward_last": _first_key(logs[-1:], "rewards/icreward"),
        "log_history": logs,
    }


def _first_key(logs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    for log in logs:
        if isinstance(log.get(key), (int, float)):
            return float(log[key])
    return None


def _effect_metrics(settings: PipelineSettings, reward_models: Mapping[str, Any]) -> tuple[dict, dict]:
    """Metrics for policy effects: independent consistency, motion, and ICReward's own score (the optimised reward,
    reported to show whether it rose; never used to judge consistency on its own)."""
    from .best_of_n import as_score_fn

    independent, label = _independent_consistency(settings)
    icreward_score = as_score_fn(reward_models["ICReward"])
    metrics = {
        INDEPENDENT_METRIC: independent,
        MOTION_METRIC: _mean_abs_motion,
        "icreward_score": lambda r, v: float(icreward_score(r, v)),
    }
    labels = {
        INDEPENDENT_METRIC: label,
        MOTION_METRIC: "motion (mean absolute frame change)",
        "icreward_score": "ICReward score (the reward DPO pairs / reward feedback optimise)",
    }
    return metrics, labels


def run_clip_sections(
    pipeline, reward_models, settings: PipelineSettings, output_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """Steps 2-5 on real-clip references (see the module docstring)."""
    clips = _clip_reference_set(settings)
    t = time.perf_counter()
    with torch_threads(settings.policy_num_threads):
        bon = _run_clip_best_of_n(pipeline, reward_models, settings, clips, output_dir / "best_of_n")
    timings["best_of_n"] = time.perf_counter() - t
    timings["generation"] = 0.0
    logger.info(
        "step 2/5: best-of-N on %d held-out references x %d seeds in %.1f s",
        bon["num_references"],
        settings.num_seeds,
        timings["best_of_n"],
    )

    # 3. Pairs: training-clip references (ICReward pick vs MLP pick), held-out pairs from the best-of-N runs.
    t = time.perf_counter()
    dpo_dir = output_dir / "dpo"
    train, evaluation, pair_stats = _clip_dpo_pairs(pipeline, reward_models, settings, clips, bon["reports"], dpo_dir)
    timings["dpo_pairs"] = time.perf_counter() - t

    # 4. DPO and its effect on held-out references.
    t = time.perf_counter()
    effect_metrics, effect_labels = _effect_metrics(settings, reward_models)
    references = clips["eval_references"]
    if pair_stats["num_train_pairs"] == 0:
        dpo: dict[str, Any] = {"skipped": "ICReward and the MLP picked the same video for every training reference"}
    else:
        dpo = _clip_dpo(pipeline, train, evaluation, settings, references, effect_metrics, dpo_dir)
    timings["dpo"] = time.perf_counter() - t

    # 5. Reward feedback with the learned ICReward, with and without the KL term.
    t = time.perf_counter()
    rf: dict[str, Any] = {}
    if settings.rf_max_steps > 0:
        rf = _clip_reward_feedback(reward_models["ICReward"], settings, clips, effect_metrics, output_dir)
    timings["reward_feedback"] = time.perf_counter() - t
    return {
        "clips": {
            "best_of_n": {k: v for k, v in bon.items() if k != "reports"},
            "effect_metric_labels": effect_labels,
            "reward_feedback": rf,
        },
        "report": bon["reports"][0],
        "metric_labels": bon["metric_labels"],
        "dpo_pairs": pair_stats,
        "dpo": dpo,
    }


def _clip_dpo_pairs(
    pipeline, reward_models, settings: PipelineSettings, clips: dict[str, Any], eval_reports, dpo_dir: Path
) -> tuple[Any, Any, dict[str, Any]]:
    """Step 3: best-of-N (MLP and ICReward) on the training-clip references, then the pairs of both splits."""
    from .best_of_n import RewardModelSelector, run_best_of_n

    with torch_threads(settings.policy_num_threads):
        train_groups = _generate(
            pipeline,
            clips["train_references"],
            clips["train_ids"],
            settings,
            settings.seed,
            dpo_dir / "train_candidates",
        )
        train_report = run_best_of_n(
            train_groups,
            {
                "MLP": RewardModelSelector(reward_models["MLP"]),
                "ICReward": RewardModelSelector(reward_models["ICReward"]),
            },
            seed=settings.seed,
            progress=False,
        )
    return _build_clip_pairs(train_report, eval_reports, dpo_dir)


def _clip_dpo(
    pipeline, train, evaluation, settings: PipelineSettings, references, effect_metrics, dpo_dir: Path
) -> dict[str, Any]:
    """Step 4: DPO on the training pairs, its held-out preference accuracy and its effect on held-out references."""
    with torch_threads(settings.policy_num_threads):
        dpo = run_dpo(pipeline, train, evaluation, settings, dpo_dir)
        accuracy, n = dpo.get("final_eval_preference_accuracy"), dpo.get("final_eval_num_pairs")
        if accuracy is not None and n:
            from .human_study import wilson_interval

            dpo["eval_preference_ci95"] = list(wilson_interval(int(round(accuracy * n)), int(n)))
        adapter = dpo.pop("_adapter")
        after, refs = _sample_references(pipeline, references, settings)
        with adapter.disable_lora():
            before, _ = _sample_references(pipeline, references, settings)
        dpo["effect"] = _policy_effect(after, before, refs, effect_metrics)
        _effect_sheet(refs, before, after, dpo_dir / "contact_sheet.png", ("base", "DPO"))
    return dpo


def _clip_reward_feedback(
    reward_model, settings: PipelineSettings, clips: dict[str, Any], effect_metrics, output_dir: Path
) -> dict[str, Any]:
    """Step 5: reward feedback on the training-clip references with and without the KL term, each run's effect on
    held-out references against the freshly loaded base policy (the same seeds)."""
    rf: dict[str, Any] = {}
    references = clips["eval_references"]
    rf_refs = clips["train_references"]
    with torch_threads(settings.policy_num_threads):
        base = load_policy(settings.policy, seed=settings.seed)
        before, refs = _sample_references(base, references, settings)
        for name, kl in (("with_kl", settings.rf_kl_weight), ("without_kl", 0.0)):
            trainer, info = _run_reward_feedback(
                settings, reward_model, rf_refs, kl, output_dir / "reward_feedback" / name
            )
            after, _ = _sample_references(trainer.adapter.pipeline, references, settings)
            info["effect"] = _policy_effect(after, before, refs, effect_metrics)
            _effect_sheet(
                refs, before, after, output_dir / "reward_feedback" / f"contact_sheet_{name}.png", ("base", name)
            )
            rf[name] = info
    return rf


def _effect_sheet(refs, before, after, path: Path, names: tuple[str, str], max_rows: int = 6) -> None:
    from ..policy.evaluate import save_contact_sheet

    rows, labels = [], []
    for i in range(min(max_rows, len(refs))):
        rows += [before[i], after[i]]
        labels += [f"{i} {names[0]}", f"{i} {names[1]}"]
    save_contact_sheet(rows, path, labels=labels)
