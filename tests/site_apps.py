"""The replicated code of the site tests (``--app tests.site_apps`` on a Dask site)."""

from __future__ import annotations

import os
import time

import offload as offload_api
from offload import offload


@offload
def add(a: int, b: int) -> int:
    return a + b


@offload
def where(name: str) -> tuple[str, int]:
    """Writes ``name`` into the working directory; returns that directory and the process id."""
    with open(name, "w") as out:
        out.write("left behind?")
    return os.getcwd(), os.getpid()


@offload(checkpoint_every=0.1)
def count_up(n: int, step: float) -> tuple[int, list[int]]:
    """Sum of i*i for i < n, a step at a time; and the pids that took each checkpoint's steps."""
    i, total, pids = offload_api.restore((0, 0, []))
    while i < n:
        time.sleep(step)
        total += i * i
        i += 1
        if not pids or pids[-1] != os.getpid():
            pids = [*pids, os.getpid()]
        offload_api.checkpoint((i, total, pids))
    return total, pids


@offload
def burn(seconds: float) -> float:
    """Busy CPU for ``seconds`` of CPU time (a task of the site bench)."""
    end = time.process_time() + seconds
    x = 0.0
    while time.process_time() < end:
        for k in range(1000):
            x += k * 0.5
    return x
