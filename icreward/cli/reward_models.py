"""`icreward demo`, `icreward compare` and `icreward score`: the reward-model commands.

The flags are parsed with :class:`transformers.HfArgumentParser` from dataclasses: the command's own arguments
(:class:`DemoArguments`, :class:`CompareArguments`, :class:`ScoreArguments`), every field of
:class:`~icreward.evaluation.reward_comparison.ComparisonSettings` and :class:`CrossValidationArguments`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from transformers import HfArgumentParser

from ..evaluation.reward_comparison import ComparisonSettings
from . import COMMANDS, arg, check_hub_reference

__all__ = [
    "CompareArguments",
    "CrossValidationArguments",
    "DemoArguments",
    "ScoreArguments",
    "compare_main",
    "demo_main",
    "score_main",
]


@dataclass
class DemoArguments:
    """``icreward demo``'s own argument."""

    output_dir: str = arg("outputs/demo", "Where the report and both models go.")


@dataclass
class CompareArguments:
    """``icreward compare``'s own arguments."""

    dataset: str = arg(help="A stress-suite folder, a `save_to_disk` folder or a hub id.")
    output_dir: str = arg(help="Where the report and both models go.")


@dataclass
class CrossValidationArguments:
    """Cross-validation over held-out groups instead of the dataset's own splits (``demo`` and ``compare``)."""

    cross_validate: bool = arg(
        False,
        "Pool all splits and run leave-one-group-out folds (test one group, validate on the next, train on the "
        "rest); writes cv_report.md with means, paired differences and per-fold results.",
    )
    group_column: str | None = arg(
        None,
        "Column whose values are the folds' groups (default: clip_group for the generated-clip corpus, photo for the "
        "photograph suite).",
    )
    num_folds: int | None = arg(
        None, "K folds over the groups (seeded; test one fold, validate on the next); default: one fold per group."
    )


@dataclass
class ScoreArguments:
    """``icreward score``'s arguments."""

    model: str = arg(help="Directory (or hub id) of a trained ICReward/MLP reward model.")
    reference: str = arg(help="The reference image.")
    video: list[str] = arg(help="The videos to score against the reference.")


def _int_or_float(value: str) -> int | float:
    """A whole number stays an ``int`` (``--num_train_epochs 3`` gives 3, as the field's default 15 is an int)."""
    try:
        return int(value)
    except ValueError:
        return float(value)


class _Parser(HfArgumentParser):
    """:class:`~transformers.HfArgumentParser` that also takes ``tuple[int, ...]`` fields (one or more values) and
    keeps whole numbers of a ``float`` field whose default is an ``int`` as ints."""

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
        if getattr(field.type, "__origin__", None) is tuple:
            parser.add_argument(
                f"--{field.name}",
                f"--{field.name.replace('_', '-')}",
                type=field.type.__args__[0],
                nargs="+",
                default=field.default,
                **field.metadata,
            )
            return
        if field.type is float and type(field.default) is int:
            field = copy.copy(field)
            field.type = _int_or_float
        HfArgumentParser._parse_dataclass_field(parser, field)


def _parse(command: str, dataclass_types: tuple, argv: list[str]) -> tuple:
    parser = _Parser(dataclass_types, prog=f"icreward {command}", description=COMMANDS[command][1])
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:  # argparse's own message and exit status 2
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return tuple(parsed)


def _comparison_settings(settings: ComparisonSettings) -> ComparisonSettings:
    return dataclasses.replace(settings, mlp_hidden_sizes=tuple(settings.mlp_hidden_sizes))


def _run(dataset, output_dir: str, settings: ComparisonSettings, cv: CrossValidationArguments) -> int:
    from ..evaluation.reward_comparison import compare_reward_models, cross_validate_reward_models

    output_dir = Path(output_dir)
    settings = _comparison_settings(settings)
    if cv.cross_validate:
        cross_validate_reward_models(
            dataset, output_dir, settings, group_column=cv.group_column, num_folds=cv.num_folds
        )
        print((output_dir / "cv_report.md").read_text())
        print(f"Per-fold reports, plots and trained models are in {output_dir}/fold-*/")
        return 0
    compare_reward_models(dataset, output_dir, settings)
    print((output_dir / "report.md").read_text())
    print(f"Report, plots and both trained models are in {output_dir}/")
    return 0


def demo_main(argv: list[str]) -> int:
    """``icreward demo``: both reward models on the bundled offline data."""
    args, settings, cv = _parse("demo", (DemoArguments, ComparisonSettings, CrossValidationArguments), argv)
    from ..data.stress_suite import load_sample_dataset

    return _run(load_sample_dataset(), args.output_dir, settings, cv)


def _load_dataset(name: str):
    path = Path(name)
    if path.exists():
        import datasets

        from ..data.stress_suite import load_stress_suite

        return load_stress_suite(path) if (path / "build_info.json").exists() else datasets.load_from_disk(str(path))
    import datasets

    check_hub_reference(name, "--dataset", repo_type="dataset")
    return datasets.load_dataset(name)


def compare_main(argv: list[str]) -> int:
    """``icreward compare``: both reward models on a dataset with train/validation/test splits."""
    args, settings, cv = _parse("compare", (CompareArguments, ComparisonSettings, CrossValidationArguments), argv)
    return _run(_load_dataset(args.dataset), args.output_dir, settings, cv)


def score_main(argv: list[str]) -> int:
    """``icreward score``: a trained reward model's scores of videos against one reference image."""
    (args,) = _parse("score", (ScoreArguments,), argv)
    check_hub_reference(args.model, "--model")
    from transformers import AutoModel

    from ..models import ICRewardProcessor  # `import icreward` registered the Auto classes

    model = AutoModel.from_pretrained(args.model)
    processor = (
        ICRewardProcessor.from_pretrained(args.model)
        if (Path(args.model) / "preprocessor_config.json").exists()
        else None
    )
    scores = model.score([args.reference] * len(args.video), list(args.video), processor=processor)
    print(json.dumps({video: round(float(s), 6) for video, s in zip(args.video, scores)}, indent=2))
    return 0
