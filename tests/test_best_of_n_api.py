"""run_best_of_n's keywords: a misspelt metric keyword is refused with the right name, not passed on."""

import pytest
import torch

from icreward.evaluation.best_of_n import CandidateGroup, run_best_of_n


def _groups():
    gen = torch.Generator().manual_seed(0)
    return [
        CandidateGroup(
            f"s{i}",
            torch.randint(0, 255, (3, 8, 8), generator=gen, dtype=torch.uint8),
            [torch.randint(0, 255, (2, 3, 8, 8), generator=gen, dtype=torch.uint8) for _ in range(3)],
            labels=[0.1, 0.9, 0.5],
        )
        for i in range(2)
    ]


def test_unknown_keyword_is_refused_with_a_suggestion():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'clip' \(did you mean 'clipsim'"):
        run_best_of_n(_groups(), {"random": "random"}, clip=object())


def test_load_candidates_keywords_still_pass_through_and_progress_can_be_off():
    report = run_best_of_n(_groups(), {"oracle": "oracle"}, video_column="video", progress=False)
    assert report.selections["oracle"] == [1, 1]
