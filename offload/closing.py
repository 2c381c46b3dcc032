"""How a router stops: no new calls, waiting for those in flight, cancelling those queued.

Split from :mod:`offload.routing`. The futures follow
:mod:`concurrent.futures`: ``shutdown(wait=True)`` waits for every call
without a time limit, ``cancel_futures`` cancels what has not started, and
calls still pending when the interpreter exits are waited for.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .config import Config
from .futures import CallFuture, Withdrawer
from .jobs import Job
from .servers import Servers

#: Every router not yet closed (waited for at exit).
_routers: weakref.WeakSet[Closing] = weakref.WeakSet()
_exiting = False  # the interpreter is shutting down: no new calls


class Closing:
    """The shutting-down half of :class:`~offload.routing.Router`."""

    config: Config
    servers: Servers
    _lock: threading.Lock
    _pool_: ThreadPoolExecutor | None
    _outstanding: set[Future[Any]]
    _stopping: bool
    _closed: threading.Event

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


def _set_event(event: threading.Event, _future: Future[Any]) -> None:
    event.set()


def _join_at_exit() -> None:
    """Wait for every router's pending calls at exit, as the stdlib pools do."""
    global _exiting
    _exiting = True
    for router in list(_routers):
        router.join()


threading._register_atexit(_join_at_exit)  # type: ignore[attr-defined]
