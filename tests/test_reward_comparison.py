"""Leave-one-photograph-out cross-validation of the reward-model comparison."""

import json

import numpy as np
import pytest

from icreward.data.stress_suite import build_stress_suite
from icreward.evaluation.reward_comparison import ComparisonSettings, cross_validate_reward_models

PHOTOS = ["chelsea", "coffee", "rocket"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return build_stress_suite(
        tmp_path_factory.mktemp("cv") / "suite",
        sources=PHOTOS,
        perturbations=["blur_noise", "color_drift"],
        severities=(0.5, 1.0),
        consistent_per_source=2,
        image_size=32,
        num_frames=3,
        fps=3.0,
    )


def _settings():
    return ComparisonSettings(
        image_size=32, num_frames=3, num_train_epochs=1, batch_size=4, head_hidden_size=16, eval_every_epochs=1
    )


@pytest.fixture(scope="module")
def cv(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv_out")
    return out, cross_validate_reward_models(suite, out, _settings())


def test_every_photograph_is_tested_once_and_never_trained_on_in_its_fold(cv):
    out, results = cv
    folds = results["folds"]
    assert [f["test_group"] for f in folds] == PHOTOS
    for k, fold in enumerate(folds):
        assert fold["validation_group"] == PHOTOS[(k + 1) % 3]
        assert fold["train_groups"] == [p for p in PHOTOS if p not in (fold["test_group"], fold["validation_group"])]
        fold_report = json.loads((out / f"fold-{fold['test_group']}" / "report.json").read_text())
        assert fold_report["dataset"] == {"train": 6, "validation": 6, "test": 6}
        assert set(fold["test"]) == {"icreward", "mlp", "feature_cosine"}
        assert fold["test"]["icreward"] == fold_report["models"]["icreward"]["test"]


def test_summary_matches_an_independent_computation_over_the_fold_reports(cv):
    out, results = cv
    per_fold = [json.loads((out / f"fold-{p}" / "report.json").read_text())["models"] for p in PHOTOS]
    summary = results["summary"]
    assert summary["num_folds"] == 3
    for model in ("icreward", "mlp", "feature_cosine"):
        values = np.array([m[model]["test"]["pairwise_accuracy"] for m in per_fold])
        cell = summary["models"][model]["pairwise_accuracy"]
        assert cell["mean"] == pytest.approx(values.mean())
        assert cell["std"] == pytest.approx(values.std(ddof=1))
    diffs = np.array([m["icreward"]["test"]["mse"] - m["mlp"]["test"]["mse"] for m in per_fold])
    paired = summary["paired"]["mlp"]["mse"]
    assert paired["mean_difference"] == pytest.approx(diffs.mean())
    assert paired["standard_error"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert paired["icreward_better_folds"] == int((diffs < 0).sum())
    report = (out / "cv_report.md").read_text()
    for text in ("leave-one-group-out", "Paired over folds", "| coffee | rocket |", "Feature cosine"):
        assert text in report
    assert json.loads((out / "cv_report.json").read_text())["summary"] == json.loads(json.dumps(summary))


def test_bad_grouping_raises_a_clear_error(suite, tmp_path):
    with pytest.raises(ValueError, match="'no_such_column' column"):
        cross_validate_reward_models(suite, tmp_path, _settings(), group_column="no_such_column")
    two = {name: split.filter(lambda r: r["photo"] != "rocket") for name, split in suite.items()}
    with pytest.raises(ValueError, match="at least 3 groups"):
        cross_validate_reward_models(two, tmp_path, _settings())
