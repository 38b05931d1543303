"""Evaluation: reward-model comparison (Figure 2), best-of-N selection (Table 1, Figure 3), the human preference
study tool (Figure 4) and the reward-hacking report. Submodules are imported on use."""

from .._lazy import lazy_exports

_LAZY = {
    "ComparisonSettings": "reward_comparison",
    "compare_reward_models": "reward_comparison",
    "write_comparison_report": "reward_comparison",
    "BestOfNReport": "best_of_n",
    "CandidateGroup": "best_of_n",
    "RandomSelector": "best_of_n",
    "OracleSelector": "best_of_n",
    "ScoreSelector": "best_of_n",
    "RewardModelSelector": "best_of_n",
    "generate_candidates": "best_of_n",
    "load_candidates": "best_of_n",
    "pipeline_generator": "best_of_n",
    "run_best_of_n": "best_of_n",
    "HumanStudy": "human_study",
    "load_study_results": "human_study",
    "summarize_study": "human_study",
    "plot_study_summary": "human_study",
    "wilson_interval": "human_study",
    "HumanAgreement": "human_agreement",
    "calibrate_tie_threshold": "human_agreement",
    "evaluate_human_agreement": "human_agreement",
    "reward_hacking_report": "reward_hacking",
    "reward_hacking_markdown": "reward_hacking",
    "write_reward_hacking_report": "reward_hacking",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
