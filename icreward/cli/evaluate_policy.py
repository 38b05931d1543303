"""``icreward evaluate-policy [--policy DIR] --output_dir DIR``: the shipped (or a saved) policy's reference
consistency next to its random-weight twin and the real held-out clips, with a contact sheet."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from . import arg

__all__ = ["EvaluatePolicyArguments", "main"]


@dataclass
class EvaluatePolicyArguments:
    output_dir: str = arg(help="Where evaluation.json and contact_sheet.png go.")
    policy: str | None = arg(None, "A saved policy folder (default: the shipped policy).")
    max_references: int | None = arg(None, "Evaluate the first N held-out clips (default: all).")
    num_inference_steps: int = arg(8, "Sampling steps (the shipped policy's default).")
    seed: int = arg(0, "Reference i is sampled with seed + i.")


def main(argv: Sequence[str] | None = None) -> int:
    from transformers import HfArgumentParser

    from ..policy.evaluate import evaluate_shipped

    parser = HfArgumentParser(EvaluatePolicyArguments, prog="icreward evaluate-policy", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    results = evaluate_shipped(
        args.policy,
        args.output_dir,
        max_references=args.max_references,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
    )
    summary = {
        k: {m: v for m, v in results[k].items() if m != "per_reference_consistency"}
        for k in ("policy", "random", "real")
    }
    print(json.dumps(dict(summary, fraction_of_gap=results["fraction_of_gap"], n=results["num_references"]), indent=1))
    return 0
