"""What a :class:`~offload.jobs.Job` needs from the router that runs it, and what it reports.

:class:`JobHost` is the small public face of :class:`~offload.routing.Router`
a job sees (places to run, where to go after a loss, a checkpoint sink, the
profiler's lessons), so the job never reaches into the router; :class:`Progress`
is how far a job has come.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Protocol

from ._exceptions import OffloadError, ServerUnavailable
from .api import OffloadedFunction
from .human import progress_text
from .remote import Outcome, Remote


class JobName(Protocol):
    """What the host reads of a job: its function, and the names it goes by."""

    fn: OffloadedFunction[..., Any]
    key: str  # this device's name for it, for its whole life
    id: int | None  # the server's id of its latest run there


class Movable(JobName, Protocol):
    """A job as the checkpoint sink sees it: how far it came, and a way to move it."""

    @property
    def progress(self) -> Progress: ...

    def running(self) -> bool: ...

    size: int  # its call's size in bytes (the profiler's x)
    #: The server the user placed it on, where migration leaves it (None: not placed).
    pinned: str | None

    def move(self, where: str, pin: bool = True) -> bool: ...


log = logging.getLogger("offload")

MOVED_TRIES = 60  # how often a down server is told that its job moved
MOVED_RETRY_S = 2.0  # seconds between those tries


class JobHost(Protocol):
    """What a job needs from the router that started it: places to run and a checkpoint sink."""

    crash_tolerance: int

    @property
    def local_executor(self) -> Executor:
        """Where runs on this device go."""
        ...

    def connection(self, where: str) -> Remote | None:
        """The connection for ``where`` ("remote" or an address); None for "local"."""
        ...

    def fallback_target(
        self, fn: Any = None, size: int = 0, left: str = "", lost: bool = False, here: bool = True
    ) -> str:
        """Where a run goes once it ``left`` a server (``lost``: silent): address or "local"."""
        ...

    def keep_checkpoint(self, job: Movable, state: Any, count: int, nbytes: int = 0) -> None:
        """Called with every checkpoint the job receives (``nbytes``: its size on the wire)."""
        ...

    def note_move(self, job: JobName, exc: BaseException, where: str) -> None:
        """The job's run was lost with ``exc`` and goes on at ``where``: say so."""
        ...

    def learn_local(self, fn: OffloadedFunction[..., Any], size: int, seconds: float) -> None:
        """A whole run of ``size`` took ``seconds`` here."""
        ...

    def learn_remote(
        self, fn: OffloadedFunction[..., Any], size: int, outcome: Outcome, remote: Remote | None
    ) -> None:
        """A whole run of ``size`` went as ``outcome`` on ``remote``."""
        ...


class Watched(Protocol):
    """What a job hears from its remote runs (see :class:`RunOf`)."""

    def accepted(self, remote: Remote, job_id: int) -> None: ...

    def checkpointed(
        self, state: Any, count: int, done: int = 0, total: int = 0, nbytes: int = 0
    ) -> None: ...


class RunOf:
    """One run's :class:`~offload.outcome.RunWatcher`: what its server says goes to its job."""

    __slots__ = ("job", "remote")

    def __init__(self, job: Watched, remote: Remote) -> None:
        self.job, self.remote = job, remote

    def accepted(self, job_id: int) -> None:
        self.job.accepted(self.remote, job_id)

    def started(self) -> None:
        """Not asked for: a job knows its run started from ACCEPTED and its checkpoints."""

    def checkpointed(self, state: Any, count: int, done: int, total: int, nbytes: int = 0) -> None:
        self.job.checkpointed(state, count, done, total, nbytes)


@dataclass(frozen=True)
class Progress:
    """How far a job has come: checkpoints taken, when the last one was, where it runs."""

    checkpoints: int
    last_checkpoint: float | None  # time.time() of the latest one
    where: str  # "local" or a server's address (of the last run, once done), or "paused"
    runs: int  # runs started (1 plus recoveries and resumes)
    job_id: int | None = None  # the server's id of the job's latest run there
    done: int = 0  # how far it has come, as the function told its latest checkpoint
    total: int = 0  # (0: not told)

    @property
    def fraction(self) -> float | None:
        """``done / total`` when the function tells them (``checkpoint(..., done=, total=)``)."""
        return self.done / self.total if self.total else None

    __str__ = progress_text  # "12 checkpoints, the last 3 s ago; on tcp://..., run 1"


def tell_moved(before: Remote, job_id: int, to: str, tries: int = MOVED_TRIES) -> None:
    """Tell ``before`` that its job ``job_id`` went on at ``to`` (best effort, not waited for).

    A server that is down (it died: that is why the job moved) is told again
    every ``MOVED_RETRY_S`` while it does not answer, ``tries`` times in all,
    so its record says ``moved`` once it is back.
    """

    def again(reason: object) -> None:
        log.debug("could not tell %s that job %d moved: %s", before.address, job_id, reason)
        if tries > 1 and not before.conn.closed:  # not after its client closed
            retry = threading.Timer(MOVED_RETRY_S, tell_moved, (before, job_id, to, tries - 1))
            retry.daemon = True
            retry.start()

    try:
        _, answer = before.control({"op": "moved", "job": job_id, "to": to})
    except ServerUnavailable as exc:
        again(exc)
        return
    except OffloadError as exc:
        log.debug("could not tell %s that job %d moved: %s", before.address, job_id, exc)
        return

    def answered(done: Future[Any]) -> None:
        exc = done.exception()
        if isinstance(exc, ServerUnavailable):
            again(exc)
        else:
            log.debug("job %d on %s moved to %s: %r", job_id, before.address, to, exc)

    answer.add_done_callback(answered)
