"""Which server each of a batch's items goes to, when several are usable (issue 13).

A deadline batch (:mod:`offload.batch`) first splits its items between this
device and the edge; with several usable servers, the edge's items are then
spread over them by predicted finish time, greedily in item order (the
order they are sent and queued in): each item goes to the server where it
would be done soonest, given the items already placed there. A server is
modelled as its link (uploads one after another) and its workers (each runs
one item at a time, free once the calls ahead of it there, other clients'
included, have run)::

    arrive = link free + up(x)          start = max(arrive, earliest free worker)
    done   = start + run(x) + down(x) + round trip

with each term from :meth:`~offload.profiler.choice.ServerChoice.parts`. A
fast server takes more items, a slow or busy one fewer, and a one-worker
server stops taking them once its queue would finish later than another's.
No system call: plain attributes and arithmetic, as the per-call choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import log

from .profiler.choice import Candidate, ServerChoice
from .profiler.history import FunctionProfile


def spread(
    choice: ServerChoice,
    prof: FunctionProfile,
    name: str,
    items: Sequence[tuple[int, int]],
    candidates: Sequence[Candidate],
) -> dict[int, str]:
    """The address each of ``items`` (index, size in bytes) goes to, by predicted finish time.

    Empty when there is no candidate that serves ``name``.
    """
    servers = [c for c in candidates if c.serves(name)]
    if not servers:
        return {}
    link_free = [0.0] * len(servers)
    free: list[list[float] | None] = [None] * len(servers)  # each worker's free time, lazily
    out: dict[int, str] = {}
    for index, size in items:
        x = log(size) if size > 1 else 0.0
        best, best_done = 0, float("inf")
        plan = (0.0, 0.0, 0)
        for k, c in enumerate(servers):
            fixed, t_up, t_run, t_down = choice.parts(prof, x, c, name)
            workers = free[k]
            if workers is None:  # the calls there now, as the per-call choice sees them
                workers = free[k] = [c.wait(t_run)] * max(1, c.workers)
            arrive = link_free[k] + t_up
            slot = min(range(len(workers)), key=workers.__getitem__)
            start = max(arrive, workers[slot])
            done = start + t_run + t_down + fixed
            if done < best_done:
                best, best_done, plan = k, done, (arrive, start + t_run, slot)
        arrive, busy_until, slot = plan
        link_free[best] = arrive
        chosen = free[best]
        assert chosen is not None
        chosen[slot] = busy_until
        out[index] = servers[best].address
    return out
