"""Labels and schema of the stress-test suite (:mod:`icreward.data.stress_suite`): perturbation kinds, their score
drops, motion levels, the dataset features, and the consistency label of a video."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from datasets import Features, Image, Value

__all__ = [
    "CONSISTENT",
    "DEFAULT_SEVERITIES",
    "MAX_SCORE_DROP",
    "MOTION_LEVELS",
    "MOTION_THRESHOLDS",
    "PERTURBATIONS",
    "STRESS_SUITE_FEATURES",
    "STRESS_SUITE_PAIR_FEATURES",
    "drop_score",
    "is_motion_decoupled",
    "motion_level_for",
    "perturbation_score",
]

#: ``perturbation`` value of consistent videos.
CONSISTENT = "none"

#: Inconsistent perturbation types, in the order videos are generated.
PERTURBATIONS: tuple[str, ...] = (
    "identity_change",
    "object_removal",
    "background_drift",
    "color_drift",
    "subject_distortion",
    "temporal_flicker",
    "blur_noise",
)

#: Score lost at severity 1, per perturbation: ``score = 1 - severity * MAX_SCORE_DROP[perturbation]``.
MAX_SCORE_DROP: dict[str, float] = {
    "identity_change": 0.9,
    "object_removal": 0.8,
    "background_drift": 0.6,
    "color_drift": 0.7,
    "subject_distortion": 0.7,
    "temporal_flicker": 0.5,
    "blur_noise": 0.6,
}

DEFAULT_SEVERITIES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

MOTION_LEVELS: tuple[str, ...] = ("static", "small", "large")

#: ``motion < 0.02`` is static, ``0.02 <= motion < 0.1`` small, ``motion >= 0.1`` large (fractions of the width).
MOTION_THRESHOLDS: tuple[float, float] = (0.02, 0.1)

STRESS_SUITE_FEATURES = Features(
    {
        "video_id": Value("string"),
        "source_id": Value("string"),
        "photo": Value("string"),
        "reference": Image(),
        "video": Value("string"),
        "score": Value("float32"),
        "perturbation": Value("string"),
        "severity": Value("float32"),
        "motion": Value("float32"),
        "motion_level": Value("string"),
        "camera": Value("string"),
        "motion_decoupled": Value("bool"),
        "split": Value("string"),
    }
)

STRESS_SUITE_PAIR_FEATURES = Features(
    {
        "source_id": Value("string"),
        "reference": Image(),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_id": Value("string"),
        "rejected_id": Value("string"),
        "chosen_score": Value("float32"),
        "rejected_score": Value("float32"),
        "margin": Value("float32"),
        "perturbation": Value("string"),
        "chosen_perturbation": Value("string"),
        "motion_decoupled": Value("bool"),
    }
)


def drop_score(
    perturbation: str, severity: float, max_score_drop: Mapping[str, float], perturbations: Sequence[str]
) -> float:
    """``1 - severity * max_score_drop[perturbation]``, and 1 for consistent videos (``severity`` 0); the label of
    the photograph suite (:func:`perturbation_score`) and of the generated-clip corpus, with their own drop tables
    (``perturbations``: the kinds named when ``perturbation`` is unknown)."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}.")
    if perturbation == CONSISTENT:
        if severity != 0.0:
            raise ValueError(f"Consistent videos have severity 0, got {severity}.")
        return 1.0
    if perturbation not in max_score_drop:
        raise ValueError(f"Unknown perturbation {perturbation!r}; expected {CONSISTENT!r} or one of {perturbations}.")
    return 1.0 - severity * max_score_drop[perturbation]


def perturbation_score(perturbation: str, severity: float) -> float:
    """Consistency label of a video: ``1 - severity * MAX_SCORE_DROP[perturbation]``, and 1 for ``"none"``."""
    return drop_score(perturbation, severity, MAX_SCORE_DROP, PERTURBATIONS)


def motion_level_for(motion: float) -> str:
    """Map a measured motion (fraction of the frame width) to ``"static"``, ``"small"`` or ``"large"``."""
    static_below, large_from = MOTION_THRESHOLDS
    if motion < static_below:
        return "static"
    return "small" if motion < large_from else "large"


def is_motion_decoupled(perturbation: str, motion_level: str) -> bool:
    """Consistent with large motion, or inconsistent with a static camera: motion and consistency disagree."""
    if perturbation == CONSISTENT:
        return motion_level == "large"
    return motion_level == "static"
