import itertools
import logging

import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from icreward.data.pairs import build_preference_pairs, pairs_from_reward_model_picks

PAIR_COLUMNS = ["reference", "prompt", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "is_tie"]


def _rows():
    # Image "a": four videos, two of them tied at 0.5; image "b": a single video, which cannot form a pair.
    return [
        {"image_name": "a", "reference": "a.jpg", "prompt": "pa", "video": "a-0.mp4", "score": 0.9},
        {"image_name": "a", "reference": "a.jpg", "prompt": "pa", "video": "a-1.mp4", "score": 0.5},
        {"image_name": "b", "reference": "b.jpg", "prompt": "pb", "video": "b-0.mp4", "score": 0.3},
        {"image_name": "a", "reference": "a.jpg", "prompt": "pa", "video": "a-2.mp4", "score": 0.5},
        {"image_name": "a", "reference": "a.jpg", "prompt": "pa", "video": "a-3.mp4", "score": 0.1},
    ]


def _as_tuples(pairs):
    return [(r["chosen"], r["rejected"], r["is_tie"]) for r in pairs]


def test_all_pairs_ordered_by_score_and_ties_dropped():
    pairs, stats = build_preference_pairs(_rows(), return_stats=True)
    assert pairs.column_names == [*PAIR_COLUMNS, "image_name"]
    assert set(_as_tuples(pairs)) == {
        ("a-0.mp4", "a-1.mp4", False),
        ("a-0.mp4", "a-2.mp4", False),
        ("a-0.mp4", "a-3.mp4", False),
        ("a-1.mp4", "a-3.mp4", False),
        ("a-2.mp4", "a-3.mp4", False),
    }
    for row in pairs:
        assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"])
        assert row["margin"] > 0
        assert (row["reference"], row["prompt"], row["image_name"]) == ("a.jpg", "pa", "a")
    assert stats.num_groups == 2
    assert stats.num_candidate_pairs == 6
    assert stats.num_pairs == 5
    assert stats.dropped == {"tie": 1, "single_candidate": 1}
    assert pairs.features["chosen_score"] == Value("float32")
    assert pairs.features["is_tie"] == Value("bool")


def test_kept_ties_are_flagged_and_deterministically_ordered():
    pairs, stats = build_preference_pairs(_rows(), ties="keep", return_stats=True)
    ties = [r for r in pairs if r["is_tie"]]
    # Equal scores: the row that comes first in the input is "chosen".
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in ties] == [("a-1.mp4", "a-2.mp4", 0.0)]
    assert stats.num_ties == 1 and len(pairs) == 6
    assert _as_tuples(build_preference_pairs(_rows(), ties="keep")) == _as_tuples(pairs)


def test_tie_threshold_makes_close_scores_ties():
    rows = [
        {"image_name": "a", "reference": "r", "prompt": "p", "video": "v0", "score": 0.50},
        {"image_name": "a", "reference": "r", "prompt": "p", "video": "v1", "score": 0.52},
        {"image_name": "a", "reference": "r", "prompt": "p", "video": "v2", "score": 0.90},
    ]
    kept = build_preference_pairs(rows, tie_threshold=0.05, ties="keep")
    tie = [r for r in kept if r["is_tie"]]
    assert len(tie) == 1 and (tie[0]["chosen"], tie[0]["rejected"]) == ("v1", "v0")
    assert len(build_preference_pairs(rows, tie_threshold=0.05)) == 2
    assert len(build_preference_pairs(rows, tie_threshold=0.0)) == 3


def test_min_margin_drops_and_counts_small_gaps_but_not_kept_ties():
    pairs, stats = build_preference_pairs(_rows(), min_margin=0.45, ties="keep", return_stats=True)
    margins = sorted(round(r["margin"], 6) for r in pairs if not r["is_tie"])
    assert margins == [0.8]  # 0.9-0.1; 0.4 gaps (0.9-0.5, 0.5-0.1) are below 0.45
    assert stats.dropped["min_margin"] == 4
    assert sum(r["is_tie"] for r in pairs) == 1


def test_max_pairs_per_group_keeps_largest_margins():
    pairs, stats = build_preference_pairs(_rows(), max_pairs_per_group=2, return_stats=True)
    assert sorted(round(r["margin"], 6) for r in pairs) == [0.4, 0.8]
    assert _as_tuples(pairs)[0] == ("a-0.mp4", "a-3.mp4", False)
    assert stats.dropped["max_pairs_per_group"] == 3


def test_group_by_several_columns():
    rows = [dict(r, source_model=m) for r, m in zip(_rows(), ["x", "y", "x", "x", "y"])]
    pairs = build_preference_pairs(rows, group_by=["image_name", "source_model"])
    assert set(_as_tuples(pairs)) == {("a-0.mp4", "a-2.mp4", False), ("a-1.mp4", "a-3.mp4", False)}
    assert set(pairs["source_model"]) == {"x", "y"}


def test_reference_image_feature_survives(tmp_path):
    paths = []
    for name, color in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        paths.append(str(tmp_path / f"{name}.png"))
        PILImage.new("RGB", (4, 4), color).save(paths[-1])
    rows = _rows()
    data = Dataset.from_dict(
        {
            "reference": [paths[0] if r["image_name"] == "a" else paths[1] for r in rows],
            **{k: [r[k] for r in rows] for k in ("image_name", "prompt", "video", "score")},
        },
        features=Features(
            reference=Image(),
            image_name=Value("string"),
            prompt=Value("string"),
            video=Value("string"),
            score=Value("float64"),
        ),
    )
    pairs = build_preference_pairs(data)
    assert pairs.features["reference"] == Image()
    assert pairs[0]["reference"].getpixel((0, 0)) == (255, 0, 0)


def test_no_pairs_gives_empty_dataset_with_schema():
    rows = [r for r in _rows() if r["video"] in ("a-1.mp4", "a-2.mp4")]
    pairs, stats = build_preference_pairs(rows, return_stats=True)
    assert len(pairs) == 0
    assert pairs.column_names == [*PAIR_COLUMNS, "image_name"]
    assert stats.dropped == {"tie": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_column": "reward"}, r"missing column\(s\) \['reward'\]"),
        ({"group_by": "source_id"}, r"missing column\(s\) \['source_id'\]"),
        ({"ties": "split"}, "ties must be"),
        ({"min_margin": -0.1}, "min_margin"),
        ({"tie_threshold": float("nan")}, "tie_threshold"),
        ({"max_pairs_per_group": 0}, "max_pairs_per_group"),
        ({"group_by": "margin"}, "clashes"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_preference_pairs(_rows(), **kwargs)


def test_non_numeric_score_names_row_and_column():
    rows = _rows()
    rows[3]["score"] = None
    with pytest.raises(ValueError, match=r"column 'score' .* row 3"):
        build_preference_pairs(rows)


def _candidates():
    # Three images with three candidates each.
    return [
        {"image_name": img, "reference": f"{img}.jpg", "prompt": f"p{img}", "video": f"{img}-{i}.mp4"}
        for img, i in itertools.product("xyz", range(3))
    ]


def test_reward_model_picks():
    scores_a = [0.2, 0.9, 0.4, 0.7, 0.1, 0.3, 0.5, 0.5, 0.2]
    scores_b = [0.8, 0.1, 0.3, 0.6, 0.2, 0.1, 0.1, 0.9, 0.3]
    pairs, stats = pairs_from_reward_model_picks(_candidates(), scores_a, scores_b, return_stats=True)
    # x: A picks x-1, B picks x-0. y: both pick y-0 -> no pair. z: A ties z-0/z-1 -> first (z-0); B picks z-1.
    assert [(r["chosen"], r["rejected"]) for r in pairs] == [("x-1.mp4", "x-0.mp4"), ("z-0.mp4", "z-1.mp4")]
    assert pairs["chosen_score"] == pytest.approx([0.9, 0.5])
    assert pairs["rejected_score"] == pytest.approx([0.2, 0.5])
    assert pairs["is_tie"] == [False, True]
    assert pairs["reference"] == ["x.jpg", "z.jpg"]
    assert stats.dropped == {"same_pick": 1}
    assert stats.num_groups == 3 and stats.num_pairs == 2


def test_reward_model_picks_from_columns_and_validation(caplog):
    data = Dataset.from_list(
        [dict(row, icreward=a, mlp=b) for row, a, b in zip(_candidates(), [3, 2, 1] * 3, [1, 2, 3] * 3)]
    )
    with caplog.at_level(logging.INFO, logger="icreward"):
        pairs = pairs_from_reward_model_picks(data, "icreward", "mlp")
    assert pairs["chosen"] == ["x-0.mp4", "y-0.mp4", "z-0.mp4"]
    assert pairs["rejected"] == ["x-2.mp4", "y-2.mp4", "z-2.mp4"]
    assert "3 pairs" in caplog.text
    with pytest.raises(ValueError, match=r"missing column\(s\) \['clip_mlp'\]"):
        pairs_from_reward_model_picks(data, "icreward", "clip_mlp")
    with pytest.raises(ValueError, match="scores_b has 2 scores for 9 candidate rows"):
        pairs_from_reward_model_picks(data, "icreward", [0.1, 0.2])
