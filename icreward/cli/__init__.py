"""The ``icreward`` command line.

Every subcommand is one line in :data:`COMMANDS`: its name, ``"module:function"`` and a one-line help. The module
is imported only when its subcommand runs, so ``icreward --help`` and ``icreward --version`` answer without
importing torch. The function receives the remaining arguments (``list[str]``) and returns the exit status.

Hub ids: with ``HF_HUB_OFFLINE=1`` a model or dataset argument that is neither a local folder nor in the local
Hugging Face cache fails at once with a message saying so; without it, an unreachable hub fails after one short
connection probe instead of minutes of retries.

icreward pipeline --output_dir DIR [--quick]   the ICReward paper's pipeline (what `make demo` runs)
icreward demo [--output_dir DIR] [--cross_validate]
                                               train ICReward + the MLP baseline on the bundled data, report
icreward compare --dataset DIR [...]           the same on any dataset with train/validation/test splits
icreward score --model DIR --reference IMG --video VIDEO [VIDEO ...]
icreward stress-suite build --output_dir DIR   build the consistency stress-test suite
icreward human-study serve|summarize|pairs     a local forced-choice preference study (Figure 4)
icreward human-agreement --model DIR --data DIR  agreement of reward models with human majority votes
icreward estimate-memory --config RECIPE.yaml  accounted training memory at full size (meta device, no GPU)
icreward pretrain-policy --output_dir DIR      pretrain the tiny I2V policy on real clips (resumable)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

# name -> ("module:function", one-line help). Adding a subcommand: one line here; nothing is imported until it runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "icreward.cli.pipeline:main",
        "The ICReward paper's pipeline on the bundled data: reward models, best-of-N, ICReward-vs-MLP pairs, DPO, "
        "one report (what `make demo` runs; --quick for a short run).",
    ),
    "demo": ("icreward.cli:demo_main", "Train ICReward and the MLP baseline on the bundled offline data and compare."),
    "compare": (
        "icreward.cli:compare_main",
        "Train and compare both reward models on a dataset with train/validation/test.",
    ),
    "score": ("icreward.cli:score_main", "Score videos against a reference image with a trained reward model."),
    "stress-suite": ("icreward.cli.stress_suite:main", "Build the consistency stress-test suite."),
    "human-study": ("icreward.cli.human_study:main", "Serve / summarise a human preference study."),
    "human-agreement": (
        "icreward.cli.human_agreement:main",
        "Agreement of reward models with human majority votes.",
    ),
    "estimate-memory": (
        "icreward.cli.estimate_memory:main",
        "Accounted training memory of a recipe at full size, no GPU.",
    ),
    "pretrain-policy": (
        "icreward.cli.pretrain_policy:main",
        "Pretrain the tiny image-to-video policy (WanImageToVideoPipeline) on the real-clip corpus; resumable.",
    ),
}


def register_command(name: str, target: str, help: str) -> None:
    """Add a subcommand at run time (``target``: ``"module:function"``, imported when the subcommand runs)."""
    COMMANDS[name] = (target, help)


def _version() -> str:
    from .. import __version__

    return __version__


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icreward",
        description="Image-to-video consistency rewards. Run `icreward COMMAND --help` for a command's options.",
        epilog="Set HF_HUB_OFFLINE=1 to use only local folders and the local Hugging Face cache. Backbone features "
        "are cached on disk (ICREWARD_CACHE/features_v1); --no_feature_cache (anywhere on the line) or "
        "ICREWARD_FEATURE_CACHE=0 turns that off.",
    )
    parser.add_argument("--version", action="version", version=f"icreward {_version()}")
    parser.add_argument(
        "--no_feature_cache",
        action="store_true",
        help="Do not read or write the on-disk cache of backbone features (for any command).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# --- hub ids -----------------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _in_local_cache(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir()
    except Exception:  # no cache folder yet
        return False
    return any(repo.repo_id == repo_id and repo.repo_type == repo_type for repo in cache.repos)


def check_hub_reference(value: str, what: str, repo_type: str = "model", timeout: float = 5.0) -> None:
    """Fail fast and clearly when ``value`` (a local path or a hub id) cannot be loaded.

    A local path is accepted. Offline (``HF_HUB_OFFLINE=1``) a hub id must be in the local Hugging Face cache, else
    :class:`SystemExit` names the flag, the id and what to do. Online, one connection probe of the hub endpoint
    (``timeout`` seconds) replaces the libraries' retries when the hub cannot be reached."""
    if Path(value).expanduser().exists():
        return
    if _offline():
        if not _in_local_cache(value, repo_type):
            raise SystemExit(
                f"icreward: {what} {value!r} is not a local folder and HF_HUB_OFFLINE=1 is set, and it is not in the "
                "local Hugging Face cache. Pass a local folder, or unset HF_HUB_OFFLINE on a machine that can reach "
                "the Hub to download it."
            )
        return
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as error:
        if _in_local_cache(value, repo_type):
            os.environ["HF_HUB_OFFLINE"] = "1"  # only cached files are reachable; do not let the libraries retry
            return
        raise SystemExit(
            f"icreward: {what} {value!r} is not a local folder, and the Hub ({constants.ENDPOINT}) cannot be "
            f"reached ({error}). Pass a local folder, or set HF_HUB_OFFLINE=1 to use only the local cache."
        ) from None


def _hub_unreachable(error: BaseException) -> bool:
    """A connection failure of huggingface_hub's HTTP clients (httpx, httpx2, requests) or its offline refusal."""
    from ..models.model_card import hub_unreachable

    return hub_unreachable(error)


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.reward_comparison import ComparisonSettings

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
    from ..evaluation.reward_comparison import ComparisonSettings

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
    parser.add_argument(
        "--group_column",
        default=None,
        help="Column whose values are the folds' groups (default: clip_group for the generated-clip corpus, photo "
        "for the photograph suite).",
    )
    parser.add_argument(
        "--num_folds",
        type=int,
        default=None,
        help="K folds over the groups (seeded; test one fold, validate on the next); default: one fold per group.",
    )


def _run(dataset, args: argparse.Namespace) -> int:
    from ..evaluation.reward_comparison import compare_reward_models, cross_validate_reward_models

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
    from ..data.stress_suite import load_sample_dataset

    return _run(load_sample_dataset(), args)


def cmd_compare(args: argparse.Namespace) -> int:
    path = Path(args.dataset)
    if path.exists():
        from ..data.stress_suite import load_stress_suite

        dataset = load_stress_suite(path) if (path / "build_info.json").exists() else _load_from_disk(path)
    else:
        import datasets

        check_hub_reference(args.dataset, "--dataset", repo_type="dataset")
        dataset = datasets.load_dataset(args.dataset)
    return _run(dataset, args)


def _load_from_disk(path: Path):
    import datasets

    return datasets.load_from_disk(str(path))


def cmd_score(args: argparse.Namespace) -> int:
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


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icreward demo", description=COMMANDS["demo"][1])
    parser.add_argument("--output_dir", default="outputs/demo")
    _add_settings_flags(parser)
    _add_cross_validation_flags(parser)
    return parser


def demo_main(argv: list[str]) -> int:
    return cmd_demo(_demo_parser().parse_args(argv))


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="icreward compare", description=COMMANDS["compare"][1])
    parser.add_argument("--dataset", required=True, help="A stress-suite folder, a `save_to_disk` folder or a hub id.")
    parser.add_argument("--output_dir", required=True)
    _add_settings_flags(parser)
    _add_cross_validation_flags(parser)
    return cmd_compare(parser.parse_args(argv))


def score_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="icreward score", description=COMMANDS["score"][1])
    parser.add_argument("--model", required=True, help="Directory (or hub id) of a trained ICReward/MLP reward model.")
    parser.add_argument("--reference", required=True)
    parser.add_argument("--video", required=True, nargs="+")
    return cmd_score(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--no_feature_cache" in argv:  # a global switch, accepted before or after the command
        argv.remove("--no_feature_cache")
        os.environ["ICREWARD_FEATURE_CACHE"] = "0"
    if argv and argv[0] in COMMANDS:
        module_name, _, function = COMMANDS[argv[0]][0].partition(":")
        command = getattr(importlib.import_module(module_name), function)
        try:
            return command(argv[1:]) or 0
        except Exception as error:
            if not _hub_unreachable(error):
                raise
            state = "HF_HUB_OFFLINE=1 is set" if _offline() else "the Hub cannot be reached"
            print(
                f"icreward {argv[0]}: a Hugging Face Hub request failed because {state} ({type(error).__name__}: "
                f"{error}). Uploads (push_to_hub) and downloads of ids not in the local cache need the Hub: unset "
                "HF_HUB_OFFLINE and check the network, or use local folders.",
                file=sys.stderr,
            )
            return 1
    _top_parser().parse_args(argv)  # --help, --version, or an error naming the valid commands
    return 2
