"""The ICReward paper's whole pipeline as one command, on the bundled offline data, with one report.

    icreward pipeline --output_dir outputs/paper           # ~10 min on 2 CPU cores
    icreward pipeline --output_dir outputs/paper --quick   # ~1 min, plumbing only

Steps (every one reuses the library's own building blocks):

1. **Reward models** (Figure 2): :func:`~icreward.evaluation.reward_comparison.compare_reward_models` trains
   ICReward and the MLP baseline on the corpus of real generated clips
   (:func:`~icreward.data.generated_corpus.load_generated_sample`; ``--reward_data photos``: the photograph
   stress-test suite) and writes ``reward_models/`` (``mse.png``, the test table, both saved models); with
   ``reward_cv_folds`` it also cross-validates both by source clip (``reward_models/cross_validation/``).
2. **Best-of-N** (Table 1, Figure 3): the policy (by default the tiny random-weight Wan 2.1 image-to-video
   pipeline of :mod:`icreward.testing.tiny_pipelines`) samples ``num_candidates`` videos for each reference image
   (crops of scikit-image photographs, :mod:`icreward.data.photos`); :func:`~icreward.evaluation.best_of_n.run_best_of_n`
   picks one per image with ``random``, ``MLP`` and ``ICReward`` (each reward model's ``score``, the MLP's being its
   average frame reward) and evaluates the picks with CLIPSim, FVD, an ImageNet feature cosine and motion.
3. **DPO pairs**: per image, ICReward's pick is ``chosen`` and the MLP's pick ``rejected``
   (:func:`~icreward.data.pairs.pairs_from_reward_model_picks` on the same candidates and scores); images where both
   pick the same video give no pair. The last ``dpo_num_eval_images`` images are held out.
4. **DPO** (Figures 5 and 6): :class:`~icreward.trainers.VideoDPOTrainer` fine-tunes the policy with LoRA on the
   pairs; :class:`~icreward.trainers.video_dpo_trainer.PreferenceCurveCallback` plots the held-out preference
   accuracy over steps and the running average of wins.
5. **Report**: ``report.md`` and ``report.json`` in ``output_dir``, linking every plot.

What the default numbers mean: the policy has random weights, so its "videos" are structured noise, and without
network access CLIPSim uses a random-weight CLIP and FVD a random-weight I3D unless ``--clip_model`` /
``--i3d_checkpoint`` point to real weights. The run checks that every step of the paper's pipeline works end to end
and produces its tables and figures; it does not reproduce the paper's numbers.

Layout: :mod:`~icreward.evaluation.pipeline_settings` (:class:`PipelineSettings`),
:mod:`~icreward.evaluation.pipeline_common` (policy, reward models, DPO, paired differences),
:mod:`~icreward.evaluation.pipeline_clip_sections` and :mod:`~icreward.evaluation.pipeline_photo_sections` (steps 2-5
per reference set), :mod:`~icreward.evaluation.pipeline_report` (``report.md``); this module runs them in order. The
command line, ``icreward pipeline``, is :mod:`icreward.cli.pipeline`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..pipelines import TINY_POLICIES, load_policy_pipeline  # noqa: F401  (importable from here as before)
from .pipeline_clip_sections import run_clip_sections
from .pipeline_common import (  # noqa: F401  (importable from here as before)
    METHODS,
    PRETRAINED_POLICY,
    load_policy,
    load_reward_models,
    logger,
    paired_difference,
    torch_threads,
)
from .pipeline_photo_sections import run_photo_sections
from .pipeline_report import json_safe, write_pipeline_report
from .pipeline_settings import PipelineSettings

__all__ = ["PipelineSettings", "run_paper_pipeline", "write_pipeline_report"]


def _without_policy_held_out_clips(dataset: Any) -> Any:
    """The corpus without the rows whose source or donor clip is one of the policy's held-out clips: the effects are
    measured on those clips' references, so neither reward model may have trained on them."""
    from ..data.generated_corpus import clip_of_source_id
    from ..policy.data import is_held_out_name

    def held_out(source_id: str) -> bool:  # "" (no donor) is no clip
        return bool(source_id) and is_held_out_name(*clip_of_source_id(source_id))

    kept = dataset.filter(lambda row: not held_out(row["source_id"]) and not held_out(row["donor"] or ""))
    for split, rows in kept.items():
        if len(rows) == 0:
            raise ValueError(
                f"no {split} rows left after dropping the policy's held-out clips; raise reward_max_clips"
            )
    dropped = {split: len(dataset[split]) - len(kept[split]) for split in dataset}
    logger.info("reward corpus: dropped the policy's held-out clips (%s rows per split)", dropped)
    return kept


def run_paper_pipeline(
    output_dir: str | os.PathLike,
    settings: PipelineSettings | None = None,
    *,
    dataset: Any = None,
) -> dict[str, Any]:
    """Run the paper's pipeline (reward models, best-of-N, DPO pairs, DPO) and write one report.

    Args:
        output_dir: receives ``report.md``, ``report.json`` and the step folders ``reward_models/`` (Figure 2 and
            both saved models), ``best_of_n/`` (candidates, Table 1, Figure 3) and ``dpo/`` (pairs, LoRA weights,
            Figures 5 and 6).
        settings: a :class:`PipelineSettings` (default: the CPU defaults).
        dataset: a ``DatasetDict`` with ``train``/``validation``/``test`` reward-training splits (e.g. a
            :func:`~icreward.data.stress_suite.build_stress_suite` build); default: the bundled sample
            (:func:`~icreward.data.stress_suite.load_sample_dataset`).

    Returns:
        The content of ``report.json``.
    """
    settings = settings or PipelineSettings()
    dataset_given = dataset is not None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Reward models (Figure 2).
    t = time.perf_counter()
    dataset = _reward_dataset(settings, dataset)
    reward_dir = output_dir / "reward_models"
    comparison, cross_validation = _train_reward_models(dataset, reward_dir, settings)
    timings["reward_models"] = time.perf_counter() - t
    logger.info("step 1/4: reward models trained in %.1f s", timings["reward_models"])

    # 2-5. Best-of-N (Table 1, Figure 3), ICReward-vs-MLP pairs, DPO (Figures 5 and 6), reward feedback.
    reward_models = load_reward_models(reward_dir)
    with torch_threads(settings.policy_num_threads):
        pipeline = load_policy(settings.policy, seed=settings.seed)
    if settings.reference_set == "clips":
        sections = run_clip_sections(pipeline, reward_models, settings, output_dir, timings)
    else:
        sections = run_photo_sections(pipeline, reward_models, settings, output_dir, timings)
    timings["total"] = time.perf_counter() - start

    data = "custom" if dataset_given else settings.reward_data
    results = json_safe(_results(settings, timings, comparison, cross_validation, data, sections))
    (output_dir / "report.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_pipeline_report(results, output_dir)
    logger.info("paper pipeline finished in %.1f s; report: %s", timings["total"], output_dir / "report.md")
    return results


def _reward_dataset(settings: PipelineSettings, dataset: Any) -> Any:
    """The reward models' training data: ``dataset`` when given, else the bundled corpus ``settings.reward_data``
    names (the generated clips without the policy's held-out clips when those are the references)."""
    if dataset is None and settings.reward_data == "generated":
        from ..data.generated_corpus import load_generated_sample

        dataset = load_generated_sample(max_clips=settings.reward_max_clips)
        if settings.reference_set == "clips":
            dataset = _without_policy_held_out_clips(dataset)
    elif dataset is None:
        from ..data.stress_suite import load_sample_dataset

        dataset = load_sample_dataset()
    return dataset


def _train_reward_models(dataset: Any, reward_dir: Path, settings: PipelineSettings) -> tuple[dict, dict | None]:
    """Step 1: ICReward and the MLP trained and compared (Figure 2), cross-validated with ``reward_cv_folds``."""
    from ..models.feature_cache import default_feature_store  # on disk unless ICREWARD_FEATURE_CACHE=0
    from .reward_comparison import compare_reward_models

    feature_store = default_feature_store()  # backbone encodings shared by both models, the folds and later runs
    comparison = compare_reward_models(
        dataset, reward_dir, settings.comparison_settings(), feature_store=feature_store
    )
    cross_validation = None
    if settings.reward_cv_folds:
        from .reward_comparison import cross_validate_reward_models

        cross_validation = cross_validate_reward_models(
            dataset,
            reward_dir / "cross_validation",
            settings.comparison_settings(),
            num_folds=settings.reward_cv_folds,
            feature_store=feature_store,
        )
    return comparison, cross_validation


def _results(
    settings: PipelineSettings,
    timings: dict[str, float],
    comparison: dict[str, Any],
    cross_validation: dict[str, Any] | None,
    data: str,
    sections: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``report.json`` (before :func:`~icreward.evaluation.pipeline_report.json_safe`)."""
    report, labels, pair_stats, dpo = (
        sections["report"],
        sections["metric_labels"],
        sections["dpo_pairs"],
        sections["dpo"],
    )
    return {
        "settings": settings.to_dict(),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "timings_seconds": timings,
        "reward_models": {
            "dataset": comparison["dataset"],
            "data": data,
            "cross_validation": None
            if cross_validation is None
            else {k: cross_validation[k] for k in ("group_column", "folds", "summary")},
            "test": {name: res["test"] for name, res in comparison["models"].items()},
            "validation_history": {
                name: res.get("validation_history", []) for name, res in comparison["models"].items()
            },
        },
        "best_of_n": {
            "methods": report.methods,
            "metric_labels": labels,
            "table1": report.summary,
            "all_candidates": report.all_candidates,
            "higher_is_better": report.higher_is_better,
            "agreement": report.agreement(),
            "per_sample": {m: report.per_sample(m) for m in report.candidate_metrics},
            "selections": report.selections,
            "sample_ids": report.sample_ids,
            "fvd_reference": report.settings.get("fvd_reference"),
        },
        "dpo_pairs": pair_stats,
        "dpo": dpo,
        "clips": sections.get("clips"),
    }


if __name__ == "__main__":
    raise SystemExit(
        "the paper pipeline's command line is `icreward pipeline` (python -m icreward.cli pipeline), e.g. "
        "`icreward pipeline --output_dir outputs/paper --quick`"
    )
