"""Jobs: calls that checkpoint, survive failures, pause and resume, here or on a server.

A call of a function declared with ``checkpoint_every`` (or ``retries``) returns a :class:`Job`, a
:class:`concurrent.futures.Future` that outlives any one run of it. Data flow of one job::

    client                         server                      worker
    Job.start(remote) --CALL(state, count, every)-->  queue --> fn(...) with a Session
          ^                                                        | checkpoint(s) when due
          +------------------ CHECKPOINT(state, n) <---------------+  (in order, streamed)
    Job keeps the latest state
          |   server dies / link drops / worker killed / server closing (SIGTERM)
          v
    Job._recover: the same server (worker crash), else where the host says (the backup
                  server, else here), each time from the latest state (``offload.restore``)
    Job.pause(): PAUSE --> worker signalled --> stops at its next checkpoint --> ERROR stopped
    Job.resume(where): a new run from the latest state, here or on a server
    Job.move(server): pause, then resume there at once (migration, :mod:`offload.migration`)

A run here gets a :class:`~offload.runtime.checkpoint.Session` whose states go straight to the job;
a remote run's states arrive as CHECKPOINT messages. Without checkpoints (``retries`` only) a run
that is lost is started again from scratch, at most ``retries`` times: the function declared itself
idempotent. At most one checkpoint interval of work is redone after a failure, since the states
come home as they are taken.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from . import _exceptions as errors
from .api import OffloadedFunction
from .futures import cancel_now, running_future, settle
from .jobhost import JobHost, Progress, RunOf, tell_moved
from .outcome import Outcome
from .remote import Remote
from .runtime.checkpoint import Session, Stopped, running

__all__ = ["Job", "JobHost", "Progress"]

log = logging.getLogger("offload")

#: Failures a job recovers from by running again (from its latest checkpoint).
RECOVERABLE = (errors.ServerUnavailable, errors.WorkerCrashed, errors.JobStopped)


class Job(Future[Any]):
    """The future of a checkpointed call: :meth:`pause`, :meth:`resume`, :attr:`progress`.

    As a :class:`concurrent.futures.Future` it is pending until it is done.
    :meth:`cancel` on a job that takes checkpoints always succeeds: the job is
    cancelled at once and its run stops at its next checkpoint (a result that
    still arrives is dropped). A job that takes none (``retries`` only) can be
    cancelled only while its run waits in a queue, like a pool's call.
    """

    def __init__(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
        state: Any = None,
        count: int = 0,
        *,
        host: JobHost,
        here_allowed: bool = True,
    ) -> None:
        """A job of ``fn(*args, **kwargs)``, from ``state`` (checkpoint ``count``) if given.

        ``here_allowed`` False (``mode="remote"``): a run lost with its server
        never goes on here by itself; the job pauses instead, for its user to
        :meth:`resume` where they choose.
        """
        super().__init__()
        self._host = host
        self._here_allowed = here_allowed
        self._settled = threading.Event()  # done, or paused
        self.add_done_callback(_settle)  # a plain function: no cycle keeps a done job alive
        #: The function this job runs.
        self.fn = fn
        self._args, self._kwargs = args, kwargs
        #: Its call's size in bytes (what the profiler predicts from).
        self.size = size
        #: This device's name for the job, for its whole life (checkpoint files are named after it).
        self.key = uuid.uuid4().hex[:12]
        #: The server's id of the job's latest run there (``offload status ID``), and that
        #: server's address; None until a server accepted a run of it.
        self.id: int | None = None
        self.server: str | None = None
        self._there: tuple[Remote, int] | None = None  # the latest run's server and job id
        self._done = self._total = 0  # how far it has come, as the function told
        self._lock = threading.Lock()
        self._saved: Any = state  # the latest checkpoint's state
        self._count = count
        self._when: float | None = None
        self._where = ""
        self._runs, self._retries, self._crashes = 0, fn.retries, 0
        self._paused = threading.Event()
        self._pause_wanted = False
        self._move_to: str | None = None  # where a run stopping to move goes on (move())
        #: The server its user put it on (resume, move): migration leaves it there.
        self.pinned: str | None = None
        self._cancel_wanted = False
        self._remote: tuple[Remote, int] | None = None
        self._local: Future[Any] | None = None  # a run here, queued or running
        self._session: Session | None = None

    # -- the public API -------------------------------------------------------------------------

    @property
    def checkpoint(self) -> Any:
        """The latest checkpoint's state (``None`` before the first)."""
        return self._saved

    @property
    def paused(self) -> bool:
        """Stopped at a checkpoint by :meth:`pause`, waiting for :meth:`resume`."""
        return self._paused.is_set() and not self.done()

    @property
    def progress(self) -> Progress:
        where = "paused" if self.paused else self._where
        return Progress(
            self._count, self._when, where, self._runs, self.id, self._done, self._total
        )

    def __repr__(self) -> str:
        if self.done():
            state = "cancelled" if self.cancelled() else "finished"
        else:
            state = "paused" if self._paused.is_set() else "running" if self._runs else "pending"
        where = f" on {self._where}" if self._where and not self.done() else ""
        name = f"Job {self.id}" if self.id is not None else f"Job {self.key}"
        return (
            f"<{name} of {self.fn.wire_name} {state}{where}, "
            f"{self._count} checkpoints, {self._runs} runs>"
        )

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until the job is done or paused; False on timeout."""
        return self._settled.wait(timeout)

    def running(self) -> bool:
        """Whether a run of the job is under way (not done, not paused)."""
        return self._runs > 0 and not self.done() and not self._paused.is_set()

    def pause(self, timeout: float | None = 30.0) -> None:
        """Stop the job at its next safe point and bring its state home; wait until it has."""
        if self.fn.checkpoint_every is None:
            raise errors.NotCheckpointable(f"{self.fn.wire_name} takes no checkpoints")
        with self._lock:
            if self.done() or self._paused.is_set():
                return
            self._pause_wanted, self._move_to = True, None
            self._stop_run()
        if not self._paused.wait(timeout) and not self.done():
            raise TimeoutError(f"{self.fn.wire_name} did not reach a checkpoint in {timeout} s")

    def resume(self, where: str = "local", pin: bool = True) -> None:
        """Continue a paused job from its latest checkpoint: "local", "remote" or an address
        (with ``pin``, :attr:`pinned` there: migration will not move it away)."""
        with self._lock:
            if not self.paused:
                raise errors.OffloadError("only a paused job can be resumed")
            if where not in ("local", "remote") and "://" not in where:
                raise errors.ConfigError(f"resume where? local, remote or an address: {where!r}")
            self._paused.clear()
            self._settled.clear()
            self._pause_wanted, self.pinned = False, where if pin and "://" in where else None
        self._start(where)

    def move(self, where: str, pin: bool = True) -> bool:
        """Move a running job to server ``where`` (``pin``: for good, as a user does): its run
        stops at its next safe point, its state comes home, it goes on there (False: no run)."""
        with self._lock:
            if not self.running() or self._remote is None or self._pause_wanted:
                return False
            self._move_to, self._pause_wanted, self.pinned = where, True, where if pin else None
            self._stop_run()
        return True

    def cancel(self) -> bool:
        """Cancel the job; see the class docstring for when that is possible."""
        if self.done():
            return self.cancelled()
        with self._lock:
            if (
                self.fn.checkpoint_every is None
                and not self._paused.is_set()
                and not self._withdraw()
            ):
                return False  # its run has started and has no safe point to stop at
            self._cancel_wanted = True
            self._stop_run()
        return cancel_now(self)

    def cancel_if_waiting(self) -> bool:
        """Cancel the job only if its run has not started (``shutdown(cancel_futures=True)``)."""
        with self._lock:
            if self.done() or self._paused.is_set() or not self._withdraw():
                return self.cancelled()
            self._cancel_wanted = True
        return cancel_now(self)

    # -- runs ---------------------------------------------------------------------------------

    def start(self, where: str) -> Job:
        """Start the first run (``"local"`` or ``"remote"``); return the job."""
        self._start(where)
        return self

    def _start(self, where: str) -> None:
        self._runs += 1
        try:
            remote = self._host.connection(where)
            if remote is None:
                self._tell_moved("local")
                self._where = "local"
                self._local = local = self._host.local_executor.submit(self._run_here)
                local.add_done_callback(self._local_done)
            else:
                self._where = remote.address
                self._run_there(remote)
        except (errors.OffloadError, RuntimeError) as exc:  # no server, or shut down
            settle(self, exc=exc)

    def _local_done(self, run: Future[Any]) -> None:
        self._local = None
        if run.cancelled():  # taken out of the pool's queue (shutdown with cancel_futures)
            self._cancel_wanted = True
            cancel_now(self)

    def _run_here(self) -> None:
        if self.done():
            return
        every = self.fn.checkpoint_every
        session = Session(self._saved, every or 0.0, self.checkpointed, self._count)
        with self._lock:
            self._session = session
            if self._pause_wanted or self._cancel_wanted:
                session.stop = "paused"
        start, fresh = time.perf_counter(), self._saved is None
        try:
            with running(session):
                value = self.fn.__wrapped__(*self._args, **self._kwargs)
        except Stopped:
            self._on_stopped()
            return
        except BaseException as exc:
            settle(self, exc=exc)
            return
        finally:
            self._session = None
        if fresh:  # only a whole run teaches how long the function takes
            self._host.learn_local(self.fn, self.size, time.perf_counter() - start)
        settle(self, value)

    def _run_there(self, remote: Remote) -> None:
        every = self.fn.checkpoint_every
        fresh = self._saved is None  # only a whole run teaches the profiler
        inner = running_future()
        inner.add_done_callback(lambda done: self._remote_done(remote, fresh, done))
        resume = None if every is None else (self._saved, self._count, every)
        try:
            request_id = remote.send(
                self.fn,
                self._args,
                self._kwargs,
                inner,
                wait=False,
                resume=resume,
                watcher=RunOf(self, remote),
            )
        except errors.OffloadError as exc:
            settle(inner, exc=exc)
            return
        with self._lock:
            self._remote = (remote, request_id)
            if self._pause_wanted or self._cancel_wanted:
                remote.pause(request_id)

    def _remote_done(self, remote: Remote, fresh: bool, inner: Future[Any]) -> None:
        self._remote = None
        exc = inner.exception()
        if exc is None:
            outcome: Outcome = inner.result()
            if fresh:
                self._host.learn_remote(self.fn, self.size, outcome, remote)
            settle(self, outcome.value)
        elif self._cancel_wanted or self.done():
            return
        elif isinstance(exc, errors.JobStopped) and self._pause_wanted:
            self._on_stopped()
        elif isinstance(exc, RECOVERABLE):
            # Not on the connection's I/O thread: finding where to go may wait for a PING.
            threading.Thread(target=self._recover, args=(exc,), daemon=True).start()
        else:
            settle(self, exc=exc)

    def _recover(self, exc: BaseException) -> None:
        """Run again from the latest checkpoint, where the failure says it can run."""
        checkpointed = self.fn.checkpoint_every is not None
        if not checkpointed:
            if self._retries <= 0:
                settle(self, exc=exc)
                return
            self._retries -= 1
        crashed = isinstance(exc, errors.WorkerCrashed)
        self._crashes += crashed
        # A crashed worker is replaced by its server: stay, unless crashes keep
        # coming without progress (a checkpoint resets the count).
        stay = crashed and self._where != "local"
        if stay and (not checkpointed or self._crashes < self._host.crash_tolerance):
            self._start(self._where)
            return
        try:
            lost = isinstance(exc, errors.ServerUnavailable)
            target = self._host.fallback_target(
                self.fn, self.size, self._where, lost, self._here_allowed
            )
        except errors.OffloadError as err:
            settle(self, exc=err)
            return
        if target == "local" and not self._here_allowed:
            self._host.note_move(self, exc, "paused")
            self._paused.set()  # mode="remote": going on here is the user's choice
            self._settled.set()
            return
        self._host.note_move(self, exc, target)
        self._start(target)

    # -- what a run reports (as a RunWatcher of its server, or its local Session's sink) --------

    def accepted(self, remote: Remote, job_id: int) -> None:
        """``remote``'s server queued this job's run as its job ``job_id``."""
        self._tell_moved(f"job {job_id}", remote)
        self.id, self.server, self._there = job_id, remote.address, (remote, job_id)

    def checkpointed(
        self, state: Any, count: int, done: int = 0, total: int = 0, nbytes: int = 0
    ) -> None:
        """Checkpoint ``count`` of a run (``nbytes`` on the wire), ``done`` of ``total`` if told."""
        if count <= self._count:
            return  # a late one from a run that was already superseded
        if total:
            self._done, self._total = done, total
        self._saved, self._count, self._when = state, count, time.time()
        self._crashes = 0  # progress since the last crash
        self._host.keep_checkpoint(self, state, count, nbytes)

    def _tell_moved(self, to: str, remote: Remote | None = None) -> None:
        """Tell the previous run's server that the job went on at ``to``: ``resumed`` there
        (``to`` names the new job) or ``moved`` (elsewhere), not paused or interrupted."""
        there, self._there = self._there, None
        if there is None:
            return
        before, job_id = there
        if remote is not None and remote is not before:
            to = remote.address
        tell_moved(before, job_id, to)

    def _on_stopped(self) -> None:
        with self._lock:
            where, self._move_to = self._move_to, None
            self._pause_wanted = self._pause_wanted and where is None
        if where is not None and not self._cancel_wanted:  # move(): on the connection's thread
            threading.Thread(target=self._start, args=(where,), daemon=True).start()
        elif not self._cancel_wanted:
            self._paused.set()
            self._settled.set()

    def _withdraw(self) -> bool:
        """Take the current run back from the queue it waits in (lock held); True if taken."""
        local, there = self._local, self._remote
        if local is not None and not local.done():
            return local.cancel()
        if there is not None:
            remote, request_id = there
            return request_id in remote.withdraw([request_id], remote.config.connect_timeout)
        return False

    def _stop_run(self) -> None:
        """Ask the current run to stop at its next checkpoint (lock held)."""
        if self._session is not None:
            self._session.stop = "paused"
        elif self._remote is not None:
            remote, request_id = self._remote
            remote.pause(request_id)


def _settle(job: Future[Any]) -> None:
    assert isinstance(job, Job)
    job._settled.set()
