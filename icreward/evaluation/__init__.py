"""Evaluation: reward-model comparison (Figure 2), best-of-N selection (Table 1, Figure 3), the human preference
study tool (Figure 4) and the reward-hacking report. Submodules are imported on use."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .best_of_n import (
        BestOfNReport,
        CandidateGroup,
        OracleSelector,
        RandomSelector,
        RewardModelSelector,
        ScoreSelector,
        generate_candidates,
        load_candidates,
        pipeline_generator,
        run_best_of_n,
    )
    from .human_agreement import HumanAgreement, calibrate_tie_threshold, evaluate_human_agreement
    from .human_study import HumanStudy, load_study_results, plot_study_summary, summarize_study, wilson_interval
    from .reward_comparison import ComparisonSettings, compare_reward_models, write_comparison_report
    from .reward_hacking import reward_hacking_markdown, reward_hacking_report, write_reward_hacking_report

__getattr__, __dir__, __all__ = lazy_package(__name__)
