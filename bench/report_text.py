"""Results files and the formatting every figure block of the READMEs shares.

:mod:`bench.report` renders the blocks; the blocks themselves live in
:mod:`bench.report_calls`, :mod:`bench.report_servers` and
:mod:`bench.report_dcof`, each registered by name with :func:`block`.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
#: What the unforeseen reference of bench fleet and bench decisions_servers does, in one wording.
UNFORESEEN = (
    "always picks the best place it can know of (everything but a link's new rate, which nothing "
    "announces: the first call after it goes where the link was good)"
)
ROOT = Path(__file__).parent.parent


class Results:
    """The results files of one directory, each read once."""

    def __init__(self, directory: Path = RESULTS) -> None:
        self.directory = directory
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = json.loads((self.directory / f"{name}.json").read_text())
        return self._cache[name]


BLOCKS: dict[str, Callable[[Results], str]] = {}


def block(name: str) -> Callable[[Callable[[Results], str]], Callable[[Results], str]]:
    def register(fn: Callable[[Results], str]) -> Callable[[Results], str]:
        BLOCKS[name] = fn
        return fn

    return register


# -- formatting ---------------------------------------------------------------------------


def cell(text: str) -> str:
    """A table cell's inside: `` text `` or a single space when empty."""
    return f" {text} " if text else " "


def pct(x: float, digits: int = 1, sign: bool = False) -> str:
    """``0.335`` -> ``33.5%`` (``sign``: ``+33.5%`` / ``-33.5%``)."""
    return f"{x * 100:{'+' if sign else ''}.{digits}f}%"


def change(reduction: float, digits: int = 1) -> str:
    """A reduction (0.335: 33.5% less) as a signed change: ``-33.5%``."""
    return pct(-reduction, digits, sign=True)


def num(x: float, digits: int = 0) -> str:
    """Thousands separated: ``2051.3`` -> ``2,051``."""
    return f"{x:,.{digits}f}"


def whole(x: float) -> str:
    """A share as a whole percentage without its sign: ``0.657`` -> ``66``."""
    return f"{x * 100:.0f}"


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    """``lo-hi`` of the values (``lo to hi`` when signed), or one value when they format alike."""
    lo, hi = fmt(min(values)), fmt(max(values))
    if lo == hi:
        return lo
    return f"{lo} to {hi}" if lo[0] in "+-" or hi[0] in "+-" else f"{lo}-{hi}"


def dec(x: float) -> str:
    """At least one decimal, at most two: ``2.0``, ``4.25``."""
    text = f"{x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# A number and its unit (or ``M = 1``) stay on one line.
GLUE = re.compile(r"(\d|\b[A-Za-z]|=) (?=[\d=]|(?:KB|MB|GB|ms|us|s|J|W)\b)")


def wrap(text: str, width: int = 100) -> str:
    """Paragraphs and list items filled to ``width`` (tables left as they are)."""
    out = []
    for para in text.strip("\n").split("\n\n"):
        if para.startswith("|"):
            out.append(para)
            continue
        items = re.split(r"\n(?=- )", para) if para.startswith("- ") else [para]
        out.append(
            "\n".join(
                textwrap.fill(
                    GLUE.sub("\\1\0", " ".join(item.split())),
                    width,
                    subsequent_indent="  " if item.startswith("- ") else "",
                    break_long_words=False,
                    break_on_hyphens=False,
                ).replace("\0", " ")
                for item in items
            )
        )
    return "\n\n".join(out) + "\n"
