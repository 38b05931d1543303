"""Train ICReward and the MLP baseline on the same split and report how they compare (the paper's Figure 2).

Used by ``icreward compare`` and ``icreward demo`` (the README's main job on the bundled data).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from ..metrics.reward_metrics import reward_regression_metrics

logger = logging.getLogger("icreward")

__all__ = ["ComparisonSettings", "compare_reward_models", "write_comparison_report"]


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
    from ..models import FeatureCosineReward, ICRewardModel, MLPRewardModel
    from ..trainers import RewardModelConfig, RewardModelTrainer
    from ..trainers.reward_data import encode_dataset_features

    settings = settings or ComparisonSettings()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train, val, test = (_split(dataset_dict, s) for s in ("train", "validation", "test"))
    shared = {"num_frames": settings.num_frames, "image_size": settings.image_size}
    store: dict = {} if feature_store is None else feature_store  # both models share the frozen backbone
    results: dict[str, Any] = {
        "settings": settings.__dict__,
        "models": {},
        "dataset": {s: len(dataset_dict[s]) for s in dataset_dict},
    }
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    builders = {
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
    predictions: dict[str, np.ndarray] = {}
    for name, build in builders.items():
        torch.manual_seed(settings.seed)
        model = build()
        history = _EvalHistory()
        args = RewardModelConfig(
            output_dir=str(output_dir / "runs" / name),
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
        start = time.perf_counter()
        trainer = RewardModelTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=[history], feature_store=store
        )
        train_output = trainer.train()
        seconds = time.perf_counter() - start
        test_metrics = trainer.evaluate(test, metric_key_prefix="test")
        predictions[name] = trainer.predict_scores(test)
        results["models"][name] = {
            "test": {k.removeprefix("test_"): v for k, v in test_metrics.items()},
            "validation_history": history.history,
            "train_seconds": seconds,
            "train_loss": train_output.training_loss,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        save_dir = output_dir / name
        trainer.save_model(str(save_dir))
        model.save_pretrained(
            save_dir,
            model_card_kwargs={
                "dataset_name": str(dataset_dict.get("_name", "icreward bundled stress-test suite"))
                if isinstance(dataset_dict, dict)
                else None,
                "training_data": f"{len(train)} training videos; metrics on {len(test)} test videos of held-out source images.",
                "metrics": {k: v for k, v in results["models"][name]["test"].items() if isinstance(v, float)},
                "training_args": {
                    "num_train_epochs": settings.num_train_epochs,
                    "learning_rate": settings.learning_rate,
                    "batch_size": settings.batch_size,
                    "backbone": settings.backbone,
                    "frozen_backbone": True,
                },
            },
        )

    labels = np.asarray(test["score"], dtype=np.float64)
    if settings.include_feature_cosine:
        probe = MLPRewardModel.from_pretrained_backbone(settings.backbone, **shared)  # pooled features, shared cache
        encoded = encode_dataset_features(probe, test, probe.get_processor(), store=store)
        scores = [
            FeatureCosineReward.score_features(
                row["video__reference_features"][None],
                row["video__frame_features"][None],
                row["video__frame_mask"][None],
            ).item()
            for row in encoded
        ]
        predictions["feature_cosine"] = np.asarray(scores)
        results["models"]["feature_cosine"] = {
            "test": reward_regression_metrics(
                scores,
                labels,
                groups=_meta(test, "source_id"),
                perturbations=_meta(test, "perturbation"),
                motions=_meta(test, "motion"),
            )
        }
    results["predictions"] = {k: v.tolist() for k, v in predictions.items()}
    results["labels"] = labels.tolist()
    results["perturbations"] = _meta(test, "perturbation")
    write_comparison_report(results, output_dir)
    return results


_DISPLAY = {"icreward": "ICReward", "mlp": "MLP baseline", "feature_cosine": "Feature cosine (zero-shot)"}


def write_comparison_report(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``report.json``, ``report.md`` and the plots; returns the markdown path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    (output_dir / "report.json").write_text(json.dumps(results, indent=2, default=float))
    models = results["models"]

    # Figure 2 analogue: validation MSE over training, and test MSE.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, res in models.items():
        hist = [h for h in res.get("validation_history", []) if "eval_mse" in h]
        if hist:
            axes[0].plot(
                [h["epoch"] for h in hist], [h["eval_mse"] for h in hist], marker="o", label=_DISPLAY.get(name, name)
            )
    axes[0].set(xlabel="epoch", ylabel="validation MSE", title="Validation MSE during training")
    axes[0].legend()
    names = list(models)
    axes[1].bar(
        [_DISPLAY.get(n, n) for n in names],
        [models[n]["test"]["mse"] for n in names],
        color=["C0", "C1", "C2"][: len(names)],
    )
    axes[1].set(ylabel="test MSE (held-out sources)", title="Test MSE")
    axes[1].tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(output_dir / "mse.png", dpi=120)
    plt.close(fig)

    # Predicted vs true.
    preds = results.get("predictions", {})
    if preds:
        fig, axes = plt.subplots(1, len(preds), figsize=(4 * len(preds), 3.8), squeeze=False)
        for ax, (name, values) in zip(axes[0], preds.items()):
            ax.scatter(results["labels"], values, s=10, alpha=0.6)
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set(
                xlabel="true score", ylabel="predicted", title=_DISPLAY.get(name, name), xlim=(0, 1.02), ylim=(0, 1.02)
            )
        fig.tight_layout()
        fig.savefig(output_dir / "scatter.png", dpi=120)
        plt.close(fig)

    # Per-perturbation pairwise accuracy.
    kinds = sorted({k.split("/", 1)[1] for res in models.values() for k in res["test"] if k.startswith("accuracy/")})
    if kinds:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(kinds)), 4))
        width = 0.8 / len(models)
        for i, (name, res) in enumerate(models.items()):
            ax.bar(
                np.arange(len(kinds)) + i * width,
                [res["test"].get(f"accuracy/{k}", np.nan) for k in kinds],
                width,
                label=_DISPLAY.get(name, name),
            )
        ax.set_xticks(np.arange(len(kinds)) + width * (len(models) - 1) / 2, kinds, rotation=30, ha="right")
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set(ylabel="pairwise accuracy", ylim=(0, 1), title="Pairwise accuracy by perturbation of the worse video")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(output_dir / "per_perturbation_accuracy.png", dpi=120)
        plt.close(fig)

    columns = [
        "mse",
        "mae",
        "spearman",
        "kendall",
        "pairwise_accuracy",
        "pairwise_accuracy_with_ties",
        "accuracy/motion_decoupled",
    ]
    lines = [
        "# Reward model comparison",
        "",
        f"Dataset sizes: {results.get('dataset')}. Test = held-out source images.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, res in models.items():
        cells = [f"{res['test'][c]:.4f}" if c in res["test"] else "-" for c in columns]
        lines.append(f"| {_DISPLAY.get(name, name)} | " + " | ".join(cells) + " |")
    if kinds:
        lines += ["", "Pairwise accuracy by perturbation type (of the lower-scored video):", ""]
        lines.append("| model | " + " | ".join(kinds) + " |")
        lines.append("|---|" + "---|" * len(kinds))
        for name, res in models.items():
            cells = [f"{res['test'][f'accuracy/{k}']:.3f}" if f"accuracy/{k}" in res["test"] else "-" for k in kinds]
            lines.append(f"| {_DISPLAY.get(name, name)} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: `mse.png` (Figure 2 analogue), `scatter.png`, `per_perturbation_accuracy.png`.", ""]
    for name, res in models.items():
        if "train_seconds" in res:
            lines.append(
                f"- {_DISPLAY.get(name, name)}: trained in {res['train_seconds']:.1f} s, {res['trainable_parameters']} trainable parameters; saved to `{name}/`."
            )
    path = output_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
