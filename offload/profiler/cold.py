"""Cold start: when a function never run here is first tried here (see :mod:`.decision`).

Split from :mod:`~offload.profiler.decision` (the per-call path): this runs only
while a function has not yet run on this device.
"""

from __future__ import annotations

from math import exp

from .history import HERE, THERE, FunctionProfile

#: Decisions after which a function never run here is tried here even on a dear call.
COLD_LOCAL_AFTER = 4


def cold_local(
    prof: FunctionProfile,
    x: float,
    t_exec: float | None,
    cheap_try_s: float,
    after: int = COLD_LOCAL_AFTER,
) -> bool:
    """Whether to run a function never run here on this call (of log size ``x``), once.

    On a call the server did in under ``cheap_try_s``, extrapolated as if the cost
    grew with the square of the size beyond the sizes seen there (sorting does; a
    prior slope of 1 would send a call 50 times as big here on its first try); after
    ``after`` calls without one, on a call no bigger than those seen (after four
    times as many, on any call).
    """
    m = prof.time
    w, sx = m.sums[THERE][0], m.sums[THERE][1]
    over = x - sx / w if w > 0 else 0.0
    if t_exec is not None and t_exec * (exp(over) if over > 0 else 1.0) < cheap_try_s:
        return True
    waited = prof.clock - max(m.seen[HERE], 0)
    return waited >= after and (over <= 0.0 or waited >= 4 * after)


def dear(prof: FunctionProfile, t: float) -> bool:
    """Whether a call estimated ``t`` seconds costs twice the function's typical call."""
    return prof.typical_w > 0.0 and t * prof.typical_w >= 2.0 * prof.typical


def cold_among(
    prof: FunctionProfile,
    x: float,
    t_exec: float,
    t_remote: float,
    cheap_try_s: float,
    every: int,
    among: int,
) -> bool:
    """:func:`cold_local` for a function with ``among`` (two or more) servers to run it.

    Here is then one side of several, and the last resort once they are gone: a
    try here, while a server does the call as fast as usual, costs how much slower
    here is (often several times the call) for a side that rarely wins. So a dear
    call (``t_remote``, its best server's estimate, twice the typical: the servers
    it used are gone or slowed, here may well win and trying costs the least)
    tries it after ``COLD_LOCAL_AFTER`` calls; otherwise it waits, as an
    exploration does, ``every`` decisions for each of the ``among`` sides sharing
    the exploration budget. A call cheap enough (``cheap_try_s``) tries it at once.
    """
    after = COLD_LOCAL_AFTER if dear(prof, t_remote) else every * among
    return cold_local(prof, x, t_exec, cheap_try_s, after)
