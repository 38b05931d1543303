import json

import pytest

from icreward.cli.pipeline import main, parse_args
from icreward.data.stress_suite import build_stress_suite
from icreward.evaluation.paper_pipeline import PipelineSettings, run_paper_pipeline

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The quick preset end to end on a three-photograph stress suite (one source per split)."""
    root = tmp_path_factory.mktemp("paper")
    dataset = build_stress_suite(
        root / "suite",
        sources=["chelsea", "coffee", "rocket"],
        perturbations=["blur_noise", "color_drift"],
        severities=(1.0,),
        consistent_per_source=2,
        image_size=32,
        num_frames=4,
        fps=4.0,
    )
    settings = PipelineSettings.quick(
        reward_num_frames=4, reward_batch_size=4, feature_backbone="", policy="tiny-wan2.1", reference_set="photos"
    )
    results = run_paper_pipeline(root / "out", settings, dataset=dataset)
    return root / "out", settings, results


def test_report_has_every_section_and_plot(run):
    out, _, results = run
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in (
        "## What these numbers mean",
        "## Figure 2: reward-model training",
        "## Table 1: best-of-N selection",
        "## Figure 3: per-image CLIPSim of the picks",
        "## DPO: ICReward-vs-MLP pairs",
    ):
        assert heading in report
    # Offline metrics must say they use random weights.
    assert "CLIPSim (random-weight tiny CLIP: plumbing only)" in report
    assert "FVD (random-weight I3D: plumbing only)" in report
    for image in ("reward_models/mse.png", "best_of_n/per_sample_clipsim.png"):
        assert f"]({image})" in report
        assert (out / image).read_bytes()[:8] == PNG
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == results


def test_table1_has_every_method_and_metric(run):
    _, settings, results = run
    bon = results["best_of_n"]
    assert bon["methods"] == ["random", "MLP", "ICReward"]
    assert bon["sample_ids"] == list(settings.sources)
    for method in bon["methods"]:
        row = bon["table1"][method]
        assert 0.0 <= row["clipsim"] <= 1.0 + 1e-6
        assert row["fvd"] >= 0.0
        assert row["motion"] >= 0.0
        picks = bon["selections"][method]
        assert len(picks) == len(settings.sources)
        assert all(0 <= k < settings.num_candidates for k in picks)
        # Table 1 is the mean over images of Figure 3's per-image values.
        assert row["clipsim"] == pytest.approx(sum(bon["per_sample"]["clipsim"][method]) / len(picks))
    assert "feature_cosine" not in bon["table1"]["ICReward"]  # disabled by feature_backbone=""
    assert set(results["reward_models"]["test"]) == {"icreward", "mlp"}


def test_dpo_pairs_are_icreward_vs_mlp_picks_and_dpo_ran(run):
    out, settings, results = run
    bon, pairs = results["best_of_n"], results["dpo_pairs"]
    differing = [i for i, (a, b) in enumerate(zip(bon["selections"]["ICReward"], bon["selections"]["MLP"])) if a != b]
    assert pairs["num_pairs"] == len(differing)
    assert pairs["num_same_pick"] == len(settings.sources) - len(differing)
    rows = [json.loads(line) for line in (out / "dpo" / "pairs.jsonl").read_text().splitlines()]
    assert [r["image_index"] for r in rows] == differing
    for row in rows:
        g = row["image_index"]
        assert row["chosen"].endswith(f"{bon['sample_ids'][g]}/candidate_{bon['selections']['ICReward'][g]}.mp4")
        assert row["rejected"].endswith(f"{bon['sample_ids'][g]}/candidate_{bon['selections']['MLP'][g]}.mp4")
        assert row["split"] == ("eval" if bon["sample_ids"][g] in pairs["held_out_images"] else "train")

    report = (out / "report.md").read_text(encoding="utf-8")
    dpo = results["dpo"]
    if pairs["num_train_pairs"] == 0:  # both rewards agreed on every training image
        assert "DPO was skipped" in report
        pytest.skip("no training pair for this seed")
    assert dpo["steps"] == settings.dpo_max_steps
    assert (out / "dpo" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    assert dpo["lora_weights"] == ["pytorch_lora_weights.safetensors"]
    for name in ("preference_accuracy.png", "running_win_rate.png"):
        assert (out / "dpo" / name).read_bytes()[:8] == PNG
        assert f"](dpo/{name})" in report
    assert "### Figure 5: preference accuracy over steps" in report
    assert "### Figure 6: running average of wins" in report
    assert [p["step"] for p in dpo["curves"]["train"]] == list(range(1, settings.dpo_max_steps + 1))
    if pairs["num_eval_pairs"]:
        assert 0.0 <= dpo["final_eval_preference_accuracy"] <= 1.0
        assert f"{dpo['final_eval_preference_accuracy']:.3f} on" in report
    assert not (out / "dpo" / "_latent_cache").exists()


def test_settings_validation_and_cli_flags():
    with pytest.raises(ValueError, match="at least 2 reference images"):
        PipelineSettings(sources=("coffee",))
    with pytest.raises(ValueError, match="dpo_num_eval_images"):
        PipelineSettings.quick(dpo_num_eval_images=3)
    quick = PipelineSettings.quick(num_candidates=4)
    assert quick.num_candidates == 4 and quick.dpo_max_steps == 4
    assert PipelineSettings().reward_num_train_epochs == 15

    args, settings = parse_args(
        ["--quick", "--sources", "coffee", "rocket", "--include_feature_cosine", "false", "--clip_model", "none"]
    )
    assert args.quick and settings.sources == ("coffee", "rocket")
    assert settings.include_feature_cosine is False and settings.clip_model is None
    assert settings == PipelineSettings.quick(sources=("coffee", "rocket"), include_feature_cosine=False)
    # A flag given explicitly overrides the preset even where its value is the plain default.
    assert parse_args(["--quick", "--num_candidates", "4"])[1] == PipelineSettings.quick(num_candidates=4)
    assert parse_args(["--num_candidates", "3"])[1] == PipelineSettings(num_candidates=3)
    assert parse_args(["--include_feature_cosine", "off", "--i3d_checkpoint", "i3d.pt"])[1] == PipelineSettings(
        include_feature_cosine=False, i3d_checkpoint="i3d.pt"
    )
    assert parse_args([])[0].output_dir == "outputs/paper_pipeline"
    assert parse_args(["--i3d", "i3d.pt"])[1].i3d_checkpoint == "i3d.pt"  # abbreviations work as before
    for f in PipelineSettings.__dataclass_fields__.values():
        assert f.metadata.get("help"), f"{f.name} has no help"
    for bad in (["--num_candidates", "many"], ["--no_such_flag", "1"], ["--include_feature_cosine", "maybe"]):
        with pytest.raises(SystemExit):
            main(bad)


def test_pipeline_help_lists_every_setting(capsys):
    from icreward import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["pipeline", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for name in ("output_dir", "quick", *PipelineSettings.__dataclass_fields__):
        assert f"--{name} " in text or f"--{name}\n" in text, name


# ---------------------------------------------------------------------------------------------------------------------
# The default path: the shipped pretrained policy on real-clip references (best-of-N with an oracle, pairs from
# training-clip references, DPO, reward feedback with and without KL), every effect on held-out clips
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_clips")
    dataset = build_stress_suite(
        root / "suite",
        sources=["chelsea", "coffee", "rocket"],
        perturbations=["blur_noise", "color_drift"],
        severities=(1.0,),
        consistent_per_source=2,
        image_size=32,
        num_frames=4,
        fps=4.0,
    )
    settings = PipelineSettings.quick(reward_num_frames=4, reward_batch_size=4, num_references=3)
    assert settings.policy == "pretrained" and settings.reference_set == "clips"
    results = run_paper_pipeline(root / "out", settings, dataset=dataset)
    return root / "out", settings, results


def test_clip_run_best_of_n_has_an_oracle_ceiling_and_paired_differences(clip_run):
    out, settings, results = clip_run
    bon = results["clips"]["best_of_n"]
    assert bon["methods"] == ["random", "MLP", "ICReward", "oracle"]
    assert bon["num_references"] == settings.num_references and bon["num_seeds"] == settings.num_seeds
    ind = "independent_consistency"
    # The oracle picks the candidate with the highest independent consistency: no selector can beat it.
    for method in ("random", "MLP", "ICReward"):
        assert bon["table"]["oracle"][ind] >= bon["table"][method][ind] - 1e-9
        assert bon["paired_differences"]["oracle - random"][ind]["mean"] >= -1e-9
    diff = bon["paired_differences"]["ICReward - random"][ind]
    assert diff["n"] == settings.num_references * settings.num_seeds
    assert diff["mean"] == pytest.approx(bon["table"]["ICReward"][ind] - bon["table"]["random"][ind], abs=1e-9)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Table 1: best-of-N selection on held-out real-clip references" in report
    assert "efficientnet-lite1" in report
    for image in ("best_of_n/contact_sheet.png", "dpo/contact_sheet.png"):
        assert f"]({image})" in report and (out / image).read_bytes()[:8] == PNG
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == results


def test_clip_run_pairs_come_from_training_clips_and_held_out_pairs_from_held_out_clips(clip_run):
    out, settings, results = clip_run
    rows = [json.loads(line) for line in (out / "dpo" / "pairs.jsonl").read_text().splitlines()]
    pairs = results["dpo_pairs"]
    assert len(rows) == pairs["num_pairs"] == pairs["num_train_pairs"] + pairs["num_eval_pairs"]
    for row in rows:
        # image_index is "<split>:<reference id>:<seed>"; training references are training clips' first frames
        split, reference, _ = row["image_index"].split(":")
        assert split == row["split"]
        assert reference.startswith("train_" if split == "train" else "heldout_")
    from icreward.policy import PRETRAINED_DIR
    from icreward.policy.data import load_references

    refs = load_references(PRETRAINED_DIR / "references.safetensors")
    assert not set(refs.eval_clips) & set(refs.train_clips)


def test_clip_run_reward_feedback_with_and_without_kl(clip_run):
    out, settings, results = clip_run
    rf = results["clips"]["reward_feedback"]
    assert set(rf) == {"with_kl", "without_kl"}
    assert rf["with_kl"]["kl_weight"] == settings.rf_kl_weight and rf["without_kl"]["kl_weight"] == 0.0
    for name, info in rf.items():
        assert info["steps"] == settings.rf_max_steps
        effect = info["effect"]
        assert set(effect) == {"independent_consistency", "motion", "icreward_score"}
        assert effect["motion"]["difference"]["n"] == settings.num_references * settings.num_seeds
        assert (out / "reward_feedback" / f"contact_sheet_{name}.png").read_bytes()[:8] == PNG


def test_reward_corpus_drops_the_policys_held_out_clips_as_source_and_as_donor():
    from datasets import Dataset, DatasetDict

    from icreward.evaluation.paper_pipeline import _without_policy_held_out_clips
    from icreward.policy import PRETRAINED_DIR
    from icreward.policy.data import load_references

    package, stem = load_references(PRETRAINED_DIR / "references.safetensors").eval_clips[0].split("/")
    held = f"{package.removeprefix('comfyui_workflow_templates_')}__{stem}"
    kept = "media_api__a_clip_that_is_not_held_out"
    from icreward.policy.data import is_held_out_name

    assert is_held_out_name(package, stem) and not is_held_out_name(package, kept.partition("__")[2])
    rows = {"source_id": [held, kept, kept], "donor": ["", held, ""]}
    out = _without_policy_held_out_clips(DatasetDict(train=Dataset.from_dict(rows), test=Dataset.from_dict(rows)))
    assert out["train"]["source_id"] == [kept] and out["train"]["donor"] == [""]
