"""Data: VBench++ I2V loaders, preference pairs, the VBench auto-labeler and the consistency stress-test suite."""

from .autolabel import ConsistencyAutoLabeler
from .dpo_pairs import PAIR_COLUMNS, generate_reward_pairs, load_dpo_pairs, validate_dpo_pairs
from .human_preferences import HumanPreferenceFormatError, load_human_preferences, to_preference_pairs
from .pairs import PairBuildStats, build_preference_pairs, pairs_from_reward_model_picks
from .stress_suite import (
    PERTURBATIONS,
    build_stress_suite,
    evaluate_ranking,
    load_sample_dataset,
    load_stress_suite,
    motion_decoupled_pairs,
    stress_suite_pairs,
)
from .vbench import (
    VBenchFormatError,
    export_vbench_dataset,
    load_vbench_i2v,
    load_vbench_i2v_from_hub,
    push_vbench_dataset_to_hub,
)

__all__ = [
    "PAIR_COLUMNS",
    "generate_reward_pairs",
    "load_dpo_pairs",
    "validate_dpo_pairs",
    "PERTURBATIONS",
    "ConsistencyAutoLabeler",
    "HumanPreferenceFormatError",
    "PairBuildStats",
    "VBenchFormatError",
    "build_preference_pairs",
    "build_stress_suite",
    "evaluate_ranking",
    "export_vbench_dataset",
    "load_human_preferences",
    "load_sample_dataset",
    "load_stress_suite",
    "load_vbench_i2v",
    "load_vbench_i2v_from_hub",
    "motion_decoupled_pairs",
    "pairs_from_reward_model_picks",
    "push_vbench_dataset_to_hub",
    "stress_suite_pairs",
    "to_preference_pairs",
]
