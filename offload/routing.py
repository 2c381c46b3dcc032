"""The one place a call is routed: which side it runs on, and running it there.

Every call goes through :class:`Router`: a plain call ``f(x)``, a
``submit``, an ``Executor.map`` item, a checkpointed job, a deadline batch's
items, and what the router itself starts again (a fallback here after the
server could not take a call). Data flow::

    f(x), f.submit(x), client.submit(f, x), map, map_within
      |
      v
    Router.call / Router.submit
      mode  = the call's, else the function's, else the config's   (mode_of)
      side  = the mode's side, or the decider's choice for "auto"  (place);
              with several servers (``servers``), "local" or the chosen
              server's address (decider.decide_among over servers.candidates())
      |
      +-- a job (checkpoints or retries) --> Job(host=router).start(side)
      |                                       runs here on the local executor, or
      |                                       there over servers.get(where); lost
      |                                       runs resume where fallback_target says
      +-- here  --> inline (call) or the local pool (submit) --> decider.observe_local
      +-- there --> Remote.send --> Outcome --> decider.observe_remote, the value
                      | a FALLBACK error (next_place): with several servers, the next
                      | best one (the lost one leaves them until its probation ends),
                      | else in "auto" mode here instead; warned once, logged always
                      v
                    CallFuture: pending until the reply; cancel() withdraws it from
                    the server's queue (a worker has not taken it yet) or the pool's

The futures follow :mod:`concurrent.futures`: ``shutdown(wait=True)`` waits
for every call without a time limit, ``cancel_futures`` cancels what has not
started, and calls still pending when the interpreter exits are waited for.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import _exceptions as errors
from .api import OffloadedFunction
from .checkpoints import write_checkpoint
from .closing import Closing, _routers
from .config import Config
from .fallback import FALLBACK, STICKY, Fallbacks, Started, falls_back, not_again
from .futures import CallFuture, Reply, chain_unless_cancelled, running_future, settle
from .jobhost import JobName, Movable
from .jobs import Job
from .lessons import Lessons
from .migration import Migrations
from .outcome import Outcome
from .profiler import LOCAL, REMOTE, Decider
from .profiler.learning import log_size
from .profiler.sizes import call_size
from .remote import Remote
from .servers import Servers

log = logging.getLogger("offload")


class Router(Closing, Lessons):
    """Decides the side of each call and runs it there; the executor behind a Client."""

    def __init__(self, config: Config, decider: Decider, servers: Servers) -> None:
        self.config = config
        self.decider = decider
        self.servers = servers
        #: Worker crashes without a checkpoint between after which a job leaves a server.
        self.crash_tolerance = config.crash_tolerance
        self._mode = config.mode
        self._lock = threading.Lock()
        self._pool_: ThreadPoolExecutor | None = None
        #: What ran here instead of on the server, warned about once per function and reason.
        self.fallbacks = Fallbacks()
        #: Running jobs moved to a faster server (``migrate="auto"``).
        self.migrations = Migrations(config.migrate, self._result_bytes)
        self._outstanding: set[Future[Any]] = set()
        self._stopping = False  # no new calls; those in flight go on
        self._closed = threading.Event()  # everything finished and released
        _routers.add(self)

    # -- routing -------------------------------------------------------------------------------

    def mode_of(self, fn: OffloadedFunction[..., Any], mode: str | None = None) -> str:
        """The mode a call runs in: the call's, else the function's, else the config's."""
        return mode or fn.mode or self._mode

    def place(
        self, fn: OffloadedFunction[..., Any], args: tuple[Any, ...], kwargs: Any, mode: str
    ) -> tuple[str, int]:
        """(where, size) of a call in ``mode``: decided in ``auto``, else the mode's side.

        ``where`` is "local", "remote" (the configured server) or, with several
        servers, the address of the one the decision chose.
        """
        if mode == "auto":
            if self.fallbacks.sticks_here(fn):
                return LOCAL, call_size(fn, args, kwargs)
            if self.servers.fleet:
                candidates = self.servers.candidates()
                if not candidates:
                    self.fallbacks.note_offline(fn, "none of the servers")
                return self.decider.decide_among(fn, args, kwargs, candidates)
            up = self.servers.up()
            if not up and self.servers.primary is not None:
                self.fallbacks.note_offline(fn, self.servers.primary.address)
            primary = self.servers.primary  # its app, if the server lacks it (provision)
            extra = primary.provisioner.pending_bytes(fn) if up and primary else 0
            if extra:
                return self.decider.decide(fn, args, kwargs, up, extra_up=extra)
            return self.decider.decide(fn, args, kwargs, up)
        size = call_size(fn, args, kwargs)
        if mode == "remote" and self.servers.fleet:  # the best server, never here
            return self.decider.where_among(fn, size, self.servers.candidates(), False), size
        return (LOCAL if mode == "local" else REMOTE), size

    def call(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None = None,
    ) -> Any:
        """Run one call and return its value (the calling thread waits, and may lead I/O)."""
        self._check_open()
        mode = self.mode_of(fn, mode)
        if mode == "local" and not fn.is_job:
            return fn.__wrapped__(*args, **kwargs)
        side, size = self.place(fn, args, kwargs, mode)
        if fn.is_job:
            job = Job(fn, args, kwargs, size, host=self, here_allowed=mode != "remote")
            self._track(job.start(side))
            job.wait_settled()
            if job.paused:  # its server was lost and mode="remote" forbids going on here
                raise errors.JobPaused(
                    f"{fn.wire_name}: its server was lost; the job is paused at checkpoint "
                    f"{job.progress.checkpoints} (exc.job.resume('local') goes on here)",
                    job,
                )
            return job.result()
        tried: tuple[str, ...] = ()
        while side != LOCAL:
            remote, started = None, Started() if self.servers.fleet else None
            try:
                remote = self.servers.get(side)
                assert remote is not None
                inner = Reply()  # a lighter future: only this thread waits for it
                remote.send(fn, args, kwargs, inner, wait=True, watcher=started)
                outcome: Outcome = inner.result()
            except FALLBACK as exc:
                kept = self._kept(fn, exc, started, remote)
                if kept is not None:
                    raise kept from exc
                where = self.next_place(fn, size, remote, exc, mode == "auto", tried)
                if where is None:
                    raise
                side, tried = where, (*tried, remote.address if remote else side)
                continue
            self.learn_remote(fn, size, outcome, remote)
            return outcome.value
        return self.run_here(fn, size, args, kwargs)

    def next_place(
        self,
        fn: OffloadedFunction[..., Any],
        size: int,
        remote: Remote | None,
        exc: BaseException,
        here: bool,
        tried: tuple[str, ...] = (),
    ) -> str | None:
        """Where a call that failed on ``remote`` with ``exc`` goes: a server, here, or None.

        With several servers (Freelance): a lost server leaves the usable ones,
        one that cannot run the function is not asked again for it, and the call
        goes to the best server left (``auto`` may choose here). ``here``: the
        call may run on this device; else it stays failed when no server is left.
        Never silent: see :mod:`offload.fallback`.
        """
        if not falls_back(exc):
            return None
        if self.servers.fleet and remote is not None:
            usable = self.servers.usable
            assert usable is not None
            if isinstance(exc, STICKY):
                usable.lacks(remote.address, fn.wire_name)
            elif isinstance(exc, errors.ServerUnavailable):
                self.servers.lose(remote)
            skip = {*tried, remote.address}
            left = tuple(c for c in self.servers.candidates() if c.address not in skip)
            if left:
                where = self.decider.where_among(fn, size, left, here, explore=False)
                self.fallbacks.note_failover(fn, exc, remote.address, where)
                return where
        if not here:
            return None
        self.fallbacks.note(fn, exc)
        return LOCAL

    def _kept(
        self, fn: Any, exc: BaseException, started: Started | None, remote: Remote | None
    ) -> BaseException | None:
        """The error a lost call keeps because it may have run there (see ``not_again``)."""
        if remote is None:
            return None
        kept = not_again(fn, exc, started, remote.address)
        if kept is not None:
            self.servers.lose(remote)
        return kept

    def submit(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None = None,
    ) -> Future[Any]:
        """Start one call; return its future (a :class:`~offload.Job` for a job)."""
        self._check_open()
        mode = self.mode_of(fn, mode)
        side, size = self.place(fn, args, kwargs, mode)
        if fn.is_job:
            job = Job(fn, args, kwargs, size, host=self, here_allowed=mode != "remote")
            return self._track(job.start(side))
        if side == LOCAL:
            learn = None if mode == "local" else size
            return self._track(self._pool().submit(self.run_here, fn, learn, args, kwargs))
        there = self.start_there(fn, args, kwargs, size, fallback=mode == "auto", where=side)
        return self._track(there)

    def start_there(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
        *,
        fallback: bool,
        where: str = REMOTE,
    ) -> CallFuture:
        """Send a call to ``where`` (a server); a FALLBACK failure goes on elsewhere.

        Elsewhere: the next best server (with several), else here if ``fallback``.
        """
        outer = CallFuture()
        self._send_there(outer, fn, args, kwargs, size, fallback, where, ())
        return outer

    def _send_there(
        self,
        outer: CallFuture,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
        fallback: bool,
        where: str,
        tried: tuple[str, ...],
    ) -> None:
        inner = running_future()
        remote, started = None, Started() if self.servers.fleet else None
        try:
            remote = self.servers.get(where)
            assert remote is not None
            request_id = remote.send(fn, args, kwargs, inner, wait=False, watcher=started)
        except errors.OffloadError as exc:
            settle(inner, exc=exc)
        else:
            outer.sent = (remote, request_id, self.config.connect_timeout)
        there = (fn, args, kwargs, size, fallback, remote, tried, started)
        inner.add_done_callback(functools.partial(self._there_done, outer, there))

    def _there_done(self, outer: CallFuture, there: tuple[Any, ...], inner: Future[Any]) -> None:
        fn, args, kwargs, size, fallback, remote, tried, started = there
        exc = inner.exception()
        if exc is None:
            outcome: Outcome = inner.result()
            self.learn_remote(fn, size, outcome, remote)
            settle(outer, outcome.value)
            return
        kept = self._kept(fn, exc, started, remote)
        if kept is not None:
            settle(outer, exc=kept)
            return
        where = None if outer.done() else self.next_place(fn, size, remote, exc, fallback, tried)
        if where is None:
            settle(outer, exc=exc)
        elif where != LOCAL:
            tried = (*tried, remote.address if remote is not None else where)
            self._send_there(outer, fn, args, kwargs, size, fallback, where, tried)
        else:
            try:
                local = self._pool().submit(self.run_here, fn, size, args, kwargs)
            except RuntimeError:  # the pool is shut: the remote failure stands
                settle(outer, exc=exc)
                return
            outer.local = local
            local.add_done_callback(functools.partial(chain_unless_cancelled, outer))

    def run_here(
        self,
        fn: OffloadedFunction[..., Any],
        size: int | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a call on this device; with a ``size``, the decider learns how long it took."""
        if size is None:
            return fn.__wrapped__(*args, **kwargs)
        start = time.perf_counter()
        result = fn.__wrapped__(*args, **kwargs)
        self.learn_local(fn, size, time.perf_counter() - start)
        return result

    # -- what jobs and batches are given -------------------------------------------------------

    @property
    def local_executor(self) -> ThreadPoolExecutor:
        """The pool that runs calls and job runs on this device."""
        return self._pool()

    def connection(self, where: str) -> Remote | None:
        """The connection a run goes over: None for ``"local"``, else "remote" or an address."""
        return self.servers.get(where)

    def fallback_target(
        self,
        fn: OffloadedFunction[..., Any] | None = None,
        size: int = 0,
        left: str = "",
        lost: bool = False,
        here: bool = True,
    ) -> str:
        """Where a job that ``left`` a server goes (``lost``: that server stopped answering).

        With several servers, the best other usable one (``auto`` may choose here
        when ``here``); else the backup server if it answers, else here.
        """
        if not self.servers.fleet or fn is None:
            return self.servers.fallback_target()
        usable = self.servers.usable
        assert usable is not None
        if lost and left:
            usable.lose(left)
        candidates = tuple(c for c in self.servers.candidates() if c.address != left)
        if not candidates:
            return LOCAL
        return self.decider.where_among(fn, size, candidates, here, explore=False)

    def keep_checkpoint(self, job: Movable, state: Any, count: int, nbytes: int = 0) -> None:
        """The checkpoint sink: keep a job's latest state in ``checkpoint_dir``, if set; with
        several servers, move the job if another is predicted to finish it sooner."""
        if self.config.checkpoint_dir:
            write_checkpoint(self.config.checkpoint_dir, job, state, count)
        if self.servers.fleet and self.migrations.enabled(job):
            self.migrations.checkpointed(job, nbytes, self.servers.candidates())

    def _result_bytes(self, job: Movable) -> float:
        """The size ``job``'s result is predicted to have: what whole remote runs of its
        function returned, at its call's size (0 before one came back)."""
        return self.decider.profile(job.fn).down.predict(log_size(job.size)) or 0.0

    def note_move(self, job: JobName, exc: BaseException, where: str) -> None:
        """A job's run was lost with ``exc`` and goes on at ``where`` (or is "paused")."""
        self.fallbacks.note_move(job.fn, job.key if job.id is None else str(job.id), exc, where)

    def _track(self, future: Future[Any]) -> Future[Any]:
        with self._lock:
            self._outstanding.add(future)
        future.add_done_callback(self._untrack)
        return future

    def _untrack(self, future: Future[Any]) -> None:
        with self._lock:
            self._outstanding.discard(future)

    def _pool(self) -> ThreadPoolExecutor:
        pool = self._pool_
        if pool is None:
            with self._lock:
                if self._pool_ is None:
                    self._pool_ = ThreadPoolExecutor(
                        self.config.local_workers, thread_name_prefix="offload-local"
                    )
                pool = self._pool_
        return pool
