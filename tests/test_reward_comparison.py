"""Leave-one-photograph-out cross-validation of the reward-model comparison."""

import json

import numpy as np
import pytest

from icreward.data.stress_suite import build_stress_suite
from icreward.evaluation.reward_comparison import (
    ComparisonSettings,
    cross_validate_reward_models,
    cross_validation_markdown,
)

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
    # The markdown the paper pipeline embeds: the same lines under a lower heading.
    embedded = cross_validation_markdown(json.loads((out / "cv_report.json").read_text()), heading="###")
    assert embedded[0].startswith("### Reward model comparison: leave-one-group-out")
    assert "\n".join(embedded[1:]) + "\n" == report.split("\n", 1)[1]


def test_bad_grouping_raises_a_clear_error(suite, tmp_path):
    with pytest.raises(ValueError, match="'no_such_column' column"):
        cross_validate_reward_models(suite, tmp_path, _settings(), group_column="no_such_column")
    two = {name: split.filter(lambda r: r["photo"] != "rocket") for name, split in suite.items()}
    with pytest.raises(ValueError, match="at least 3 groups"):
        cross_validate_reward_models(two, tmp_path, _settings())


def test_untrained_icreward_ranks_exactly_like_the_zero_shot_feature_cosine():
    import torch

    from icreward.models import FeatureCosineReward, ICRewardModel
    from icreward.testing.tiny_backbones import tiny_icreward_config

    torch.manual_seed(0)
    model = ICRewardModel(tiny_icreward_config(head_dropout=0.2)).eval()
    ref = torch.rand(12, 5, 32)
    drift = torch.linspace(0.0, 1.5, 12)[:, None, None, None]  # videos drifting further and further away
    frames = ref[:, None] + drift * torch.rand(12, 4, 5, 32)
    mask = torch.ones(12, 4, dtype=torch.bool)
    scores = model(reference_features=ref, frame_features=frames, frame_mask=mask).scores
    cosine = FeatureCosineReward.score_features(ref.mean(dim=1), frames.mean(dim=2), mask)
    assert torch.equal(torch.argsort(scores), torch.argsort(cosine))
    assert torch.allclose(torch.logit(scores.double()), 8.0 * (cosine.double() - 0.6), atol=1e-4)
    # the learned branch still trains: its output layer gets gradients
    model.train()
    out = model(reference_features=ref, frame_features=frames, frame_mask=mask, labels=torch.rand(12))
    out.loss.backward()
    assert model.head.out[-1].weight.grad.abs().sum() > 0


def test_k_fold_cross_validation_by_clip_group_with_pooled_paired_differences(tmp_path):
    """K folds over clip groups: every group tested exactly once, never trained or validated on in its fold; the
    pooled out-of-fold accuracies and the cluster-robust paired differences match an independent computation."""
    from datasets import Dataset, DatasetDict, Features, Value

    from icreward.evaluation.reward_comparison import _cluster_mean_and_se

    base = build_stress_suite(
        tmp_path / "suite",
        sources=["chelsea", "coffee", "rocket", "astronaut_portrait", "hubble_spiral", "retina_disc"],
        perturbations=["blur_noise"],
        severities=(1.0,),
        consistent_per_source=1,
        image_size=32,
        num_frames=3,
        fps=3.0,
    )
    rows = [r for split in base.values() for r in split.to_list()]
    for r in rows:  # pretend each photograph is a clip group
        r["clip_group"] = "g-" + r["photo"]
    features = Features({**base["train"].features, "clip_group": Value("string")})
    table = Dataset.from_list(rows, features=features)
    data = DatasetDict({"train": table})
    out = tmp_path / "cv"
    results = cross_validate_reward_models(data, out, _settings(), num_folds=3)
    assert results["group_column"] == "clip_group"
    folds = results["folds"]
    groups = sorted({r["clip_group"] for r in rows})
    tested = [g for f in folds for g in f["test_groups"]]
    assert sorted(tested) == groups and len(folds) == 3
    for k, fold in enumerate(folds):
        assert fold["test_group"] == f"k{k}" and len(fold["test_groups"]) == 2
        assert not set(fold["test_groups"]) & set(fold["train_groups"])
        assert not set(fold["validation_groups"]) & set(fold["train_groups"] + fold["test_groups"])
        assert fold["validation_groups"] == folds[(k + 1) % 3]["test_groups"]
    pooled = results["summary"]["pooled"]
    # independent recomputation from the fold reports: one (consistent, blurred) pair per source
    correct = {"icreward": [], "mlp": [], "feature_cosine": []}
    for fold in folds:
        report = json.loads((out / f"fold-{fold['test_group']}" / "report.json").read_text())
        labels = np.asarray(report["labels"])
        good, bad = np.flatnonzero(labels == 1.0), np.flatnonzero(labels < 1.0)
        assert len(good) == len(bad) == 2  # two sources per test fold, in the same (sorted-row) order
        for name in correct:
            p = np.asarray(report["predictions"][name])
            correct[name].extend((p[good] > p[bad]) + 0.5 * (p[good] == p[bad]))
    assert pooled["num_pairs"]["all"] == 6
    for name, values in correct.items():
        assert pooled["accuracy"][name]["all"] == pytest.approx(np.mean(values))
    diff = np.asarray(correct["icreward"]) - np.asarray(correct["mlp"])
    assert pooled["paired"]["mlp"]["all"]["mean_difference"] == pytest.approx(diff.mean())
    # one pair per cluster: the cluster-robust SE reduces to the ordinary standard error of the mean
    assert pooled["paired"]["mlp"]["all"]["standard_error"] == pytest.approx(diff.std(ddof=1) / np.sqrt(6))
    report = (out / "cv_report.md").read_text()
    assert "k-fold cross-validation over groups" in report and "Pooled out-of-fold predictions" in report
    # clusters with several pairs: the ratio estimator, checked on a hand example
    cell = _cluster_mean_and_se(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 2]))
    assert cell["mean_difference"] == pytest.approx(0.75)
    residuals = np.array([1.0 - 2 * 0.75, 1 - 0.75, 1 - 0.75])
    assert cell["standard_error"] == pytest.approx(np.sqrt(1.5 * np.sum(residuals**2)) / 4)
