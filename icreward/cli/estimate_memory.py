"""`icreward estimate-memory`: accounted training memory of a recipe at the published full size (meta device, no
GPU), over :func:`icreward.memory.accountant.estimate_recipe_memory`.

``icreward estimate-memory --config examples/configs/dpo_wan21_i2v_480p.yaml [--override key=value ...]``; the exit
status is 1 when the counted peak exceeds ``--budget_gib``. The flags are parsed with
:class:`transformers.HfArgumentParser` from :class:`EstimateMemoryArguments`, plus the repeatable ``--override``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser

__all__ = ["EstimateMemoryArguments", "main"]


@dataclass
class EstimateMemoryArguments:
    """``icreward estimate-memory``'s arguments (``--override KEY=VALUE``, repeatable, is added to the parser)."""

    config: str = field(metadata={"help": "A recipe, e.g. examples/configs/dpo_wan21_i2v_480p.yaml"})
    budget_gib: float = field(default=72.0, metadata={"help": "Memory budget in GiB (exit status 1 above it)."})
    exact: bool = field(
        default=False, metadata={"help": "Run every transformer block instead of extrapolating from 2 and 3."}
    )
    block_checkpointing: Literal["trainer", "on", "off"] = field(
        default="trainer",
        metadata={
            "help": "Per-block gradient checkpointing of the transformer: as the trainer does, or forced on/off."
        },
    )


def _parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        EstimateMemoryArguments,
        prog="icreward estimate-memory",
        description="Accounted training memory of a recipe at the published full size (meta device, no GPU). "
        "Exit status 1 when the counted peak exceeds --budget_gib.",
    )
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="Override a field.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..memory.accountant import estimate_recipe_memory, format_estimate, load_recipe

    parser = _parser()
    args, extra, unknown = parser.parse_args_into_dataclasses(
        None if argv is None else list(argv), return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    recipe = load_recipe(args.config, extra.override)
    block = {"trainer": None, "on": True, "off": False}[args.block_checkpointing]
    est = estimate_recipe_memory(
        recipe, source=str(args.config), budget_gib=args.budget_gib, block_checkpointing=block, exact=args.exact
    )
    print(format_estimate(est))
    return 0 if est.fits else 1
