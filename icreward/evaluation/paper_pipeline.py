"""The ICReward paper's whole pipeline as one command, on the bundled offline data, with one report.

    python -m icreward.evaluation.paper_pipeline --output_dir outputs/paper           # ~10 min on 2 CPU cores
    python -m icreward.evaluation.paper_pipeline --output_dir outputs/paper --quick   # ~1 min, plumbing only

Steps (every one reuses the library's own building blocks):

1. **Reward models** (Figure 2): :func:`~icreward.evaluation.reward_comparison.compare_reward_models` trains
   ICReward and the MLP baseline on the corpus of real generated clips
   (:func:`~icreward.data.generated_corpus.load_generated_sample`; ``--reward_data photos``: the photograph
   stress-test suite) and writes ``reward_models/`` (``mse.png``, the test table, both saved models); with
   ``reward_cv_folds`` it also cross-validates both by source clip (``reward_models/cross_validation/``).
2. **Best-of-N** (Table 1, Figure 3): the policy (by default the tiny random-weight Wan 2.1 image-to-video
   pipeline of :mod:`icreward.testing.tiny_pipelines`) samples ``num_candidates`` videos for each reference image
   (crops of scikit-image photographs, :mod:`icreward.data.photos`); :func:`~icreward.evaluation.best_of_n.run_best_of_n`
   picks one per image with ``random``, ``MLP`` and ``ICReward`` (each reward model's ``score``, the MLP's being its
   average frame reward) and evaluates the picks with CLIPSim, FVD, an ImageNet feature cosine and motion.
3. **DPO pairs**: per image, ICReward's pick is ``chosen`` and the MLP's pick ``rejected``
   (:func:`~icreward.data.pairs.pairs_from_reward_model_picks` on the same candidates and scores); images where both
   pick the same video give no pair. The last ``dpo_num_eval_images`` images are held out.
4. **DPO** (Figures 5 and 6): :class:`~icreward.trainers.VideoDPOTrainer` fine-tunes the policy with LoRA on the
   pairs; :class:`~icreward.trainers.video_dpo_trainer.PreferenceCurveCallback` plots the held-out preference
   accuracy over steps and the running average of wins.
5. **Report**: ``report.md`` and ``report.json`` in ``output_dir``, linking every plot.

What the default numbers mean: the policy has random weights, so its "videos" are structured noise, and without
network access CLIPSim uses a random-weight CLIP and FVD a random-weight I3D unless ``--clip_model`` /
``--i3d_checkpoint`` point to real weights. The run checks that every step of the paper's pipeline works end to end
and produces its tables and figures; it does not reproduce the paper's numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..testing.tiny_pipelines import TINY_POLICIES, load_policy_pipeline

logger = logging.getLogger(__name__)

__all__ = ["PipelineSettings", "main", "run_paper_pipeline", "write_pipeline_report"]

#: Best-of-N selection methods, in Table 1's order.
METHODS = ("random", "MLP", "ICReward")
_FEATURE_METRIC = "feature_cosine"
_MOTION_METRIC = "motion"


def _default_sources() -> tuple[str, ...]:
    from ..data.photos import DEFAULT_SOURCES

    return tuple(DEFAULT_SOURCES)


@dataclass
class PipelineSettings:
    """Every knob of :func:`run_paper_pipeline`; each field is a flag of the command line.

    The defaults finish in well under 15 minutes on 2 CPU cores; :meth:`quick` is a plumbing-only preset for tests.
    """

    # ---------------------------------------------------------------------------------------- step 1: reward models
    reward_backbone: str = field(
        default="efficientnet-lite0",
        metadata={"help": "Frozen backbone of both reward models (hub id, local path or efficientnet-lite0)."},
    )
    reward_image_size: int = field(default=128, metadata={"help": "Frame size fed to the reward backbone."})
    reward_num_frames: int = field(default=8, metadata={"help": "Frames sampled per video by the reward models."})
    reward_num_train_epochs: float = field(default=15, metadata={"help": "Training epochs of each reward model."})
    reward_batch_size: int = field(default=16, metadata={"help": "Training batch size of the reward models."})
    reward_learning_rate: float = field(default=5e-4, metadata={"help": "Head learning rate of both reward models."})
    reward_eval_every_epochs: int = field(
        default=2, metadata={"help": "Validation frequency of the reward models (the points of Figure 2's curves)."}
    )
    include_feature_cosine: bool = field(
        default=True, metadata={"help": "Also report the zero-shot feature-cosine baseline in Figure 2's table."}
    )
    reward_data: str = field(
        default="generated",
        metadata={
            "help": "Reward-model training data: generated (the corpus of real generated clips, "
            "icreward.data.generated_corpus) or photos (the photograph stress-test suite)."
        },
    )
    reward_max_clips: int = field(
        default=16,
        metadata={
            "help": "generated: source clips of the reward-model corpus (the library default is 48; 16 keeps the demo "
            "within its time budget). With the clip references, the policy's held-out clips are dropped from it."
        },
    )
    reward_cv_folds: int = field(
        default=0,
        metadata={
            "help": "K-fold cross-validation of both reward models by source clip (photograph) on the same data, "
            "reusing the cached backbone features; its figures go into the report. 0 (default: it costs more than "
            "the demo's time budget) disables."
        },
    )
    # ---------------------------------------------------------------------------------------- step 2: best-of-N
    policy: str = field(
        default="pretrained",
        metadata={
            "help": "Image-to-video policy: pretrained (the tiny Wan I2V policy shipped with icreward, pretrained on "
            "real clips: icreward.policy), tiny-wan2.1 (random weights) or a diffusers pipeline id/folder."
        },
    )
    reference_set: str = field(
        default="clips",
        metadata={
            "help": "Reference images: 'clips' (first frames of real generated clips shipped with the policy; "
            "best-of-N and every effect on held-out clips, fine-tuning on training clips) or 'photos' (--sources)."
        },
    )
    num_references: int = field(
        default=12, metadata={"help": "clips: held-out references for best-of-N and for every effect (one per clip)."}
    )
    num_seeds: int = field(
        default=2, metadata={"help": "clips: sampling seeds; effects are paired differences over references x seeds."}
    )
    independent_backbone: str = field(
        default="efficientnet-lite1",
        metadata={
            "help": "clips: backbone of the independent consistency metric (feature cosine of frames 1.. to the "
            "reference); a different pretrained network from the reward models' backbone."
        },
    )
    independent_image_size: int = field(default=128, metadata={"help": "Frame side fed to the independent metric."})
    sources: tuple[str, ...] = field(
        default_factory=_default_sources,
        metadata={"help": "Reference images: source ids of icreward.data.photos.PHOTO_SOURCES (one prompt each)."},
    )
    num_candidates: int = field(
        default=4, metadata={"help": "Videos sampled per reference image (the paper: 5; 4 keeps the demo short)."}
    )
    num_frames: int = field(default=9, metadata={"help": "Frames per generated video (4k + 1 for Wan)."})
    height: int = field(default=32, metadata={"help": "Height of the generated videos."})
    width: int = field(default=32, metadata={"help": "Width of the generated videos."})
    num_inference_steps: int = field(default=8, metadata={"help": "Sampling steps of the policy."})
    guidance_scale: float = field(default=1.0, metadata={"help": "Classifier-free guidance scale of the policy."})
    clip_model: str | None = field(
        default=None,
        metadata={
            "help": "CLIP for CLIPSim (hub id or folder, e.g. openai/clip-vit-base-patch32). Default: a tiny "
            "random-weight CLIP, labelled as such in the report (no download)."
        },
    )
    i3d_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Kinetics-400 I3D weights for FVD (see icreward.metrics.fvd). Default: random-weight I3D, "
            "labelled as such in the report."
        },
    )
    fvd_image_size: int = field(default=224, metadata={"help": "Frame side fed to I3D (224 in published FVD)."})
    feature_backbone: str = field(
        default="efficientnet-lite0",
        metadata={
            "help": "Backbone of the real-feature similarity column (mean reference/frame cosine of pretrained "
            "features); '' disables it."
        },
    )
    # ---------------------------------------------------------------------------------------- steps 3-4: DPO
    dpo_num_eval_images: int = field(
        default=3, metadata={"help": "Last reference images whose pairs are held out for preference accuracy."}
    )
    dpo_max_steps: int = field(default=40, metadata={"help": "DPO optimisation steps."})
    dpo_batch_size: int = field(default=2, metadata={"help": "Pairs per DPO step."})
    dpo_learning_rate: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    dpo_beta: float = field(default=100.0, metadata={"help": "DPO temperature (about 100 for flow matching)."})
    dpo_eval_steps: int = field(default=10, metadata={"help": "Held-out preference accuracy every N steps (Fig. 5)."})
    dpo_logging_steps: int = field(default=5, metadata={"help": "Training accuracy logged every N steps (Fig. 6)."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank (lora_alpha is set equal to it)."})
    dpo_num_train_references: int = field(
        default=24,
        metadata={"help": "clips: training-clip references whose best-of-N ICReward-vs-MLP picks train DPO."},
    )
    # ---------------------------------------------------------------------------------------- step 5: reward feedback
    rf_max_steps: int = field(default=10, metadata={"help": "clips: reward-feedback steps (0 skips the section)."})
    rf_learning_rate: float = field(default=1e-3, metadata={"help": "Reward-feedback LoRA learning rate."})
    rf_kl_weight: float = field(default=1.0, metadata={"help": "KL weight of the regularised reward-feedback run."})
    rf_reward_weight: float = field(default=10.0, metadata={"help": "Weight of the ICReward reward in the loss."})
    rf_num_inference_steps: int = field(default=6, metadata={"help": "Sampler steps of reward feedback."})
    rf_truncated_backprop_steps: int = field(default=2, metadata={"help": "Last K sampler steps with gradients."})
    rf_batch_size: int = field(default=2, metadata={"help": "Videos per reward-feedback step."})
    # ---------------------------------------------------------------------------------------- run
    policy_num_threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads while generating and running DPO (1 is fastest for the tiny policy)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of every step (training, sampling, random selector)."})

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


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------------------------------


#: Policy name of the pretrained tiny Wan image-to-video policy shipped with icreward (:mod:`icreward.policy`).
PRETRAINED_POLICY = "pretrained"


def load_policy(name: str, seed: int = 0) -> Any:
    """The image-to-video pipeline to sample from and fine-tune: ``"pretrained"`` (the policy shipped with icreward,
    pretrained on real clips), a tiny random-weight one by name, or a diffusers id/folder."""
    if name == PRETRAINED_POLICY:
        from ..policy import load_pretrained_policy

        return load_pretrained_policy()
    pipeline = load_policy_pipeline(name, seed=seed)
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _reference_images(sources: Sequence[str]) -> tuple[list[torch.Tensor], list[str]]:
    import numpy as np

    from ..data.photos import PHOTO_SOURCES, load_source_image

    images, prompts = [], []
    for source in sources:
        array = np.array(load_source_image(source))  # writable copy of scikit-image's data
        images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        prompts.append(f"a video of the {PHOTO_SOURCES[source].description}, the camera moves slowly")
    return images, prompts


def _clip_similarity(settings: PipelineSettings) -> tuple[Any, str]:
    from ..metrics import CLIPSimilarity

    if settings.clip_model:
        return CLIPSimilarity.from_transformers(settings.clip_model), f"CLIPSim ({settings.clip_model})"
    from transformers import CLIPConfig, CLIPModel

    from ..testing import tiny_clip_vision_config

    vision = tiny_clip_vision_config(image_size=32)
    vision.pop("model_type")
    text = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    return CLIPSimilarity(model), "CLIPSim (random-weight tiny CLIP: plumbing only)"


def _fvd(settings: PipelineSettings) -> tuple[Any, str]:
    from ..metrics import FrechetVideoDistance, InceptionI3d

    num_frames = min(16, settings.num_frames)
    if settings.i3d_checkpoint:
        metric = FrechetVideoDistance(
            checkpoint=settings.i3d_checkpoint, num_frames=num_frames, image_size=settings.fvd_image_size
        )
        return metric, f"FVD (I3D {Path(settings.i3d_checkpoint).name})"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = InceptionI3d().eval()
    metric = FrechetVideoDistance(model, num_frames=num_frames, image_size=settings.fvd_image_size)
    return metric, "FVD (random-weight I3D: plumbing only)"


def _feature_cosine(settings: PipelineSettings) -> tuple[Any, str] | None:
    if not settings.feature_backbone:
        return None
    from ..models import FeatureCosineReward

    model = FeatureCosineReward(settings.feature_backbone).eval()

    def score(reference: torch.Tensor, video: torch.Tensor) -> float:
        return float(model.score([reference], [video]).reshape(-1)[0])

    return score, f"feature cosine ({settings.feature_backbone}, pretrained weights)"


def _motion(reference: torch.Tensor, video: torch.Tensor) -> float:
    from ..metrics import dynamic_degree

    return float(dynamic_degree(video).magnitude)


# ---------------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------------


def _load_reward_models(folder: Path) -> dict[str, Any]:
    from ..models import ICRewardModel, MLPRewardModel

    return {
        "MLP": MLPRewardModel.from_pretrained(folder / "mlp").eval(),
        "ICReward": ICRewardModel.from_pretrained(folder / "icreward").eval(),
    }


def _build_pairs(report: Any, num_eval_images: int, output_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """ICReward's pick = chosen, MLP's pick = rejected, from the best-of-N candidates and their scores."""
    from ..data.dpo_pairs import load_dpo_pairs
    from ..data.pairs import pairs_from_reward_model_picks

    rows = []
    for g, sample_id in enumerate(report.sample_ids):
        for k, video in enumerate(report.video_paths[g]):
            rows.append(
                {
                    "image_index": g,
                    "sample_id": sample_id,
                    "reference": report.reference_paths[g],
                    "prompt": report.prompts[g],
                    "video": video,
                    "icreward_score": report.selector_scores["ICReward"][g][k],
                    "mlp_score": report.selector_scores["MLP"][g][k],
                }
            )
    pairs, build = pairs_from_reward_model_picks(
        rows, "icreward_score", "mlp_score", group_by="image_index", return_stats=True
    )
    if len(pairs):
        pairs = load_dpo_pairs(pairs)  # "reference" -> "image"
    held_out = set(range(len(report.sample_ids) - num_eval_images, len(report.sample_ids)))
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "pairs.jsonl", "w", encoding="utf-8") as f:
        for row in pairs:
            row = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
            row["split"] = "eval" if row["image_index"] in held_out else "train"
            f.write(json.dumps(row) + "\n")
    train = pairs.filter(lambda r: r["image_index"] not in held_out) if len(pairs) else pairs
    evaluation = pairs.filter(lambda r: r["image_index"] in held_out) if len(pairs) else pairs
    stats = {
        "num_images": len(report.sample_ids),
        "num_pairs": len(pairs),
        "num_same_pick": int(build.dropped.get("same_pick", 0)),
        "num_train_pairs": len(train),
        "num_eval_pairs": len(evaluation),
        "held_out_images": [report.sample_ids[g] for g in sorted(held_out)],
    }
    return train, evaluation, stats


def _run_dpo(pipeline: Any, train: Any, evaluation: Any, settings: PipelineSettings, output_dir: Path) -> dict:
    from peft import LoraConfig

    from ..trainers import VideoDPOConfig, VideoDPOTrainer

    has_eval = evaluation is not None and len(evaluation) > 0
    args = VideoDPOConfig(
        output_dir=str(output_dir),
        loss_type="dpo",
        beta=settings.dpo_beta,
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        precompute_latents=True,
        latent_cache_dir=str(output_dir / "_latent_cache"),
        max_steps=settings.dpo_max_steps,
        per_device_train_batch_size=settings.dpo_batch_size,
        per_device_eval_batch_size=4,
        learning_rate=settings.dpo_learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=settings.dpo_eval_steps,
        logging_steps=settings.dpo_logging_steps,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        seed=settings.seed,
    )
    start = time.perf_counter()
    trainer = VideoDPOTrainer(
        model=pipeline,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation if has_eval else None,
        peft_config=LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_rank, lora_dropout=0.0),
    )
    train_output = trainer.train()
    final = trainer.evaluate() if has_eval else {}
    trainer.save_model(str(output_dir))
    shutil.rmtree(output_dir / "_latent_cache", ignore_errors=True)
    curves_file = output_dir / "preference_curves.json"
    return {
        "steps": int(trainer.state.global_step),
        "train_loss": float(train_output.training_loss),
        "seconds": time.perf_counter() - start,
        "final_eval_preference_accuracy": final.get("eval_rewards/accuracies"),
        "final_eval_margin": final.get("eval_rewards/margins"),
        "final_eval_num_pairs": final.get("eval_num_pairs"),
        "curves": json.loads(curves_file.read_text(encoding="utf-8")) if curves_file.exists() else None,
        "lora_weights": sorted(p.name for p in output_dir.glob("*.safetensors")),
        "_adapter": trainer.adapter,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Real-clip references: best-of-N with an oracle, many ICReward-vs-MLP pairs, DPO and reward-feedback effects
# ---------------------------------------------------------------------------------------------------------------------

_INDEPENDENT_METRIC = "independent_consistency"
_CLIP_PROMPT = "a video"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    """Mean of ``a - b`` over paired observations with its standard error (``std(ddof=1) / sqrt(n)``)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal length, got {len(a)} and {len(b)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(diffs)
    if n == 0:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else None
    return {"mean": mean, "se": se, "n": n}


def _clip_reference_set(settings: PipelineSettings) -> dict[str, Any]:
    from ..policy import PRETRAINED_DIR
    from ..policy.data import load_references

    refs = load_references(PRETRAINED_DIR / "references.safetensors")
    order = refs.one_window_per_clip()
    if settings.num_references > len(order):
        raise ValueError(f"num_references={settings.num_references} but only {len(order)} held-out clips are shipped")
    windows = refs.eval_videos[order[: settings.num_references]]
    names = [refs.eval_clips[int(refs.eval_clip[i])].split("/")[-1] for i in order[: settings.num_references]]
    # Fine-tuning references: one window per training clip first (the first window of each), then the others.
    train = refs.train_references
    order_train = list(range(0, len(train), 2)) + list(range(1, len(train), 2))
    n_train = min(settings.dpo_num_train_references, len(train))
    return {
        "eval_videos": windows,
        "eval_references": [w[0].contiguous() for w in windows],
        "eval_ids": [f"heldout_{i:03d}_{n}"[:80] for i, n in enumerate(names)],
        "train_references": [train[i].contiguous() for i in order_train[:n_train]],
        "train_ids": [f"train_{i:03d}" for i in range(n_train)],
    }


def _independent_consistency(settings: PipelineSettings) -> tuple[Any, str]:
    """Feature cosine of frames ``1 ..`` to the reference with another pretrained backbone than the reward models'."""
    from ..models import FeatureCosineReward

    model = FeatureCosineReward(
        settings.independent_backbone, image_size=settings.independent_image_size, num_frames=settings.num_frames - 1
    ).eval()

    def score(reference: torch.Tensor, video: torch.Tensor) -> float:
        return float(model.score([reference], [video[1:]]).reshape(-1)[0])

    label = f"independent consistency ({settings.independent_backbone} feature cosine, frames 1..)"
    return score, label


def _mean_abs_motion(reference: torch.Tensor, video: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames, in [0, 1] pixel units (independent of every reward)."""
    v = video.float() / 255.0 if video.dtype == torch.uint8 else video.float()
    return float(v.diff(dim=0).abs().mean())


def _generate(pipeline, images, ids, settings: PipelineSettings, seed: int, output_dir: Path | None):
    from .best_of_n import generate_candidates, pipeline_generator

    generate = pipeline_generator(
        pipeline,
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
    )
    return generate_candidates(
        images,
        generate,
        prompts=[_CLIP_PROMPT] * len(images),
        num_videos=settings.num_candidates,
        seed=seed,
        sample_ids=ids,
        output_dir=output_dir,
    )


def _sample_once(pipeline, images, settings: PipelineSettings, seed: int) -> list[torch.Tensor]:
    """One uint8 video per reference, reference ``i`` with generator seed ``seed + i``."""
    from .best_of_n import pipeline_generator

    generate = pipeline_generator(
        pipeline,
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
    )
    return [generate(image, _CLIP_PROMPT, 1, seed + 7919 * i)[0] for i, image in enumerate(images)]


def _policy_effect(
    videos_after: Sequence[torch.Tensor],
    videos_before: Sequence[torch.Tensor],
    references: Sequence[torch.Tensor],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Per metric: the mean before and after and the paired difference (after - before) over the videos."""
    out: dict[str, Any] = {}
    for name, fn in metrics.items():
        after = [fn(r, v) for r, v in zip(references, videos_after)]
        before = [fn(r, v) for r, v in zip(references, videos_before)]
        out[name] = {
            "before": sum(before) / len(before),
            "after": sum(after) / len(after),
            "difference": paired_difference(after, before),
        }
    return out


def _sample_references(pipeline, references, settings: PipelineSettings) -> tuple[list, list]:
    """Every reference sampled once per seed: (videos, matching references), seeds outermost."""
    videos, refs = [], []
    for s in range(settings.num_seeds):
        videos += _sample_once(pipeline, references, settings, seed=settings.seed + 100_003 * (s + 1))
        refs += list(references)
    return videos, refs


def _run_clip_best_of_n(
    pipeline, reward_models, settings: PipelineSettings, clips: dict[str, Any], output_dir: Path
) -> dict[str, Any]:
    """Best-of-N over the policy's candidates on held-out references, once per seed; random / MLP / ICReward /
    oracle (the candidate with the highest independent consistency: the upper bound of any selector)."""
    from .best_of_n import RandomSelector, RewardModelSelector, run_best_of_n

    independent, independent_label = _independent_consistency(settings)
    metrics = {_INDEPENDENT_METRIC: independent, _MOTION_METRIC: _mean_abs_motion}
    labels = {
        _INDEPENDENT_METRIC: independent_label,
        _MOTION_METRIC: "motion (mean absolute frame change, [0, 1] pixels)",
    }
    reports = []
    for s in range(settings.num_seeds):
        seed = settings.seed + 1000 * s
        groups = _generate(
            pipeline,
            clips["eval_references"],
            clips["eval_ids"],
            settings,
            seed,
            output_dir / f"seed_{s}" / "candidates",
        )
        for group in groups:
            group.labels = [independent(group.load_reference(), v) for v in group.load_videos()]
        selectors = {
            "random": RandomSelector(seed),
            "MLP": RewardModelSelector(reward_models["MLP"]),
            "ICReward": RewardModelSelector(reward_models["ICReward"]),
            "oracle": "oracle",
        }
        reports.append(
            run_best_of_n(
                groups,
                selectors,
                metrics=metrics,
                label_name="oracle_label",
                seed=seed,
                output_dir=output_dir / f"seed_{s}",
                progress=False,
            )
        )
    methods = list(reports[0].methods)
    per_method = {
        m: {k: [x for r in reports for x in r.per_sample(k)[m]] for k in (_INDEPENDENT_METRIC, _MOTION_METRIC)}
        for m in methods
    }
    comparisons = {}
    for a, b in (("ICReward", "random"), ("ICReward", "MLP"), ("MLP", "random"), ("oracle", "random")):
        comparisons[f"{a} - {b}"] = {
            k: paired_difference(per_method[a][k], per_method[b][k]) for k in (_INDEPENDENT_METRIC, _MOTION_METRIC)
        }
    table = {m: {k: sum(v) / len(v) for k, v in per_method[m].items()} for m in methods}
    per_seed = {m: [r.summary[m].get(_INDEPENDENT_METRIC) for r in reports] for m in methods}
    _best_of_n_sheet(reports[0], output_dir / "contact_sheet.png")
    return {
        "reports": reports,
        "methods": methods,
        "metric_labels": labels,
        "table": table,
        "per_seed_independent": per_seed,
        "paired_differences": comparisons,
        "agreement": reports[0].agreement(),
        "num_references": len(clips["eval_references"]),
        "num_seeds": settings.num_seeds,
        "contact_sheet": "best_of_n/contact_sheet.png",
    }


def _best_of_n_sheet(report, path: Path, max_rows: int = 6) -> None:
    """Rows: per reference, the random, MLP, ICReward and oracle picks (frames left to right)."""
    from ..policy.evaluate import save_contact_sheet
    from .best_of_n import _as_video_tensor

    rows, labels = [], []
    for g in range(min(max_rows, len(report.sample_ids))):
        for method in report.methods:
            k = report.selections[method][g]
            rows.append(_as_video_tensor(report.video_paths[g][k]))
            labels.append(f"{g} {method}")
    save_contact_sheet(rows, path, labels=labels)


def _pairs_rows(report, split: str) -> list[dict[str, Any]]:
    rows = []
    for g, sample_id in enumerate(report.sample_ids):
        for k, video in enumerate(report.video_paths[g]):
            rows.append(
                {
                    "image_index": f"{split}:{sample_id}",
                    "sample_id": sample_id,
                    "reference": report.reference_paths[g],
                    "prompt": report.prompts[g],
                    "video": video,
                    "icreward_score": report.selector_scores["ICReward"][g][k],
                    "mlp_score": report.selector_scores["MLP"][g][k],
                    "split": split,
                }
            )
    return rows


def _build_clip_pairs(train_report, eval_reports, output_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """ICReward pick = chosen, MLP pick = rejected: training pairs from training-clip references, held-out pairs
    from the best-of-N runs on held-out references (every seed)."""
    from ..data.dpo_pairs import load_dpo_pairs
    from ..data.pairs import pairs_from_reward_model_picks

    out = {}
    same = {}
    for split, reports in (("train", [train_report]), ("eval", eval_reports)):
        rows = []
        for s, report in enumerate(reports):
            rows += [dict(r, image_index=f"{r['image_index']}:{s}") for r in _pairs_rows(report, split)]
        pairs, build = pairs_from_reward_model_picks(
            rows, "icreward_score", "mlp_score", group_by="image_index", return_stats=True
        )
        out[split] = load_dpo_pairs(pairs) if len(pairs) else pairs
        same[split] = int(build.dropped.get("same_pick", 0))
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "pairs.jsonl", "w", encoding="utf-8") as f:
        for split in ("train", "eval"):
            for row in out[split]:
                row = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
                row["split"] = split
                f.write(json.dumps(row) + "\n")
    stats = {
        "num_images": len(train_report.sample_ids) + sum(len(r.sample_ids) for r in eval_reports),
        "num_pairs": len(out["train"]) + len(out["eval"]),
        "num_same_pick": same["train"] + same["eval"],
        "num_train_pairs": len(out["train"]),
        "num_eval_pairs": len(out["eval"]),
        "held_out_images": sorted({s for r in eval_reports for s in r.sample_ids}),
    }
    return out["train"], out["eval"], stats


def _run_reward_feedback(
    settings: PipelineSettings, reward_model: Any, references: list[torch.Tensor], kl_weight: float, output_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """A short RewardFeedbackTrainer run (LoRA) on a fresh copy of the policy, optimising the learned ICReward."""
    from peft import LoraConfig
    from PIL import Image

    from ..rewards.combined import RewardModelReward
    from ..trainers import RewardFeedbackConfig, RewardFeedbackTrainer

    data_dir = output_dir / "references"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ref in enumerate(references):
        path = data_dir / f"{i:03d}.png"
        Image.fromarray(ref.permute(1, 2, 0).numpy()).save(path)
        rows.append({"image": str(path), "prompt": _CLIP_PROMPT})
    import datasets

    pipeline = load_policy(settings.policy, seed=settings.seed)
    args = RewardFeedbackConfig(
        output_dir=str(output_dir),
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.rf_num_inference_steps,
        truncated_backprop_steps=settings.rf_truncated_backprop_steps,
        kl_weight=kl_weight,
        reward_weights=[settings.rf_reward_weight],
        guidance_scale=1.0,
        learning_rate=settings.rf_learning_rate,
        max_steps=settings.rf_max_steps,
        per_device_train_batch_size=settings.rf_batch_size,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
        seed=settings.seed,
    )
    start = time.perf_counter()
    trainer = RewardFeedbackTrainer(
        model=pipeline,
        reward_funcs={"icreward": RewardModelReward(reward_model)},
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        peft_config=LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_rank, lora_dropout=0.0),
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return trainer, {
        "kl_weight": kl_weight,
        "steps": int(trainer.state.global_step),
        "seconds": time.perf_counter() - start,
        "train_reward_first": _first_key(logs[:1], "rewards/icreward"),
        "train_reward_last": _first_key(logs[-1:], "rewards/icreward"),
        "log_history": logs,
    }


def _first_key(logs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    for log in logs:
        if isinstance(log.get(key), (int, float)):
            return float(log[key])
    return None


def _effect_metrics(settings: PipelineSettings, reward_models: Mapping[str, Any]) -> tuple[dict, dict]:
    """Metrics for policy effects: independent consistency, motion, and ICReward's own score (the optimised reward,
    reported to show whether it rose; never used to judge consistency on its own)."""
    from .best_of_n import as_score_fn

    independent, label = _independent_consistency(settings)
    icreward_score = as_score_fn(reward_models["ICReward"])
    metrics = {
        _INDEPENDENT_METRIC: independent,
        _MOTION_METRIC: _mean_abs_motion,
        "icreward_score": lambda r, v: float(icreward_score(r, v)),
    }
    labels = {
        _INDEPENDENT_METRIC: label,
        _MOTION_METRIC: "motion (mean absolute frame change)",
        "icreward_score": "ICReward score (the reward DPO pairs / reward feedback optimise)",
    }
    return metrics, labels


def _run_clip_sections(
    pipeline, reward_models, settings: PipelineSettings, output_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """Steps 2-5 on real-clip references (see the module docstring)."""
    from .best_of_n import RewardModelSelector, run_best_of_n

    clips = _clip_reference_set(settings)
    t = time.perf_counter()
    with _torch_threads(settings.policy_num_threads):
        bon = _run_clip_best_of_n(pipeline, reward_models, settings, clips, output_dir / "best_of_n")
    timings["best_of_n"] = time.perf_counter() - t
    timings["generation"] = 0.0
    logger.info(
        "step 2/5: best-of-N on %d held-out references x %d seeds in %.1f s",
        bon["num_references"],
        settings.num_seeds,
        timings["best_of_n"],
    )

    # 3. Pairs: training-clip references (ICReward pick vs MLP pick), held-out pairs from the best-of-N runs.
    t = time.perf_counter()
    dpo_dir = output_dir / "dpo"
    with _torch_threads(settings.policy_num_threads):
        train_groups = _generate(
            pipeline,
            clips["train_references"],
            clips["train_ids"],
            settings,
            settings.seed,
            dpo_dir / "train_candidates",
        )
        train_report = run_best_of_n(
            train_groups,
            {
                "MLP": RewardModelSelector(reward_models["MLP"]),
                "ICReward": RewardModelSelector(reward_models["ICReward"]),
            },
            seed=settings.seed,
            progress=False,
        )
    train, evaluation, pair_stats = _build_clip_pairs(train_report, bon["reports"], dpo_dir)
    timings["dpo_pairs"] = time.perf_counter() - t

    # 4. DPO and its effect on held-out references.
    t = time.perf_counter()
    effect_metrics, effect_labels = _effect_metrics(settings, reward_models)
    references = clips["eval_references"]
    if pair_stats["num_train_pairs"] == 0:
        dpo: dict[str, Any] = {"skipped": "ICReward and the MLP picked the same video for every training reference"}
    else:
        with _torch_threads(settings.policy_num_threads):
            dpo = _run_dpo(pipeline, train, evaluation, settings, dpo_dir)
            accuracy, n = dpo.get("final_eval_preference_accuracy"), dpo.get("final_eval_num_pairs")
            if accuracy is not None and n:
                from .human_study import wilson_interval

                dpo["eval_preference_ci95"] = list(wilson_interval(int(round(accuracy * n)), int(n)))
            adapter = dpo.pop("_adapter")
            after, refs = _sample_references(pipeline, references, settings)
            with adapter.disable_lora():
                before, _ = _sample_references(pipeline, references, settings)
            dpo["effect"] = _policy_effect(after, before, refs, effect_metrics)
            _effect_sheet(refs, before, after, output_dir / "dpo" / "contact_sheet.png", ("base", "DPO"))
    timings["dpo"] = time.perf_counter() - t

    # 5. Reward feedback with the learned ICReward, with and without the KL term.
    t = time.perf_counter()
    rf: dict[str, Any] = {}
    if settings.rf_max_steps > 0:
        rf_refs = clips["train_references"]
        with _torch_threads(settings.policy_num_threads):
            base = load_policy(settings.policy, seed=settings.seed)
            before, refs = _sample_references(base, references, settings)
            for name, kl in (("with_kl", settings.rf_kl_weight), ("without_kl", 0.0)):
                trainer, info = _run_reward_feedback(
                    settings, reward_models["ICReward"], rf_refs, kl, output_dir / "reward_feedback" / name
                )
                after, _ = _sample_references(trainer.adapter.pipeline, references, settings)
                info["effect"] = _policy_effect(after, before, refs, effect_metrics)
                _effect_sheet(
                    refs, before, after, output_dir / "reward_feedback" / f"contact_sheet_{name}.png", ("base", name)
                )
                rf[name] = info
    timings["reward_feedback"] = time.perf_counter() - t
    return {
        "clips": {
            "best_of_n": {k: v for k, v in bon.items() if k != "reports"},
            "effect_metric_labels": effect_labels,
            "reward_feedback": rf,
        },
        "report": bon["reports"][0],
        "metric_labels": bon["metric_labels"],
        "dpo_pairs": pair_stats,
        "dpo": dpo,
    }


def _effect_sheet(refs, before, after, path: Path, names: tuple[str, str], max_rows: int = 6) -> None:
    from ..policy.evaluate import save_contact_sheet

    rows, labels = [], []
    for i in range(min(max_rows, len(refs))):
        rows += [before[i], after[i]]
        labels += [f"{i} {names[0]}", f"{i} {names[1]}"]
    save_contact_sheet(rows, path, labels=labels)


def _run_photo_sections(
    pipeline, reward_models, settings: PipelineSettings, output_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """Steps 2-4 on the bundled photographs (``reference_set="photos"``): one seed, no oracle, no reward feedback."""
    from .best_of_n import RandomSelector, RewardModelSelector, generate_candidates, pipeline_generator, run_best_of_n

    # 2. Best-of-N with the policy (Table 1, Figure 3).
    t = time.perf_counter()
    images, prompts = _reference_images(settings.sources)
    bon_dir = output_dir / "best_of_n"
    with _torch_threads(settings.policy_num_threads):
        generate = pipeline_generator(
            pipeline,
            num_frames=settings.num_frames,
            height=settings.height,
            width=settings.width,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
        )
        candidates = generate_candidates(
            images,
            generate,
            prompts=prompts,
            num_videos=settings.num_candidates,
            seed=settings.seed,
            sample_ids=list(settings.sources),
            output_dir=bon_dir / "candidates",
        )
    timings["generation"] = time.perf_counter() - t
    t = time.perf_counter()
    clipsim, clipsim_label = _clip_similarity(settings)
    fvd, fvd_label = _fvd(settings)
    metrics: dict[str, Any] = {_MOTION_METRIC: _motion}
    labels = {"clipsim": clipsim_label, "fvd": fvd_label, _MOTION_METRIC: "motion (dynamic-degree magnitude, px)"}
    feature = _feature_cosine(settings)
    if feature is not None:
        metrics[_FEATURE_METRIC], labels[_FEATURE_METRIC] = feature
    selectors = {
        "random": RandomSelector(settings.seed),
        "MLP": RewardModelSelector(reward_models["MLP"]),
        "ICReward": RewardModelSelector(reward_models["ICReward"]),
    }
    report = run_best_of_n(
        candidates, selectors, clipsim=clipsim, fvd=fvd, metrics=metrics, seed=settings.seed, output_dir=bon_dir
    )
    timings["best_of_n"] = time.perf_counter() - t
    logger.info(
        "step 2/4: best-of-N done (%.1f s generation, %.1f s evaluation)", timings["generation"], timings["best_of_n"]
    )

    # 3. ICReward-vs-MLP pairs; 4. DPO (Figures 5 and 6).
    t = time.perf_counter()
    dpo_dir = output_dir / "dpo"
    train, evaluation, pair_stats = _build_pairs(report, settings.dpo_num_eval_images, dpo_dir)
    if pair_stats["num_train_pairs"] == 0:
        reason = "ICReward and the MLP picked the same video for every training image: no DPO pair"
        logger.warning("step 4/4 skipped: %s", reason)
        dpo: dict[str, Any] = {"skipped": reason}
    else:
        with _torch_threads(settings.policy_num_threads):
            dpo = _run_dpo(pipeline, train, evaluation, settings, dpo_dir)
        dpo.pop("_adapter", None)
    timings["dpo"] = time.perf_counter() - t
    return {"report": report, "metric_labels": labels, "dpo_pairs": pair_stats, "dpo": dpo, "clips": None}


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def _without_policy_held_out_clips(dataset: Any) -> Any:
    """The corpus without the rows whose source or donor clip is one of the policy's held-out clips: the effects are
    measured on those clips' references, so neither reward model may have trained on them."""
    from ..data.generated_corpus import clip_of_source_id
    from ..policy.data import is_held_out_name

    def held_out(source_id: str) -> bool:  # "" (no donor) is no clip
        return bool(source_id) and is_held_out_name(*clip_of_source_id(source_id))

    kept = dataset.filter(lambda row: not held_out(row["source_id"]) and not held_out(row["donor"] or ""))
    for split, rows in kept.items():
        if len(rows) == 0:
            raise ValueError(
                f"no {split} rows left after dropping the policy's held-out clips; raise reward_max_clips"
            )
    dropped = {split: len(dataset[split]) - len(kept[split]) for split in dataset}
    logger.info("reward corpus: dropped the policy's held-out clips (%s rows per split)", dropped)
    return kept


def run_paper_pipeline(
    output_dir: str | os.PathLike,
    settings: PipelineSettings | None = None,
    *,
    dataset: Any = None,
) -> dict[str, Any]:
    """Run the paper's pipeline (reward models, best-of-N, DPO pairs, DPO) and write one report.

    Args:
        output_dir: receives ``report.md``, ``report.json`` and the step folders ``reward_models/`` (Figure 2 and
            both saved models), ``best_of_n/`` (candidates, Table 1, Figure 3) and ``dpo/`` (pairs, LoRA weights,
            Figures 5 and 6).
        settings: a :class:`PipelineSettings` (default: the CPU defaults).
        dataset: a ``DatasetDict`` with ``train``/``validation``/``test`` reward-training splits (e.g. a
            :func:`~icreward.data.stress_suite.build_stress_suite` build); default: the bundled sample
            (:func:`~icreward.data.stress_suite.load_sample_dataset`).

    Returns:
        The content of ``report.json``.
    """
    from .reward_comparison import compare_reward_models

    settings = settings or PipelineSettings()
    dataset_given = dataset is not None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Reward models (Figure 2).
    t = time.perf_counter()
    if dataset is None and settings.reward_data == "generated":
        from ..data.generated_corpus import load_generated_sample

        dataset = load_generated_sample(max_clips=settings.reward_max_clips)
        if settings.reference_set == "clips":
            dataset = _without_policy_held_out_clips(dataset)
    elif dataset is None:
        from ..data.stress_suite import load_sample_dataset

        dataset = load_sample_dataset()
    reward_dir = output_dir / "reward_models"
    from ..models.feature_cache import default_feature_store  # on disk unless ICREWARD_FEATURE_CACHE=0

    feature_store = default_feature_store()  # backbone encodings shared by both models, the folds and later runs
    comparison = compare_reward_models(
        dataset, reward_dir, settings.comparison_settings(), feature_store=feature_store
    )
    cross_validation = None
    if settings.reward_cv_folds:
        from .reward_comparison import cross_validate_reward_models

        cross_validation = cross_validate_reward_models(
            dataset,
            reward_dir / "cross_validation",
            settings.comparison_settings(),
            num_folds=settings.reward_cv_folds,
            feature_store=feature_store,
        )
    timings["reward_models"] = time.perf_counter() - t
    logger.info("step 1/4: reward models trained in %.1f s", timings["reward_models"])

    # 2-5. Best-of-N (Table 1, Figure 3), ICReward-vs-MLP pairs, DPO (Figures 5 and 6), reward feedback.
    reward_models = _load_reward_models(reward_dir)
    with _torch_threads(settings.policy_num_threads):
        pipeline = load_policy(settings.policy, seed=settings.seed)
    if settings.reference_set == "clips":
        sections = _run_clip_sections(pipeline, reward_models, settings, output_dir, timings)
    else:
        sections = _run_photo_sections(pipeline, reward_models, settings, output_dir, timings)
    report, labels, pair_stats, dpo = (
        sections["report"],
        sections["metric_labels"],
        sections["dpo_pairs"],
        sections["dpo"],
    )
    timings["total"] = time.perf_counter() - start

    results = {
        "settings": settings.to_dict(),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "timings_seconds": timings,
        "reward_models": {
            "dataset": comparison["dataset"],
            "data": "custom" if dataset_given else settings.reward_data,
            "cross_validation": None
            if cross_validation is None
            else {k: cross_validation[k] for k in ("group_column", "folds", "summary")},
            "test": {name: res["test"] for name, res in comparison["models"].items()},
            "validation_history": {
                name: res.get("validation_history", []) for name, res in comparison["models"].items()
            },
        },
        "best_of_n": {
            "methods": report.methods,
            "metric_labels": labels,
            "table1": report.summary,
            "all_candidates": report.all_candidates,
            "higher_is_better": report.higher_is_better,
            "agreement": report.agreement(),
            "per_sample": {m: report.per_sample(m) for m in report.candidate_metrics},
            "selections": report.selections,
            "sample_ids": report.sample_ids,
            "fvd_reference": report.settings.get("fvd_reference"),
        },
        "dpo_pairs": pair_stats,
        "dpo": dpo,
        "clips": sections.get("clips"),
    }
    results = _json_safe(results)
    (output_dir / "report.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_pipeline_report(results, output_dir)
    logger.info("paper pipeline finished in %.1f s; report: %s", timings["total"], output_dir / "report.md")
    return results


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(n: Any, noun: str) -> str:
    n = int(n or 0)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


#: What the reward models were trained and tested on, per ``reward_data``: (training data, held-out test videos).
_REWARD_DATA = {
    "generated": ("the corpus of real generated clips", "held-out source clips"),
    "photos": ("the photograph stress-test suite", "held-out source photographs"),
    "custom": ("the given dataset", "its test split"),
}


def write_pipeline_report(results: Mapping[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write ``report.md`` (Figure 2, Table 1, Figure 3, Figures 5 and 6) from :func:`run_paper_pipeline`'s results."""
    output_dir = Path(output_dir)
    settings = results["settings"]
    reward = results["reward_models"]
    bon = results["best_of_n"]
    pairs = results["dpo_pairs"]
    dpo = results["dpo"]
    labels = bon["metric_labels"]
    lines = [
        "# ICReward paper pipeline",
        "",
        f"One run of `python -m icreward.evaluation.paper_pipeline` in {results['timings_seconds']['total']:.0f} s "
        f"({results['environment']['device']}, torch {results['environment']['torch']}). Steps: reward models "
        f"{results['timings_seconds']['reward_models']:.0f} s, candidate generation "
        f"{results['timings_seconds']['generation']:.0f} s, best-of-N evaluation "
        f"{results['timings_seconds']['best_of_n']:.0f} s, "
        + (
            f"DPO pairs {results['timings_seconds']['dpo_pairs']:.0f} s, "
            if "dpo_pairs" in results["timings_seconds"]
            else ""
        )
        + f"DPO {results['timings_seconds']['dpo']:.0f} s"
        + (
            f", reward feedback {results['timings_seconds']['reward_feedback']:.0f} s. "
            if "reward_feedback" in results["timings_seconds"]
            else ". "
        )
        + "Settings and every number below are in `report.json`.",
        "",
        "## What these numbers mean",
        "",
        f"The policy is `{settings['policy']}`."
        + (
            " It has random weights, so its videos are structured noise: the best-of-N and DPO sections check that "
            "the paper's pipeline runs end to end and produces its tables and figures (plumbing), not how good "
            "ICReward is."
            if settings["policy"] in TINY_POLICIES
            else ""
        )
        + (
            " It is the tiny Wan image-to-video policy shipped with icreward, pretrained on real generated clips "
            "(`icreward.policy`; how close its 32x32 samples come to real clips is measured in docs/policy.md and "
            "its model card: the policy shipped now is under-trained, its frames after the first are block noise "
            "over the reference, no more reference-consistent than a random-weight policy's, so every effect "
            "below is an effect on that policy). "
            "References are first frames of real clips; every effect is measured on clips held out from the "
            "policy's pretraining and from fine-tuning (the reward models' corpus of generated clips is built from "
            "the same media wheels and does include them) with metrics the selecting/optimised reward was not "
            "trained on."
            if settings["policy"] == PRETRAINED_POLICY
            else ""
        )
        + " Metrics labelled *random-weight* use untrained networks because no weights can be downloaded offline; "
        "pass `--clip_model` (e.g. `openai/clip-vit-base-patch32`) and `--i3d_checkpoint` (Kinetics-400 I3D, see "
        "`icreward.metrics.fvd`) for real CLIPSim and FVD. The feature-cosine column uses real pretrained "
        "(ImageNet) weights, but on noise-like videos it too mostly measures noise. FVD from a handful of videos is "
        "strongly biased and only comparable between the methods of one table. Figure 2 is the one section that "
        f"measures the reward models themselves: both are trained on {_REWARD_DATA[reward.get('data', 'photos')][0]} "
        f"and tested on videos of {_REWARD_DATA[reward.get('data', 'photos')][1]}.",
        "",
        "## Figure 2: reward-model training",
        "",
        f"Both models on {_REWARD_DATA[reward.get('data', 'photos')][0]} ({reward['dataset']}); test = "
        f"{_REWARD_DATA[reward.get('data', 'photos')][1]}.",
        "",
        "![validation and test MSE](reward_models/mse.png)",
        "",
    ]
    columns = ["mse", "mae", "spearman", "pairwise_accuracy", "accuracy/motion_decoupled"]
    names = {"icreward": "ICReward", "mlp": "MLP baseline", "feature_cosine": "feature cosine (zero-shot)"}
    lines += ["| model | " + " | ".join(f"test {c}" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, test in reward["test"].items():
        lines.append(f"| {names.get(name, name)} | " + " | ".join(_fmt(test.get(c)) for c in columns) + " |")
    lines += [
        "",
        "More plots and per-perturbation accuracies: [reward_models/report.md](reward_models/report.md); the trained "
        "models are in `reward_models/icreward/` and `reward_models/mlp/`.",
        "",
    ]
    if reward.get("cross_validation"):
        from .reward_comparison import cross_validation_markdown

        lines += cross_validation_markdown(reward["cross_validation"], heading="###")
        lines += [
            "Full report: [reward_models/cross_validation/cv_report.md](reward_models/cross_validation/cv_report.md).",
            "",
        ]
    if results.get("clips"):
        lines += _clip_report_lines(results)
        path = output_dir / "report.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path
    lines += [
        "## Table 1: best-of-N selection",
        "",
        f"{len(bon['sample_ids'])} reference images x {settings['num_candidates']} candidates from the policy "
        f"({settings['num_frames']} frames, {settings['width']}x{settings['height']}). Each method picks one video "
        "per image: `random` (seeded), `MLP` and `ICReward` (the highest reward-model score; the MLP ranks by its "
        f"average frame reward). FVD reference set: {bon['fvd_reference']}.",
        "",
    ]
    metrics = [m for m in ("clipsim", "fvd", _FEATURE_METRIC, _MOTION_METRIC) if m in labels]
    metrics = [m for m in metrics if any(m in bon["table1"][method] for method in bon["methods"])]
    arrows = {m: "↑" if bon["higher_is_better"].get(m, True) else "↓" for m in metrics}
    lines += [
        "| method | " + " | ".join(f"{labels[m]} {arrows[m]}" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for method in bon["methods"]:
        lines.append(f"| {method} | " + " | ".join(_fmt(bon["table1"][method].get(m)) for m in metrics) + " |")
    lines.append("| *all candidates* | " + " | ".join(_fmt(bon["all_candidates"].get(m)) for m in metrics) + " |")
    agreement = bon["agreement"]
    lines += [
        "",
        f"ICReward and the MLP pick the same video on {agreement['ICReward']['MLP']:.0%} of the images. Per-image "
        "picks: [best_of_n/report.md](best_of_n/report.md); candidates: `best_of_n/candidates/`.",
        "",
        "## Figure 3: per-image CLIPSim of the picks",
        "",
        f"{labels['clipsim']} of each method's pick, per reference image.",
        "",
        "![per-sample CLIPSim](best_of_n/per_sample_clipsim.png)",
        "",
    ]
    if _FEATURE_METRIC in labels:
        lines += [f"The same with the {labels[_FEATURE_METRIC]}:", ""]
        lines += [f"![per-sample feature cosine](best_of_n/per_sample_{_FEATURE_METRIC}.png)", ""]
    lines += [
        "## DPO: ICReward-vs-MLP pairs",
        "",
        f"Per image, ICReward's pick is *chosen* and the MLP's pick *rejected*: {pairs['num_pairs']} pairs from "
        f"{pairs['num_images']} images ({pairs['num_same_pick']} gave none because both picked the same "
        f"video); {pairs['num_train_pairs']} for training, {pairs['num_eval_pairs']} held out (images "
        f"{', '.join(pairs['held_out_images']) or 'none'}). Pairs: `dpo/pairs.jsonl`.",
        "",
    ]
    if "skipped" in dpo:
        lines += [f"DPO was skipped: {dpo['skipped']}.", ""]
    else:
        accuracy = dpo.get("final_eval_preference_accuracy")
        lines += [
            f"LoRA (rank {settings['lora_rank']}) Flow-DPO on the policy for {dpo['steps']} steps in "
            f"{dpo['seconds']:.0f} s (mean training loss {dpo['train_loss']:.4f}); weights: "
            + ", ".join(f"`dpo/{name}`" for name in dpo["lora_weights"])
            + ".",
            "",
            "**Final held-out preference accuracy**: "
            + (
                f"{accuracy:.3f} on {_count(dpo.get('final_eval_num_pairs'), 'pair')} (the fraction of held-out pairs whose "
                "ICReward pick the fine-tuned policy prefers over the MLP pick, relative to the frozen reference)."
                if accuracy is not None
                else "n/a (no held-out pair)."
            ),
            "",
            "### Figure 5: preference accuracy over steps",
            "",
            "![preference accuracy](dpo/preference_accuracy.png)",
            "",
            "### Figure 6: running average of wins",
            "",
            "![running win rate](dpo/running_win_rate.png)",
            "",
        ]
    path = output_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _pm(diff: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not diff or diff.get("mean") is None:
        return "n/a"
    se = diff.get("se")
    return f"{diff['mean']:+.{digits}f} ± {se:.{digits}f}" if se is not None else f"{diff['mean']:+.{digits}f}"


def _beyond_noise(diff: Mapping[str, Any] | None) -> str:
    """'yes' when the paired difference is more than two standard errors above zero."""
    if not diff or diff.get("mean") is None or diff.get("se") is None:
        return "n/a"
    if diff["mean"] > 2 * diff["se"]:
        return "yes (> 2 SE above 0)"
    if diff["mean"] < -2 * diff["se"]:
        return "no: it is > 2 SE below 0"
    return "no (within 2 SE of 0)"


def _clip_report_lines(results: Mapping[str, Any]) -> list[str]:
    """Best-of-N, pairs, DPO and reward-feedback sections of the real-clip run (``reference_set="clips"``)."""
    settings = results["settings"]
    clips = results["clips"]
    bon = clips["best_of_n"]
    labels = bon["metric_labels"]
    pairs = results["dpo_pairs"]
    dpo = results["dpo"]
    ind, mot = _INDEPENDENT_METRIC, _MOTION_METRIC
    lines = [
        "## Table 1: best-of-N selection on held-out real-clip references",
        "",
        f"{bon['num_references']} held-out references (first frames of real clips the policy never saw; the reward "
        "models' corpus includes them) x "
        f"{bon['num_seeds']} seeds x {settings['num_candidates']} candidates from the policy ({settings['num_frames']} "
        f"frames, {settings['width']}x{settings['height']}, {settings['num_inference_steps']} steps). Each method "
        "picks one candidate per reference and seed: `random` (seeded), `MLP` and `ICReward` (highest reward-model "
        "score), `oracle` (highest independent consistency: the ceiling of any selector on that metric). "
        f"Independent metric: {labels[ind]}; motion: {labels[mot]}.",
        "",
        f"| method | {labels[ind]} ↑ | motion |",
        "|---|---|---|",
    ]
    for m in bon["methods"]:
        lines.append(f"| {m} | {_fmt(bon['table'][m].get(ind))} | {_fmt(bon['table'][m].get(mot))} |")
    lines += [
        "",
        "Paired differences over references x seeds (mean ± standard error; the same candidates for every method):",
        "",
        "| comparison | independent consistency | beyond seed noise? | motion |",
        "|---|---|---|---|",
    ]
    for name, diff in bon["paired_differences"].items():
        lines.append(f"| {name} | {_pm(diff[ind])} | {_beyond_noise(diff[ind])} | {_pm(diff[mot])} |")
    per_seed = ", ".join(
        f"{m}: " + "/".join(_fmt(v, 3) for v in vals) for m, vals in bon["per_seed_independent"].items()
    )
    lines += [
        "",
        f"Per-seed means of the independent consistency ({per_seed}). ICReward and the MLP pick the same video on "
        f"{bon['agreement']['ICReward']['MLP']:.0%} of the references (seed 0).",
        "",
        "![best-of-N picks](best_of_n/contact_sheet.png)",
        "",
        "Rows: per reference, the random, MLP, ICReward and oracle picks (frames left to right). Per-seed reports: "
        "`best_of_n/seed_*/report.md`.",
        "",
        "## DPO: ICReward-vs-MLP pairs",
        "",
        f"Per reference, ICReward's pick is *chosen* and the MLP's pick *rejected*: {pairs['num_train_pairs']} training "
        f"pairs from {settings['dpo_num_train_references']} training-clip references, {pairs['num_eval_pairs']} "
        f"held-out pairs from the best-of-N runs on held-out references ({pairs['num_same_pick']} references x seeds "
        "gave no pair because both picked the same video). Pairs: `dpo/pairs.jsonl`.",
        "",
    ]
    if "skipped" in dpo:
        lines += [f"DPO was skipped: {dpo['skipped']}.", ""]
    else:
        accuracy, ci = dpo.get("final_eval_preference_accuracy"), dpo.get("eval_preference_ci95")
        ci_text = f" (95% Wilson interval {ci[0]:.3f} to {ci[1]:.3f}; " if ci else " ("
        excludes = ci is not None and (ci[0] > 0.5 or ci[1] < 0.5)
        lines += [
            f"LoRA (rank {settings['lora_rank']}) Flow-DPO for {dpo['steps']} steps in {dpo['seconds']:.0f} s (mean "
            f"training loss {dpo['train_loss']:.4f}). **Held-out preference accuracy**: "
            + (
                f"{accuracy:.3f} on {_count(dpo.get('final_eval_num_pairs'), 'pair')}{ci_text}"
                + ("excludes 0.5)." if excludes else "does not exclude 0.5).")
                if accuracy is not None
                else "n/a (no held-out pair)."
            ),
            "",
            "![preference accuracy](dpo/preference_accuracy.png) ![running win rate](dpo/running_win_rate.png)",
            "",
        ]
        lines += _effect_table("DPO policy vs the pretrained policy", dpo.get("effect"), clips, settings)
        lines += ["![base vs DPO samples](dpo/contact_sheet.png)", ""]
    rf = clips.get("reward_feedback") or {}
    lines += ["## Reward feedback with the learned ICReward, with and without the KL term", ""]
    if not rf:
        lines += ["Skipped (`rf_max_steps` = 0).", ""]
    for name, info in rf.items():
        lines += [
            f"### {name.replace('_', ' ')} (kl_weight {info['kl_weight']})",
            "",
            f"{info['steps']} LoRA steps in {info['seconds']:.0f} s on training-clip references, sampling "
            f"{settings['rf_num_inference_steps']} steps with gradients through the last "
            f"{settings['rf_truncated_backprop_steps']}; training reward (ICReward) first step "
            f"{_fmt(info.get('train_reward_first'))}, last step {_fmt(info.get('train_reward_last'))}.",
            "",
        ]
        lines += _effect_table(
            f"reward feedback ({name.replace('_', ' ')}) vs the pretrained policy", info.get("effect"), clips, settings
        )
        lines += [f"![base vs {name}](reward_feedback/contact_sheet_{name}.png)", ""]
    if rf:
        lines += [
            "The face reward is not used here: at 32x32 pixels no reference has a face large enough to detect.",
            "",
        ]
    return lines


def _effect_table(title: str, effect: Mapping[str, Any] | None, clips: Mapping[str, Any], settings) -> list[str]:
    if not effect:
        return []
    labels = clips["effect_metric_labels"]
    lines = [
        f"Effect of the {title} on {settings['num_references']} held-out references x {settings['num_seeds']} seeds "
        "(same seeds before and after; paired difference after - before, mean ± standard error):",
        "",
        "| metric | before | after | difference | beyond seed noise? |",
        "|---|---|---|---|---|",
    ]
    for name, values in effect.items():
        diff = values["difference"]
        lines.append(
            f"| {labels.get(name, name)} | {_fmt(values['before'])} | {_fmt(values['after'])} | {_pm(diff)} | "
            f"{_beyond_noise(diff)} |"
        )
    motion = effect.get(_MOTION_METRIC)
    if motion and motion["before"]:
        change = motion["after"] / motion["before"] - 1
        lines += ["", f"Motion changed by {change:+.1%} ({'within' if abs(change) <= 0.1 else 'outside'} 10%).", ""]
    return lines + [""]


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _optional_str(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add ``--output_dir``, ``--quick`` and one flag per :class:`PipelineSettings` field to ``parser``."""
    parser = parser or argparse.ArgumentParser(
        prog="icreward pipeline",
        description="Reproduce the ICReward paper's pipeline (reward models, best-of-N, DPO) and write one report.",
    )
    parser.add_argument("--output_dir", default="outputs/paper_pipeline", help="Where the report and runs go.")
    parser.add_argument(
        "--quick", action="store_true", help="Plumbing-only preset (about a minute); flags still override it."
    )
    for f in _fields():
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if f.type in ("bool",):
            kwargs["type"] = _parse_bool
        elif f.type == "tuple[str, ...]":
            kwargs["nargs"] = "+"
        elif f.type == "str | None":
            kwargs["type"] = _optional_str
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``icreward pipeline --output_dir DIR [--quick] [--<setting> VALUE ...]``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    overrides = {f.name: getattr(args, f.name) for f in _fields() if hasattr(args, f.name)}
    settings = PipelineSettings.quick(**overrides) if args.quick else PipelineSettings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_paper_pipeline(args.output_dir, settings)
    print((Path(args.output_dir) / "report.md").read_text(encoding="utf-8"))
    print(f"Report, plots, reward models and LoRA weights are in {args.output_dir}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
