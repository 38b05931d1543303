"""`icreward human-study serve|summarize|pairs`: a local forced-choice preference study (see
:mod:`icreward.evaluation.human_study`).

Each subcommand's flags are the fields of one dataclass (:class:`StudyServeArguments`,
:class:`StudySummarizeArguments`, :class:`StudyPairsArguments`), parsed by a
:class:`transformers.HfArgumentParser` registered as an ``argparse`` subparser: ``HfArgumentParser`` itself has no
subcommands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import HfArgumentParser

from ..evaluation.human_study import (
    DEFAULT_INSTRUCTIONS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_QUESTION,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TITLE,
    HumanStudy,
    study_summary_markdown,
    summarize_study,
    write_study_summary,
)
from . import arg

__all__ = ["StudyPairsArguments", "StudyServeArguments", "StudySummarizeArguments", "main"]


@dataclass
class StudyServeArguments:
    """``icreward human-study serve``: serve the study page and record answers until Ctrl-C."""

    pairs: str = arg(
        help="Pairs file (.jsonl/.json/.csv): sample_id, reference, video_a, video_b, label_a, label_b[, prompt]."
    )
    results: str = arg(help="JSON Lines file the answers are appended to.")
    host: str = arg("127.0.0.1", "Interface to bind; 0.0.0.0 exposes the study (no auth).")
    port: int = arg(8000, "Port (0: any free port).")
    seed: int = arg(0, "Seeds each rater's order and left/right placements.")
    title: str = DEFAULT_TITLE
    question: str = DEFAULT_QUESTION
    instructions: str = DEFAULT_INSTRUCTIONS
    no_shuffle: bool = arg(False, "Show the pairs in file order (sides stay random).")
    transcode: bool = arg(False, "Re-encode every video to H.264 MP4.")
    cache_dir: str | None = arg(None, "Where encoded media go (default: a temporary folder).")
    open_browser: bool = arg(False, "Open the page in the default browser.")
    request_timeout: float = arg(DEFAULT_REQUEST_TIMEOUT, "Seconds a connection may stay silent before it is closed.")
    max_connections: int = arg(
        DEFAULT_MAX_CONNECTIONS, "Connections served at once (one thread each); more are answered 503."
    )


@dataclass
class StudySummarizeArguments:
    """``icreward human-study summarize``: preference shares with Wilson intervals; JSON, markdown, PNG."""

    results: str = arg(help="The study's results file.")
    output_dir: str | None = arg(None, "Write summary.json, summary.md and preference.png here.")
    confidence: float = 0.95


@dataclass
class StudyPairsArguments:
    """``icreward human-study pairs``: build the pairs file from a best-of-N report (two methods' picks)."""

    report: str = arg(help="report.json written by the best-of-N evaluation.")
    method_a: str
    method_b: str
    output: str = arg(help="Pairs file to write (.jsonl).")
    include_same_pick: bool = arg(False, "Keep images where both methods agree.")


_SUBCOMMANDS = {
    "serve": (StudyServeArguments, "Serve the study page and record answers until Ctrl-C."),
    "summarize": (StudySummarizeArguments, "Preference shares with Wilson intervals; JSON, markdown, PNG."),
    "pairs": (StudyPairsArguments, "Build the pairs file from a best-of-N report (two methods' picks)."),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icreward human-study", description="Forced-choice human preference study between two models' videos."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    for name, (arguments, help_text) in _SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, dataclass_types=arguments)
    return parser


def _serve(args: StudyServeArguments) -> int:
    study = HumanStudy(
        args.pairs,
        args.results,
        args.seed,
        title=args.title,
        question=args.question,
        instructions=args.instructions,
        shuffle=not args.no_shuffle,
        transcode=args.transcode,
        cache_dir=args.cache_dir,
    )
    server = study.serve(
        args.host,
        args.port,
        open_browser=args.open_browser,
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
    )
    print(f"Human study with {len(study.pairs)} pairs at {server.url} (answers -> {args.results}); Ctrl-C stops.")
    server.wait()
    return 0


def _summarize(args: StudySummarizeArguments) -> int:
    summary = summarize_study(args.results, confidence=args.confidence)
    print(study_summary_markdown(summary))
    if args.output_dir:
        paths = write_study_summary(summary, args.output_dir)
        print(f"Summary written to {', '.join(str(p) for p in paths.values())}")
    return 0


def _pairs(args: StudyPairsArguments) -> int:
    from ..evaluation.best_of_n import BestOfNReport

    report = BestOfNReport.from_json(args.report)
    try:
        rows = report.human_study_pairs(args.method_a, args.method_b, include_same_pick=args.include_same_pick)
    except KeyError as error:  # an unknown method name: say which names the report has, without a traceback
        raise SystemExit(f"icreward human-study pairs: {error.args[0]}") from None
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pairs ({args.method_a} vs {args.method_b}) written to {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``icreward human-study ...``)."""
    namespace = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments, _ = _SUBCOMMANDS[namespace.command]
    args = arguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(arguments)})
    run = {"serve": _serve, "summarize": _summarize, "pairs": _pairs}[namespace.command]
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
