"""How good the pretrained policy is: reference consistency, first-frame fidelity and motion, with contact sheets.

The reference-consistency measure is :class:`~icreward.models.FeatureCosineReward` (ImageNet EfficientNet-Lite0,
pretrained weights, no training on any of this data): the mean cosine between the pooled features of the reference
image and of frames ``1 .. F-1`` (frame 0 is left out: it is the reference itself for a real clip). It is computed
for three sources on the same held-out references:

* ``policy``: the pretrained policy's samples;
* ``random``: the same architecture and codec with random transformer weights (what training starts from);
* ``real``: the held-out real clips whose first frame is the reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_SAMPLING",
    "consistency_scores",
    "evaluate_policy",
    "first_frame_error",
    "frame_motion",
    "sample_policy",
    "save_contact_sheet",
]

#: How the shipped policy is sampled (its training size, Wan's flow-matching Euler scheduler, no guidance).
DEFAULT_SAMPLING: dict[str, Any] = {
    "num_frames": 9,
    "height": 32,
    "width": 32,
    "num_inference_steps": 8,
    "guidance_scale": 1.0,
}


def sample_policy(
    pipeline,
    references: torch.Tensor,
    *,
    prompt: str = "a video",
    seed: int = 0,
    **sampling: Any,
) -> torch.Tensor:
    """One video per reference through the pipeline's own ``__call__`` (reference ``i`` uses a generator seeded
    ``seed + i``): ``(N, 3, H, W)`` uint8 -> ``(N, F, 3, H, W)`` float in ``[0, 1]``."""
    from PIL import Image

    kwargs = dict(DEFAULT_SAMPLING, **sampling)
    videos = []
    for i, reference in enumerate(references):
        image = Image.fromarray(reference.permute(1, 2, 0).numpy())
        generator = torch.Generator().manual_seed(seed + i)
        out = pipeline(image=image, prompt=prompt, generator=generator, output_type="pt", **kwargs)
        videos.append(out.frames[0].float().clamp(0, 1))
    return torch.stack(videos)


def _as_float(videos: torch.Tensor) -> torch.Tensor:
    return videos.float() / 255.0 if videos.dtype == torch.uint8 else videos.float()


def consistency_scores(scorer, references: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
    """Per-video feature cosine of frames ``1 ..`` to the reference: ``(N,)``.

    ``scorer`` is a :class:`~icreward.models.FeatureCosineReward`; ``references`` ``(N, 3, H, W)``, ``videos``
    ``(N, F, 3, H, W)`` (uint8 or float in ``[0, 1]``).
    """
    later = _as_float(videos)[:, 1:]
    refs = _as_float(references)
    return torch.cat([scorer.score([refs[i]], [later[i]]).reshape(-1) for i in range(len(refs))])


def first_frame_error(references: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
    """Per-video mean squared error between frame 0 and the reference, in ``[0, 1]`` pixel units: ``(N,)``."""
    return (_as_float(videos)[:, 0] - _as_float(references)).pow(2).mean(dim=(1, 2, 3))


def frame_motion(videos: torch.Tensor) -> torch.Tensor:
    """Per-video mean absolute change between consecutive frames (``[0, 1]`` pixel units): ``(N,)``."""
    return _as_float(videos).diff(dim=1).abs().mean(dim=(1, 2, 3, 4))


def save_contact_sheet(
    rows: Sequence[torch.Tensor], path: str | os.PathLike, *, labels: Sequence[str] | None = None, scale: int = 2
) -> Path:
    """A PNG grid: one row per video ``(F, 3, H, W)`` (uint8 or float in ``[0, 1]``), frames left to right, each
    pixel repeated ``scale`` times; ``labels`` are drawn at the left of each row."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("save_contact_sheet needs at least one row")
    frames = max(int(r.shape[0]) for r in rows)
    h, w = int(rows[0].shape[-2]), int(rows[0].shape[-1])
    label_w = 0 if labels is None else 8 * max(len(x) for x in labels) // 1 + 6
    gap = 2
    sheet = np.full((len(rows) * (h * scale + gap), label_w + frames * (w * scale + gap), 3), 255, dtype=np.uint8)
    for r, video in enumerate(rows):
        pixels = (_as_float(video).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for f in range(pixels.shape[0]):
            tile = pixels[f].repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = r * (h * scale + gap), label_w + f * (w * scale + gap)
            sheet[top : top + h * scale, left : left + w * scale] = tile
    image = Image.fromarray(sheet)
    if labels is not None:
        draw = ImageDraw.Draw(image)
        for r, label in enumerate(labels):
            draw.text((2, r * (h * scale + gap) + h * scale // 2 - 5), label, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def evaluate_policy(
    pipeline,
    random_pipeline,
    real_videos: torch.Tensor,
    *,
    scorer=None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    sheet_rows: int = 6,
    **sampling: Any,
) -> dict[str, Any]:
    """The three consistency numbers (policy, random-weight policy, real clips) on the held-out windows
    ``real_videos`` ``(N, F, 3, H, W)`` uint8 (reference = frame 0), plus first-frame error and motion.

    With ``output_dir``, writes ``contact_sheet.png``: for the first ``sheet_rows`` references, the real clip,
    the policy's sample and the random-weight policy's sample.
    """
    if scorer is None:
        from ..models import FeatureCosineReward

        scorer = FeatureCosineReward("efficientnet-lite0").eval()
    references = real_videos[:, 0]
    policy = sample_policy(pipeline, references, seed=seed, **sampling)
    random = sample_policy(random_pipeline, references, seed=seed, **sampling)
    results: dict[str, Any] = {"num_references": len(references)}
    for name, videos in (("policy", policy), ("random", random), ("real", real_videos)):
        cos = consistency_scores(scorer, references, videos)
        results[name] = {
            "consistency": float(cos.mean()),
            "consistency_se": float(cos.std() / len(cos) ** 0.5),
            "first_frame_mse": float(first_frame_error(references, videos).mean()),
            "motion": float(frame_motion(videos).mean()),
            "per_reference_consistency": cos.tolist(),
        }
    gap = results["real"]["consistency"] - results["random"]["consistency"]
    results["fraction_of_gap"] = (results["policy"]["consistency"] - results["random"]["consistency"]) / gap
    if output_dir is not None:
        rows, labels = [], []
        for i in range(min(sheet_rows, len(references))):
            rows += [real_videos[i], policy[i], random[i]]
            labels += [f"real {i}", f"policy {i}", f"random {i}"]
        results["contact_sheet"] = str(save_contact_sheet(rows, Path(output_dir) / "contact_sheet.png", labels=labels))
    return results


def evaluate_shipped(
    policy_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    *,
    max_references: int | None = None,
    seed: int = 0,
    **sampling: Any,
) -> dict[str, Any]:
    """:func:`evaluate_policy` for a saved policy (default: the shipped one) on the shipped held-out references,
    one window per held-out clip (the first ``max_references`` clips)."""
    from . import PRETRAINED_DIR, load_pretrained_policy
    from .data import load_references
    from .pipeline import load_policy_from_folder, random_policy_like

    if policy_dir is None:
        pipeline = load_pretrained_policy()
    else:
        pipeline = load_policy_from_folder(policy_dir)
        pipeline.set_progress_bar_config(disable=True)
    references = load_references(PRETRAINED_DIR / "references.safetensors")
    windows = references.eval_videos[references.one_window_per_clip()]
    if max_references is not None:
        windows = windows[:max_references]
    random = random_policy_like(pipeline, seed=0)
    results = evaluate_policy(pipeline, random, windows, seed=seed, output_dir=output_dir, **sampling)
    results["sampling"] = dict(DEFAULT_SAMPLING, **sampling)
    if output_dir is not None:
        import json

        Path(output_dir, "evaluation.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
