"""The human-preference loader (datapointai I2V layout) and the agreement report, on a miniature built here."""

import math

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import binomtest

from icreward.data.human_preferences import (
    HumanPreferenceFormatError,
    human_agreement,
    load_human_preferences,
)


def _row(i, winner, pika, cog, **over):
    row = {
        "prompt_id": f"id-{i:03d}",
        "prompt": f"prompt {i}",
        "reference_image": f"ref_{i}.jpg",
        "pika_video": f"pika_{i}.mp4",
        "cog_video": f"cog_{i}.mp4",
        "winner": winner,
        "pika_votes": pika,
        "cog_votes": cog,
    }
    row.update(over)
    return row


def _miniature():
    rows = []
    for i in range(40):
        pika = i % 11
        cog = 10 - pika
        winner = "pika" if pika > cog else "cog" if cog > pika else "tie"
        rows.append(_row(i, winner, pika, cog))
    return rows


def test_loads_pairs_with_margins_ties_and_prompt_splits():
    data = load_human_preferences(Dataset.from_list(_miniature()), seed=0)
    assert data.report.num_kept == 40 and data.report.num_skipped == 0
    rows = [r for split in data.values() for r in split]
    assert len(rows) == 40
    by_id = {r["prompt_id"]: r for r in rows}
    r = by_id["id-007"]  # 7 vs 3
    assert (r["votes_a"], r["votes_b"], r["winner"], r["tie"]) == (7, 3, 1, False)
    assert r["margin"] == pytest.approx(0.4)
    assert r["video_a"] == "pika_7.mp4" and r["video_b"] == "cog_7.mp4" and r["reference"] == "ref_7.jpg"
    tie = by_id["id-005"]
    assert tie["tie"] and tie["winner"] == 0 and tie["margin"] == 0.0
    ids = [set(split["prompt_id"]) for split in data.values()]
    assert sum(len(s) for s in ids) == len(set().union(*ids))  # each prompt in exactly one split
    assert len(data) >= 2
    # A different seed reassigns prompts; the same seed reproduces the assignment.
    again = load_human_preferences(_miniature(), seed=0)
    assert {k: sorted(v["prompt_id"]) for k, v in again.items()} == {
        k: sorted(v["prompt_id"]) for k, v in data.items()
    }


def test_malformed_rows_are_counted_or_raise():
    rows = _miniature()[:10] + [
        _row(100, "draw", 5, 5),
        _row(101, "pika", -1, 11),
        _row(102, "pika", 2.5, 7.5),
        _row(103, "cog", 8, 2),
        _row(104, "pika", 6, 4, cog_video=None),
    ]
    data = load_human_preferences(rows)
    assert data.report.num_kept == 10
    assert data.report.skipped == {
        "bad_winner": 1,
        "bad_votes": 2,
        "winner_contradicts_votes": 1,
        "missing_media": 1,
    }
    with pytest.raises(HumanPreferenceFormatError, match="row 10: winner"):
        load_human_preferences(rows, on_malformed="raise")
    broken = [{k: v for k, v in r.items() if k != "cog_votes"} for r in _miniature()]
    with pytest.raises(HumanPreferenceFormatError, match="cog_votes"):
        load_human_preferences(Dataset.from_list(broken))


def test_agreement_with_and_without_ties_and_wilson_interval():
    winner = np.array([1, 1, -1, -1, 0, 0, 1, -1])
    a = np.array([0.9, 0.2, 0.1, 0.6, 0.50, 0.3, 0.7, 0.4])
    b = np.array([0.1, 0.8, 0.5, 0.2, 0.52, 0.9, 0.7, 0.9])
    result = human_agreement(a, b, winner, tie_threshold=0.05)
    # decided: rows 0 ok, 1 no, 2 ok, 3 no, 6 equal -> no, 7 ok => 3/6; ties: row 4 within 0.05, row 5 not
    assert result.num_decided == 6 and result.agreement == pytest.approx(0.5)
    assert result.num_pairs == 8 and result.agreement_with_ties == pytest.approx(4 / 8)
    ci = binomtest(3, 6).proportion_ci(0.95, method="wilson")
    assert result.agreement_ci == pytest.approx((ci.low, ci.high))
    assert result.agreement_ci[0] < 0.5 < result.agreement_ci[1]
    with pytest.raises(ValueError, match="winner values"):
        human_agreement([0.1], [0.2], [2])
    assert math.isnan(human_agreement([0.1], [0.1], [0]).agreement)


def test_bt_ties_training_on_human_pairs_and_agreement_report(tmp_path):
    import torch
    from PIL import Image as PILImage

    from icreward import ICRewardModel, RewardModelConfig, RewardModelTrainer
    from icreward.data.human_preferences import to_preference_pairs
    from icreward.testing import tiny_icreward_config
    from icreward.video import write_video

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(8):
        ref = torch.rand(3, 32, 32, generator=g)
        ref_path = tmp_path / f"ref{i}.png"
        PILImage.fromarray((ref * 255).byte().permute(1, 2, 0).numpy()).save(ref_path)
        close = write_video(tmp_path / f"close{i}", ref[None].repeat(3, 1, 1, 1) * 0.9 + 0.05)
        far = write_video(tmp_path / f"far{i}", torch.rand(3, 3, 32, 32, generator=g))
        pika_close = i % 2 == 0
        votes = (8, 2) if i % 4 != 3 else (5, 5)
        pika, cog = votes if pika_close else votes[::-1]
        winner = "pika" if pika > cog else "cog" if cog > pika else "tie"
        rows.append(
            _row(
                i,
                winner,
                pika,
                cog,
                reference_image=str(ref_path),
                pika_video=str(close if pika_close else far),
                cog_video=str(far if pika_close else close),
            )
        )
    data = load_human_preferences(rows, split={"train": 1.0})
    pairs = to_preference_pairs(data["train"])
    assert {"reference", "chosen", "rejected", "is_tie", "margin"} <= set(pairs.column_names)
    assert sum(pairs["is_tie"]) == 2
    for row in pairs:
        if not row["is_tie"]:
            assert "close" in row["chosen"] and "far" in row["rejected"]
    torch.manual_seed(0)
    model = ICRewardModel(tiny_icreward_config(num_frames=3))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = RewardModelConfig(
        output_dir=str(tmp_path / "out"),
        loss_type="bt_ties",
        num_train_epochs=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = RewardModelTrainer(model=model, args=args, train_dataset=pairs)
    trainer.train()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed
    scores = trainer.predict_scores(pairs)
    assert scores.shape == (8, 2)
    # chosen is the human winner for decided rows: score_a/score_b in the original (pika, cog) orientation
    winner = np.array(data["train"]["winner"])
    flip = winner == -1
    a = np.where(flip, scores[:, 1], scores[:, 0])
    b = np.where(flip, scores[:, 0], scores[:, 1])
    result = human_agreement(a, b, winner)
    assert result.num_decided == 6 and result.num_pairs == 8
    assert 0.0 <= result.agreement_ci[0] <= result.agreement <= result.agreement_ci[1] <= 1.0
