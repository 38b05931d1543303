"""Preference-pair datasets for video DPO: loading, validation, decoding, and generation the ICReward way.

A pair row has four fields::

    image      the reference image: a path or a PIL image (``reference`` is accepted as an alias, which is what
               :func:`icreward.data.pairs.pairs_from_reward_model_picks` writes)
    prompt     the text prompt
    chosen     path of the preferred video
    rejected   path of the other video

Other columns (scores, margins, ids) are kept and ignored. :func:`validate_dpo_pairs` checks every row before
training starts (files exist and decode; chosen and rejected have the same length and size) and raises one
``ValueError`` naming the rows and files at fault, instead of failing hours into a run.

:func:`generate_reward_pairs` builds pairs as the ICReward paper does: the policy samples ``N`` videos per
reference image, two reward models score them, and (reward A's pick, reward B's pick) becomes (chosen, rejected);
images where both rewards pick the same video give no pair.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from datasets import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "PAIR_COLUMNS",
    "RewardPairStats",
    "decode_pair_videos",
    "generate_reward_pairs",
    "load_dpo_pairs",
    "load_reference_image",
    "resize_video",
    "validate_dpo_pairs",
]

PAIR_COLUMNS = ("image", "prompt", "chosen", "rejected")
_IMAGE_ALIASES = ("image", "reference")

RewardFn = Callable[[torch.Tensor, torch.Tensor], float]


def _resolve(path: Any, base_dir: Path | None) -> Any:
    if isinstance(path, (str, os.PathLike)) and base_dir is not None and not os.path.isabs(path):
        return str(base_dir / path)
    return os.fspath(path) if isinstance(path, os.PathLike) else path


def load_dpo_pairs(
    source: str | os.PathLike | Dataset | Iterable[Mapping[str, Any]],
    *,
    image_column: str | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load preference pairs into a :class:`datasets.Dataset` with ``image``, ``prompt``, ``chosen``, ``rejected``.

    Args:
        source: a ``.jsonl`` / ``.json`` file (one object per line, or a list), a ``Dataset``, or row dicts.
        image_column: the reference-image column; by default ``image``, else ``reference``.
        base_dir: directory that relative paths are resolved against; defaults to the file's directory when
            ``source`` is a file.

    Raises:
        ValueError: a required column is missing, or the file holds no rows.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"pair file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
            rows = rows.get("pairs", rows) if isinstance(rows, dict) else rows
        else:
            rows = []
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        if not rows:
            raise ValueError(f"pair file {path} holds no rows")
        base = Path(base_dir) if base_dir is not None else path.parent
        rows = [
            {k: _resolve(v, base) if k in ("image", "reference", "chosen", "rejected") else v for k, v in row.items()}
            for row in rows
        ]
        base_dir = None  # resolved above
        dataset = Dataset.from_list(list(rows))
    elif isinstance(source, Dataset):
        dataset = source
    else:
        rows = [dict(row) for row in source]
        if not rows:
            raise ValueError("no pairs given")
        dataset = Dataset.from_list(rows)

    columns = dataset.column_names
    if image_column is None:
        image_column = next((c for c in _IMAGE_ALIASES if c in columns), "image")
    missing = [c for c in (image_column, "prompt", "chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(f"pair dataset lacks column(s) {missing}; it has {columns}")
    if image_column != "image":
        if "image" in columns:
            dataset = dataset.remove_columns("image")
        dataset = dataset.rename_column(image_column, "image")
    if base_dir is not None:
        base = Path(base_dir)

        def _fix(row):
            return {k: _resolve(row[k], base) for k in ("image", "chosen", "rejected")}

        dataset = dataset.map(_fix, desc="resolving pair paths")
    return dataset


@dataclass
class _Problem:
    row: int
    message: str

    def __str__(self) -> str:
        return f"pair {self.row}: {self.message}"


def validate_dpo_pairs(dataset: Dataset, *, check_decodable: bool = True, max_reported: int = 10) -> None:
    """Check every pair before training; raise one ``ValueError`` listing the first ``max_reported`` problems.

    Checked per row: the reference image is a PIL image or an existing file; the prompt is a string; ``chosen``
    and ``rejected`` are existing videos (probed with :func:`icreward.video.probe_video` when
    ``check_decodable``), with the same number of frames and the same height and width (a DPO pair compares two
    samples of one generation request, so a mismatch means the pairing is wrong).
    """
    from icreward.video import MediaReadError, probe_video

    missing = [c for c in PAIR_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"pair dataset lacks column(s) {missing}; it has {dataset.column_names}")
    problems: list[_Problem] = []
    for i, row in enumerate(dataset):
        image = row["image"]
        if isinstance(image, (str, os.PathLike)):
            if not os.path.isfile(image):
                problems.append(_Problem(i, f"image file not found: {image}"))
        elif not isinstance(image, PIL.Image.Image):
            problems.append(_Problem(i, f"image must be a path or PIL image, got {type(image).__name__}"))
        if not isinstance(row["prompt"], str):
            problems.append(_Problem(i, f"prompt must be a string, got {type(row['prompt']).__name__}"))
        infos = {}
        for side in ("chosen", "rejected"):
            path = row[side]
            if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
                problems.append(_Problem(i, f"{side} video not found: {path}"))
            elif check_decodable:
                try:
                    infos[side] = probe_video(path)
                except MediaReadError as err:
                    problems.append(_Problem(i, f"{side} video {path} cannot be read: {err}"))
        if len(infos) == 2:
            c, r = infos["chosen"], infos["rejected"]
            if c.num_frames != r.num_frames:
                problems.append(
                    _Problem(
                        i,
                        f"chosen {row['chosen']} has {c.num_frames} frames but rejected {row['rejected']} has "
                        f"{r.num_frames}",
                    )
                )
            if (c.height, c.width) != (r.height, r.width):
                problems.append(
                    _Problem(
                        i,
                        f"chosen {row['chosen']} is {c.width}x{c.height} but rejected {row['rejected']} is "
                        f"{r.width}x{r.height}",
                    )
                )
        if len(problems) >= max_reported:
            break
    if problems:
        listed = "\n  ".join(str(p) for p in problems[:max_reported])
        more = f" (stopped after {max_reported}; there may be more)" if len(problems) >= max_reported else ""
        raise ValueError(f"invalid preference pairs{more}:\n  {listed}")


def resize_video(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``(F, 3, h, w)`` uint8 frames to cover ``height x width`` (aspect kept), then centre-crop.

    The same rule the pipelines' video processors apply to reference images, so image and video stay aligned.
    """
    _, _, h, w = frames.shape
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = torch.nn.functional.interpolate(
        frames.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (new_h - height) // 2, (new_w - width) // 2
    cropped = resized[:, :, top : top + height, left : left + width]
    return cropped.round().clamp(0, 255).to(torch.uint8)


def decode_pair_videos(paths: Sequence[str], *, num_frames: int, height: int, width: int) -> torch.Tensor:
    """Decode videos into ``(B, num_frames, 3, height, width)`` uint8 (evenly sampled frames, cover-resized)."""
    from icreward.video import read_video

    return torch.stack([resize_video(read_video(p, num_frames=num_frames), height, width) for p in paths])


def load_reference_image(image: Any, *, height: int, width: int) -> PIL.Image.Image:
    """A pair's reference image (path or PIL) as an RGB PIL image, cover-resized to ``height x width``."""
    from icreward.video import load_image

    tensor = load_image(image)
    tensor = resize_video(tensor[None], height, width)[0]
    return PIL.Image.fromarray(tensor.permute(1, 2, 0).numpy())


@dataclass
class RewardPairStats:
    """What :func:`generate_reward_pairs` produced: pairs kept and images skipped because both rewards agreed."""

    num_images: int = 0
    num_videos: int = 0
    num_pairs: int = 0
    num_same_pick: int = 0
    skipped: list[int] = field(default_factory=list)


def _sample_uint8_video(
    pipeline: Any,
    reference: PIL.Image.Image,
    prompt: str,
    generator: torch.Generator,
    sampling: dict[str, Any],
    pipeline_kwargs: Mapping[str, Any] | None,
) -> torch.Tensor:
    """One ``(F, 3, H, W)`` uint8 CPU video sampled by ``pipeline`` from ``reference`` and ``prompt``
    (``sampling``: num_frames, height, width, num_inference_steps, guidance_scale)."""
    frames = pipeline(
        image=reference,
        prompt=prompt,
        **sampling,
        generator=generator,
        output_type="pt",
        **dict(pipeline_kwargs or {}),
    ).frames[0]
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _pairs_from_candidates(candidates: list[dict[str, Any]], stats: RewardPairStats, num_images: int) -> Dataset:
    """The pairs reward A / reward B pick from ``candidates``; fills ``stats``' pair counts and skipped images."""
    from icreward.data.pairs import pairs_from_reward_model_picks

    pairs, build_stats = pairs_from_reward_model_picks(
        candidates, "score_a", "score_b", group_by="image_index", return_stats=True
    )
    pairs = load_dpo_pairs(pairs)  # "reference" -> "image"
    stats.num_pairs = len(pairs)
    stats.num_same_pick = int(build_stats.dropped.get("same_pick", 0))
    kept = set(pairs["image_index"]) if len(pairs) else set()
    stats.skipped = [i for i in range(num_images) if i not in kept]
    return pairs


def _write_pairs_jsonl(out: Path, pairs: Dataset) -> None:
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for row in pairs:
            row = {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool)) or v is None}
            for key in ("image", "chosen", "rejected"):
                row[key] = os.path.relpath(row[key], out)
            f.write(json.dumps(row) + "\n")


def _write_reward_pairs(
    out: Path, candidates: list[dict[str, Any]], stats: RewardPairStats, num_images: int
) -> Dataset:
    """Write ``candidates.jsonl``, pick the pairs, write ``pairs.jsonl`` (paths relative to ``out``) and log."""
    with open(out / "candidates.jsonl", "w", encoding="utf-8") as f:
        for row in candidates:
            f.write(json.dumps({**row, **{k: os.path.relpath(row[k], out) for k in ("reference", "video")}}) + "\n")
    pairs = _pairs_from_candidates(candidates, stats, num_images)
    _write_pairs_jsonl(out, pairs)
    logger.info(
        "generate_reward_pairs: %d images, %d videos, %d pairs, %d skipped (both rewards picked the same video)",
        stats.num_images,
        stats.num_videos,
        stats.num_pairs,
        stats.num_same_pick,
    )
    return pairs


def generate_reward_pairs(
    pipeline: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    reward_a: RewardFn,
    reward_b: RewardFn,
    *,
    output_dir: str | os.PathLike,
    num_videos: int = 5,
    num_frames: int = 81,
    height: int = 480,
    width: int = 832,
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    seed: int = 0,
    fps: float = 16.0,
    pipeline_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Dataset, RewardPairStats]:
    """Generate ICReward-style DPO pairs with the policy itself.

    For each reference image, ``num_videos`` videos are sampled (seeds ``seed + k``), scored by both reward
    callables ``reward(reference_uint8 (3, H, W), video_uint8 (F, 3, H, W)) -> float``, and the video reward A
    ranks first becomes ``chosen``, the one reward B ranks first ``rejected`` (the paper: A = ICReward, B = the
    MLP baseline). When both pick the same video, the image yields no pair and is counted in
    ``stats.num_same_pick``. Pair construction is :func:`icreward.data.pairs.pairs_from_reward_model_picks`.

    Writes ``output_dir/images/<i>.png``, ``output_dir/videos/<i>_<k>.mp4``, ``output_dir/candidates.jsonl`` (every
    video with both scores) and ``output_dir/pairs.jsonl`` (relative paths; load with :func:`load_dpo_pairs`).

    Returns:
        ``(pairs, stats)``; ``pairs`` has absolute paths and the columns of :data:`PAIR_COLUMNS` plus scores.
    """
    from icreward.video import write_video

    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    if num_videos < 2:
        raise ValueError(f"num_videos must be >= 2 to form a pair, got {num_videos}")
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    stats = RewardPairStats(num_images=len(images))
    candidates = []
    sampling = dict(
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
    )
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        reference = load_reference_image(image, height=height, width=width)
        image_path = out / "images" / f"{i:05d}.png"
        reference.save(image_path)
        reference_tensor = torch.from_numpy(np.array(reference)).permute(2, 0, 1).contiguous()
        for k in range(num_videos):
            generator = torch.Generator(device="cpu").manual_seed(seed + 1000 * i + k)
            video = _sample_uint8_video(pipeline, reference, prompt, generator, sampling, pipeline_kwargs)
            video_path = out / "videos" / f"{i:05d}_{k}.mp4"
            write_video(video_path, video, fps=fps)
            candidates.append(
                {
                    "image_index": i,
                    "reference": str(image_path),
                    "prompt": prompt,
                    "video": str(video_path),
                    "score_a": float(reward_a(reference_tensor, video)),
                    "score_b": float(reward_b(reference_tensor, video)),
                }
            )
            stats.num_videos += 1
    pairs = _write_reward_pairs(out, candidates, stats, len(images))
    return pairs, stats
