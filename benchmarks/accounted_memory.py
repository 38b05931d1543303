"""Accounted peak training memory of every shipped full-size recipe (``icreward estimate-memory``), as one table.

    python benchmarks/accounted_memory.py                    # all shipped real recipes, markdown table
    python benchmarks/accounted_memory.py --full             # also each recipe's full estimate-memory report
    python benchmarks/accounted_memory.py --recipes examples/configs/dpo_cogvideox_i2v.yaml --budget_gib 40

No GPU and no weights: each recipe's published transformer(s), encoders and VAE are built on the ``meta`` device
(:mod:`icreward.memory.accountant`). The table's columns are the accountant's rows in GiB: denoiser weights held on
the device during training steps, encoders (VAE and, unless offloaded or precomputed, text / image encoders), LoRA
parameters + gradients + AdamW moments (fp32), the denoiser activations held at the peak, the differentiable decode
(reward feedback: held chunk inputs and caches + one chunk recomputed) and the peak (the largest phase).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [
    "dpo_wan21_i2v_480p.yaml",
    "dpo_wan22_i2v.yaml",
    "dpo_cogvideox_i2v.yaml",
    "grpo_wan21_i2v_480p.yaml",
    "grpo_wan22_i2v.yaml",
    "grpo_cogvideox_i2v.yaml",
    "reward_feedback_wan22_ipro.yaml",
    "reward_feedback_wan21_i2v_480p.yaml",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=[str(ROOT / "examples" / "configs" / n) for n in SHIPPED])
    parser.add_argument("--budget_gib", type=float, default=72.0)
    parser.add_argument("--full", action="store_true", help="Print each recipe's full estimate-memory report too.")
    args = parser.parse_args()

    from icreward.memory.accountant import estimate_recipe_memory, format_estimate, load_recipe

    rows, reports = [], []
    for path in args.recipes:
        name = Path(path).name
        with contextlib.redirect_stderr(io.StringIO()):  # diffusers' fp32-module notices
            est = estimate_recipe_memory(
                load_recipe(path), source=f"examples/configs/{name}", budget_gib=args.budget_gib
            )
        r = est.rows
        decode = r.get("vae_decode")
        rows.append(
            f"| `{name}` | {est.trainer} | {r['weights']:.2f} | {r['encoders']:.2f} | "
            f"{r['trainable'] + r['grads'] + r['optimizer']:.2f} | {r['activations']:.2f} | "
            f"{'-' if decode is None else f'{decode:.2f}'} | **{est.peak_gib:.2f}** | {'yes' if est.fits else 'NO'} |"
        )
        reports.append(format_estimate(est))
        print(f"accounted {name} in {est.seconds:.1f} s", flush=True)
    print()
    print(
        f"| recipe | trainer | weights | encoders | LoRA + grads + AdamW | activations | VAE decode | peak | "
        f"fits {args.budget_gib:g} GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.full:
        for report in reports:
            print()
            print(report)


if __name__ == "__main__":
    main()
