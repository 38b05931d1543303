"""Steps 2-4 of the paper pipeline on the bundled photographs (``reference_set="photos"``): best-of-N with CLIPSim,
FVD, feature cosine and motion (Table 1, Figure 3), ICReward-vs-MLP pairs and DPO (Figures 5 and 6)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .pipeline_common import (
    FEATURE_METRIC,
    MOTION_METRIC,
    candidate_rows,
    logger,
    policy_generator,
    run_dpo,
    torch_threads,
    with_row_ids,
)
from .pipeline_settings import PipelineSettings

__all__ = ["run_photo_sections"]


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


def _build_pairs(report: Any, num_eval_images: int, output_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """ICReward's pick = chosen, MLP's pick = rejected, from the best-of-N candidates and their scores."""
    from ..data.dpo_pairs import load_dpo_pairs
    from ..data.pairs import pairs_from_reward_model_picks

    rows = candidate_rows(report, lambda g, sample_id: g)
    pairs, build = pairs_from_reward_model_picks(
        rows, "icreward_score", "mlp_score", group_by="image_index", return_stats=True
    )
    if len(pairs):
        pairs = with_row_ids(load_dpo_pairs(pairs))  # "reference" -> "image"; noise seeded by reference
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


def run_photo_sections(
    pipeline, reward_models, settings: PipelineSettings, output_dir: Path, timings: dict[str, float]
) -> dict[str, Any]:
    """Steps 2-4 on the bundled photographs (``reference_set="photos"``): one seed, no oracle, no reward feedback."""
    from .best_of_n import RandomSelector, RewardModelSelector, generate_candidates, run_best_of_n

    # 2. Best-of-N with the policy (Table 1, Figure 3).
    t = time.perf_counter()
    images, prompts = _reference_images(settings.sources)
    bon_dir = output_dir / "best_of_n"
    with torch_threads(settings.policy_num_threads):
        generate = policy_generator(pipeline, settings)
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
    metrics: dict[str, Any] = {MOTION_METRIC: _motion}
    labels = {"clipsim": clipsim_label, "fvd": fvd_label, MOTION_METRIC: "motion (dynamic-degree magnitude, px)"}
    feature = _feature_cosine(settings)
    if feature is not None:
        metrics[FEATURE_METRIC], labels[FEATURE_METRIC] = feature
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
        with torch_threads(settings.policy_num_threads):
            dpo = run_dpo(pipeline, train, evaluation, settings, dpo_dir)
        dpo.pop("_adapter", None)
    timings["dpo"] = time.perf_counter() - t
    return {"report": report, "metric_labels": labels, "dpo_pairs": pair_stats, "dpo": dpo, "clips": None}
