"""Plots: every item drawn (or the cap stated), no duplicated final step in the DPO curves."""

import torch

from icreward.evaluation.best_of_n import CandidateGroup, run_best_of_n


def test_plots_show_every_image_by_default(tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(1)
    groups = [
        CandidateGroup(
            f"image_{i:02d}",
            torch.randint(0, 255, (3, 8, 8), generator=gen, dtype=torch.uint8),
            [torch.randint(0, 255, (2, 3, 8, 8), generator=gen, dtype=torch.uint8) for _ in range(2)],
            labels=[float(i % 2), float((i + 1) % 2)],
        )
        for i in range(13)
    ]
    report = run_best_of_n(groups, {"random": "random", "oracle": "oracle"}, progress=False)
    report.settings["metric_notes"] = {"oracle_label": "synthetic labels"}
    paths = {p.name: p for p in report.plot(tmp_path)}
    assert set(paths) == {"per_sample_oracle_label.png", "summary.png"}
    wide = Image.open(paths["per_sample_oracle_label.png"]).size[0]
    narrow = Image.open(report.plot(tmp_path / "first12", max_samples=12)[0]).size[0]
    assert wide > narrow  # 13 images drawn by default, 12 when asked


def test_dpo_curves_do_not_duplicate_the_last_step(tmp_path):
    from types import SimpleNamespace

    from icreward.trainers.video_dpo_trainer import PreferenceCurveCallback

    callback = PreferenceCurveCallback(tmp_path)
    args = SimpleNamespace(output_dir=str(tmp_path))
    for step, logs in [
        (1, {"rewards/accuracies": 1.0, "num_pairs": 2}),
        (2, {"rewards/accuracies": 0.5, "num_pairs": 2}),
        (2, {"rewards/accuracies": 0.0, "num_pairs": 1}),  # the final log of train() at the same step
        (2, {"eval_rewards/accuracies": 0.5, "eval_num_pairs": 4}),
        (2, {"eval_rewards/accuracies": 0.75, "eval_num_pairs": 4}),  # evaluate() again after training
    ]:
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_log(args, state, None, logs=logs)
    assert [(p["step"], p["num_pairs"]) for p in callback.train] == [(1, 2), (2, 3)]
    assert abs(callback.train[-1]["accuracy"] - 1 / 3) < 1e-12
    running = PreferenceCurveCallback._running(callback.train)
    assert [round(p["running_win_rate"], 6) for p in running] == [1.0, 0.6]  # 3 wins of 5 pairs
    assert [p["accuracy"] for p in callback.eval] == [0.75]
    assert (tmp_path / "running_win_rate.png").is_file()
