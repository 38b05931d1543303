"""The ICReward paper's DPO curves (Figs. 5 and 6) written during training by :class:`PreferenceCurveCallback`."""

from __future__ import annotations

import json
import logging
import os

from transformers import TrainerCallback

__all__ = ["PreferenceCurveCallback"]

logger = logging.getLogger(__name__)


class PreferenceCurveCallback(TrainerCallback):
    """Write the ICReward paper's DPO curves during training: JSON and PNG (matplotlib, Agg backend).

    - ``preference_accuracy.png`` (Fig. 5): evaluation preference accuracy (``eval_rewards/accuracies``, the
      fraction of held-out pairs whose winner the policy prefers) and the training accuracy over steps.
    - ``running_win_rate.png`` (Fig. 6): running average of preference wins, i.e. the mean of all per-pair win
      indicators seen so far, for the training logs and for the evaluations.
    - ``preference_curves.json``: the series behind both plots.

    Args:
        output_dir: where to write; defaults to the trainer's ``output_dir``.
    """

    def __init__(self, output_dir: str | os.PathLike | None = None):
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.train: list[dict[str, float]] = []
        self.eval: list[dict[str, float]] = []

    @staticmethod
    def _running(points: list[dict[str, float]]) -> list[dict[str, float]]:
        total, count, out = 0.0, 0, []
        for p in points:
            total += p["accuracy"] * p["num_pairs"]
            count += p["num_pairs"]
            out.append({"step": p["step"], "running_win_rate": total / max(count, 1)})
        return out

    @staticmethod
    def _add_train(series: list[dict[str, float]], point: dict[str, float]) -> None:
        """A second train log at the same step (the final log of ``train()``) holds other pairs of that step: merge
        it into one point, pair-weighted, instead of drawing a duplicated step."""
        if series and series[-1]["step"] == point["step"]:
            last = series[-1]
            count = last["num_pairs"] + point["num_pairs"]
            accuracy = (last["accuracy"] * last["num_pairs"] + point["accuracy"] * point["num_pairs"]) / max(count, 1)
            series[-1] = {**last, "accuracy": accuracy, "num_pairs": count}
        else:
            series.append(point)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "rewards/accuracies" in logs:
            self._add_train(
                self.train,
                {
                    "step": state.global_step,
                    "accuracy": logs["rewards/accuracies"],
                    "num_pairs": logs.get("num_pairs", 1),
                },
            )
        if "eval_rewards/accuracies" in logs:
            if self.eval and self.eval[-1]["step"] == state.global_step:
                self.eval.pop()  # the same held-out pairs evaluated again at this step: keep the latest, once
            self.eval.append(
                {
                    "step": state.global_step,
                    "accuracy": logs["eval_rewards/accuracies"],
                    "margin": logs.get("eval_rewards/margins", float("nan")),
                    "num_pairs": logs.get("eval_num_pairs", 1),
                }
            )
        if state.is_world_process_zero and ("rewards/accuracies" in logs or "eval_rewards/accuracies" in logs):
            self.write(self.output_dir or args.output_dir)

    def write(self, output_dir: str) -> None:
        os.makedirs(output_dir, exist_ok=True)
        data = {
            "train": self.train,
            "eval": self.eval,
            "train_running_win_rate": self._running(self.train),
            "eval_running_win_rate": self._running(self.eval),
        }
        with open(os.path.join(output_dir, "preference_curves.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        try:
            import matplotlib
        except ImportError:  # the curves are in the JSON; the PNGs need the `plots` extra
            logger.warning('preference curves: matplotlib is not installed, no PNGs (pip install "icreward[plots]")')
            return
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, series in (("eval (held-out pairs)", self.eval), ("train", self.train)):
            if series:
                ax.plot([p["step"] for p in series], [p["accuracy"] for p in series], marker="o", ms=3, label=name)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="preference accuracy", ylim=(0, 1), title="Preference accuracy over steps")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "preference_accuracy.png"), dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, series in (("eval", data["eval_running_win_rate"]), ("train", data["train_running_win_rate"])):
            if series:
                ax.plot([p["step"] for p in series], [p["running_win_rate"] for p in series], label=name)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="running win rate", ylim=(0, 1), title="Running average of preference wins")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "running_win_rate.png"), dpi=120)
        plt.close(fig)
