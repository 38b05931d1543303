"""Cost of a VideoDPOTrainer step, as measured ratios on random-weight Wan 2.1 I2V pipelines.

    python benchmarks/dpo_step.py                    # tiny pipeline (icreward.testing.tiny_pipelines), CPU
    python benchmarks/dpo_step.py --size small       # bigger random configs: small | medium
    python benchmarks/dpo_step.py --device cuda --size medium --steps 20

Reports the median time per optimisation step (after warm-up, candidates interleaved; CPU time of this process
on CPU, where other processes make wall time noisy; wall time on CUDA):

1. a DPO step with cached latents (collate from the safetensors cache + denoiser only) versus encoding every step
   (decode the mp4s, run the VAE, text and image encoders, then the same denoiser work);
2. the DPO step relative to a plain flow-matching SFT step on the same batch: the same 2B latents (winners and
   losers) through the same Trainer step, one policy forward + backward; DPO adds the reference forward (LoRA
   disabled, no grad). Target: <= 1.6x. Also relative to SFT on the B chosen videos only (loss_type="sft").

The VAE / encoder share of the uncached step grows quickly with real model sizes (Wan's UMT5-XXL and 14B VAE
work), so the tiny figures understate the benefit of caching.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402

from icreward.testing import tiny_pipelines  # noqa: E402
from icreward.trainers.video_dpo_config import VideoDPOConfig  # noqa: E402
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer  # noqa: E402
from icreward.video import write_video  # noqa: E402

# Transformer / VAE sizes and video sizes; "tiny" is icreward.testing.tiny_pipelines unchanged.
SIZES = {
    "tiny": {"frames": 9, "height": 32, "width": 32},
    "small": {
        "frames": 17,
        "height": 64,
        "width": 64,
        "transformer": {"num_attention_heads": 4, "attention_head_dim": 32, "ffn_dim": 256, "num_layers": 4},
        "vae_base_dim": 16,
    },
    "medium": {
        "frames": 33,
        "height": 128,
        "width": 128,
        "transformer": {"num_attention_heads": 8, "attention_head_dim": 64, "ffn_dim": 1024, "num_layers": 8},
        "vae_base_dim": 32,
    },
}


def build_pipeline(size: str):
    """The tiny Wan 2.1 I2V pipeline, with a larger transformer and VAE for sizes other than ``tiny``."""
    pipe = tiny_pipelines.tiny_wan_i2v_pipeline(seed=0)
    spec = SIZES[size]
    if "transformer" in spec:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        config = {**dict(pipe.transformer.config), **spec["transformer"]}
        # The image-token projections of Wan 2.1 I2V live in the attention's inner dimension.
        config["added_kv_proj_dim"] = config["num_attention_heads"] * config["attention_head_dim"]
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        torch.manual_seed(0)
        pipe.transformer = WanTransformer3DModel(**config)
        vae_config = {k: v for k, v in dict(pipe.vae.config).items() if not k.startswith("_")}
        pipe.vae = AutoencoderKLWan(**{**vae_config, "base_dim": spec["vae_base_dim"]}).eval()
    return pipe


def write_pairs(root: Path, num_pairs: int, frames: int, height: int, width: int) -> list[dict]:
    rng = np.random.RandomState(0)
    rows = []
    for i in range(num_pairs):
        image = (rng.rand(height, width, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(image).save(root / f"image_{i}.png")
        still = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(frames, 1, 1, 1)
        write_video(root / f"chosen_{i}.mp4", still)
        write_video(
            root / f"rejected_{i}.mp4", torch.from_numpy((rng.rand(frames, 3, height, width) * 255).astype(np.uint8))
        )
        rows.append(
            {
                "image": str(root / f"image_{i}.png"),
                "prompt": f"a photo number {i}",
                "chosen": str(root / f"chosen_{i}.mp4"),
                "rejected": str(root / f"rejected_{i}.mp4"),
            }
        )
    return rows


def make_trainer(root: Path, rows, size: str, device: str, **overrides) -> VideoDPOTrainer:
    spec = SIZES[size]
    args = VideoDPOConfig(
        output_dir=str(root / "out"),
        latent_cache_dir=str(root / "cache"),
        num_frames=spec["frames"],
        height=spec["height"],
        width=spec["width"],
        per_device_train_batch_size=len(rows),
        max_steps=1,
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        plot_preference_curves=False,
        validate_pairs=False,
        **overrides,
    )
    pipe = build_pipeline(size)
    return VideoDPOTrainer(model=pipe, args=args, train_dataset=rows, peft_config=LoraConfig(r=16, lora_alpha=16))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(step_fns: dict, steps: int, warmup: int, device: str) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per step, running the candidates round-robin so they share the machine's load.

    On a shared CPU, wall time swings with other processes; CPU time (``time.process_time``, this process only)
    measures the work itself and is the figure to compare there. On CUDA, wall time after a synchronize is used.
    """
    for _ in range(warmup):
        for step in step_fns.values():
            step()
    wall: dict[str, list[float]] = {name: [] for name in step_fns}
    cpu: dict[str, list[float]] = {name: [] for name in step_fns}
    for _ in range(steps):
        for name, step in step_fns.items():
            _sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in step_fns}


def trainer_step(trainer: VideoDPOTrainer, rows):
    """One full optimisation step as the Trainer runs it: collate, forward/backward, optimizer step."""
    optimizer = trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we drive the steps ourselves

    def step():
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        trainer.training_step(trainer.model, batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def as_sft_on_both(trainer: VideoDPOTrainer) -> None:
    """Feed an SFT trainer the DPO batch's 2B latents (winners and losers) as if all were chosen."""
    collate = trainer.data_collator

    def collate_both(rows):
        batch = collate(rows)
        return {
            "latents_chosen": torch.cat([batch["latents_chosen"], batch["latents_rejected"]]),
            "latents_rejected": batch["latents_rejected"],
            "conditions": {k: torch.cat([v, v]) for k, v in batch["conditions"].items()},
        }

    trainer.data_collator = collate_both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--pairs", type=int, default=2, help="pairs per batch (B)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    spec = SIZES[cli.size]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = write_pairs(root, cli.pairs, spec["frames"], spec["height"], spec["width"])
        cached = make_trainer(root, rows, cli.size, cli.device, precompute_latents=True)
        uncached = make_trainer(root / "u", rows, cli.size, cli.device, precompute_latents=False)
        sft_chosen = make_trainer(root / "s", rows, cli.size, cli.device, precompute_latents=True, loss_type="sft")
        sft_both = make_trainer(root / "s2", rows, cli.size, cli.device, precompute_latents=True, loss_type="sft")
        as_sft_on_both(sft_both)
        results = time_interleaved(
            {
                "dpo_cached": trainer_step(cached, rows),
                "dpo_uncached": trainer_step(uncached, rows),
                "sft_same_batch": trainer_step(sft_both, rows),
                "sft_chosen": trainer_step(sft_chosen, rows),
            },
            steps=cli.steps,
            warmup=cli.warmup,
            device=cli.device,
        )

    clock = "wall" if cli.device.startswith("cuda") else "cpu"
    t = {name: r[clock] for name, r in results.items()}
    params = sum(p.numel() for p in cached.adapter.pipeline.transformer.parameters())
    print(
        f"size={cli.size} ({spec['frames']}x{spec['height']}x{spec['width']}, transformer {params / 1e6:.2f}M params), "
        f"B={cli.pairs} pairs, device={cli.device}, threads={cli.threads}, median of {cli.steps} interleaved steps, "
        f"{clock} time (wall in brackets)"
    )
    rows_out = [
        ("DPO step, cached latents", "dpo_cached"),
        ("DPO step, encoding every step", "dpo_uncached"),
        ("SFT step, same 2B latents", "sft_same_batch"),
        ("SFT step, B chosen only", "sft_chosen"),
    ]
    for label, name in rows_out:
        print(f"  {label:<32} {t[name] * 1e3:9.1f} ms   [{results[name]['wall'] * 1e3:8.1f} ms]")
    print(f"  encoding every step / cached      {t['dpo_uncached'] / t['dpo_cached']:9.2f}x")
    print(f"  DPO / SFT (same batch)            {t['dpo_cached'] / t['sft_same_batch']:9.2f}x   (target <= 1.6x)")
    print(f"  DPO / SFT (chosen only)           {t['dpo_cached'] / t['sft_chosen']:9.2f}x")


if __name__ == "__main__":
    main()
