"""Cold start: when a function never run here is first tried here (see :mod:`.decision`).

Split from :mod:`~offload.profiler.decision` (the per-call path): this runs only
while a function has not yet run on this device.
"""

from __future__ import annotations

from math import exp

from .history import HERE, THERE, FunctionProfile

#: Decisions after which a function never run here is tried here even on a dear call.
COLD_LOCAL_AFTER = 4


def cold_local(prof: FunctionProfile, x: float, t_exec: float | None, cheap_try_s: float) -> bool:
    """Whether to run a function never run here on this call (of log size ``x``), once.

    On a call the server did in under ``cheap_try_s``, extrapolated as if the cost
    grew with the square of the size beyond the sizes seen there (sorting does; a
    prior slope of 1 would send a call 50 times as big here on its first try); after
    ``COLD_LOCAL_AFTER`` calls without one, on a call no bigger than those seen
    (after four times as many, on any call).
    """
    m = prof.time
    w, sx = m.sums[THERE][0], m.sums[THERE][1]
    over = x - sx / w if w > 0 else 0.0
    if t_exec is not None and t_exec * (exp(over) if over > 0 else 1.0) < cheap_try_s:
        return True
    waited = prof.clock - max(m.seen[HERE], 0)
    return waited >= COLD_LOCAL_AFTER and (over <= 0.0 or waited >= 4 * COLD_LOCAL_AFTER)
