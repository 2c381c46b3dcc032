"""Stop signals for a worker's checkpointed job, tagged with the job they are meant for.

A checkpointed job is asked to stop at its next checkpoint by a signal (the
worker's main thread is inside the function, so no message could reach it).
A signal carries no value, and one sent for a job can land after that job has
ended, while the worker starts its next: a plain SIGUSR1 then stopped the next
job, which nobody had paused. So the signal itself names the job: the server
counts the jobs it hands each worker, the worker counts those it receives, and
job ``n``'s stop is real-time signal ``SIGRTMIN + kind * SLOTS + n % SLOTS``.
A worker acts on a signal only for the job whose slot it names (or keeps it
for that job if its session does not exist yet); a late one is ignored.
"""

from __future__ import annotations

import signal

SLOTS = 8  # jobs apart that two stop signals of one kind may be told apart by
PAUSE, CLOSING = 0, 1  # the client paused the job; the server is closing
REASONS = {PAUSE: "paused", CLOSING: "server closing"}


def signum(kind: int, job_index: int) -> int:
    """The signal asking job number ``job_index`` (0-based, per worker) to stop for ``kind``."""
    return int(signal.SIGRTMIN) + kind * SLOTS + job_index % SLOTS


def decode(number: int) -> tuple[int, int]:
    """(kind, slot) of a stop signal."""
    offset = number - int(signal.SIGRTMIN)
    return offset // SLOTS, offset % SLOTS


def all_signals() -> list[int]:
    """Every stop signal, to install the worker's handler for."""
    return [int(signal.SIGRTMIN) + i for i in range(2 * SLOTS)]
