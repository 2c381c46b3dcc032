"""The states of a job on an edge server, as both ends name them.

The server's store records them (SQLite ``jobs.state``), control replies carry
them (JSON), and the client's :class:`~offload.control.JobInfo` and both
command lines show them: every one of those is the member's value, a plain
string (``str(JobState.DONE) == "done"``), so the wire and the store hold the
same strings as before there was an enum.

    queued -> running -> done | failed | cancelled
                      -> paused (a checkpointed job stopped at a safe point, its state gone home)
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

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (nothing more will happen to it on the server)."""
        return self in FINISHED


#: The states a job ends in.
FINISHED = frozenset((JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.PAUSED))
#: Every state's value, as the wire and the store spell it.
NAMES = frozenset(state.value for state in JobState)
