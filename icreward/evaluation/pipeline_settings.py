"""The settings of the paper pipeline (:func:`~icreward.evaluation.paper_pipeline.run_paper_pipeline`): one field
per knob, each with its help text (``metadata={"help": ...}``, read by ``icreward pipeline``'s
:class:`~transformers.HfArgumentParser`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PipelineSettings"]


def _default_sources() -> tuple[str, ...]:
    from ..data.photos import DEFAULT_SOURCES

    return tuple(DEFAULT_SOURCES)


def _setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its command-line help (``metadata={"help": help}``)."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class PipelineSettings:
    """Every knob of :func:`run_paper_pipeline`; each field is a flag of the command line.

    The defaults finish in well under 15 minutes on 2 CPU cores; :meth:`quick` is a plumbing-only preset for tests.
    """

    # ---------------------------------------------------------------------------------------- step 1: reward models
    reward_backbone: str = _setting(
        "efficientnet-lite0", "Frozen backbone of both reward models (hub id, local path or efficientnet-lite0)."
    )
    reward_image_size: int = _setting(128, "Frame size fed to the reward backbone.")
    reward_num_frames: int = _setting(8, "Frames sampled per video by the reward models.")
    reward_num_train_epochs: float = _setting(15, "Training epochs of each reward model.")
    reward_batch_size: int = _setting(16, "Training batch size of the reward models.")
    reward_learning_rate: float = _setting(5e-4, "Head learning rate of both reward models.")
    reward_eval_every_epochs: int = _setting(
        2, "Validation frequency of the reward models (the points of Figure 2's curves)."
    )
    include_feature_cosine: bool = _setting(
        True, "Also report the zero-shot feature-cosine baseline in Figure 2's table."
    )
    reward_data: str = _setting(
        "generated",
        "Reward-model training data: generated (the corpus of real generated clips, "
        "icreward.data.generated_corpus) or photos (the photograph stress-test suite).",
    )
    reward_max_clips: int = _setting(
        16,
        "generated: source clips of the reward-model corpus (the library default is 48; 16 keeps the demo "
        "within its time budget). With the clip references, the policy's held-out clips are dropped from it.",
    )
    reward_cv_folds: int = _setting(
        0,
        "K-fold cross-validation of both reward models by source clip (photograph) on the same data, "
        "reusing the cached backbone features; its figures go into the report. 0 (default: it costs more than "
        "the demo's time budget) disables.",
    )
    # ---------------------------------------------------------------------------------------- step 2: best-of-N
    policy: str = _setting(
        "pretrained",
        "Image-to-video policy: pretrained (the tiny Wan I2V policy shipped with icreward, pretrained on "
        "real clips: icreward.policy), tiny-wan2.1 (random weights) or a diffusers pipeline id/folder.",
    )
    reference_set: str = _setting(
        "clips",
        "Reference images: 'clips' (first frames of real generated clips shipped with the policy; "
        "best-of-N and every effect on held-out clips, fine-tuning on training clips) or 'photos' (--sources).",
    )
    num_references: int = _setting(12, "clips: held-out references for best-of-N and for every effect (one per clip).")
    num_seeds: int = _setting(2, "clips: sampling seeds; effects are paired differences over references x seeds.")
    independent_backbone: str = _setting(
        "efficientnet-lite1",
        "clips: backbone of the independent consistency metric (feature cosine of frames 1.. to the "
        "reference); a different pretrained network from the reward models' backbone.",
    )
    independent_image_size: int = _setting(128, "Frame side fed to the independent metric.")
    sources: tuple[str, ...] = _setting(
        default_factory=_default_sources,
        help="Reference images: source ids of icreward.data.photos.PHOTO_SOURCES (one prompt each).",
    )
    num_candidates: int = _setting(4, "Videos sampled per reference image (the paper: 5; 4 keeps the demo short).")
    num_frames: int = _setting(9, "Frames per generated video (4k + 1 for Wan).")
    height: int = _setting(32, "Height of the generated videos.")
    width: int = _setting(32, "Width of the generated videos.")
    num_inference_steps: int = _setting(8, "Sampling steps of the policy.")
    guidance_scale: float = _setting(1.0, "Classifier-free guidance scale of the policy.")
    clip_model: str | None = _setting(
        None,
        "CLIP for CLIPSim (hub id or folder, e.g. openai/clip-vit-base-patch32). Default: a tiny "
        "random-weight CLIP, labelled as such in the report (no download).",
    )
    i3d_checkpoint: str | None = _setting(
        None,
        "Kinetics-400 I3D weights for FVD (see icreward.metrics.fvd). Default: random-weight I3D, "
        "labelled as such in the report.",
    )
    fvd_image_size: int = _setting(224, "Frame side fed to I3D (224 in published FVD).")
    feature_backbone: str = _setting(
        "efficientnet-lite0",
        "Backbone of the real-feature similarity column (mean reference/frame cosine of pretrained "
        "features); '' disables it.",
    )
    # ---------------------------------------------------------------------------------------- steps 3-4: DPO
    dpo_num_eval_images: int = _setting(3, "Last reference images whose pairs are held out for preference accuracy.")
    dpo_max_steps: int = _setting(40, "DPO optimisation steps.")
    dpo_batch_size: int = _setting(2, "Pairs per DPO step.")
    dpo_learning_rate: float = _setting(1e-3, "LoRA learning rate.")
    dpo_beta: float = _setting(100.0, "DPO temperature (about 100 for flow matching).")
    dpo_eval_steps: int = _setting(10, "Held-out preference accuracy every N steps (Fig. 5).")
    dpo_logging_steps: int = _setting(5, "Training accuracy logged every N steps (Fig. 6).")
    lora_rank: int = _setting(8, "LoRA rank (lora_alpha is set equal to it).")
    dpo_num_train_references: int = _setting(
        24, "clips: training-clip references whose best-of-N ICReward-vs-MLP picks train DPO."
    )
    # ---------------------------------------------------------------------------------------- step 5: reward feedback
    rf_max_steps: int = _setting(10, "clips: reward-feedback steps (0 skips the section).")
    rf_learning_rate: float = _setting(1e-3, "Reward-feedback LoRA learning rate.")
    rf_kl_weight: float = _setting(1.0, "KL weight of the regularised reward-feedback run.")
    rf_reward_weight: float = _setting(10.0, "Weight of the ICReward reward in the loss.")
    rf_num_inference_steps: int = _setting(6, "Sampler steps of reward feedback.")
    rf_truncated_backprop_steps: int = _setting(2, "Last K sampler steps with gradients.")
    rf_batch_size: int = _setting(2, "Videos per reward-feedback step.")
    # ---------------------------------------------------------------------------------------- run
    policy_num_threads: int = _setting(
        1, "torch CPU threads while generating and running DPO (1 is fastest for the tiny policy)."
    )
    seed: int = _setting(0, "Seed of every step (training, sampling, random selector).")

    def __post_init__(self):
        self.sources = tuple(self.sources)
        if self.reward_data not in ("generated", "photos"):
            raise ValueError(f"reward_data must be 'generated' or 'photos', got {self.reward_data!r}")
        if self.reward_cv_folds != 0 and self.reward_cv_folds < 3:
            raise ValueError(f"reward_cv_folds must be 0 (off) or >= 3, got {self.reward_cv_folds}")
        if len(self.sources) < 2:
            raise ValueError(f"need at least 2 reference images (FVD needs two videos), got {list(self.sources)}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must be distinct, got {list(self.sources)}")
        if self.reference_set not in ("clips", "photos"):
            raise ValueError(f"reference_set must be 'clips' or 'photos', got {self.reference_set!r}")
        if self.reference_set == "clips" and (self.num_references < 2 or self.num_seeds < 1):
            raise ValueError(
                f"clips: num_references must be >= 2 and num_seeds >= 1, got {self.num_references}, {self.num_seeds}"
            )
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2 for a selection to matter, got {self.num_candidates}")
        if not 0 <= self.dpo_num_eval_images < len(self.sources):
            raise ValueError(
                f"dpo_num_eval_images must be in [0, {len(self.sources) - 1}] (some images must be left for "
                f"training), got {self.dpo_num_eval_images}"
            )
        for name in ("num_frames", "height", "width", "num_inference_steps", "dpo_max_steps", "dpo_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def quick(cls, **overrides: Any) -> PipelineSettings:
        """A plumbing-only preset (about a minute on 2 CPU cores): tiny reward training, 3 images, 4 DPO steps."""
        values: dict[str, Any] = {
            "reward_image_size": 32,
            "reward_num_train_epochs": 1,
            "reward_eval_every_epochs": 1,
            "include_feature_cosine": False,
            "reward_data": "photos",
            "reward_cv_folds": 0,
            "sources": ("chelsea", "coffee", "rocket"),
            "num_candidates": 3,
            "num_inference_steps": 2,
            "fvd_image_size": 64,
            "dpo_num_eval_images": 1,
            "dpo_max_steps": 4,
            "dpo_eval_steps": 2,
            "dpo_logging_steps": 1,
            "lora_rank": 4,
            "num_references": 4,
            "num_seeds": 1,
            "independent_image_size": 64,
            "dpo_num_train_references": 4,
            "rf_max_steps": 1,
            "rf_num_inference_steps": 2,
            "rf_truncated_backprop_steps": 1,
            "rf_batch_size": 1,
        }
        values.update(overrides)
        return cls(**values)

    def comparison_settings(self):
        """The :class:`~icreward.evaluation.reward_comparison.ComparisonSettings` of step 1."""
        from .reward_comparison import ComparisonSettings

        return ComparisonSettings(
            backbone=self.reward_backbone,
            image_size=self.reward_image_size,
            num_frames=self.reward_num_frames,
            num_train_epochs=self.reward_num_train_epochs,
            learning_rate=self.reward_learning_rate,
            batch_size=self.reward_batch_size,
            eval_every_epochs=self.reward_eval_every_epochs,
            seed=self.seed,
            include_feature_cosine=self.include_feature_cosine,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in _fields()}


def _fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(PipelineSettings)
