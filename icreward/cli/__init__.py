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
icreward evaluate-policy --output_dir DIR     the policy's reference consistency vs random weights and real clips
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Any

# name -> ("module:function", one-line help). Adding a subcommand: one line here; nothing is imported until it runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": (
        "icreward.cli.pipeline:main",
        "The ICReward paper's pipeline on the bundled data: reward models, best-of-N, ICReward-vs-MLP pairs, DPO, "
        "one report (what `make demo` runs; --quick for a short run).",
    ),
    "demo": (
        "icreward.cli.reward_models:demo_main",
        "Train ICReward and the MLP baseline on the bundled offline data and compare.",
    ),
    "compare": (
        "icreward.cli.reward_models:compare_main",
        "Train and compare both reward models on a dataset with train/validation/test.",
    ),
    "score": (
        "icreward.cli.reward_models:score_main",
        "Score videos against a reference image with a trained reward model.",
    ),
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
    "evaluate-policy": (
        "icreward.cli.evaluate_policy:main",
        "Reference consistency of the shipped (or a saved) policy vs its random-weight twin and real held-out clips.",
    ),
}


def arg(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A field of a command's argument dataclass with its ``--help`` text (parsed by ``HfArgumentParser``)."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


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


# The reward-model commands moved to icreward.cli.reward_models; their old names stay importable from here (imported
# on first use, so that `icreward --help` still imports no torch).
_MOVED = {"demo_main": "reward_models", "compare_main": "reward_models", "score_main": "reward_models"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
