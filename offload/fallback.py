"""Runs here that the user did not ask for: which failures fall back, and saying so.

In ``auto`` mode a call the server cannot take runs on this device instead
(DCOF's offline mode). That is never silent: the first fallback of each
function for each reason is a :class:`RuntimeWarning` naming the reason, and
every one is a record on the ``offload`` logger.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

from . import _exceptions as errors

log = logging.getLogger("offload")

#: Remote failures after which an ``auto`` call runs locally instead: each
#: happens before the function runs, or loses its run with the server.
FALLBACK = (
    errors.ServerUnavailable,
    errors.ServerBusy,
    errors.UnknownFunction,
    errors.VersionMismatch,
    errors.PayloadTooLarge,
    errors.SerializationError,
    errors.DeployRefused,  # provisioning on first use: the server would not take the app
    errors.InlineRefused,  # isolation="thread" on a server without --allow-inline
)

#: Failures that show this server will never run the function: later calls stay here.
STICKY = (
    errors.UnknownFunction,
    errors.VersionMismatch,
    errors.DeployRefused,
    errors.InlineRefused,
)


def falls_back(exc: BaseException) -> bool:
    """Whether an ``auto`` call that failed remotely with ``exc`` runs locally instead."""
    return isinstance(exc, FALLBACK) and not isinstance(exc, errors.UnloadableResult)


class Fallbacks:
    """The fallbacks of one client: warned once per function and reason, logged every time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()
        self._here: set[str] = set()  # functions the server cannot run at all

    def sticks_here(self, fn: Any) -> bool:
        """Whether the server was found unable to run ``fn`` (so ``auto`` keeps it here)."""
        return fn.wire_name in self._here

    def note(self, fn: Any, exc: BaseException) -> None:
        """``fn``'s call runs here because the server failed it with ``exc``."""
        if isinstance(exc, STICKY):
            with self._lock:
                self._here.add(fn.wire_name)
        self._say(fn.wire_name, exc, f"running {fn.wire_name} locally")

    def note_offline(self, fn: Any, address: str) -> None:
        """``fn``'s call runs here because its server does not answer (DCOF's offline mode)."""
        if (fn.wire_name, "offline") in self._warned:
            return  # the per-call path: one set lookup while offline
        with self._lock:
            self._warned.add((fn.wire_name, "offline"))
        message = (
            f"offload: running {fn.wire_name} locally: ServerUnavailable: {address} does not answer"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=6)
        log.warning(message)

    def note_failover(self, fn: Any, exc: BaseException, lost: str, where: str) -> None:
        """A call of ``fn`` failed on server ``lost`` with ``exc``; it goes on at ``where``."""
        if isinstance(exc, STICKY) and where == "local":
            with self._lock:
                self._here.add(fn.wire_name)
        to = "here" if where == "local" else f"to {where}"
        self._say(fn.wire_name, exc, f"moving a call of {fn.wire_name} from {lost} {to}")

    def note_move(self, fn: Any, job_id: str, exc: BaseException, where: str) -> None:
        """Job ``job_id`` of ``fn`` lost its run with ``exc``; it goes on at ``where``."""
        if where == "paused":
            action = f"job {job_id} of {fn.wire_name} paused (mode='remote': not resumed here)"
        else:
            action = f"job {job_id} of {fn.wire_name} resumes {_at(where)} from its checkpoint"
        self._say(fn.wire_name, exc, action)

    def _say(self, name: str, exc: BaseException, action: str) -> None:
        """Warn once per function and reason; log every time."""
        reason = type(exc).__name__
        key = (name, f"{reason}:{action.split(' ', 1)[0]}")
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
        message = f"offload: {action}: {reason}: {exc}"
        if first:
            warnings.warn(message, RuntimeWarning, stacklevel=5)
        log.warning(message) if first else log.info(message)


def _at(where: str) -> str:
    return "here" if where == "local" else f"on {where}"


class Started:
    """A plain call's watcher, with several servers: whether a worker took it (STARTED).

    Failover (issue 13, item 6) sends a call lost with its server to another
    only if it had not started there: a plain call's function has no
    ``retries``, so it is not declared safe to run twice.
    """

    __slots__ = ("ran",)

    def __init__(self) -> None:
        self.ran = False

    def accepted(self, job_id: int) -> None:
        """Only a checkpointed call is ACCEPTED: not this one."""

    def checkpointed(self, state: Any, count: int, done: int, total: int, nbytes: int = 0) -> None:
        """Only a checkpointed call has checkpoints: not this one."""

    def started(self) -> None:
        self.ran = True


def not_again(
    fn: Any, exc: BaseException, started: Started | None, address: str
) -> errors.ServerUnavailable | None:
    """The error a call keeps when it must not be sent again, else None.

    That is when its server was lost (``exc``) after a worker took it
    (``started``): it may have run, and its function is not declared
    idempotent. Logged: the caller raises it.
    """
    if started is None or not started.ran or not isinstance(exc, errors.ServerUnavailable):
        return None
    message = (
        f"{address} was lost after a worker took a call of {fn.wire_name}: it may have run, "
        f"so it is not sent again (@offload(retries=N) declares it safe to run twice): {exc}"
    )
    log.warning("offload: %s", message)
    lost = errors.ServerUnavailable(message)
    lost.__cause__ = exc
    return lost
