"""Functions the benchmarks offload; the edge server serves them with ``--app bench.workloads``."""

from __future__ import annotations

from typing import Any

from offload import offload


@offload(mode="remote")
def noop() -> None:
    """Does nothing: the cost of a call is all framework overhead."""


@offload(mode="remote")
def echo(value: Any) -> Any:
    """Returns its argument: the cost is the data path both ways."""
    return value
