"""The futures of calls, and resolving them safely from any thread.

A call's transport side resolves a *running* future (never cancelled); what
the user holds is a :class:`CallFuture`, pending until the call is done and
cancellable while the call still waits in a queue, as a
:class:`concurrent.futures` pool's future is until a worker takes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

log = logging.getLogger("offload")


class Withdrawer(Protocol):
    """Takes calls back from a server's queue (:meth:`offload.remote.Remote.withdraw`)."""

    def withdraw(self, request_ids: Iterable[int], timeout: float) -> set[int]: ...


class CallFuture(Future[Any]):
    """The future of a routed call: pending until it is done, cancellable while it waits.

    :meth:`cancel` succeeds only where the call has not started: still in the
    server's queue (the server confirms it withdrew it) or in the local
    pool's queue, as a stdlib pool's future can be cancelled until a worker
    takes it.
    """

    def __init__(self) -> None:
        super().__init__()
        #: (connection, request id, seconds to wait for an answer) once sent to a server.
        self.sent: tuple[Withdrawer, int, float] | None = None
        #: The local pool's future once the call runs (or waits to run) here instead.
        self.local: Future[Any] | None = None

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        local, sent = self.local, self.sent
        if local is not None:
            withdrawn = local.cancel()
        elif sent is not None:
            remote, request_id, timeout = sent
            withdrawn = request_id in remote.withdraw([request_id], timeout)
        else:
            withdrawn = True
        return withdrawn and cancel_now(self)


def cancel_now(future: Future[Any]) -> bool:
    """Cancel a pending ``future`` and notify its waiters at once; False if it is done.

    A pool notifies waiters of a cancelled future when a worker reaches it
    (``set_running_or_notify_cancel``); a call withdrawn from a server's queue
    is reached by no worker, so it is notified here, or ``wait()`` would never
    count it as done.
    """
    if not Future.cancel(future):
        return False
    future.set_running_or_notify_cancel()
    return True


def running_future() -> Future[Any]:
    """A future for the transport's side of a call: marked running, never cancelled."""
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    return future


class Reply(Future[Any]):
    """A synchronous call's own answer: a running future without a Condition per call.

    A :class:`Future` builds a Condition (a Python object around an RLock),
    and ``set_result`` and ``result`` each take it and run ``notify_all``:
    on a no-op call that was a few percent of the client's CPU, spent on a
    future no one else ever sees. This one keeps what the transport and the
    router use of a running future (``done``, ``set_result``,
    ``set_exception``, ``result``, ``exception``, ``add_done_callback``) with
    one plain lock, and a second one made only when a thread must block in
    :meth:`result` (the reply was not in yet: another thread leads the
    socket). It is never cancelled and never handed to user code.
    """

    _PENDING, _RESULT, _ERROR = 0, 1, 2

    def __init__(self) -> None:  # Future.__init__ (its Condition) is what this saves
        self._step = Reply._PENDING
        self._value: Any = None
        self._lock = threading.Lock()
        self._wakes: threading.Lock | None = None
        self._then: list[Callable[[Future[Any]], object]] | None = None

    def done(self) -> bool:
        return self._step != Reply._PENDING

    def running(self) -> bool:
        return self._step == Reply._PENDING

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: Any) -> None:
        self._finish(Reply._RESULT, result)

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(Reply._ERROR, exception)

    def _finish(self, step: int, value: Any) -> None:
        with self._lock:
            if self._step != Reply._PENDING:
                raise InvalidStateError(f"{self!r} is done already")
            self._value, self._step = value, step
            wakes, then, self._then = self._wakes, self._then, None
        if wakes is not None:
            wakes.release()
        for callback in then or ():
            self._call(callback)

    def _call(self, callback: Callable[[Future[Any]], object]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("exception calling callback for %r", self)

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._lock:
            if self._step == Reply._PENDING:
                self._then = [*(self._then or ()), fn]
                return
        self._call(fn)

    def _wait(self, timeout: float | None) -> None:
        """Block until done (the resolver releases ``_wakes``), or raise TimeoutError."""
        with self._lock:
            if self._step != Reply._PENDING:
                return
            if self._wakes is None:
                self._wakes = threading.Lock()
                self._wakes.acquire()
            wakes = self._wakes
        if not wakes.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise TimeoutError
        wakes.release()  # for any other waiter

    def result(self, timeout: float | None = None) -> Any:
        if self._step == Reply._PENDING:
            self._wait(timeout)
        if self._step == Reply._ERROR:
            raise self._value
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._step == Reply._PENDING:
            self._wait(timeout)
        return self._value if self._step == Reply._ERROR else None

    def __repr__(self) -> str:
        state = ("pending", "finished", "raised")[self._step]
        return f"<Reply at {id(self):#x} state={state}>"


def settle(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve ``future`` unless it already is (done, or cancelled by its owner meanwhile)."""
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except InvalidStateError:  # cancelled between the check and the set
        pass


def chain(outer: Future[Any], inner: Future[Any]) -> None:
    """Resolve ``outer`` as ``inner`` was (unless ``outer`` already is)."""
    exc = inner.exception()
    if exc is not None:
        settle(outer, exc=exc)
    else:
        settle(outer, inner.result())


def chain_unless_cancelled(outer: Future[Any], inner: Future[Any]) -> None:
    """:func:`chain`, unless ``inner`` was cancelled (then ``outer`` was, by its owner)."""
    if not inner.cancelled():
        chain(outer, inner)
