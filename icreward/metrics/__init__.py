"""Pure metric functions and metric classes on video tensors (``(F, 3, H, W)`` uint8 or float in [0, 1]).

``i2v_consistency_score`` and ``frechet_distance`` are the formulas of DESIGN.md; FVD uses the I3D network with
user-supplied weights; CLIPSim, FaceSim and dynamic degree complete the paper's evaluation; ``reward_metrics``
scores reward models against labels.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports are the lazy exports: icreward._lazy.lazy_package reads them)
from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:
    from .clipsim import CLIPSimilarity, CLIPSimResult, clip_similarity, clip_similarity_from_embeddings
    from .consistency import (
        background_consistency,
        i2v_consistency_score,
        i2v_consistency_scores,
        subject_consistency,
        temporal_consistency,
    )
    from .facesim import FaceSim, FaceSimResult, face_similarity
    from .fvd import (
        FrechetVideoDistance,
        InceptionI3d,
        frechet_distance,
        frechet_distance_from_statistics,
        gaussian_statistics,
        load_i3d_state_dict,
    )
    from .motion import DynamicDegreeResult, LucasKanadeFlow, RAFTFlow, dynamic_degree, flow_motion_score
    from .reward_metrics import (
        group_index_pairs,
        pair_correctness,
        pairwise_accuracy,
        preference_pair_metrics,
        reward_regression_metrics,
        spearman_correlation,
    )

__getattr__, __dir__, __all__ = lazy_package(__name__)
