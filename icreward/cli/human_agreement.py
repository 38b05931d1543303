"""`icreward human-agreement`: agreement of trained reward models with human majority votes (see
:mod:`icreward.evaluation.human_agreement`); the flags are the fields of :class:`HumanAgreementArguments`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser

from . import arg

__all__ = ["HumanAgreementArguments", "main"]


@dataclass
class HumanAgreementArguments:
    """``icreward human-agreement``'s arguments."""

    model: list[str] = arg(help="Directories (or hub ids) of trained reward models.")
    data: str = arg(help="Folder or hub id in the datapointai I2V layout.")
    split: str = arg("test", "Split to report on (load_human_preferences' splits).")
    seed: int = arg(0, "Seed of the prompt-level split assignment.")
    tie_threshold: float = arg(0.0, "Score gap at or below which a tie is called.")
    calibrate_on: str | None = arg(None, "Split on which to calibrate the tie threshold (e.g. validation).")
    interval: Literal["wilson", "bootstrap"] = "wilson"
    confidence: float = 0.95
    batch_size: int = 8
    output: str | None = arg(None, "Write the results as JSON here.")


def main(argv: list[str] | None = None) -> int:
    """``icreward human-agreement``: agreement of trained reward models with human majority votes."""
    parser = HfArgumentParser(
        HumanAgreementArguments,
        prog="icreward human-agreement",
        description="Agreement of reward models with the human majority on datapointai/image-2-video-human-"
        "preferences-style data (a local copy of the repository, or a hub id with network access).",
    )
    args, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:  # argparse's own message and exit status 2
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

    from transformers import AutoModel

    from .. import models  # noqa: F401  (registers the Auto classes)
    from ..data.human_preferences import load_human_preferences
    from ..evaluation.human_agreement import agreement_markdown, evaluate_human_agreement
    from ..models import ICRewardProcessor

    data = load_human_preferences(args.data, seed=args.seed)
    for name in [args.split] + ([args.calibrate_on] if args.calibrate_on else []):
        if name not in data:
            parser.error(f"split {name!r} not found; the data has {sorted(data)}")
    results = {}
    for model_path in args.model:
        model = AutoModel.from_pretrained(model_path)
        processor = (
            ICRewardProcessor.from_pretrained(model_path)
            if (Path(model_path) / "preprocessor_config.json").exists()
            else None
        )
        results[model_path] = evaluate_human_agreement(
            model,
            data[args.split],
            calibration_dataset=data[args.calibrate_on] if args.calibrate_on else None,
            tie_threshold=args.tie_threshold,
            processor=processor,
            batch_size=args.batch_size,
            interval=args.interval,
            confidence=args.confidence,
        )
    print(agreement_markdown(results))
    skipped = data.report.num_skipped
    if skipped:
        print(f"Rows skipped while loading: {dict(data.report.skipped)}")
    if args.output:
        payload = {"split": args.split, "load_report": data.report.to_dict()}
        payload["results"] = {k: v.to_dict() for k, v in results.items()}
        Path(args.output).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
