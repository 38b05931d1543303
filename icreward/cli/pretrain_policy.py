"""``icreward pretrain-policy [--output_dir DIR] [--max_seconds S] [...]``: one flag per
:class:`~icreward.policy.pretrain.PolicyPretrainingConfig` field; rerunning the same command resumes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    from transformers import HfArgumentParser

    from ..policy.pretrain import PolicyPretrainingConfig, pretrain_policy

    parser = HfArgumentParser(
        PolicyPretrainingConfig,
        prog="icreward pretrain-policy",
        description="Pretrain the tiny image-to-video policy (WanImageToVideoPipeline) on the real-clip corpus; "
        "rerun the same command to resume from the last checkpoint.",
    )
    (config,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = pretrain_policy(config)
    print(
        f"trained {summary['steps']} steps in {summary['seconds']:.0f} s on {summary['num_train_clips']} clips; "
        f"policy: {Path(config.output_dir) / 'policy'}"
    )
    return 0
