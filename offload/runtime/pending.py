"""The requests one connection has in flight, and what it knows of the server's liveness.

:class:`Pending` is the bookkeeping half of :class:`~offload.runtime.transport.Connection`:
the table matching replies to request ids, when the server was last heard
from, which server instance answers, and when to fail everything because it
went silent or restarted. It does no I/O: the connection's socket owner
feeds it what arrives and asks it whether a heartbeat is due.

Its mutex is the connection's: adding a request and claiming the socket must
be one atomic step, or a leader could let go of the socket while a request
sits in its outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import zmq

from .._exceptions import OffloadError, ProtocolError, ServerUnavailable
from . import protocol

log = logging.getLogger("offload")

Decoder = Callable[[protocol.Header, Sequence[zmq.Frame]], Any]


#: Seconds a send that failed before the server was ever heard waits for a handshake
#: refusal to explain it (the monitor's event may come a moment after the peer is gone).
REFUSAL_WAIT_S = 0.5


class Pending:
    """Requests sent and not yet answered, by request id, and the server's liveness."""

    def __init__(
        self,
        address: str,
        mutex: threading.Lock,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self.address = address
        #: Guards ``entries`` (and, in the connection, the socket's ownership).
        self.mutex = mutex
        self.entries: dict[int, tuple[Future[Any], Decoder]] = {}
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._heard = time.monotonic()
        self._pinged = 0.0
        self._instance: str | None = None
        self._refusal: OffloadError | None = None  # the last handshake refusal, if any
        self._doomed: dict[int, tuple[OffloadError, float]] = {}  # failed sends, see fail_soon
        #: True once the server answered, False after it went silent, None before.
        self.up: bool | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, request_id: int, future: Future[Any], decode: Decoder) -> None:
        """Wait for the reply to ``request_id`` (mutex held)."""
        if not self.entries:  # silence is counted from the first request in flight
            self._heard = time.monotonic()
        self.entries[request_id] = (future, decode)

    def forget(self, request_id: int) -> None:
        """Stop waiting for the reply to ``request_id``; if it comes, it is dropped."""
        with self.mutex:
            self.entries.pop(request_id, None)

    def heard(self) -> None:
        """Something came from the server."""
        self._heard = time.monotonic()
        self.up = True
        self._refusal = None

    def resolve(self, header: protocol.Header, payload: Sequence[zmq.Frame]) -> None:
        """Resolve the request a reply answers with ``decode(header, payload)``.

        A CHECKPOINT or ACCEPTED keeps its request waiting for the final reply.
        A reply to a request no longer waited for is dropped.
        """
        checkpoint = header.kind in protocol.INTERIM
        with self.mutex:
            if checkpoint:  # the call goes on: keep its entry
                entry = self.entries.get(header.request_id)
            else:
                entry = self.entries.pop(header.request_id, None)
        if entry is None:
            return  # a reply to a call that already failed
        future, decode = entry
        if checkpoint:
            try:
                decode(header, payload)
            except Exception as exc:  # an unloadable checkpoint fails its call
                with self.mutex:
                    self.entries.pop(header.request_id, None)
                resolve(future, exc=exc)
            return
        try:
            value = decode(header, payload)
        except BaseException as exc:
            resolve(future, exc=exc)
        else:
            resolve(future, value=value)

    def fail(self, request_id: int | None, exc: OffloadError) -> None:
        """A reply to ``request_id`` was unusable: its request fails with ``exc``.

        With no readable request id, or one nothing waits for, it is logged and dropped.
        """
        with self.mutex:
            entry = None if request_id is None else self.entries.pop(request_id, None)
        if entry is None:
            log.warning("dropped a reply from %s: %s", self.address, exc)
            return
        resolve(entry[0], exc=exc)

    def on_pong(self, frames: list[bytes]) -> None:
        """A PONG on the heartbeat socket."""
        self.heard()
        try:
            self.note_instance(protocol.decode_json(frames[1]).get("instance"))
        except (IndexError, ProtocolError):
            return

    def note_instance(self, instance: Any) -> None:
        """Record the server instance a PONG names; another one means it restarted."""
        if self._instance is not None and instance != self._instance:
            self.fail_all(ServerUnavailable(f"{self.address} restarted; calls in flight are lost"))
        self._instance = instance

    def disconnected(self, max_frame: int | None = None) -> None:
        """The data connection dropped: the calls sent on it are lost.

        After a refused handshake ZeroMQ may try again and drop again: until the
        server is heard, the refusal is what to tell, not a lost connection.
        ZeroMQ does not say why it cut a connection: a reply frame over
        ``max_frame`` bytes is one reason, so the message names it.
        """
        self.up, self._instance = False, None  # whoever answers next is news
        why = "" if max_frame is None else f" (or it sent a frame over {max_frame} bytes)"
        lost = ServerUnavailable(f"lost the connection to {self.address}{why}")
        self.fail_all(self._refusal or lost)

    def refused(self, exc: OffloadError) -> None:
        """The server refused the handshake (``exc`` says which keys to check).

        ZeroMQ does not try again after a refusal, so every request after it
        fails the same way (:meth:`fail_if_refused`) until the server is heard.
        """
        self.up, self._instance = False, None
        self._refusal = exc
        self.fail_all(exc)

    @property
    def refusal(self) -> OffloadError | None:
        """The handshake refusal not yet followed by an answer from the server, if any."""
        return self._refusal

    def fail_soon(self, request_id: int, exc: OffloadError) -> None:
        """Fail ``request_id`` with ``exc`` in ``REFUSAL_WAIT_S``, unless a refusal explains it."""
        with self.mutex:
            self._doomed[request_id] = (exc, time.monotonic() + REFUSAL_WAIT_S)

    def fail_if_refused(self) -> None:
        """Fail what is pending with the handshake's refusal, if there was one."""
        if self._refusal is not None and self.entries:
            self._doomed.clear()
            self.fail_all(self._refusal)
        elif self._doomed:
            now = time.monotonic()
            with self.mutex:
                due = [(r, e) for r, (e, at) in self._doomed.items() if at <= now]
                for request_id, _ in due:
                    del self._doomed[request_id]
            for request_id, exc in due:
                self.fail(request_id, exc)

    def ping_due(self) -> bool:
        """Whether to send a heartbeat now; fails every request after too long a silence.

        Only while requests are in flight: an idle connection needs no liveness.
        """
        if not self.entries:
            return False
        now = time.monotonic()
        silent = now - self._heard
        if silent > self._heartbeat_timeout:
            self.up = False
            # Silence after a refused handshake: the refusal is what to tell.
            refusal = self._refusal
            self.fail_all(
                refusal or ServerUnavailable(f"no answer from {self.address} for {silent:.1f} s")
            )
            return False
        if now - self._pinged > self._heartbeat_interval:
            self._pinged = now
            return True
        return False

    def fail_all(self, exc: OffloadError) -> None:
        """Fail every request in flight with ``exc``."""
        with self.mutex:
            entries, self.entries = self.entries, {}
        for future, _ in entries.values():
            resolve(future, exc=exc)


def resolve(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve ``future`` unless it already was (e.g. cancelled by its owner)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
