"""Train ICReward and the MLP baseline on the same split and report how they compare (the paper's Figure 2).

Used by ``icreward compare`` and ``icreward demo`` (the README's main job on the bundled data).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from ..metrics.reward_metrics import reward_regression_metrics
from .reward_comparison_report import (
    CV_METRICS,
    cross_validation_markdown,
    write_comparison_report,
    write_cross_validation_report,
)

logger = logging.getLogger("icreward")

__all__ = [
    "ComparisonSettings",
    "compare_reward_models",
    "cross_validate_reward_models",
    "cross_validation_markdown",
    "write_comparison_report",
    "write_cross_validation_report",
]


@dataclass
class ComparisonSettings:
    """What both models share; every field is a CLI flag of ``icreward compare``."""

    backbone: str = field(
        default="efficientnet-lite0",
        metadata={"help": "Backbone of both models (hub id, path or efficientnet-lite0)."},
    )
    image_size: int = field(default=128, metadata={"help": "Frame size fed to the backbone."})
    num_frames: int = field(default=8, metadata={"help": "Frames sampled per video."})
    num_train_epochs: float = field(default=15, metadata={"help": "Training epochs of each model."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Head learning rate of both models."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    head_hidden_size: int = field(default=64, metadata={"help": "ICReward head width."})
    head_num_layers: int = field(default=1, metadata={"help": "ICReward cross-attention blocks."})
    mlp_hidden_sizes: tuple[int, ...] = field(default=(256, 64), metadata={"help": "MLP baseline widths."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout in both heads."})
    ranking_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of the in-batch same-source ranking term added to the MSE (0 = paper)."}
    )
    eval_every_epochs: int = field(default=2, metadata={"help": "Validation frequency (for the MSE curves)."})
    seed: int = field(default=0, metadata={"help": "Seed of both runs."})
    best_metric: str | None = field(
        default="pairwise_accuracy",
        metadata={"help": "Keep each model's checkpoint with the best validation value of this metric ('' = last)."},
    )
    include_feature_cosine: bool = field(
        default=True, metadata={"help": "Also report the zero-shot feature-cosine baseline."}
    )


class _EvalHistory(TrainerCallback):
    def __init__(self):
        self.history: list[dict[str, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.history.append({"epoch": float(state.epoch or 0), "step": state.global_step, **metrics})


def _split(dataset_dict, name: str):
    if name not in dataset_dict:
        raise ValueError(
            f"the dataset has no {name!r} split (it has {list(dataset_dict)}); both models need train/validation/test"
        )
    return dataset_dict[name]


def _meta(ds, column):
    return list(ds[column]) if column in ds.column_names else None


def compare_reward_models(
    dataset_dict, output_dir: str | Path, settings: ComparisonSettings | None = None, feature_store: dict | None = None
) -> dict[str, Any]:
    """Train :class:`ICRewardModel` and :class:`MLPRewardModel` on ``train``, track validation MSE, evaluate
    both (and the zero-shot feature cosine) on ``test`` (held-out source images), save both models with model
    cards, and write the report (``report.json``, ``report.md``, PNG plots) to ``output_dir``.

    ``feature_store`` (a dict) memoises backbone encodings; pass the same dict to repeated comparisons.
    """
    settings = settings or ComparisonSettings()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train, val, test = (_split(dataset_dict, s) for s in ("train", "validation", "test"))
    from ..models.feature_cache import default_feature_store  # on disk unless ICREWARD_FEATURE_CACHE=0

    store = default_feature_store() if feature_store is None else feature_store  # both models share the backbone
    results: dict[str, Any] = {
        "settings": settings.__dict__,
        "models": {},
        "dataset": {s: len(dataset_dict[s]) for s in dataset_dict},
    }
    predictions: dict[str, np.ndarray] = {}
    for name, build in _model_builders(settings).items():
        torch.manual_seed(settings.seed)
        model = build()
        trainer, results["models"][name], predictions[name] = _train_and_test(
            name, model, settings, (train, val, test), output_dir, store
        )
        _save_with_card(trainer, model, output_dir / name, settings, dataset_dict, results["models"][name])

    labels = np.asarray(test["score"], dtype=np.float64)
    if settings.include_feature_cosine:
        predictions["feature_cosine"], results["models"]["feature_cosine"] = _feature_cosine(
            settings, test, labels, store
        )
    results["predictions"] = {k: v.tolist() for k, v in predictions.items()}
    results["labels"] = labels.tolist()
    results["perturbations"] = _meta(test, "perturbation")
    write_comparison_report(results, output_dir)
    return results


def _shared_model_kwargs(settings: ComparisonSettings) -> dict[str, int]:
    return {"num_frames": settings.num_frames, "image_size": settings.image_size}


def _model_builders(settings: ComparisonSettings) -> dict[str, Callable[[], Any]]:
    """``name -> build()`` of the two trained models (ICReward and the MLP baseline), both on ``settings.backbone``."""
    from ..models import ICRewardModel, MLPRewardModel

    shared = _shared_model_kwargs(settings)
    return {
        "icreward": lambda: ICRewardModel.from_pretrained_backbone(
            settings.backbone,
            head_hidden_size=settings.head_hidden_size,
            head_num_layers=settings.head_num_layers,
            head_dropout=settings.dropout,
            **shared,
        ),
        "mlp": lambda: MLPRewardModel.from_pretrained_backbone(
            settings.backbone, hidden_sizes=list(settings.mlp_hidden_sizes), dropout=settings.dropout, **shared
        ),
    }


def _training_config(settings: ComparisonSettings, output_dir: Path, num_train: int):
    """The :class:`RewardModelConfig` of both models: cosine schedule with one warm-up epoch, validation (and, with
    ``best_metric``, a checkpoint) every ``eval_every_epochs`` epochs, a log line per epoch."""
    from ..trainers import RewardModelConfig

    steps_per_epoch = math.ceil(num_train / settings.batch_size)
    return RewardModelConfig(
        output_dir=str(output_dir),
        num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        ranking_loss_weight=settings.ranking_loss_weight,
        lr_scheduler_type="cosine",
        warmup_steps=steps_per_epoch,
        eval_strategy="steps",
        eval_steps=steps_per_epoch * settings.eval_every_epochs,
        save_strategy="steps" if settings.best_metric else "no",
        save_steps=steps_per_epoch * settings.eval_every_epochs,
        save_total_limit=2,
        load_best_model_at_end=bool(settings.best_metric),
        metric_for_best_model=settings.best_metric or None,
        greater_is_better=None if not settings.best_metric else settings.best_metric not in ("mse", "mae", "loss"),
        logging_steps=steps_per_epoch,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _train_and_test(name: str, model, settings: ComparisonSettings, splits: tuple, output_dir: Path, store):
    """Train ``model`` on ``train`` (validating on ``validation``), then test it: ``(trainer, result, test scores)``."""
    from ..trainers import RewardModelTrainer

    train, val, test = splits
    history = _EvalHistory()
    args = _training_config(settings, output_dir / "runs" / name, len(train))
    start = time.perf_counter()
    trainer = RewardModelTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=[history], feature_store=store
    )
    train_output = trainer.train()
    seconds = time.perf_counter() - start
    test_metrics = trainer.evaluate(test, metric_key_prefix="test")
    predictions = trainer.predict_scores(test)
    result = {
        "test": {k.removeprefix("test_"): v for k, v in test_metrics.items()},
        "validation_history": history.history,
        "train_seconds": seconds,
        "train_loss": train_output.training_loss,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return trainer, result, predictions


def _save_with_card(
    trainer, model, save_dir: Path, settings: ComparisonSettings, dataset_dict, result: dict[str, Any]
) -> None:
    """Save a trained model, its processor and a model card with its test metrics to ``save_dir``."""
    train, test = dataset_dict["train"], dataset_dict["test"]
    trainer.save_model(str(save_dir))
    model.save_pretrained(
        save_dir,
        model_card_kwargs={
            "dataset_name": str(dataset_dict.get("_name", "icreward bundled stress-test suite"))
            if isinstance(dataset_dict, dict)
            else None,
            "training_data": f"{len(train)} training videos; metrics on {len(test)} test videos of held-out source images.",
            "metrics": {k: v for k, v in result["test"].items() if isinstance(v, float)},
            "training_args": {
                "num_train_epochs": settings.num_train_epochs,
                "learning_rate": settings.learning_rate,
                "batch_size": settings.batch_size,
                "backbone": settings.backbone,
                "frozen_backbone": True,
            },
        },
    )


def _feature_cosine(settings: ComparisonSettings, test, labels: np.ndarray, store) -> tuple[np.ndarray, dict]:
    """The zero-shot feature-cosine baseline on ``test``: ``(scores, {"test": metrics})``."""
    from ..models import FeatureCosineReward, MLPRewardModel
    from ..trainers.reward_data import encode_dataset_features

    # pooled features of the same backbone, from the shared cache
    probe = MLPRewardModel.from_pretrained_backbone(settings.backbone, **_shared_model_kwargs(settings))
    encoded = encode_dataset_features(probe, test, probe.get_processor(), store=store)
    scores = [
        FeatureCosineReward.score_features(
            row["video__reference_features"][None],
            row["video__frame_features"][None],
            row["video__frame_mask"][None],
        ).item()
        for row in encoded
    ]
    metrics = reward_regression_metrics(
        scores,
        labels,
        groups=_meta(test, "source_id"),
        perturbations=_meta(test, "perturbation"),
        motions=_meta(test, "motion"),
    )
    return np.asarray(scores), {"test": metrics}


# --------------------------------------------------------------------------------------------------------------
# Cross-validation over held-out groups (photographs)
# --------------------------------------------------------------------------------------------------------------


def _fold_splits(groups: list, num_folds: int | None, seed: int = 0) -> list[tuple[list, list, list, str]]:
    """Folds ``(train groups, validation groups, test groups, label)``.

    Without ``num_folds`` (or with at least as many folds as groups): leave-one-group-out in sorted order, the
    validation group being the next one (label = the test group). With fewer folds than groups: the groups are
    shuffled (seeded) and dealt into ``num_folds`` folds of near-equal size; fold ``k`` tests on fold ``k``,
    validates on fold ``k + 1`` and trains on the rest (label ``"k<k>"``).
    """
    ordered = sorted(set(groups), key=str)
    if len(ordered) < 3:
        raise ValueError(
            f"cross-validation needs at least 3 groups (train, validation, test), got {len(ordered)}: {ordered}"
        )
    if num_folds is not None and num_folds < 3:
        raise ValueError(f"num_folds must be >= 3 (train, validation and test folds), got {num_folds}")
    if num_folds is None or num_folds >= len(ordered):
        parts = [[g] for g in ordered]
        labels = [str(g) for g in ordered]
    else:
        shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
        parts = [sorted(shuffled[k::num_folds], key=str) for k in range(num_folds)]
        labels = [f"k{k}" for k in range(num_folds)]
    folds = []
    for k, (test, label) in enumerate(zip(parts, labels)):
        val = parts[(k + 1) % len(parts)]
        train = [g for g in ordered if g not in test and g not in val]
        folds.append((train, val, test, label))
    return folds


def _default_group_column(columns: list[str]) -> str:
    # The generated-clip corpus splits by clip group; the photograph suite by photograph.
    for name in ("clip_group", "photo"):
        if name in columns:
            return name
    return "source_id"


def cross_validate_reward_models(
    dataset_dict,
    output_dir: str | Path,
    settings: ComparisonSettings | None = None,
    *,
    group_column: str | None = None,
    num_folds: int | None = None,
    feature_store: dict | None = None,
) -> dict[str, Any]:
    """Cross-validation of :func:`compare_reward_models` over held-out groups.

    All splits of ``dataset_dict`` are pooled. ``group_column`` (default: ``clip_group`` for the generated-clip
    corpus, ``photo`` for the photograph suite) names the unit that never straddles train and test: a source clip's
    template, or a photograph. Without ``num_folds``, fold ``k`` tests on the ``k``-th group, validates on the
    next group and trains on the rest (leave-one-group-out); with ``num_folds`` = K smaller than the number of
    groups, the groups are dealt into K seeded folds (test one fold, validate on the next, train on the rest).

    The report gives the mean over folds, the paired per-fold differences (ICReward minus each other model, with
    standard errors over folds) and, from the pooled out-of-fold predictions, the pairwise accuracies overall, on
    motion-decoupled pairs and per perturbation kind, with paired differences whose standard errors are
    cluster-robust over the held-out groups (the independent units). Each fold's full report is in
    ``output_dir/fold-<label>/``; the summary in ``cv_report.md`` / ``cv_report.json``.
    """
    from datasets import concatenate_datasets

    settings = settings or ComparisonSettings()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    splits = [dataset_dict[name] for name in dataset_dict if not str(name).startswith("_")]
    pooled = concatenate_datasets(splits) if len(splits) > 1 else splits[0]
    group_column = group_column or _default_group_column(pooled.column_names)
    if group_column not in pooled.column_names:
        raise ValueError(
            f"cross-validation groups by the {group_column!r} column, which the dataset lacks "
            f"(columns: {pooled.column_names}); pass group_column= (e.g. 'source_id')"
        )
    groups = list(pooled[group_column])
    rows_of: dict[Any, list[int]] = {}
    for i, group in enumerate(groups):
        rows_of.setdefault(group, []).append(i)
    from ..models.feature_cache import default_feature_store  # on disk unless ICREWARD_FEATURE_CACHE=0

    store = default_feature_store() if feature_store is None else feature_store  # every fold reuses the encodings
    folds: list[dict[str, Any]] = []
    out_of_fold: dict[str, Any] = {"rows": [], "predictions": {}}
    for train_groups, val_groups, test_groups, label in _fold_splits(list(rows_of), num_folds, settings.seed):
        test_rows = sorted(i for g in test_groups for i in rows_of[g])
        fold_data = {
            "train": pooled.select(sorted(i for g in train_groups for i in rows_of[g])),
            "validation": pooled.select(sorted(i for g in val_groups for i in rows_of[g])),
            "test": pooled.select(test_rows),
        }
        logger.info("fold %d (%s): test %s, validation %s", len(folds), label, test_groups, val_groups)
        fold_results = compare_reward_models(fold_data, output_dir / f"fold-{label}", settings, feature_store=store)
        out_of_fold["rows"].extend(test_rows)
        for name, values in fold_results["predictions"].items():
            out_of_fold["predictions"].setdefault(name, []).extend(values)
        folds.append(
            {
                "test_group": label,
                "validation_group": val_groups[0] if len(val_groups) == 1 else f"{len(val_groups)} groups",
                "train_groups": train_groups,
                "test_groups": test_groups,
                "validation_groups": val_groups,
                "test": {name: res["test"] for name, res in fold_results["models"].items()},
            }
        )
    summary = _summarise_folds(folds)
    summary["pooled"] = _pooled_out_of_fold(pooled, out_of_fold, group_column)
    results = {"settings": settings.__dict__, "group_column": group_column, "folds": folds, "summary": summary}
    write_cross_validation_report(results, output_dir)
    return results


def _pooled_out_of_fold(pooled, out_of_fold: dict[str, Any], group_column: str) -> dict[str, Any]:
    """Pairwise accuracy of every model over all out-of-fold predictions, overall, on motion-decoupled pairs and
    per perturbation kind of the lower-scored video, with paired differences (ICReward minus each other model)
    whose standard errors are cluster-robust over ``group_column`` (pairs of one group are not independent)."""
    rows = out_of_fold["rows"]
    table = pooled.select(rows).select_columns(
        [c for c in ("source_id", "score", "perturbation", "motion", group_column) if c in pooled.column_names]
    )
    labels = np.asarray(table["score"], dtype=np.float64)
    sources = list(table["source_id"]) if "source_id" in table.column_names else [0] * len(rows)
    kinds = list(table["perturbation"]) if "perturbation" in table.column_names else None
    motion = np.asarray(table["motion"], dtype=np.float64) if "motion" in table.column_names else None
    clusters = list(table[group_column])
    by_source: dict[Any, list[int]] = {}
    for i, source in enumerate(sources):
        by_source.setdefault(source, []).append(i)
    hi_list, lo_list = [], []
    for members in by_source.values():
        idx = np.asarray(members)
        a, b = np.triu_indices(len(idx), k=1)
        a, b = idx[a], idx[b]
        keep = labels[a] != labels[b]  # the comparison's pairwise accuracy skips label ties
        a, b = a[keep], b[keep]
        hi_list.append(np.where(labels[a] > labels[b], a, b))
        lo_list.append(np.where(labels[a] > labels[b], b, a))
    hi = np.concatenate(hi_list) if hi_list else np.zeros(0, dtype=np.int64)
    lo = np.concatenate(lo_list) if lo_list else np.zeros(0, dtype=np.int64)
    cluster_ids = {c: k for k, c in enumerate(dict.fromkeys(clusters))}
    pair_cluster = np.asarray([cluster_ids[clusters[i]] for i in hi], dtype=np.int64)
    subsets: dict[str, np.ndarray] = {"all": np.ones(len(hi), dtype=bool)}
    if motion is not None:
        subsets["motion_decoupled"] = motion[hi] > motion[lo]
    if kinds is not None:
        lower = np.asarray(kinds, dtype=object)[lo]
        for kind in sorted(set(lower.tolist())):
            subsets[kind] = lower == kind
    correct = {}
    for name, values in out_of_fold["predictions"].items():
        p = np.asarray(values, dtype=np.float64)
        correct[name] = (p[hi] > p[lo]) + 0.5 * (p[hi] == p[lo])
    result: dict[str, Any] = {"num_pairs": {}, "accuracy": {}, "paired": {}, "num_groups": len(cluster_ids)}
    for subset, mask in subsets.items():
        result["num_pairs"][subset] = int(mask.sum())
        for name in correct:
            result["accuracy"].setdefault(name, {})[subset] = float(correct[name][mask].mean()) if mask.any() else None
        if "icreward" not in correct:
            continue
        for other in (m for m in correct if m != "icreward"):
            diff = correct["icreward"][mask] - correct[other][mask]
            result["paired"].setdefault(other, {})[subset] = _cluster_mean_and_se(diff, pair_cluster[mask])
    return result


def _cluster_mean_and_se(values: np.ndarray, clusters: np.ndarray) -> dict[str, float] | None:
    """Mean of ``values`` and its cluster-robust standard error (ratio estimator over clusters)."""
    if values.size == 0:
        return None
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    mean = float(sums.sum() / counts.sum())
    g = len(ids)
    se = float(np.sqrt(g / (g - 1) * np.sum((sums - mean * counts) ** 2)) / counts.sum()) if g > 1 else float("nan")
    return {"mean_difference": mean, "standard_error": se, "num_groups": int(g), "num_pairs": int(values.size)}


def _summarise_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    models = list(folds[0]["test"])
    metrics = list(CV_METRICS) + sorted(
        {k for f in folds for res in f["test"].values() for k in res if k.startswith("accuracy/")} - set(CV_METRICS)
    )
    summary: dict[str, Any] = {"num_folds": len(folds), "models": {}, "paired": {}}
    for name in models:
        summary["models"][name] = {}
        for metric in metrics:
            values = np.array([f["test"][name].get(metric, np.nan) for f in folds], dtype=np.float64)
            values = values[~np.isnan(values)]
            if values.size:
                summary["models"][name][metric] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                    "num_folds": int(values.size),
                }
    # Paired over folds: ICReward minus each other model (same test photograph, same training data).
    if "icreward" in models:
        for other in (m for m in models if m != "icreward"):
            summary["paired"][other] = {}
            for metric in ("pairwise_accuracy", "accuracy/motion_decoupled", "mse"):
                pairs = [
                    (f["test"]["icreward"][metric], f["test"][other][metric])
                    for f in folds
                    if metric in f["test"]["icreward"] and metric in f["test"][other]
                ]
                if not pairs:
                    continue
                diff = np.array([a - b for a, b in pairs])
                better = diff < 0 if metric == "mse" else diff > 0
                summary["paired"][other][metric] = {
                    "mean_difference": float(diff.mean()),
                    "standard_error": float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0,
                    "icreward_better_folds": int(better.sum()),
                    "num_folds": int(diff.size),
                }
    return summary
