"""What a remote call gives back (:class:`Outcome`), and who hears of it while it runs.

:class:`~offload.remote.Remote` turns each reply into an :class:`Outcome`;
the router learns from it (:mod:`offload.lessons`) and a
:class:`~offload.Job` is the :class:`RunWatcher` of a checkpointed call.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from .deploy import Deployed


class Outcome(NamedTuple):
    """How one remote call went: its value, and what the profiler learns from it.

    A named tuple, not a frozen dataclass: one is made per call, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``.
    """

    value: Any
    turnaround: float  # seconds from sending to the decoded reply
    server_s: float  # seconds the server spent executing it
    sent: int  # bytes of the call
    received: int  # bytes of the reply
    alone: bool  # no other call shared the connection meanwhile
    provision: Deployed | None = None  # the app deployed first for it (provision on first use)


class RunWatcher(Protocol):
    """Who hears about a checkpointed call while it runs on a server (a :class:`~offload.Job`)."""

    def accepted(self, job_id: int) -> None:
        """The server queued the call as its job ``job_id``."""
        ...

    def started(self) -> None:
        """A worker took the call (asked for by a watcher of a plain call: STARTED)."""
        ...

    def checkpointed(self, state: Any, count: int, done: int, total: int, nbytes: int = 0) -> None:
        """Checkpoint ``count`` arrived with ``state`` (``nbytes`` on the wire), ``done`` of
        ``total`` (0, 0: untold)."""
        ...
