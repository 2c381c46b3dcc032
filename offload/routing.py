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
      side  = the mode's side, or the decider's choice for "auto"  (place)
      |
      +-- a job (checkpoints or retries) --> Job(host=router).start(side)
      |                                       runs here on the local executor, or
      |                                       there over servers.get(where); lost
      |                                       runs resume where fallback_target says
      +-- here  --> inline (call) or the local pool (submit) --> decider.observe_local
      +-- there --> Remote.send --> Outcome --> decider.observe_remote, the value
                      | a FALLBACK error in "auto" mode: run here instead, warned once
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
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import _exceptions as errors
from .api import OffloadedFunction
from .checkpoints import write_checkpoint
from .config import Config
from .deploy import count_transfer
from .fallback import FALLBACK, Fallbacks, falls_back
from .futures import CallFuture, Withdrawer, chain_unless_cancelled, running_future, settle
from .jobs import Job
from .profiler import LOCAL, REMOTE, Decider
from .profiler.sizes import call_size
from .remote import Outcome, Remote
from .servers import Servers

log = logging.getLogger("offload")

_routers: weakref.WeakSet[Router] = weakref.WeakSet()
_exiting = False  # the interpreter is shutting down: no new calls


class Router:
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
        """(side, size) of a call in ``mode``: decided in ``auto``, else the mode's side."""
        if mode == "auto":
            if self.fallbacks.sticks_here(fn):
                return LOCAL, call_size(fn, args, kwargs)
            up = self.servers.up()
            if not up and self.servers.primary is not None:
                self.fallbacks.note_offline(fn, self.servers.primary.address)
            primary = self.servers.primary  # its app, if the server lacks it (provision)
            extra = primary.provisioner.pending_bytes(fn) if up and primary else 0
            if extra:
                return self.decider.decide(fn, args, kwargs, up, extra_up=extra)
            return self.decider.decide(fn, args, kwargs, up)
        return (LOCAL if mode == "local" else REMOTE), call_size(fn, args, kwargs)

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
        if side == LOCAL:
            return self.run_here(fn, size, args, kwargs)
        try:
            remote = self.servers.require()
            inner = running_future()
            remote.send(fn, args, kwargs, inner, wait=True)
            outcome: Outcome = inner.result()
        except FALLBACK as exc:
            if mode != "auto" or not falls_back(exc):
                raise
            self.fallbacks.note(fn, exc)
            return self.run_here(fn, size, args, kwargs)
        self.learn_remote(fn, size, outcome, remote)
        return outcome.value

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
        return self._track(self.start_there(fn, args, kwargs, size, fallback=mode == "auto"))

    def start_there(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
        *,
        fallback: bool,
    ) -> CallFuture:
        """Send a call to the server; with ``fallback``, a FALLBACK failure runs it here."""
        outer = CallFuture()
        inner = running_future()
        try:
            remote = self.servers.require()
            request_id = remote.send(fn, args, kwargs, inner, wait=False)
        except errors.OffloadError as exc:
            settle(inner, exc=exc)
        else:
            outer.sent = (remote, request_id, self.config.connect_timeout)
        inner.add_done_callback(
            functools.partial(self._there_done, outer, fn, args, kwargs, size, fallback)
        )
        return outer

    def _there_done(
        self,
        outer: CallFuture,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
        fallback: bool,
        inner: Future[Any],
    ) -> None:
        exc = inner.exception()
        if exc is None:
            outcome: Outcome = inner.result()
            self.learn_remote(fn, size, outcome, self.servers.primary)
            settle(outer, outcome.value)
        elif fallback and falls_back(exc) and not outer.done():
            self.fallbacks.note(fn, exc)
            try:
                local = self._pool().submit(self.run_here, fn, size, args, kwargs)
            except RuntimeError:  # the pool is shut: the remote failure stands
                settle(outer, exc=exc)
                return
            outer.local = local
            local.add_done_callback(functools.partial(chain_unless_cancelled, outer))
        else:
            settle(outer, exc=exc)

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

    def fallback_target(self) -> str:
        """Where a job whose server is lost goes: the backup server if it answers, else here."""
        return self.servers.fallback_target()

    def keep_checkpoint(self, job: Job, state: Any, count: int) -> None:
        """The checkpoint sink: also keep a job's latest state in ``checkpoint_dir``, if set."""
        if self.config.checkpoint_dir:
            write_checkpoint(self.config.checkpoint_dir, job, state, count)

    def note_move(self, job: Job, exc: BaseException, where: str) -> None:
        """A job's run was lost with ``exc`` and goes on at ``where`` (or is "paused")."""
        self.fallbacks.note_move(job.fn, job.id, exc, where)

    def learn_local(self, fn: OffloadedFunction[..., Any], size: int, seconds: float) -> None:
        """A whole call of ``size`` ran here in ``seconds``."""
        try:
            self.decider.observe_local(fn, size, seconds)
        except Exception:  # the result stands, whatever the profiler thinks
            log.warning("the profiler could not learn from a call", exc_info=True)

    def learn_remote(
        self, fn: OffloadedFunction[..., Any], size: int, outcome: Outcome, remote: Remote | None
    ) -> None:
        """A whole call of ``size`` ran on ``remote``; only the configured server's teach."""
        if remote is None or remote is not self.servers.primary:
            return
        if outcome.provision is not None:  # the app deployed for it: a transfer like any other
            count_transfer(self.decider, fn, outcome.provision)
        try:
            self.decider.observe_remote(
                fn,
                size,
                outcome.turnaround,
                outcome.server_s,
                outcome.sent,
                outcome.received,
                outcome.alone,
            )
        except Exception:  # the result stands, whatever the profiler thinks
            log.warning("the profiler could not learn from a call", exc_info=True)

    # -- shutting down -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once shutdown began: no new calls are accepted."""
        return self._stopping

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; ``cancel_futures`` cancels what has not started.

        With ``wait``, return once every call has finished and the connections
        are closed; else that happens in the background (and at exit).
        """
        with self._lock:
            first, self._stopping = not self._stopping, True
        if cancel_futures:
            self._cancel_waiting()
        if wait:
            self.join()
            self._close()
        elif first:
            threading.Thread(target=self._close_when_idle, daemon=True).start()

    def join(self) -> None:
        """Wait, without a time limit, until no call of this router is pending.

        A future counts as finished once its done-callbacks have run (a
        callback added here runs after those added before), as a pool's
        worker thread finishes only after the callbacks it runs.
        """
        while True:
            with self._lock:  # a paused job waits for its user, not for this
                pending = [f for f in self._outstanding if not (isinstance(f, Job) and f.paused)]
            if not pending:
                if not self.servers.in_flight():
                    return
                time.sleep(0.005)  # synchronous calls of other threads
                continue
            future, called = pending[0], threading.Event()
            future.add_done_callback(functools.partial(_set_event, called))
            while not called.wait(0.25):  # and look again: the job may pause meanwhile
                if isinstance(future, Job) and future.paused:
                    break

    def _close_when_idle(self) -> None:
        self.join()
        self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            pool = self._pool_
        if pool is not None:
            pool.shutdown(wait=True)
        self.servers.close()
        _routers.discard(self)

    def _cancel_waiting(self) -> None:
        """Cancel every call not started: queued here, queued on the server, jobs waiting."""
        pool = self._pool_
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            pending = list(self._outstanding)
        sent: dict[Withdrawer, dict[int, CallFuture]] = {}
        for future in pending:
            if isinstance(future, Job):
                future.cancel_if_waiting()
            elif isinstance(future, CallFuture) and future.local is None and future.sent:
                remote, request_id, _ = future.sent
                sent.setdefault(remote, {})[request_id] = future
        for remote, calls in sent.items():  # one round trip per server
            for request_id in remote.withdraw(calls, self.config.connect_timeout):
                calls[request_id].sent = None  # withdrawn: nothing left to take back
                calls[request_id].cancel()

    def _check_open(self) -> None:
        if self._stopping:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

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


def _set_event(event: threading.Event, _future: Future[Any]) -> None:
    event.set()


def _join_at_exit() -> None:
    """Wait for every router's pending calls at exit, as the stdlib pools do."""
    global _exiting
    _exiting = True
    for router in list(_routers):
        router.join()


threading._register_atexit(_join_at_exit)  # type: ignore[attr-defined]
