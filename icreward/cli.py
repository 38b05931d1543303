"""The ``icreward`` command line.

icreward demo [--output_dir DIR] [--cross_validate]
                                               train ICReward + the MLP baseline on the bundled data, report
icreward compare --dataset DIR [...]           the same on any dataset with train/validation/test splits
                                               (--cross_validate: leave-one-photograph-out folds instead)
icreward score --model DIR --reference IMG --video VIDEO [VIDEO ...]
icreward stress-suite build --output_dir DIR   build the consistency stress-test suite
icreward human-study serve|summarize|pairs     a local forced-choice preference study (Figure 4)
icreward estimate-memory --config RECIPE.yaml  accounted training memory at full size (meta device, no GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    from .evaluation.reward_comparison import ComparisonSettings

    for f in dataclasses.fields(ComparisonSettings):
        default = f.default
        kwargs = {"default": default, "help": f.metadata.get("help", "")}
        if isinstance(default, bool):
            kwargs["type"] = lambda s: s.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            kwargs.update(type=int, nargs="+")
        else:
            kwargs["type"] = type(default)
        parser.add_argument(f"--{f.name}", **kwargs)


def _settings(args: argparse.Namespace):
    from .evaluation.reward_comparison import ComparisonSettings

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ComparisonSettings)}
    values["mlp_hidden_sizes"] = tuple(values["mlp_hidden_sizes"])
    return ComparisonSettings(**values)


def _add_cross_validation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cross_validate",
        action="store_true",
        help="Pool all splits and run leave-one-group-out folds (test one group, validate on the next, train on "
        "the rest); writes cv_report.md with means, paired differences and per-fold results.",
    )
    parser.add_argument("--group_column", default="photo", help="Column whose values are the folds' groups.")
    parser.add_argument("--num_folds", type=int, default=None, help="Only the first N folds (default: all groups).")


def _run(dataset, args: argparse.Namespace) -> int:
    from .evaluation.reward_comparison import compare_reward_models, cross_validate_reward_models

    output_dir = Path(args.output_dir)
    if args.cross_validate:
        cross_validate_reward_models(
            dataset, output_dir, _settings(args), group_column=args.group_column, num_folds=args.num_folds
        )
        print((output_dir / "cv_report.md").read_text())
        print(f"Per-fold reports, plots and trained models are in {output_dir}/fold-*/")
        return 0
    compare_reward_models(dataset, output_dir, _settings(args))
    print((output_dir / "report.md").read_text())
    print(f"Report, plots and both trained models are in {output_dir}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .data.stress_suite import load_sample_dataset

    return _run(load_sample_dataset(), args)


def cmd_compare(args: argparse.Namespace) -> int:
    path = Path(args.dataset)
    if path.exists():
        from .data.stress_suite import load_stress_suite

        dataset = load_stress_suite(path) if (path / "build_info.json").exists() else _load_from_disk(path)
    else:
        import datasets

        dataset = datasets.load_dataset(args.dataset)
    return _run(dataset, args)


def _load_from_disk(path: Path):
    import datasets

    return datasets.load_from_disk(str(path))


def cmd_score(args: argparse.Namespace) -> int:
    from transformers import AutoModel

    from . import models  # noqa: F401  (registers the Auto classes)
    from .models import ICRewardProcessor

    model = AutoModel.from_pretrained(args.model)
    processor = (
        ICRewardProcessor.from_pretrained(args.model)
        if (Path(args.model) / "preprocessor_config.json").exists()
        else None
    )
    scores = model.score([args.reference] * len(args.video), list(args.video), processor=processor)
    print(json.dumps({video: round(float(s), 6) for video, s in zip(args.video, scores)}, indent=2))
    return 0


def cmd_stress_suite(argv: list[str]) -> int:
    from .data.stress_suite import main as stress_main

    return stress_main(argv) or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stress-suite":
        return cmd_stress_suite(argv[1:])
    if argv and argv[0] == "pipeline":
        from .evaluation.paper_pipeline import main as pipeline_main

        return pipeline_main(argv[1:]) or 0
    if argv and argv[0] == "human-study":
        from .evaluation.human_study import main as human_study_main

        return human_study_main(argv[1:]) or 0
    if argv and argv[0] == "estimate-memory":
        from .memory.accountant import main as estimate_memory_main

        return estimate_memory_main(argv[1:])
    parser = argparse.ArgumentParser(prog="icreward", description="Image-to-video consistency rewards.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Train ICReward and the MLP baseline on the bundled offline data and compare.")
    demo.add_argument("--output_dir", default="outputs/demo")
    _add_settings_flags(demo)
    _add_cross_validation_flags(demo)
    compare = sub.add_parser(
        "compare", help="Train and compare both reward models on a dataset with train/validation/test."
    )
    compare.add_argument(
        "--dataset", required=True, help="A stress-suite folder, a `save_to_disk` folder or a hub id."
    )
    compare.add_argument("--output_dir", required=True)
    _add_settings_flags(compare)
    _add_cross_validation_flags(compare)
    score = sub.add_parser("score", help="Score videos against a reference image with a trained reward model.")
    score.add_argument("--model", required=True, help="Directory (or hub id) of a trained ICReward/MLP reward model.")
    score.add_argument("--reference", required=True)
    score.add_argument("--video", required=True, nargs="+")
    sub.add_parser(
        "stress-suite", help="Build the consistency stress-test suite (see `icreward stress-suite --help`)."
    )
    sub.add_parser(
        "human-study", help="Serve / summarise a human preference study (see `icreward human-study --help`)."
    )
    sub.add_parser(
        "estimate-memory",
        help="Accounted training memory of a recipe at full size, no GPU (see `icreward estimate-memory --help`).",
    )
    args = parser.parse_args(argv)
    return {"demo": cmd_demo, "compare": cmd_compare, "score": cmd_score}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
