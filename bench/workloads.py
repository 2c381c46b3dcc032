"""Functions the benchmarks offload; the edge server serves them with ``--app bench.workloads``."""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import time
from typing import Any

import offload as offload_api
from offload import offload


@offload(mode="remote")
def noop() -> None:
    """Does nothing: the cost of a call is all framework overhead."""


@offload(mode="remote")
def echo(value: Any) -> Any:
    """Returns its argument: the cost is the data path both ways."""
    return value


@offload(mode="remote", isolation="thread")
def noop_inline() -> None:
    """:func:`noop` run inline, in a thread of a server started with ``--allow-inline``."""


@offload(mode="remote", isolation="thread")
def echo_inline(value: Any) -> Any:
    """:func:`echo` run inline, in a thread of a server started with ``--allow-inline``."""
    return value


MOD = 1009  # matrix entries stay below it, so int64 products are exact


@offload(mode="remote")
def matrix_rounds(a: Any, rounds: int, schedule: str = "") -> Any:
    """``a ** (rounds + 1) mod 1009`` by repeated products: FlexConnect's test job.

    Each run reads its failure time from ``schedule`` (a JSON file the bench
    writes) and, like FlexConnect's workers, "fails" by killing its own process
    with SIGKILL once it has run that long. Every round is logged there too,
    so the work redone after failures can be counted.
    """
    import numpy as np

    i, m = offload_api.restore((0, a))
    die_after = _next_failure(schedule)
    start = time.monotonic()
    while i < rounds:
        if time.monotonic() - start > die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        m = np.remainder(m @ a, MOD)
        i += 1
        if schedule:
            with open(schedule + ".rounds", "a") as log:
                log.write(".")
        offload_api.checkpoint((i, m))
    return m


def _next_failure(schedule: str) -> float:
    """This run's failure time (seconds of running), taken in turn from ``schedule``."""
    if not schedule:
        return math.inf
    with open(schedule, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        plan = json.load(handle)
        k = plan["next"]
        if plan.get("home") != os.getpid():
            plan["next"] = k + 1
        handle.seek(0)
        handle.truncate()
        json.dump(plan, handle)
    if plan.get("home") == os.getpid():
        return math.inf  # resumed on the client: the failures are the server's
    times = plan["times"]
    return times[k] if k < len(times) else math.inf


@offload(mode="remote")
def nap(seconds: float) -> float:
    """Sleeps: keeps a worker (and its client's running slot) busy without using CPU."""
    time.sleep(seconds)
    return seconds
