"""Data: VBench++ I2V loaders, preference pairs, the VBench auto-labeler and the consistency stress-test suite.
Names load on first access."""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
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

__getattr__, __dir__, __all__ = lazy_package(__name__)
