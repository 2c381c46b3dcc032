"""The states of a job on an edge server, as both ends name them.

The server's store records them (SQLite ``jobs.state``), control replies carry
them (JSON), and the client's :class:`~offload.control.JobInfo` and both
command lines show them: every one of those is the member's value, a plain
string (``str(JobState.DONE) == "done"``), so the wire and the store hold the
same strings as before there was an enum.

    queued -> running -> done | failed | cancelled
                      -> paused (a checkpointed job stopped at a safe point, its state gone home)
                      -> interrupted (the server stopped while it ran: not the job's failure)
    paused | interrupted -> resumed (its client ran it on from its checkpoint on this server)
                         -> moved (its client ran it on elsewhere: here, or another server)

``failed`` is kept for a failure of the job itself (it raised, hit a limit,
crashed its worker, or could not be loaded). ``resumed`` and ``moved`` are
set by the job's client (the ``moved`` control request), which knows where
the job went on; the record then names that place (``moved_to``).
"""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):
    """Where a job is: waiting, on a worker, or one of the :data:`FINISHED` states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    RESUMED = "resumed"
    MOVED = "moved"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (nothing more will happen to it on the server)."""
        return self in FINISHED


#: The states a job ends in.
FINISHED = frozenset(JobState) - {JobState.QUEUED, JobState.RUNNING}
#: The states from which a job's client may say it went on elsewhere.
MOVABLE = frozenset((JobState.PAUSED, JobState.INTERRUPTED))
#: Every state's value, as the wire and the store spell it.
NAMES = frozenset(state.value for state in JobState)
