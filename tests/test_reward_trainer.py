"""RewardModelTrainer: parameters change, losses match independent computations, resume, cached features, metrics."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModel, TrainerCallback

from icreward import ICRewardModel, MLPRewardModel, RewardModelConfig, RewardModelTrainer
from icreward.metrics.reward_metrics import pairwise_accuracy, reward_regression_metrics
from icreward.testing import tiny_icreward_config, tiny_mlp_reward_config
from icreward.video import write_video


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Pointwise rows on disk: 3 sources x 4 videos whose consistency falls with the amount of noise mixed in."""
    root = tmp_path_factory.mktemp("reward_data")
    g = torch.Generator().manual_seed(0)
    rows = []
    for src in range(3):
        ref = torch.rand(3, 32, 32, generator=g)
        ref_path = root / f"ref{src}.png"
        Image.fromarray((ref * 255).byte().permute(1, 2, 0).numpy()).save(ref_path)
        for k in range(4):
            severity = k / 3
            frames = ref[None].repeat(3, 1, 1, 1) * (1 - severity) + severity * torch.rand(3, 3, 32, 32, generator=g)
            path = write_video(root / f"v{src}_{k}", frames)  # PNG frame folder: lossless, fast
            rows.append(
                {
                    "reference": str(ref_path),
                    "video": str(path),
                    "score": 1.0 - 0.8 * severity,
                    "source_id": f"s{src}",
                    "perturbation": "none" if k == 0 else "noise",
                    "motion": float(3 - k),
                }
            )
    return Dataset.from_list(rows)


def _pairs(dataset):
    rows = []
    for src in sorted(set(dataset["source_id"])):
        group = [r for r in dataset if r["source_id"] == src]
        for a, b in ((0, 1), (0, 3), (1, 2)):
            rows.append(
                {
                    "reference": group[a]["reference"],
                    "chosen": group[a]["video"],
                    "rejected": group[b]["video"],
                    "is_tie": False,
                }
            )
        rows.append(
            {
                "reference": group[0]["reference"],
                "chosen": group[0]["video"],
                "rejected": group[0]["video"],
                "is_tie": True,
            }
        )
    return Dataset.from_list(rows)


def _args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    defaults.update(kwargs)
    return RewardModelConfig(**defaults)


def _model(kind, **kwargs):
    torch.manual_seed(0)
    if kind == "icreward":
        return ICRewardModel(tiny_icreward_config(num_frames=3, **kwargs))
    return MLPRewardModel(tiny_mlp_reward_config(num_frames=3, **kwargs))


@pytest.mark.parametrize("kind", ["icreward", "mlp"])
@pytest.mark.parametrize("loss_type", ["mse", "bt_ties"])
def test_every_trainable_parameter_changes(tmp_path, tiny_data, kind, loss_type):
    model = _model(kind)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and not any(n.startswith("backbone.") for n in before)  # frozen backbone by default
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    data = tiny_data if loss_type == "mse" else _pairs(tiny_data)
    trainer = RewardModelTrainer(model=model, args=_args(tmp_path, loss_type=loss_type), train_dataset=data)
    trainer.train()
    # Bradley-Terry only sees reward differences, so the bias of the final logit gets exactly zero gradient.
    shift_invariant = {"head.out.4.bias", "head.skip.bias"} if loss_type != "mse" and kind == "icreward" else set()
    for name, param in model.named_parameters():
        if name in shift_invariant:
            assert torch.equal(param, before[name])
        elif name in before:
            assert not torch.equal(param, before[name]), f"{name} did not change"
        else:
            assert torch.equal(param, frozen[name]), f"frozen {name} changed"


def test_trainable_backbone_with_separate_learning_rate(tmp_path, tiny_data):
    model = _model("icreward", freeze_backbone=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = RewardModelTrainer(
        model=model, args=_args(tmp_path, backbone_learning_rate=1e-4, num_train_epochs=1), train_dataset=tiny_data
    )
    assert not trainer.uses_cached_features
    trainer.train()
    lrs = {round(g["initial_lr"], 8) for g in trainer.optimizer.param_groups}
    assert lrs == {1e-2, 1e-4}
    for name, param in model.named_parameters():
        if "post_layernorm" in name:  # CLIP applies it to the pooled output only; ICReward attends to the tokens
            continue
        assert not torch.equal(param, before[name]), f"{name} did not change"


def test_mse_loss_matches_independent_computation(tmp_path, tiny_data):
    model = _model("icreward").eval()
    trainer = RewardModelTrainer(model=model, args=_args(tmp_path), train_dataset=tiny_data)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        inputs = model.get_processor()(videos=tiny_data["video"][:4], reference_images=tiny_data["reference"][:4])
        scores = model(**inputs).scores
    labels = torch.tensor(tiny_data["score"][:4])
    expected = sum((s - y) ** 2 for s, y in zip(scores.tolist(), labels.tolist())) / 4
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


@pytest.mark.parametrize("loss_type", ["bt", "bt_ties"])
def test_pairwise_losses_match_independent_computation(tmp_path, tiny_data, loss_type):
    model = _model("mlp").eval()
    pairs = _pairs(tiny_data)
    trainer = RewardModelTrainer(
        model=model, args=_args(tmp_path, loss_type=loss_type, tie_k=3.0), train_dataset=pairs
    )
    rows = [trainer.train_dataset[i] for i in (0, 1, len(pairs) - 1)]  # two ordinary pairs and one tie
    batch = trainer.data_collator(rows)
    loss = trainer.compute_loss(model, batch).item()
    proc = model.get_processor()
    with torch.no_grad():
        rc = model(
            **proc(
                videos=[pairs[i]["chosen"] for i in (0, 1, len(pairs) - 1)],
                reference_images=[pairs[i]["reference"] for i in (0, 1, len(pairs) - 1)],
            )
        ).logits
        rr = model(
            **proc(
                videos=[pairs[i]["rejected"] for i in (0, 1, len(pairs) - 1)],
                reference_images=[pairs[i]["reference"] for i in (0, 1, len(pairs) - 1)],
            )
        ).logits

    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    k = 3.0
    losses = []
    for c, r, tie in zip(rc.tolist(), rr.tolist(), [False, False, True]):
        if loss_type == "bt":
            losses.append(-log_sigmoid(c - r))
        elif tie:
            losses.append(-log_sigmoid(c - r - math.log(k)) - log_sigmoid(r - c - math.log(k)) - math.log(k * k - 1))
        else:
            losses.append(-log_sigmoid(c - r - math.log(k)))
    assert math.isclose(loss, sum(losses) / 3, rel_tol=1e-5)


def test_activation_checkpointing_argument_checkpoints_backbone_and_head(tmp_path, tiny_data):
    model = _model("icreward", freeze_backbone=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = _args(tmp_path, activation_checkpointing=True, num_train_epochs=1)
    trainer = RewardModelTrainer(model=model, args=args, train_dataset=tiny_data)
    assert model.is_activation_checkpointing and model.backbone.model.is_activation_checkpointing
    trainer.train()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "encoder.layers" in n)


def test_cached_features_train_to_the_same_weights_as_pixels(tmp_path, tiny_data):
    results = []
    for cached in (True, False):
        model = _model("icreward", head_dropout=0.0)
        trainer = RewardModelTrainer(
            model=model, args=_args(tmp_path / str(cached), precompute_features=cached), train_dataset=tiny_data
        )
        assert trainer.uses_cached_features is cached
        trainer.train()
        results.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, tiny_data):
    common = dict(num_train_epochs=3, per_device_train_batch_size=4, save_strategy="steps", save_steps=3)
    full = _model("icreward")
    RewardModelTrainer(model=full, args=_args(tmp_path / "full", **common), train_dataset=tiny_data).train()

    class StopAfterStep3(TrainerCallback):  # a crash right after the step-3 checkpoint, same schedule as the full run
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_save, control.should_training_stop = True, True

    first = _model("icreward")
    interrupted = RewardModelTrainer(
        model=first, args=_args(tmp_path / "resumed", **common), train_dataset=tiny_data, callbacks=[StopAfterStep3()]
    )
    interrupted.train()
    checkpoint = tmp_path / "resumed" / "out" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "optimizer.pt").exists()

    resumed_model = _model("icreward")
    resumed = RewardModelTrainer(
        model=resumed_model, args=_args(tmp_path / "resumed", **common), train_dataset=tiny_data
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, a), (_, b) in zip(full.named_parameters(), resumed_model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs after resume")


def test_evaluation_reports_documented_metrics_and_trained_model_reloads(tmp_path, tiny_data):
    model = _model("icreward")
    trainer = RewardModelTrainer(
        model=model, args=_args(tmp_path, num_train_epochs=4), train_dataset=tiny_data, eval_dataset=tiny_data
    )
    trainer.train()
    metrics = trainer.evaluate()
    for key in (
        "eval_mse",
        "eval_mae",
        "eval_spearman",
        "eval_kendall",
        "eval_pairwise_accuracy",
        "eval_pairwise_accuracy_with_ties",
        "eval_accuracy/noise",
        "eval_accuracy/motion_decoupled",
    ):
        assert key in metrics, key
    scores = trainer.predict_scores(tiny_data)
    expected = reward_regression_metrics(scores, tiny_data["score"], groups=tiny_data["source_id"])
    assert math.isclose(metrics["eval_mse"], expected["mse"], rel_tol=1e-5)
    assert math.isclose(metrics["eval_pairwise_accuracy"], expected["pairwise_accuracy"], rel_tol=1e-9)

    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModel.from_pretrained(tmp_path / "saved").eval()
    from icreward import ICRewardProcessor

    processor = ICRewardProcessor.from_pretrained(tmp_path / "saved")
    new = reloaded.score(tiny_data["reference"][:2], tiny_data["video"][:2], processor=processor)
    torch.testing.assert_close(new, torch.tensor(scores[:2], dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_missing_columns_and_empty_data_raise(tmp_path, tiny_data):
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['score'\\]"):
        RewardModelTrainer(model=_model("mlp"), args=_args(tmp_path), train_dataset=tiny_data.remove_columns("score"))
    with pytest.raises(ValueError, match="\\['chosen', 'rejected'\\]"):
        RewardModelTrainer(model=_model("mlp"), args=_args(tmp_path, loss_type="bt"), train_dataset=tiny_data)
    with pytest.raises(ValueError, match="is empty"):
        RewardModelTrainer(model=_model("mlp"), args=_args(tmp_path), train_dataset=tiny_data.select([]))
    with pytest.raises(ValueError, match="loss_type"):
        _args(tmp_path, loss_type="hinge")


def test_pairwise_accuracy_by_hand():
    # group a: labels 1.0 > 0.5 > 0.2, predictions order the first two wrongly; group b: a tie and a correct pair
    preds = [0.4, 0.6, 0.1, 0.7, 0.7, 0.2]
    labels = [1.0, 0.5, 0.2, 0.9, 0.9, 0.1]
    groups = ["a", "a", "a", "b", "b", "b"]
    acc = pairwise_accuracy(preds, labels, groups)
    # non-tied pairs: a: (0,1) wrong, (0,2) right, (1,2) right; b: (3,5) right, (4,5) right -> 4/5
    assert acc["num_pairs"] == 5 and acc["num_tied_pairs"] == 1
    assert math.isclose(acc["accuracy"], 4 / 5)
    # with ties: the tied pair (3,4) is predicted tied too -> 5/6
    assert math.isclose(acc["accuracy_with_ties"], 5 / 6)
    metrics = reward_regression_metrics(
        preds, labels, groups=groups, perturbations=["none", "x", "y", "none", "none", "y"], motions=[0, 1, 0, 0, 0, 0]
    )
    assert math.isclose(metrics["mse"], float(np.mean((np.array(preds) - np.array(labels)) ** 2)))
    assert math.isclose(metrics["accuracy/x"], 0.0)  # (0,1): worse video has 'x', predicted wrongly
    assert math.isclose(metrics["accuracy/y"], 1.0)
    # only pair (1,2) has the better video (1) moving more; predicted right
    assert metrics["num_motion_decoupled_pairs"] == 1 and metrics["accuracy/motion_decoupled"] == 1.0


def test_in_batch_ranking_term_matches_independent_computation(tmp_path, tiny_data):
    model = _model("icreward").eval()
    args = _args(tmp_path, ranking_loss_weight=0.5, ranking_margin=0.05)
    trainer = RewardModelTrainer(model=model, args=args, train_dataset=tiny_data)
    rows = [trainer.train_dataset[i] for i in (0, 1, 2, 4, 5)]  # source s0: three videos, s1: two
    batch = trainer.data_collator(rows)
    assert batch["groups"].tolist() == [0, 0, 0, 1, 1]
    loss = trainer.compute_loss(model, batch).item()
    with torch.no_grad():
        out = model(
            **{k: batch[k] for k in ("frame_features", "reference_features", "frame_mask")}, labels=batch["labels"]
        )
    logits, labels, groups = out.logits.tolist(), batch["labels"].tolist(), batch["groups"].tolist()
    terms = [
        math.log1p(math.exp(-(logits[i] - logits[j])))
        for i in range(5)
        for j in range(5)
        if groups[i] == groups[j] and labels[i] - labels[j] > 0.05
    ]
    assert len(terms) == 4  # s0: 3 ordered pairs, s1: 1
    assert math.isclose(loss, out.loss.item() + 0.5 * sum(terms) / len(terms), rel_tol=1e-5)


def test_interrupted_checkpoint_save_is_never_resumed(tmp_path, tiny_data):
    from icreward.trainers.checkpointing import CHECKPOINT_COMPLETE_NAME

    args = _args(tmp_path, num_train_epochs=2, save_strategy="steps", save_steps=3)
    RewardModelTrainer(model=_model("icreward"), args=args, train_dataset=tiny_data).train()
    out = tmp_path / "out"
    assert (out / "checkpoint-3" / CHECKPOINT_COMPLETE_NAME).exists() and (
        out / "checkpoint-6" / CHECKPOINT_COMPLETE_NAME
    ).exists()
    (out / "checkpoint-6" / CHECKPOINT_COMPLETE_NAME).unlink()  # as if the run died while writing checkpoint-6

    with pytest.raises(ValueError, match="incomplete"):
        RewardModelTrainer(model=_model("icreward"), args=args, train_dataset=tiny_data).train(
            resume_from_checkpoint=str(out / "checkpoint-6")
        )
    resumed = RewardModelTrainer(model=_model("icreward"), args=args, train_dataset=tiny_data)
    resumed.train(resume_from_checkpoint=True)  # picks checkpoint-3, the last complete one, and finishes the run
    assert resumed.state.global_step == 6
    # steps 4-6 really ran again: checkpoint-6 was written anew, this time completely
    assert (out / "checkpoint-6" / CHECKPOINT_COMPLETE_NAME).exists()


def test_feature_cache_encodes_a_repeated_video_once(tiny_data):
    from icreward.trainers.reward_data import encode_dataset_features

    model = _model("icreward")
    data = Dataset.from_list([tiny_data[0], tiny_data[1], tiny_data[0]])
    encoded_videos = []
    encode_pair = model._encode_pair

    def counting(pixel_values, *args):
        encoded_videos.append(pixel_values.shape[0])
        return encode_pair(pixel_values, *args)

    model._encode_pair = counting
    rows = encode_dataset_features(model, data, model.get_processor(), show_progress=False)
    assert sum(encoded_videos) == 2
    for name in ("video__reference_features", "video__frame_features"):
        assert torch.equal(rows[0][name], rows[2][name])
    assert not torch.equal(rows[0]["video__frame_features"], rows[1]["video__frame_features"])


@pytest.mark.parametrize("precompute_features", [True, False])
def test_evaluate_describes_each_dataset_by_its_own_columns_even_when_ids_repeat(
    tmp_path, tiny_data, monkeypatch, precompute_features
):
    """evaluate() keeps no state keyed by id(dataset): a dataset with the id of an earlier one (as when the earlier
    one is freed and its id reused; simulated with a constant id()) is prepared and described by its own columns."""
    import icreward.trainers.reward_model_trainer as module

    monkeypatch.setattr(module, "id", lambda obj: 0, raising=False)
    args = _args(tmp_path, precompute_features=precompute_features)
    trainer = RewardModelTrainer(model=_model("mlp"), args=args, eval_dataset=tiny_data)
    blurred = tiny_data.map(lambda row: {"perturbation": row["perturbation"].replace("noise", "blur")})
    first = trainer.evaluate(tiny_data, metric_key_prefix="test")
    second = trainer.evaluate(blurred, metric_key_prefix="test")
    assert "test_accuracy/noise" in first and "test_accuracy/blur" not in first
    assert "test_accuracy/blur" in second and "test_accuracy/noise" not in second
    assert second["test_mse"] == first["test_mse"]  # the same videos and scores
    assert trainer.evaluate()["eval_accuracy/noise"] == first["test_accuracy/noise"]  # the constructor's eval set
