"""Untrusted text (file and folder names, rater comments) as inert markdown, for the reports and cards the library
writes."""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = ["inert_markdown"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}|~#!])")


def inert_markdown(value: Any) -> str:
    """Text from raters or pairs files as inert markdown: one line (a newline could end a table row and start a
    forged one), HTML special characters as entities (no ``<script>``, no tags), markdown syntax escaped (no
    ``|`` cell breaks, links, emphasis or code)."""
    text = " ".join(str(value).split())  # every kind of line break and whitespace run -> one space
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", text), quote=False)
