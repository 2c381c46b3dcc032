"""One ZeroMQ DEALER connection to one edge server, shared by all threads of a client.

Many requests are in flight at once; each carries a request id and its reply
is matched back to a pending entry, so there is no REQ/REP lockstep. A ZeroMQ
socket must not be used by two threads at once, so exactly one thread, the
*leader*, owns it at any time (the leader/follower pattern):

* A synchronous call that finds no leader becomes the leader: it sends its
  own request, polls for replies, resolves whatever arrives, and returns when
  its own reply is in: a lone caller pays no thread hand-off at all.
* A call that finds a leader appends its frames to an outbox and wakes the
  leader through a pipe; the leader sends them.
* A leader that must leave while replies are still pending (a synchronous
  caller whose reply arrived, or an asynchronous ``submit``) hands leadership
  to a background I/O thread, which pumps until nothing is pending.

A future's callbacks run in the thread that resolves it, which is the
leader; a callback may itself make calls on the same connection (the leader
then sends directly and pumps until that reply is in).

Liveness: while calls are pending the leader pings the server every
``heartbeat_interval`` over a second connection used for nothing else, so a
ping is never stuck behind a large upload or download on the data connection.
If nothing at all is heard for ``heartbeat_timeout``, or the server answers
with another instance id (it restarted and lost our calls), every pending
call fails with :class:`ServerUnavailable`. The request table and this
bookkeeping are :class:`~offload.runtime.pending.Pending`; the sockets are
:class:`~offload.runtime.link.Link`.

Observers (:meth:`Connection.observe`) see every message on the data
connection, for per-call byte counts.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import zmq

from .._exceptions import ProtocolError, ServerUnavailable
from . import protocol, sockets
from .link import Link, new_identity
from .observers import RECEIVED, SENT, Observer, notify, notify_sent
from .pending import Decoder, Pending

__all__ = ["RECEIVED", "SENT", "Connection", "Decoder", "Observer"]


class Connection:
    """A DEALER socket to ``address`` with any number of requests in flight."""

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        curve: tuple[bytes, bytes, bytes] | None = None,
        observer: Observer | None = None,
        max_reply: int | None = None,
    ) -> None:
        """``curve``: (this client's public key, its secret key, the server's public key).

        ``observer``: one observer from the start (see :meth:`observe`). ``max_reply``:
        the most bytes a reply may have (header and payload); a larger one fails its
        request as its frames arrive, before it is all in memory (None: no limit).
        """
        self.address = address
        interval_ms = int(heartbeat_interval * 1000)  # the routing id is the Link's: see there
        self._link = Link(context, address, new_identity(), curve, interval_ms, max_reply)
        self._observers: tuple[Observer, ...] = () if observer is None else (observer,)
        self._max_reply = max_reply

        self._mutex = threading.Lock()
        self._io_cond = threading.Condition(self._mutex)
        self._pending = Pending(
            address,
            self._mutex,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
        )
        self._outbox: list[Sequence[Any]] = []
        self._leader = False
        self._owner = 0  # thread id of the leader
        self._io_owner = False
        self._woken = False
        self._closed = False
        self._owner_closes = False
        self._ids = itertools.count(1)
        self._io_thread = threading.Thread(
            target=self._io_loop, name=f"offload-io-{address}", daemon=True
        )
        self._io_thread.start()

    @property
    def up(self) -> bool | None:
        """True once the server answered, False after it went silent, None before."""
        return self._pending.up

    @up.setter
    def up(self, value: bool | None) -> None:
        self._pending.up = value

    def in_flight(self) -> int:
        """Requests sent and not yet answered (a racy count, for heuristics only)."""
        return len(self._pending.entries)

    def next_id(self) -> int:
        """A fresh request id (thread-safe: ``itertools.count`` is atomic under the GIL)."""
        return next(self._ids)

    def observe(self, observer: Observer) -> None:
        """Call ``observer(request_id, direction, kind, frames, nbytes)`` for every message.

        Every message on the data connection, both ways: ``direction`` is
        ``"sent"`` (:data:`SENT`) once ZeroMQ took the message, ``"received"``
        (:data:`RECEIVED`) before its reply resolves anything, so a call's
        bytes are all counted by the time its future is done. ``kind`` is the
        header's (``protocol.CALL``, ``RESULT``, ``CHECKPOINT``, ``PING``, ...),
        ``request_id`` the header's (replies carry their request's), ``frames``
        the number of frames, header included, and ``nbytes`` their total size,
        header included (ZMTP framing and TCP/IP not). PINGs the caller sends
        on this connection (``Remote.ping``) are seen like any request; the
        heartbeat socket's own PINGs and PONGs are not, nor a received message
        whose header is not an offload header, nor one that could not be sent.

        The observer runs in whichever thread sends or receives (a caller, or
        the connection's I/O thread), with no lock held, so it must be quick and
        thread-safe; what it raises is logged and dropped. Without observers
        the hot path pays one ``if``.
        """
        with self._mutex:
            self._observers = (*self._observers, observer)

    def unobserve(self, observer: Observer) -> None:
        """Stop calling ``observer`` (no error if it was not observing)."""
        with self._mutex:
            self._observers = tuple(o for o in self._observers if o is not observer)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: nothing more is sent or received."""
        return self._closed

    def request(
        self,
        request_id: int,
        frames: Sequence[Any],
        future: Future[Any],
        decode: Decoder,
        *,
        wait: bool,
    ) -> None:
        """Send ``frames``; the reply resolves ``future`` with ``decode(header, payload)``.

        With ``wait`` the calling thread may lead the socket until ``future`` is
        done, so a synchronous call needs no thread hand-off.
        """
        with self._mutex:
            if self._closed:
                raise ServerUnavailable(f"connection to {self.address} is closed")
            self._pending.add(request_id, future, decode)
            lead, nested = self._claim(frames)
        if not (lead or nested):
            return
        try:
            self._send(frames)
        except ServerUnavailable as exc:
            refusal = self._pending.refusal
            if refusal is None and self._pending.up is None:
                # Never heard: ZeroMQ drops the peer of a refused handshake, and the refusal
                # may still be on its way; it, or this failure, ends the call shortly.
                self._pending.fail_soon(request_id, exc)
            else:
                with self._mutex:
                    self._pending.entries.pop(request_id, None)
                if lead:
                    self._lead(until=None, handoff=True)  # release, or pass on to the I/O thread
                if refusal is not None:  # no peer since it refused us: say why
                    raise type(refusal)(*refusal.args) from exc
                raise
        if nested:
            while wait and not future.done() and not self._closed:
                self._pump(future)
        elif wait:
            self._lead(until=future)
        else:
            self._lead(until=None, handoff=True)

    def forget(self, request_id: int) -> None:
        """Stop waiting for the reply to ``request_id``; if it comes, it is dropped."""
        self._pending.forget(request_id)

    def post(self, frames: Sequence[Any]) -> None:
        """Send a message that gets no reply of its own (PAUSE)."""
        with self._mutex:
            if self._closed:
                raise ServerUnavailable(f"connection to {self.address} is closed")
            lead, nested = self._claim(frames)
        if not (lead or nested):
            return
        try:
            self._send(frames)
        finally:
            if lead:
                self._lead(until=None, handoff=True)  # release, or pass on to the I/O thread

    def note_instance(self, instance: Any) -> None:
        """Record the server instance a PONG names; another one means it restarted."""
        self._pending.note_instance(instance)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every pending request to be answered."""
        deadline = time.monotonic() + timeout
        while self._pending.entries and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Fail pending requests, wait for the socket's owner to let go, close everything.

        Called from a callback (that is, by the thread that owns the socket), the
        sockets are closed by that thread when it lets go.
        """
        me = threading.get_ident()
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._io_cond.notify_all()
            self._wake()
            owner_is_me = self._leader and self._owner == me
            deadline = time.monotonic() + 5
            while self._leader and not owner_is_me:
                if not self._io_cond.wait(max(0.0, deadline - time.monotonic())):
                    break
            self._owner_closes = owner_is_me
            close_now = not owner_is_me and not self._leader
        self._pending.fail_all(ServerUnavailable(f"connection to {self.address} was closed"))
        if threading.current_thread() is not self._io_thread:
            self._io_thread.join(timeout=5)
        if close_now:
            self._link.close()

    # -- leadership ---------------------------------------------------------------------------

    def _claim(self, frames: Sequence[Any]) -> tuple[bool, bool]:
        """(lead, nested) for sending ``frames`` (mutex held).

        The socket is free: this thread leads it. The calling thread leads it
        already (a callback of a reply): nested. Another thread leads it: the
        frames go to its outbox and it is woken.
        """
        nested = self._leader and self._owner == threading.get_ident()
        lead = not self._leader
        if lead:
            self._leader, self._owner = True, threading.get_ident()
        elif not nested:
            self._outbox.append(frames)
            self._wake()
        return lead, nested

    def _wake(self) -> None:
        """Interrupt the leader's poll (call with the mutex held)."""
        if not self._woken:
            self._woken = True
            self._link.wake()

    def _lead(self, until: Future[Any] | None, handoff: bool = False) -> None:
        """Pump the socket until ``until`` is done (the I/O thread: until nothing is pending).

        ``handoff``: the caller only had to send; pass leadership to the I/O thread now.
        Whatever ends this early (an exception, Ctrl-C), the socket is released or passed on.
        """
        pending = self._pending
        try:
            while True:
                if not handoff:
                    self._pump(until)
                with self._mutex:
                    if self._closed:
                        self._release()
                        if self._owner_closes:  # close() was called from our own callback
                            self._link.close()
                        return
                    if self._outbox and not handoff:
                        continue
                    if until is not None and not until.done():
                        continue
                    if not pending.entries:
                        self._release()
                        return
                    if until is not None or handoff:
                        self._pass_to_io_thread()
                        return
        except BaseException:
            with self._mutex:
                if pending.entries and not self._closed and until is not None:
                    self._pass_to_io_thread()
                else:
                    self._release()
            raise

    def _release(self) -> None:
        """Give up the socket (mutex held); only :meth:`close` waits for that.

        The I/O thread waits to be made the owner, not for a release: waking it
        on every synchronous call cost a thread switch per call, for nothing.
        """
        self._leader = self._io_owner = False
        if self._closed:
            self._io_cond.notify_all()

    def _pass_to_io_thread(self) -> None:
        """Make the I/O thread the socket's owner (mutex held)."""
        self._io_owner = True
        self._owner = self._io_thread.ident or 0
        self._io_cond.notify_all()

    def _io_loop(self) -> None:
        while True:
            with self._mutex:
                while not self._io_owner and not self._closed:
                    self._io_cond.wait()
                if self._closed:
                    return
            try:
                self._lead(until=None)
            except Exception as exc:  # never let the I/O thread die with calls pending
                self._pending.fail_all(
                    ServerUnavailable(f"connection to {self.address} failed: {exc}")
                )

    # -- socket I/O (the leader only) ---------------------------------------------------------

    def _send(self, frames: Sequence[Any]) -> None:
        self._link.send(frames, self._pending)
        if self._observers:
            notify_sent(self._observers, frames)

    def _pump(self, until: Future[Any] | None = None) -> None:
        """One round: send queued frames, wait for events, resolve replies, check liveness.

        Once ``until`` is done, the replies still waiting are left for the next
        round, whoever pumps it: :meth:`Link.wait` looks for one before it polls
        (ZeroMQ's fd would not say again), so asking the socket once more here,
        on every synchronous call, would only cost a system call.
        """
        link = self._link
        if self._woken:
            link.clear_wake()
            with self._mutex:
                self._woken = False
                outbox, self._outbox = self._outbox, []
            for frames in outbox:
                try:
                    self._send(frames)
                except ServerUnavailable as exc:
                    self._pending.fail_all(exc)
        events = link.wait()
        sock = link.sock
        while sockets.readable(sock):
            reply = link.receive(self._pending, self._max_reply)
            if reply is not None:
                self._dispatch(reply)
            if until is not None and until.done():
                break
        link.service(events, self._pending)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        pending = self._pending
        pending.heard()
        try:
            header = protocol.decode_header(frames[0].buffer)
        except ProtocolError as exc:  # its call (if its id can be read) fails: never a hang
            pending.fail(protocol.peek_request_id(frames[0].buffer), exc)
            return
        if self._observers:
            notify(self._observers, header.request_id, RECEIVED, header.kind, frames)
        pending.resolve(header, frames[1:])
