"""Peak memory and step time of reward-feedback (DRaFT-K) steps versus K, T, activation checkpointing and
frame-subset decoding.

    python benchmarks/reward_feedback_memory.py                       # CPU, a scaled-up random tiny Wan 2.1
    python benchmarks/reward_feedback_memory.py --layers 2 --hidden_heads 2 --height 32 --width 32 --frames 9
    python benchmarks/reward_feedback_memory.py --device cuda --output results.json

One step is what :class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackTrainer` runs per micro-batch,
without the optimiser (whose state does not depend on K or T): sample from noise through T steps with gradients
through the last K (:func:`~icreward.trainers.reward_feedback_trainer.sample_with_truncated_backprop`), velocity KL
against the LoRA-disabled model on the K steps, VAE decode (all latent frames or a window), a differentiable reward
(mean brightness), backward into the LoRA parameters.

Every configuration runs in a fresh subprocess, after one warm-up step, and reports the memory the measured steps
add on top of what was resident before them (weights, conditions, LoRA):

- GPU: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus ``memory_allocated()``
  before the steps (tensor memory, exact).
- CPU: growth of the process's peak resident set: ``VmHWM`` of ``/proc/self/status`` after resetting it by writing
  ``5`` to ``/proc/self/clear_refs``, minus ``VmRSS`` before the steps. glibc's mmap threshold is pinned to 128 KiB
  (``MALLOC_MMAP_THRESHOLD_``) and ``malloc_trim(0)`` runs before the reset, so freed tensors leave the resident set
  and the figure tracks live tensor memory plus allocator overhead (a few MiB of noise: make the model big enough
  that activations dominate). ``tracemalloc`` does not see torch's allocations; ``ru_maxrss`` cannot be reset.

Targets printed at the end: for fixed K, peak memory flat in T within 10% (the first T - K steps run without
autograd); with checkpointing, K = 4 peak at most 1.5x the K = 1 peak (only each step's input latents are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace

_MIB = 1024 * 1024


@dataclass(frozen=True)
class RunConfig:
    num_inference_steps: int
    num_grad_steps: int
    checkpointing: bool
    decode_frame_subset: int | None
    kl: bool
    device: str
    frames: int
    height: int
    width: int
    batch: int
    layers: int
    hidden_heads: int
    head_dim: int
    ffn_dim: int
    steps: int
    threads: int

    def label(self) -> str:
        subset = "all" if self.decode_frame_subset is None else str(self.decode_frame_subset)
        return (
            f"T={self.num_inference_steps:<3d} K={self.num_grad_steps} ckpt={'on ' if self.checkpointing else 'off'} "
            f"decode={subset}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Worker (one configuration, in its own process)
# ---------------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> int:
    """Return freed heap to the OS, reset the peak resident set, and return the current resident set (bytes)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
    return _status_kib("VmRSS") * 1024


def _build(config: RunConfig):
    import numpy as np
    import PIL.Image
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig

    from icreward.adapters import get_adapter
    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline

    pipe = tiny_wan_i2v_pipeline(seed=0)
    torch.manual_seed(0)
    # The tiny transformer scaled up, so that its activations (what K and checkpointing act on) are measurable.
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=config.hidden_heads,
        attention_head_dim=config.head_dim,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=config.ffn_dim,
        num_layers=config.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
        added_kv_proj_dim=config.hidden_heads * config.head_dim,
    )
    pipe.register_modules(transformer=transformer)
    adapter = get_adapter(pipe)
    adapter.add_lora(LoraConfig(r=16, lora_alpha=16))
    adapter.to(config.device)
    rng = np.random.RandomState(0)
    image = PIL.Image.fromarray((rng.rand(config.height, config.width, 3) * 255).astype(np.uint8))
    size = {"num_frames": config.frames, "height": config.height, "width": config.width}
    conditions = adapter.prepare_conditions([image] * config.batch, ["a person smiles"] * config.batch, **size)
    conditions = {k: v.to(config.device) for k, v in conditions.items()}
    with torch.no_grad():
        blank = torch.zeros(1, config.frames, 3, config.height, config.width)
        latent_shape = (config.batch, *adapter.prepare_latents(blank).shape[1:])
    return adapter, conditions, latent_shape


def run_worker(config: RunConfig) -> dict:
    import torch

    from icreward.losses import velocity_kl
    from icreward.trainers.reward_feedback_trainer import sample_with_truncated_backprop

    torch.set_num_threads(config.threads)
    cuda = config.device.startswith("cuda")
    adapter, conditions, latent_shape = _build(config)
    timesteps = adapter.inference_timesteps(config.num_inference_steps)
    params = [p for p in adapter.trainable_module.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        noise = torch.randn(latent_shape, generator=generator).to(config.device)
        sample = sample_with_truncated_backprop(
            adapter,
            noise,
            conditions,
            timesteps,
            num_grad_steps=config.num_grad_steps,
            compute_reference=config.kl,
            checkpoint_steps=config.checkpointing,
        )
        latents = sample.latents
        if config.decode_frame_subset is not None:
            latents = latents.narrow(2, 0, config.decode_frame_subset)  # Wan latents: (B, C, F', h, w)
        video = adapter.decode_latents(latents)
        loss = -video.mean(dim=(1, 2, 3, 4)).mean()
        if config.kl:
            loss = loss + velocity_kl(sample.velocities, sample.reference_velocities).mean()
        loss.backward()
        for p in params:
            p.grad = None

    step()  # warm-up: lazy initialisation, allocator pools
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _reset_cpu_peak()
    times = []
    for _ in range(config.steps):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    return {"config": asdict(config), "peak_bytes": peak - baseline, "step_seconds": sum(times) / len(times)}


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------


def run_in_subprocess(config: RunConfig) -> dict:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["MALLOC_MMAP_THRESHOLD_"] = "131072"  # large blocks are mmapped, so freeing them shrinks the resident set
    env["OMP_NUM_THREADS"] = str(config.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(asdict(config))]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{config.label()} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plan(args: argparse.Namespace) -> dict[str, list[RunConfig]]:
    base = RunConfig(
        num_inference_steps=args.fixed_t,
        num_grad_steps=1,
        checkpointing=False,
        decode_frame_subset=None,
        kl=not args.no_kl,
        device=args.device,
        frames=args.frames,
        height=args.height,
        width=args.width,
        batch=args.batch,
        layers=args.layers,
        hidden_heads=args.hidden_heads,
        head_dim=args.head_dim,
        ffn_dim=args.ffn_dim,
        steps=args.steps,
        threads=args.threads,
    )
    max_k = max(args.ks)
    return {
        "vs_T": [replace(base, num_inference_steps=t, num_grad_steps=max_k, checkpointing=True) for t in args.ts]
        + [replace(base, num_inference_steps=t, num_grad_steps=1) for t in args.ts],
        "vs_K": [replace(base, num_grad_steps=k, checkpointing=c) for c in (False, True) for k in args.ks],
        "frame_subset": [
            replace(base, num_grad_steps=max_k, checkpointing=True, decode_frame_subset=s) for s in (None, 1)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--ts", type=int, nargs="+", default=[4, 8, 16], help="numbers of sampler steps T")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4], help="numbers of trained steps K")
    parser.add_argument("--fixed_t", type=int, default=8, help="T of the K sweep")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--hidden_heads", type=int, default=8, help="attention heads")
    parser.add_argument("--head_dim", type=int, default=32, help="attention head size")
    parser.add_argument("--ffn_dim", type=int, default=1024, help="feed-forward size")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per configuration (after a warm-up)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 avoids spin-waiting on busy machines)"
    )
    parser.add_argument("--no_kl", action="store_true", help="leave out the KL reference passes")
    parser.add_argument("--output", help="write all results as JSON here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(RunConfig(**json.loads(args.worker)))))
        return
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    measure = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "peak RSS growth (VmHWM)"
    print(
        f"device {args.device}; memory = {measure} during the steps; {args.frames} frames at {args.height}x"
        f"{args.width}, batch {args.batch}, transformer {args.layers} layers x {args.hidden_heads * args.head_dim} "
        f"hidden, KL {'off' if args.no_kl else 'on'}"
    )
    results: dict[str, list[dict]] = {}
    for group, configs in plan(args).items():
        print(f"\n== {group}")
        results[group] = []
        for config in configs:
            result = run_in_subprocess(config)
            results[group].append(result)
            print(
                f"{config.label()}  peak {result['peak_bytes'] / _MIB:8.1f} MiB  step {result['step_seconds']:6.2f} s"
            )

    def peak(group: str, **match) -> float:
        for r in results[group]:
            if all(r["config"][k] == v for k, v in match.items()):
                return r["peak_bytes"]
        raise KeyError(match)

    print("\n== ratios")
    ts, ks = sorted(args.ts), sorted(args.ks)
    checks = []
    for k, ckpt in ((max(ks), True), (1, False)):
        values = [peak("vs_T", num_inference_steps=t, num_grad_steps=k, checkpointing=ckpt) for t in ts]
        spread = max(values) / min(values)
        checks.append(spread <= 1.10)
        print(f"K={k} ckpt={'on' if ckpt else 'off'}: peak over T={ts}: max/min = {spread:.3f} (target <= 1.10)")
    for ckpt in (False, True):
        ratio = peak("vs_K", num_grad_steps=max(ks), checkpointing=ckpt) / peak(
            "vs_K", num_grad_steps=1, checkpointing=ckpt
        )
        if ckpt:
            checks.append(ratio <= 1.5)
        target = " (target <= 1.5)" if ckpt else ""
        print(f"ckpt={'on ' if ckpt else 'off'}: peak K={max(ks)} / K=1 = {ratio:.2f}{target}")
    subset = peak("frame_subset", decode_frame_subset=1) / peak("frame_subset", decode_frame_subset=None)
    print(f"K={max(ks)} ckpt on: peak decoding 1 latent frame / all = {subset:.2f}")
    print("targets met" if all(checks) else "TARGETS MISSED")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
