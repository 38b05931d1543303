"""Reward-model throughput: ICRewardModel vs. the bare backbone on the same frames vs. a naive per-frame loop.

    python benchmarks/reward_throughput.py                 # CPU defaults (small batch), prints a markdown table
    python benchmarks/reward_throughput.py --device cuda --batch 8 --frames 16

For each backbone (the offline default EfficientNet-Lite0, and DINOv2 at tiny and base sizes with random
weights) it times, on the same inputs:

- ``bare backbone``: the backbone encoding the ``B * F`` frames only (the floor any reward model pays);
- ``ICRewardModel``: reference encoded once per video + all frames in one backbone batch + the head;
- ``naive loop``: one backbone call per frame, re-encoding the reference for every frame.

Target (issue "reward models"): head + reference overhead over the bare backbone <= 15%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from icreward import ICRewardConfig, ICRewardModel  # noqa: E402
from icreward.testing import tiny_dinov2_config  # noqa: E402


def dinov2_base_config(image_size: int) -> dict:
    return {
        "model_type": "dinov2",
        "image_size": image_size,
        "patch_size": 14,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
    }


def _timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def bench(name: str, model: ICRewardModel, batch: int, frames: int, size: int, repeats: int, device: str) -> dict:
    model = model.to(device).eval()
    videos = torch.randn(batch, frames, 3, size, size, device=device)
    refs = torch.randn(batch, 3, size, size, device=device)
    flat = videos.flatten(0, 1)

    def bare():
        model.backbone(flat)

    def full():
        model(pixel_values=videos, reference_pixel_values=refs)

    def naive():
        for b in range(batch):
            for f in range(frames):
                model(pixel_values=videos[b : b + 1, f : f + 1], reference_pixel_values=refs[b : b + 1])

    t_bare, t_full = _timeit(bare, repeats), _timeit(full, repeats)
    t_naive = _timeit(naive, max(1, repeats // 2))
    return {
        "backbone": name,
        "videos/s bare backbone": batch / t_bare,
        "videos/s ICRewardModel": batch / t_full,
        "videos/s naive loop": batch / t_naive,
        "overhead vs bare": t_full / t_bare - 1,
        "speed-up vs naive": t_naive / t_full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip_base", action="store_true", help="skip the base-size DINOv2 (slow on CPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    head = dict(head_hidden_size=256, head_num_heads=4, head_num_layers=2, head_dropout=0.0)
    setups = [
        (
            "efficientnet-lite0 @160 (pretrained)",
            lambda: ICRewardModel.from_pretrained_backbone("efficientnet-lite0", **head),
            160,
        ),
        (
            "dinov2 tiny @32",
            lambda: ICRewardModel(
                ICRewardConfig(backbone_type="transformers", backbone_config=tiny_dinov2_config(), **head)
            ),
            32,
        ),
    ]
    if not args.skip_base:
        setups.append(
            (
                "dinov2 base-shaped @224 (random)",
                lambda: ICRewardModel(
                    ICRewardConfig(backbone_type="transformers", backbone_config=dinov2_base_config(224), **head)
                ),
                224,
            )
        )
    rows = [
        bench(name, build(), args.batch, args.frames, size, args.repeats, args.device) for name, build, size in setups
    ]
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, "
        f"threads {torch.get_num_threads()}, batch {args.batch} x {args.frames} frames"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
