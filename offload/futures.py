"""The futures of calls, and resolving them safely from any thread.

A call's transport side resolves a *running* future (never cancelled); what
the user holds is a :class:`CallFuture`, pending until the call is done and
cancellable while the call still waits in a queue, as a
:class:`concurrent.futures` pool's future is until a worker takes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol


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
