"""The ICReward paper's whole pipeline as one command, on the bundled offline data, with one report.

    python -m icreward.evaluation.paper_pipeline --output_dir outputs/paper           # ~10 min on 2 CPU cores
    python -m icreward.evaluation.paper_pipeline --output_dir outputs/paper --quick   # ~1 min, plumbing only

Steps (every one reuses the library's own building blocks):

1. **Reward models** (Figure 2): :func:`~icreward.evaluation.reward_comparison.compare_reward_models` trains
   ICReward and the MLP baseline on the stress-test suite (:func:`~icreward.data.stress_suite.load_sample_dataset`)
   and writes ``reward_models/`` (``mse.png``, the test table, both saved models).
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
    # ---------------------------------------------------------------------------------------- step 2: best-of-N
    policy: str = field(
        default="tiny-wan2.1",
        metadata={
            "help": "Image-to-video policy: tiny-wan2.1 (offline, random weights) or a diffusers pipeline id/folder."
        },
    )
    sources: tuple[str, ...] = field(
        default_factory=_default_sources,
        metadata={"help": "Reference images: source ids of icreward.data.photos.PHOTO_SOURCES (one prompt each)."},
    )
    num_candidates: int = field(default=5, metadata={"help": "Videos sampled per reference image (the paper: 5)."})
    num_frames: int = field(default=9, metadata={"help": "Frames per generated video (4k + 1 for Wan)."})
    height: int = field(default=32, metadata={"help": "Height of the generated videos."})
    width: int = field(default=32, metadata={"help": "Width of the generated videos."})
    num_inference_steps: int = field(default=4, metadata={"help": "Sampling steps of the policy."})
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
    # ---------------------------------------------------------------------------------------- run
    policy_num_threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads while generating and running DPO (1 is fastest for the tiny policy)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of every step (training, sampling, random selector)."})

    def __post_init__(self):
        self.sources = tuple(self.sources)
        if len(self.sources) < 2:
            raise ValueError(f"need at least 2 reference images (FVD needs two videos), got {list(self.sources)}")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must be distinct, got {list(self.sources)}")
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
            "sources": ("chelsea", "coffee", "rocket"),
            "num_candidates": 3,
            "num_inference_steps": 2,
            "fvd_image_size": 64,
            "dpo_num_eval_images": 1,
            "dpo_max_steps": 4,
            "dpo_eval_steps": 2,
            "dpo_logging_steps": 1,
            "lora_rank": 4,
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


def load_policy(name: str, seed: int = 0) -> Any:
    """The image-to-video pipeline to sample from and fine-tune: a tiny offline one by name, or a diffusers id."""
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
    }


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


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
    from .best_of_n import RandomSelector, RewardModelSelector, generate_candidates, pipeline_generator, run_best_of_n
    from .reward_comparison import compare_reward_models

    settings = settings or PipelineSettings()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Reward models (Figure 2).
    t = time.perf_counter()
    if dataset is None:
        from ..data.stress_suite import load_sample_dataset

        dataset = load_sample_dataset()
    reward_dir = output_dir / "reward_models"
    comparison = compare_reward_models(dataset, reward_dir, settings.comparison_settings())
    timings["reward_models"] = time.perf_counter() - t
    logger.info("step 1/4: reward models trained in %.1f s", timings["reward_models"])

    # 2. Best-of-N with the policy (Table 1, Figure 3).
    t = time.perf_counter()
    reward_models = _load_reward_models(reward_dir)
    images, prompts = _reference_images(settings.sources)
    bon_dir = output_dir / "best_of_n"
    with _torch_threads(settings.policy_num_threads):
        pipeline = load_policy(settings.policy, seed=settings.seed)
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
    timings["dpo"] = time.perf_counter() - t
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
        f"{results['timings_seconds']['best_of_n']:.0f} s, DPO {results['timings_seconds']['dpo']:.0f} s. "
        "Settings and every number below are in `report.json`.",
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
        + " Metrics labelled *random-weight* use untrained networks because no weights can be downloaded offline; "
        "pass `--clip_model` (e.g. `openai/clip-vit-base-patch32`) and `--i3d_checkpoint` (Kinetics-400 I3D, see "
        "`icreward.metrics.fvd`) for real CLIPSim and FVD. The feature-cosine column uses real pretrained "
        "(ImageNet) weights, but on noise-like videos it too mostly measures noise. FVD from a handful of videos is "
        "strongly biased and only comparable between the methods of one table. Figure 2 is the one section that "
        "measures the reward models themselves: both are trained on the stress-test suite and tested on videos of "
        "held-out photographs.",
        "",
        "## Figure 2: reward-model training",
        "",
        f"Both models on the stress-test suite ({reward['dataset']}); test = held-out source photographs.",
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
