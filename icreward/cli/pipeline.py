"""`icreward pipeline`: the ICReward paper's pipeline (:func:`~icreward.evaluation.paper_pipeline.run_paper_pipeline`).

The flags are parsed with :class:`transformers.HfArgumentParser` from two dataclasses: the command's own
:class:`PipelineArguments` (``--output_dir``, ``--quick``) and every field of
:class:`~icreward.evaluation.paper_pipeline.PipelineSettings`. With ``--quick`` the plumbing-only preset
(:meth:`PipelineSettings.quick`) replaces the fields' defaults, so the flags given still override it.

Spellings kept from the command's earlier parser: a boolean takes ``on``/``off`` besides transformers' ``true``/
``false``/``yes``/``no``/``1``/``0``, an optional string takes ``none`` (or an empty string) for "not set", and a
tuple field takes one or more values (``--sources coffee rocket``), and an unambiguous abbreviation (``--clip``) names
its flag.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args, get_origin

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from ..evaluation.paper_pipeline import PipelineSettings, run_paper_pipeline
from . import COMMANDS

__all__ = ["PipelineArguments", "build_parser", "main", "parse_args"]


@dataclass
class PipelineArguments:
    """``icreward pipeline``'s own arguments (besides one flag per :class:`PipelineSettings` field)."""

    output_dir: str = field(default="outputs/paper_pipeline", metadata={"help": "Where the report and runs go."})
    quick: bool = field(
        default=False, metadata={"help": "Plumbing-only preset (about a minute); flags still override it."}
    )


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    return value == "on" if value in ("on", "off") else string_to_bool(value)


def _optional_str(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text


class _Parser(HfArgumentParser):
    """:class:`~transformers.HfArgumentParser` with the spellings of the module docstring."""

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
        field = copy.copy(field)  # the dataclass's own field keeps its type
        if get_origin(field.type) is tuple:  # one or more values, as a list field
            field.type = list[get_args(field.type)[0]]
        elif field.type == str | None:
            field.type = _optional_str
        HfArgumentParser._parse_dataclass_field(parser, field)

    def add_argument(self, *args, **kwargs):
        if kwargs.get("type") is string_to_bool:
            kwargs["type"] = _parse_bool
        return super().add_argument(*args, **kwargs)

    def _get_option_tuples(self, option_string):
        # An abbreviation (`--clip`) matches both spellings of one flag (--clip_model, --clip-model): not ambiguous.
        matches = super()._get_option_tuples(option_string)
        return list({id(match[0]): match for match in matches}.values())


def build_parser() -> HfArgumentParser:
    """``--output_dir``, ``--quick`` and one flag per :class:`PipelineSettings` field."""
    return _Parser(
        (PipelineArguments, PipelineSettings), prog="icreward pipeline", description=COMMANDS["pipeline"][1]
    )


def parse_args(argv: Sequence[str]) -> tuple[PipelineArguments, PipelineSettings]:
    """The command's arguments and the settings: with ``--quick``, :meth:`PipelineSettings.quick` with the flags
    given as its overrides."""
    parser = build_parser()
    argv = list(argv)
    if parser.parse_known_args(argv)[0].quick:  # the preset becomes the defaults; the flags given override it
        parser.set_defaults(**dataclasses.asdict(PipelineSettings.quick()))
    arguments, settings, remaining = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return arguments, settings


def main(argv: Sequence[str] | None = None) -> int:
    """``icreward pipeline --output_dir DIR [--quick] [--<setting> VALUE ...]``."""
    arguments, settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_paper_pipeline(arguments.output_dir, settings)
    print((Path(arguments.output_dir) / "report.md").read_text(encoding="utf-8"))
    print(f"Report, plots, reward models and LoRA weights are in {arguments.output_dir}/")
    return 0
