"""Human image-to-video preferences (datapointai I2V layout): loader, BT-with-ties training, agreement report.

The miniature is written here in the real layout: parquet under ``data/`` with the card's columns, the reference
JPGs and the MP4s embedded as bytes in ``Image`` / ``Video`` columns, 10 votes per row, ties as 5-5 splits.
"""

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value, Video
from PIL import Image as PILImage
from scipy.stats import binomtest

from icreward.data.human_preferences import (
    HUMAN_PREFERENCE_COLUMNS,
    HumanPreferenceFormatError,
    load_human_preferences,
    to_preference_pairs,
)
from icreward.evaluation.human_agreement import (
    agreement_markdown,
    calibrate_tie_threshold,
    evaluate_human_agreement,
    human_agreement,
    score_preference_pairs,
)
from icreward.losses import bradley_terry_loss

CARD_FEATURES = Features(
    {
        "prompt_id": Value("string"),
        "prompt": Value("string"),
        "reference_image": Image(),
        "pika_video": Video(),
        "cog_video": Video(),
        "winner": Value("string"),
        "pika_votes": Value("int64"),
        "cog_votes": Value("int64"),
    }
)


def _jpg_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _mp4_bytes(frames: torch.Tensor, scratch: Path) -> bytes:
    from icreward.video import write_video

    return write_video(scratch, frames).read_bytes()


def _blocks(generator: torch.Generator) -> torch.Tensor:
    """A 32x32 image of 4x4 random colour blocks (distinct enough between rows, smooth enough for JPEG)."""
    coarse = torch.rand(3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse[None], size=(32, 32), mode="nearest")[0]


def _pan(image: torch.Tensor, step: int) -> torch.Tensor:
    return torch.stack([torch.roll(image, shifts=step * t, dims=2) for t in range(4)])


def _build_miniature(root: Path, num_rows: int = 24, seed: int = 0) -> list[dict]:
    """Annotators prefer the clip that moves (a pan of the reference) over a frozen copy of the reference; both
    pans: a 5-5 tie. An untrained consistency model prefers the frozen copy, so the preference has to be learnt."""
    g = torch.Generator().manual_seed(seed)
    scratch = root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_rows):
        ref = _blocks(g)
        moving = _pan(ref, 3)
        frozen = (ref[None].repeat(4, 1, 1, 1) + 0.02 * torch.randn(4, 3, 32, 32, generator=g)).clamp(0, 1)
        tie = i % 6 == 5
        pika_good = i % 2 == 0
        good_votes = 5 if tie else 7 + i % 4  # 7..10 of 10
        pika_votes = good_votes if (pika_good or tie) else 10 - good_votes
        cog_votes = 10 - pika_votes
        pika = moving if (pika_good or tie) else frozen
        cog = _pan(ref, -3) if tie else (frozen if pika_good else moving)
        winner = "tie" if pika_votes == cog_votes else "pika" if pika_votes > cog_votes else "cog"
        rows.append(
            {
                "prompt_id": f"00000000-0000-4000-8000-{i:012d}",
                "prompt": f"prompt number {i}",
                "reference_image": {"bytes": _jpg_bytes(ref), "path": f"{i}.jpg"},
                "pika_video": {"bytes": _mp4_bytes(pika, scratch / f"pika{i}.mp4"), "path": f"pika_{i}.mp4"},
                "cog_video": {"bytes": _mp4_bytes(cog, scratch / f"cog{i}.mp4"), "path": f"cog_{i}.mp4"},
                "winner": winner,
                "pika_votes": pika_votes,
                "cog_votes": cog_votes,
            }
        )
    return rows


def _write_parquet(root: Path, rows: list[dict], features: Features = CARD_FEATURES) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2v_prefs")
    rows = _build_miniature(root)
    return _write_parquet(root / "repo", rows), rows


def test_loader_reads_the_card_layout_with_embedded_media(miniature):
    import pyarrow.parquet as pq

    from icreward.video import load_image, read_video

    folder, rows = miniature
    schema = pq.read_schema(folder / "data" / "train-00000-of-00001.parquet")
    assert tuple(schema.names) == HUMAN_PREFERENCE_COLUMNS
    assert str(schema.field("pika_video").type) == "struct<bytes: binary, path: string>"  # bytes embedded

    data = load_human_preferences(folder, split={"train": 0.6, "validation": 0.2, "test": 0.2}, seed=0)
    assert data.report.num_rows == 24 and data.report.num_kept == 24 and data.report.num_skipped == 0
    assert data.report.num_ties == 4
    assert sum(data.report.split_rows.values()) == 24 and set(data) == {"train", "validation", "test"}
    ids = [set(split["prompt_id"]) for split in data.values()]
    assert sum(len(s) for s in ids) == len(set().union(*ids)) == 24  # each prompt in exactly one split

    by_id = {r["prompt_id"]: r for split in data.values() for r in split}
    for i, source in enumerate(rows):
        pair = by_id[source["prompt_id"]]
        assert (pair["votes_a"], pair["votes_b"]) == (source["pika_votes"], source["cog_votes"])
        assert pair["winner"] == {"pika": 1, "cog": -1, "tie": 0}[source["winner"]]
        assert pair["tie"] == (source["winner"] == "tie")
        expected = (source["pika_votes"] - source["cog_votes"]) / 10
        assert pair["margin"] == pytest.approx(expected)
        assert (pair["model_a"], pair["model_b"], pair["prompt"]) == ("pika", "cog", f"prompt number {i}")
        # The embedded media were written out as files with exactly the embedded bytes.
        assert Path(pair["video_a"]).read_bytes() == source["pika_video"]["bytes"]
        assert Path(pair["video_b"]).read_bytes() == source["cog_video"]["bytes"]
        assert Path(pair["reference"]).read_bytes() == source["reference_image"]["bytes"]
    first = by_id[rows[0]["prompt_id"]]
    assert tuple(read_video(first["video_a"]).shape) == (4, 3, 32, 32)
    assert tuple(load_image(first["reference"]).shape) == (3, 32, 32)
    assert Path(first["video_a"]).parent == folder / ".icreward_media"

    # Same seed, same assignment; a Dataset with decoding features (as load_dataset returns it) works too.
    again = load_human_preferences(
        Dataset.from_list(rows, features=CARD_FEATURES),
        split={"train": 0.6, "validation": 0.2, "test": 0.2},
        media_dir=folder / "other_media",
    )
    assert {k: sorted(v["prompt_id"]) for k, v in again.items()} == {
        k: sorted(v["prompt_id"]) for k, v in data.items()
    }

    pairs = to_preference_pairs(data["train"])
    for pair, row in zip(pairs, data["train"]):
        assert pair["is_tie"] == row["tie"]
        assert pair["chosen_is_a"] == (row["winner"] != -1)
        assert pair["chosen"] == (row["video_b"] if row["winner"] == -1 else row["video_a"])
        assert pair["weight"] == pytest.approx(max(row["votes_a"], row["votes_b"]) / 10)


def _row(i, winner, pika, cog, **over):
    row = {
        "prompt_id": f"id-{i:03d}",
        "prompt": f"prompt {i}",
        "reference_image": "ref.jpg",
        "pika_video": "a.mp4",
        "cog_video": "b.mp4",
        "winner": winner,
        "pika_votes": pika,
        "cog_votes": cog,
    }
    row.update(over)
    return row


def test_malformed_rows_are_counted_or_raise_naming_the_problem(tmp_path):
    for name in ("ref.jpg", "a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"x")
    good = [_row(i, "pika", 6, 4) for i in range(5)]
    bad = [
        _row(100, "draw", 5, 5),
        _row(101, "pika", -1, 11),
        _row(102, "pika", 2.5, 7.5),
        _row(103, "tie", 0, 0),
        _row(104, "cog", 8, 2),
        _row(105, "pika", 6, 4, cog_video=None),
        _row(106, "pika", 6, 4, pika_video="missing.mp4"),
        _row(107, "pika", 6, 4, prompt_id=""),
        _row(108, "COG ", 3, 7),  # case and spaces are tolerated: kept
    ]
    rows = [
        {**r, **{k: str(tmp_path / r[k]) for k in ("reference_image", "pika_video", "cog_video") if r[k]}}
        for r in good + bad
    ]
    data = load_human_preferences(rows, split={"train": 1.0})
    assert data.report.num_rows == 14 and data.report.num_kept == 6
    assert data.report.skipped == {
        "bad_winner": 1,
        "bad_votes": 3,
        "winner_contradicts_votes": 1,
        "missing_media": 1,
        "missing_media_file": 1,
        "bad_prompt_id": 1,
    }
    assert data.report.examples[0].startswith("row 5: winner must be one of")
    assert any("missing.mp4" in e and "does not exist" in e for e in data.report.examples)
    with pytest.raises(HumanPreferenceFormatError, match="row 5: winner must be one of"):
        load_human_preferences(rows, on_malformed="raise")
    with pytest.raises(HumanPreferenceFormatError, match=r"row 0 lacks column\(s\) \['cog_votes'\]"):
        load_human_preferences([{k: v for k, v in r.items() if k != "cog_votes"} for r in rows])
    with pytest.raises(HumanPreferenceFormatError, match=r"lacks column\(s\) \['winner'\]"):
        load_human_preferences(Dataset.from_list([{k: v for k, v in r.items() if k != "winner"} for r in good]))
    with pytest.raises(HumanPreferenceFormatError, match="no usable human-preference rows among 8"):
        load_human_preferences(rows[5:13])
    with pytest.raises(ValueError, match="sum to 1"):
        load_human_preferences(rows, split={"train": 0.5})


def _rao_kupper_nll(r_c: float, r_r: float, tie: bool, k: float) -> float:
    """-log P under Rao & Kupper (1967) with strengths pi = exp(r): an independent form of the model."""
    pc, pr = math.exp(r_c), math.exp(r_r)
    if tie:
        return -math.log((k * k - 1) * pc * pr / ((pc + k * pr) * (pr + k * pc)))
    return -math.log(pc / (pc + k * pr))


def test_bt_ties_loss_equals_rao_kupper_likelihood():
    g = torch.Generator().manual_seed(0)
    r_c, r_r = torch.randn(12, generator=g) * 2, torch.randn(12, generator=g) * 2
    ties = torch.arange(12) % 3 == 0
    for k in (1.5, 5.0):
        losses = bradley_terry_loss(r_c, r_r, ties=ties, k=k)
        expected = [_rao_kupper_nll(a, b, t, k) for a, b, t in zip(r_c.tolist(), r_r.tolist(), ties.tolist())]
        assert losses.tolist() == pytest.approx(expected, rel=1e-5)
        # The three outcome probabilities of one pair sum to 1.
        p_win = math.exp(-bradley_terry_loss(r_c[:1], r_r[:1], ties=torch.tensor([False]), k=k).item())
        p_lose = math.exp(-bradley_terry_loss(r_r[:1], r_c[:1], ties=torch.tensor([False]), k=k).item())
        p_tie = math.exp(-bradley_terry_loss(r_c[:1], r_r[:1], ties=torch.tensor([True]), k=k).item())
        assert p_win + p_lose + p_tie == pytest.approx(1.0, abs=1e-6)


def _model(kind: str, seed: int = 0):
    from icreward import ICRewardModel, MLPRewardModel
    from icreward.testing import tiny_icreward_config, tiny_mlp_reward_config

    torch.manual_seed(seed)
    if kind == "icreward":
        return ICRewardModel(tiny_icreward_config(num_frames=4))
    return MLPRewardModel(tiny_mlp_reward_config(num_frames=4))


def _args(tmp_path, **over):
    from icreward import RewardModelConfig

    values = dict(
        output_dir=str(tmp_path / "out"),
        loss_type="bt_ties",
        tie_k=2.0,
        pair_weight_column="weight",
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        logging_steps=1,
    )
    values.update(over)
    return RewardModelConfig(**values)


def test_trainer_loss_is_the_vote_weighted_rao_kupper_mean(miniature, tmp_path):
    from icreward import RewardModelTrainer

    folder, _ = miniature
    pairs = to_preference_pairs(load_human_preferences(folder, split={"train": 1.0})["train"])
    model = _model("icreward")
    trainer = RewardModelTrainer(model=model, args=_args(tmp_path), train_dataset=pairs)
    rows = [trainer.train_dataset[i] for i in range(10)]
    batch = trainer.data_collator(rows)
    assert batch["weights"].tolist() == pytest.approx([r["weight"] for r in rows])
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        chosen, rejected = trainer._pair_forward(model, batch)
    nll = [
        _rao_kupper_nll(c, r, t, 2.0)
        for c, r, t in zip(chosen.logits.tolist(), rejected.logits.tolist(), [r["is_tie"] for r in rows])
    ]
    weights = [r["weight"] for r in rows]
    assert loss == pytest.approx(sum(w * x for w, x in zip(weights, nll)) / sum(weights), rel=1e-5)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['weight'\]"):
        RewardModelTrainer(model=model, args=_args(tmp_path), train_dataset=pairs.remove_columns("weight"))


@pytest.mark.parametrize("kind", ["icreward", "mlp"])
def test_bt_ties_training_learns_the_human_majority(miniature, tmp_path, kind):
    from icreward import RewardModelTrainer

    folder, _ = miniature
    data = load_human_preferences(folder, split={"train": 0.75, "test": 0.25}, seed=0)
    pairs = to_preference_pairs(data["train"])
    model = _model(kind)
    store: dict = {}
    before_scores = score_preference_pairs(model, data["test"])
    before_train = human_agreement(*score_preference_pairs(model, data["train"]), data["train"]["winner"])
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = _args(tmp_path, num_train_epochs=40, per_device_train_batch_size=16, logging_steps=5)
    trainer = RewardModelTrainer(model=model, args=args, train_dataset=pairs, feature_store=store)
    trainer.train()
    changed = [n for n, p in model.named_parameters() if n in params and not torch.equal(p, params[n])]
    assert changed and all(not n.startswith("backbone.") for n in changed)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"} <= set(logged[-1])
    assert logged[-1]["loss"] < logged[0]["loss"]

    after_train = human_agreement(*score_preference_pairs(model, data["train"]), data["train"]["winner"])
    assert after_train.agreement > before_train.agreement and after_train.agreement == 1.0
    if kind == "icreward":
        # ICReward compares the reference with the frames: what it learnt carries over to unseen prompts.
        before = human_agreement(*before_scores, data["test"]["winner"])
        after = evaluate_human_agreement(model, data["test"])
        assert after.agreement > before.agreement and after.agreement == 1.0
        metrics = trainer.evaluate(to_preference_pairs(data["test"]))
        assert metrics["eval_accuracy"] == pytest.approx(after.agreement)
        assert {"eval_mean_reward", "eval_margin", "eval_accuracy_with_ties"} <= set(metrics)


def test_agreement_numbers_equal_a_hand_computation():
    winner = np.array([1, 1, -1, -1, 0, 0, 1, -1, 0, 1])
    a = np.array([0.90, 0.20, 0.10, 0.60, 0.50, 0.30, 0.70, 0.40, 0.40, 0.60])
    b = np.array([0.10, 0.80, 0.50, 0.20, 0.52, 0.90, 0.70, 0.90, 0.40, 0.50])
    result = human_agreement(a, b, winner, tie_threshold=0.05)
    # Ties excluded (rows 0 1 2 3 6 7 9): 0 yes, 1 no, 2 yes, 3 no, 6 equal -> no, 7 yes, 9 yes => 4 of 7.
    assert (result.num_decided, result.num_agree_decided) == (7, 4)
    assert result.agreement == pytest.approx(4 / 7)
    # With ties: the same 4 decided rows (their gaps exceed 0.05; row 6's 0 is a called tie: no);
    # human ties 4 (gap 0.02) and 8 (gap 0) agree, 5 (gap 0.6) does not => 6 of 10.
    assert (result.num_pairs, result.num_agree_with_ties, result.num_ties) == (10, 6, 3)
    assert result.agreement_with_ties == pytest.approx(0.6)
    assert result.num_model_ties == 3  # rows 4, 6, 8
    for (low, high), (k, n) in ((result.agreement_ci, (4, 7)), (result.agreement_with_ties_ci, (6, 10))):
        ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-9)

    boot = human_agreement(a, b, winner, tie_threshold=0.05, interval="bootstrap", num_bootstrap=4000, seed=1)
    assert (boot.agreement, boot.agreement_with_ties) == (result.agreement, result.agreement_with_ties)
    # Resampling 10 pairs of which 6 agree: the bootstrap shares are Binomial(10, 0.6) / 10, whose 2.5% and
    # 97.5% quantiles are 0.3 and 0.9 (cdf 0.012 at 2, 0.055 at 3; 0.954 at 8, 0.994 at 9: far from the cut).
    assert boot.agreement_with_ties_ci == pytest.approx((0.3, 0.9), abs=1e-9)
    assert boot.agreement_ci[0] < 4 / 7 < boot.agreement_ci[1]

    # Tie calibration: at 0.02 row 4 joins row 8 as an agreeing tie and no decided pair is lost (the smallest
    # decided gap is 0.1, row 9; at 0.1 that row would become a called tie): 6 of 10, against 5 at 0 and at 0.1.
    threshold = calibrate_tie_threshold(a, b, winner)
    assert threshold == pytest.approx(0.02)
    assert human_agreement(a, b, winner, tie_threshold=0.0).num_agree_with_ties == 5
    assert human_agreement(a, b, winner, tie_threshold=threshold).num_agree_with_ties == 6
    assert human_agreement(a, b, winner, tie_threshold=0.1).num_agree_with_ties == 5

    table = agreement_markdown({"ICReward": result})
    assert "| ICReward | 0.571 [" in table and "| 10 (3) | 0.05 |" in table
    with pytest.raises(ValueError, match="winner values"):
        human_agreement([0.1], [0.2], [2])
    assert math.isnan(human_agreement([0.1], [0.1], [0]).agreement)


def _docs_snippet() -> str:
    text = (Path(__file__).parents[1] / "docs" / "reward_training.md").read_text()
    section = text.split("## Training on human preferences", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_snippet_and_cli_run_on_the_miniature(miniature, tmp_path, capsys, monkeypatch):
    from icreward.cli import main

    folder, _ = miniature
    code = _docs_snippet()
    assert 'data_dir = "path/to/image-2-video-human-preferences-small"' in code
    code = code.replace("path/to/image-2-video-human-preferences-small", str(folder))
    code = code.replace('output_dir="outputs/icreward-human"', f'output_dir="{tmp_path / "docs_out"}"')
    # The real backbone at a smaller input size, so the test stays fast.
    assert "image_size=224, num_frames=8" in code
    code = code.replace("image_size=224, num_frames=8", "image_size=64, num_frames=4")
    assert "num_train_epochs=20" in code
    code = code.replace("num_train_epochs=20", "num_train_epochs=2")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/reward_training.md", "exec"), namespace)  # noqa: S102 - our own docs
    result = namespace["result"]
    assert result.num_pairs == len(namespace["data"]["test"])
    saved = tmp_path / "docs_out"
    assert (saved / "model.safetensors").exists()
    capsys.readouterr()

    out = tmp_path / "agreement.json"
    argv = ["human-agreement", "--model", str(saved), "--data", str(folder), "--split", "test", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())["results"][str(saved)]
    assert report["num_pairs"] == result.num_pairs
    assert report["agreement"] == pytest.approx(result.agreement) or math.isnan(result.agreement)
    assert f"| {saved} |" in printed
