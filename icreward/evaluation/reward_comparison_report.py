"""Reports of :mod:`icreward.evaluation.reward_comparison`: ``report.md`` / ``report.json`` and the plots of one
comparison, ``cv_report.md`` / ``cv_report.json`` of a cross-validation. Every name here is also importable from
:mod:`icreward.evaluation.reward_comparison`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CV_METRICS", "cross_validation_markdown", "write_comparison_report", "write_cross_validation_report"]

_DISPLAY = {"icreward": "ICReward", "mlp": "MLP baseline", "feature_cosine": "Feature cosine (zero-shot)"}

#: Metrics summarised over folds (per-perturbation accuracies are added when present).
CV_METRICS = ("mse", "spearman", "pairwise_accuracy", "accuracy/motion_decoupled")

#: The columns of ``report.md``'s main table.
_REPORT_COLUMNS = [
    "mse",
    "mae",
    "spearman",
    "kendall",
    "pairwise_accuracy",
    "pairwise_accuracy_with_ties",
    "accuracy/motion_decoupled",
]


def write_comparison_report(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``report.json``, ``report.md`` and the plots; returns the markdown path."""
    from ..extras import require

    require("matplotlib", "plots", "The comparison report's plots").use("Agg")

    output_dir = Path(output_dir)
    (output_dir / "report.json").write_text(json.dumps(results, indent=2, default=float))
    models = results["models"]
    _plot_mse(models, output_dir)
    _plot_scatter(results, output_dir)
    kinds = _perturbation_kinds(models)
    if kinds:
        _plot_accuracy_by_perturbation(models, kinds, output_dir)
    path = output_dir / "report.md"
    path.write_text("\n".join(_comparison_markdown(results, kinds)) + "\n")
    return path


def _plot_mse(models: dict[str, Any], output_dir: Path) -> None:
    """Figure 2 analogue: validation MSE over training, and test MSE (``mse.png``)."""
    import matplotlib.pyplot as plt

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


def _plot_scatter(results: dict[str, Any], output_dir: Path) -> None:
    """Predicted vs true score of every model (``scatter.png``), when the results carry predictions."""
    import matplotlib.pyplot as plt

    preds = results.get("predictions", {})
    if not preds:
        return
    fig, axes = plt.subplots(1, len(preds), figsize=(4 * len(preds), 3.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], preds.items()):
        ax.scatter(results["labels"], values, s=10, alpha=0.6)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlabel="true score", ylabel="predicted", title=_DISPLAY.get(name, name), xlim=(0, 1.02), ylim=(0, 1.02))
    fig.tight_layout()
    fig.savefig(output_dir / "scatter.png", dpi=120)
    plt.close(fig)


def _perturbation_kinds(models: dict[str, Any]) -> list[str]:
    """The perturbation kinds with a pairwise accuracy, sorted, ``motion_decoupled`` last.

    ``motion_decoupled`` is a subset of pairs of any perturbation (the more consistent video moves more), not a
    perturbation: it is drawn apart, after a divider."""
    kinds = sorted({k.split("/", 1)[1] for res in models.values() for k in res["test"] if k.startswith("accuracy/")})
    decoupled = "motion_decoupled" in kinds
    return [k for k in kinds if k != "motion_decoupled"] + (["motion_decoupled"] if decoupled else [])


def _plot_accuracy_by_perturbation(models: dict[str, Any], kinds: list[str], output_dir: Path) -> None:
    """Pairwise accuracy per perturbation kind (``per_perturbation_accuracy.png``)."""
    import matplotlib.pyplot as plt

    decoupled = "motion_decoupled" in kinds
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(kinds)), 4.4), layout="constrained")
    width = 0.8 / len(models)
    positions = np.arange(len(kinds)) + (0.6 * (np.arange(len(kinds)) == len(kinds) - 1) if decoupled else 0)
    for i, (name, res) in enumerate(models.items()):
        ax.bar(
            positions + i * width,
            [res["test"].get(f"accuracy/{k}", np.nan) for k in kinds],
            width,
            label=_DISPLAY.get(name, name),
        )
    labels = [k if k != "motion_decoupled" else "motion-decoupled pairs\n(all perturbations)" for k in kinds]
    ax.set_xticks(positions + width * (len(models) - 1) / 2, labels, rotation=30, ha="right")
    if decoupled and len(kinds) > 1:
        ax.axvline(positions[-1] - 0.5, color="grey", lw=0.8)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set(
        xlabel="perturbation of the less consistent video",
        ylabel="pairwise accuracy",
        ylim=(0, 1),
        title="Pairwise accuracy by perturbation (dotted: chance)",
    )
    fig.legend(fontsize=8, loc="outside upper center", ncols=len(models), frameon=False)  # off the bars
    fig.savefig(output_dir / "per_perturbation_accuracy.png", dpi=120)
    plt.close(fig)


def _comparison_markdown(results: dict[str, Any], kinds: list[str]) -> list[str]:
    """The lines of ``report.md``."""
    models = results["models"]
    columns = _REPORT_COLUMNS
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
    return lines


# --------------------------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------------------------


def write_cross_validation_report(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``cv_report.json`` and ``cv_report.md`` (mean +- std over folds, paired differences, per-fold table)."""
    output_dir = Path(output_dir)
    (output_dir / "cv_report.json").write_text(json.dumps(results, indent=2, default=float))
    path = output_dir / "cv_report.md"
    path.write_text("\n".join(cross_validation_markdown(results)) + "\n")
    return path


def cross_validation_markdown(results: dict[str, Any], heading: str = "#") -> list[str]:
    """The lines of ``cv_report.md`` for :func:`cross_validate_reward_models`'s results (title at ``heading``)."""
    summary, folds = results["summary"], results["folds"]
    models = list(summary["models"])
    k_fold = any(len(f.get("test_groups", [f["test_group"]])) > 1 for f in folds)
    lines = _cv_means(results, models, heading, k_fold)
    lines += _cv_paired_over_folds(summary)
    lines += _cv_accuracy_by_kind(summary, models)
    lines += _cv_pooled(summary.get("pooled"), results["group_column"])
    lines += _cv_per_fold(folds, models, k_fold)
    return lines


def _cv_means(results: dict[str, Any], models: list[str], heading: str, k_fold: bool) -> list[str]:
    """Title, scheme and the mean +- std over folds of every model."""
    summary = results["summary"]
    scheme = "k-fold cross-validation over groups" if k_fold else "leave-one-group-out cross-validation"
    what = "one fold of groups" if k_fold else "one group"
    lines = [
        f"{heading} Reward model comparison: {scheme}",
        "",
        f"{summary['num_folds']} folds over the `{results['group_column']}` column: each fold tests on {what}, "
        "validates on the next and trains on the rest. Mean +- standard deviation over folds.",
        "",
        "| model | " + " | ".join(CV_METRICS) + " |",
        "|---|" + "---|" * len(CV_METRICS),
    ]
    for name in models:
        cells = []
        for metric in CV_METRICS:
            cell = summary["models"][name].get(metric)
            cells.append(f"{cell['mean']:.4f} +- {cell['std']:.4f}" if cell else "-")
        lines.append(f"| {_DISPLAY.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def _cv_paired_over_folds(summary: dict[str, Any]) -> list[str]:
    """ICReward minus each other model, paired over folds."""
    if not summary["paired"]:
        return []
    lines = [
        "",
        "Paired over folds, ICReward minus the other model (mean +- standard error; folds where ICReward is better):",
        "",
        "| versus | pairwise accuracy | motion-decoupled accuracy | MSE |",
        "|---|---|---|---|",
    ]
    for other, diffs in summary["paired"].items():
        cells = []
        for metric in ("pairwise_accuracy", "accuracy/motion_decoupled", "mse"):
            d = diffs.get(metric)
            cells.append(
                f"{d['mean_difference']:+.4f} +- {d['standard_error']:.4f} ({d['icreward_better_folds']}/{d['num_folds']})"
                if d
                else "-"
            )
        lines.append(f"| {_DISPLAY.get(other, other)} | " + " | ".join(cells) + " |")
    return lines


def _cv_accuracy_by_kind(summary: dict[str, Any], models: list[str]) -> list[str]:
    """Mean pairwise accuracy over folds per perturbation kind of the lower-scored video."""
    kinds = sorted(
        {m.split("/", 1)[1] for res in summary["models"].values() for m in res if m.startswith("accuracy/")}
    )
    if not kinds:
        return []
    lines = ["", "Pairwise accuracy by perturbation type of the lower-scored video (mean over folds):", ""]
    lines += ["| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name in models:
        res = summary["models"][name]
        cells = [f"{res[f'accuracy/{k}']['mean']:.3f}" if f"accuracy/{k}" in res else "-" for k in kinds]
        lines.append(f"| {_DISPLAY.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def _cv_pooled(pooled: dict[str, Any] | None, group_column: str) -> list[str]:
    """Pairwise accuracies of the pooled out-of-fold predictions, with cluster-robust paired differences."""
    if not (pooled and pooled["accuracy"]):
        return []
    subsets = list(pooled["num_pairs"])
    lines = [
        "",
        f"Pooled out-of-fold predictions ({pooled['num_groups']} held-out groups): pairwise accuracy overall, on "
        "motion-decoupled pairs (the better video moves more) and by perturbation kind of the lower-scored video.",
        "",
        "| model | " + " | ".join(subsets) + " |",
        "|---|" + "---|" * len(subsets),
        "| pairs | " + " | ".join(str(pooled["num_pairs"][k]) for k in subsets) + " |",
    ]
    for name, accs in pooled["accuracy"].items():
        cells = [f"{accs[k]:.3f}" if accs.get(k) is not None else "-" for k in subsets]
        lines.append(f"| {_DISPLAY.get(name, name)} | " + " | ".join(cells) + " |")
    for other, diffs in pooled["paired"].items():
        cells = [
            f"{d['mean_difference']:+.3f} +- {d['standard_error']:.3f}" if (d := diffs.get(k)) else "-"
            for k in subsets
        ]
        lines.append(f"| ICReward - {_DISPLAY.get(other, other)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Differences are paired (same pairs, same folds); +- is the standard error, cluster-robust over the "
        f"held-out `{group_column}` groups.",
    ]
    return lines


def _cv_per_fold(folds: list[dict[str, Any]], models: list[str], k_fold: bool) -> list[str]:
    """One row per fold (pairwise accuracy / motion-decoupled accuracy of every model)."""
    lines = ["", "Per fold (test group: pairwise accuracy / motion-decoupled accuracy):", ""]
    lines += ["| test group | validation group | " + " | ".join(_DISPLAY.get(m, m) for m in models) + " |"]
    lines += ["|---|---|" + "---|" * len(models)]
    for fold in folds:
        cells = [
            f"{fold['test'][m].get('pairwise_accuracy', float('nan')):.3f} / "
            f"{fold['test'][m].get('accuracy/motion_decoupled', float('nan')):.3f}"
            for m in models
        ]
        lines.append(f"| {fold['test_group']} | {fold['validation_group']} | " + " | ".join(cells) + " |")
    lines += ["", "Each fold's full report (plots, saved models) is in `fold-<test group>/`.", ""]
    if k_fold:
        lines += [
            "Test groups per fold: "
            + "; ".join(f"{f['test_group']}: {', '.join(map(str, f['test_groups']))}" for f in folds),
            "",
        ]
    return lines
