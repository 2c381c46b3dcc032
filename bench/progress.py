"""Progress bars for the benchmarks: tqdm on a terminal, nothing otherwise.

Every ``python -m bench NAME`` runs for seconds to many minutes, so each shows
where it is while a person watches; when its output goes to a file, a pipe or
CI (stdout or stderr not a terminal), or tqdm is not installed (it is in the
``bench`` extra), the bars stay silent and the results are the same.

    for case in steps(cases, "cases"):       # a bar over an iterable
        ...
    with bar(total, "calls") as tick:        # a bar advanced by hand
        tick("echo 16 MB")                   # one step, labelled
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def shown() -> bool:
    """Whether bars are drawn: both output streams are a terminal and tqdm is installed."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def bar(total: int | None, desc: str, unit: str = "step") -> Iterator[Callable[..., None]]:
    """A bar of ``total`` steps (None: unknown); yields ``tick(label="", n=1)``."""
    if not shown():
        yield lambda label="", n=1: None
        return
    from tqdm import tqdm

    drawn: Any = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def tick(label: str = "", n: int = 1) -> None:
        if label:
            drawn.set_postfix_str(label, refresh=False)
        drawn.update(n)

    try:
        yield tick
    finally:
        drawn.close()


def steps(items: Iterable[T], desc: str, unit: str = "step") -> Iterator[T]:
    """``items``, one bar step each (the bar's length from ``len(items)`` when it has one)."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    with bar(total, desc, unit) as tick:
        for item in items:
            yield item
            tick()
