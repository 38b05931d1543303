"""What the paper pipeline's steps share: the policy, the trained reward models, DPO, paired differences, the
metric names of its tables and its logger."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..pipelines import load_policy_pipeline
from .pipeline_settings import PipelineSettings

__all__ = [
    "FEATURE_METRIC",
    "INDEPENDENT_METRIC",
    "METHODS",
    "MOTION_METRIC",
    "PRETRAINED_POLICY",
    "candidate_rows",
    "load_policy",
    "load_reward_models",
    "lora_config",
    "paired_difference",
    "policy_generator",
    "run_dpo",
    "torch_threads",
    "training_arguments",
    "with_row_ids",
]

#: The pipeline's log records keep the logger name of the single module it once was (the command line prints it).
logger = logging.getLogger("icreward.evaluation.paper_pipeline")

#: Best-of-N selection methods, in Table 1's order.
METHODS = ("random", "MLP", "ICReward")
FEATURE_METRIC = "feature_cosine"
MOTION_METRIC = "motion"
INDEPENDENT_METRIC = "independent_consistency"

#: Policy name of the pretrained tiny Wan image-to-video policy shipped with icreward (:mod:`icreward.policy`).
PRETRAINED_POLICY = "pretrained"


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def policy_generator(pipeline: Any, settings: PipelineSettings) -> Any:
    """The policy as a ``generate(image, prompt, num_videos, seed)`` callable with the settings' size and sampler."""
    from .best_of_n import pipeline_generator

    return pipeline_generator(
        pipeline,
        num_frames=settings.num_frames,
        height=settings.height,
        width=settings.width,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
    )


def training_arguments(settings: PipelineSettings) -> dict[str, Any]:
    """The training arguments DPO and reward feedback share: no checkpoints, the CPU unless CUDA is there, no
    reporting or progress bars, the run's seed."""
    return {
        "save_strategy": "no",
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "report_to": "none",
        "disable_tqdm": True,
        "seed": settings.seed,
    }


def lora_config(settings: PipelineSettings) -> Any:
    """The LoRA of every fine-tuning step: rank ``lora_rank``, ``lora_alpha`` equal to it, no dropout."""
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_rank, lora_dropout=0.0)


def load_reward_models(folder: Path) -> dict[str, Any]:
    from ..models import ICRewardModel, MLPRewardModel

    return {
        "MLP": MLPRewardModel.from_pretrained(folder / "mlp").eval(),
        "ICReward": ICRewardModel.from_pretrained(folder / "icreward").eval(),
    }


def run_dpo(pipeline: Any, train: Any, evaluation: Any, settings: PipelineSettings, output_dir: Path) -> dict:
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
        **training_arguments(settings),
    )
    start = time.perf_counter()
    trainer = VideoDPOTrainer(
        model=pipeline,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation if has_eval else None,
        peft_config=lora_config(settings),
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


def candidate_rows(report: Any, image_index: Callable[[int, str], Any], **extra: Any) -> list[dict[str, Any]]:
    """One row per best-of-N candidate with both reward models' scores, grouped by ``image_index(g, sample_id)``
    (what :func:`~icreward.data.pairs.pairs_from_reward_model_picks` turns into ICReward-vs-MLP pairs)."""
    rows = []
    for g, sample_id in enumerate(report.sample_ids):
        for k, video in enumerate(report.video_paths[g]):
            rows.append(
                {
                    "image_index": image_index(g, sample_id),
                    "sample_id": sample_id,
                    "reference": report.reference_paths[g],
                    "prompt": report.prompts[g],
                    "video": video,
                    "icreward_score": report.selector_scores["ICReward"][g][k],
                    "mlp_score": report.selector_scores["MLP"][g][k],
                    **extra,
                }
            )
    return rows


def with_row_ids(pairs: Any) -> Any:
    """The pairs with a ``row_id`` column (their ``image_index``: reference and seed), which seeds each pair's noise in
    :class:`~icreward.trainers.VideoDPOTrainer`, so that a run trains the same LoRA in any output folder."""
    return pairs.add_column("row_id", [str(index) for index in pairs["image_index"]])


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
