"""One ZeroMQ DEALER connection to one edge server, shared by all threads of a client.

Many requests are in flight at once; each carries a request id and its reply
is matched back to a pending entry, so there is no REQ/REP lockstep. A ZeroMQ
socket must not be used by two threads at once, so exactly one thread, the
*leader*, owns it at any time (the leader/follower pattern):

* A synchronous call that finds no leader becomes the leader: it sends its
  own request, polls for replies, resolves whatever arrives, and returns when
  its own reply is in. The common single-caller case thus pays no thread
  hand-off at all, which matters when a round trip is a few tens of
  microseconds.
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
call fails with :class:`ServerUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import select
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import zmq

from .._exceptions import OffloadError, ProtocolError, ServerUnavailable
from . import protocol, sockets

Decoder = Callable[[protocol.Header, Sequence[zmq.Frame]], Any]


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
    ) -> None:
        """``curve``: (this client's public key, its secret key, the server's public key)."""
        self.address = address
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._poll_ms = int(heartbeat_interval * 1000)
        #: The data socket's routing id, chosen here: heartbeats vouch for it.
        self.identity = b"c" + secrets.token_bytes(15)
        self._sock = _dealer(context, address, self.identity, curve)
        self._hb = _dealer(context, address, None, curve)
        self._hb_fd = sockets.fd(self._hb)
        self._hb_dirty = False
        # The data connection's own fate: a disconnect loses the calls sent on it.
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitor_fd = sockets.fd(self._monitor)
        for sock in (self._sock, self._hb, self._monitor):
            sockets.readable(sock)  # arms the fd: ZeroMQ signals only readers that looked
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # Poll the sockets' notification fds directly rather than through zmq.Poller:
        # each zmq_poll costs several extra system calls per socket, and a small
        # call's latency is mostly system calls.
        self._fdpoll = select.poll()
        for fd in (sockets.fd(self._sock), self._hb_fd, self._monitor_fd, self._wake_r):
            self._fdpoll.register(fd, select.POLLIN)

        self._mutex = threading.Lock()
        self._io_cond = threading.Condition(self._mutex)
        self._pending: dict[int, tuple[Future[Any], Decoder]] = {}
        self._outbox: list[Sequence[Any]] = []
        self._leader = False
        self._owner = 0  # thread id of the leader
        self._io_owner = False
        self._woken = False
        self._closed = False
        self._owner_closes = False
        self._ids = itertools.count(1)
        self._heard = time.monotonic()
        self._pinged = 0.0
        self._instance: str | None = None
        #: True once the server answered, False after it went silent, None before.
        self.up: bool | None = None
        self._io_thread = threading.Thread(
            target=self._io_loop, name=f"offload-io-{address}", daemon=True
        )
        self._io_thread.start()

    def in_flight(self) -> int:
        """Requests sent and not yet answered (a racy count, for heuristics only)."""
        return len(self._pending)

    def next_id(self) -> int:
        """A fresh request id (thread-safe: ``itertools.count`` is atomic under the GIL)."""
        return next(self._ids)

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
            if not self._pending:
                self._heard = time.monotonic()
            self._pending[request_id] = (future, decode)
            lead, nested = self._claim(frames)
        if not (lead or nested):
            return
        try:
            self._send(frames)
        except ServerUnavailable:
            with self._mutex:
                self._pending.pop(request_id, None)
            if lead:
                self._lead(until=None, handoff=True)  # release, or pass on to the I/O thread
            raise
        if nested:
            while wait and not future.done() and not self._closed:
                self._pump()
        elif wait:
            self._lead(until=future)
        else:
            self._lead(until=None, handoff=True)

    def forget(self, request_id: int) -> None:
        """Stop waiting for the reply to ``request_id``; if it comes, it is dropped."""
        with self._mutex:
            self._pending.pop(request_id, None)

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

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every pending request to be answered."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
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
        self._fail_all(ServerUnavailable(f"connection to {self.address} was closed"))
        if threading.current_thread() is not self._io_thread:
            self._io_thread.join(timeout=5)
        if close_now:
            self._close_sockets()

    def _close_sockets(self) -> None:
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._hb.close(linger=0)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- leadership ---------------------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the leader's poll (call with the mutex held)."""
        if not self._woken:
            self._woken = True
            os.write(self._wake_w, b"\0")

    def _send(self, frames: Sequence[Any]) -> None:
        try:
            sockets.send_frames(self._sock, frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise ServerUnavailable(f"cannot send to {self.address}: {exc}") from exc

    def _lead(self, until: Future[Any] | None, handoff: bool = False) -> None:
        """Pump the socket until ``until`` is done (the I/O thread: until nothing is pending).

        ``handoff``: the caller only had to send; pass leadership to the I/O thread now.
        Whatever ends this early (an exception, Ctrl-C), the socket is released or passed on.
        """
        try:
            while True:
                if not handoff:
                    self._pump()
                with self._mutex:
                    if self._closed:
                        self._release()
                        if self._owner_closes:  # close() was called from our own callback
                            self._close_sockets()
                        return
                    if self._outbox and not handoff:
                        continue
                    if until is not None and not until.done():
                        continue
                    if not self._pending:
                        self._release()
                        return
                    if until is not None or handoff:
                        self._pass_to_io_thread()
                        return
        except BaseException:
            with self._mutex:
                if self._pending and not self._closed and until is not None:
                    self._pass_to_io_thread()
                else:
                    self._release()
            raise

    def _release(self) -> None:
        """Give up the socket (mutex held)."""
        self._leader = self._io_owner = False
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
                self._fail_all(ServerUnavailable(f"connection to {self.address} failed: {exc}"))

    def _pump(self) -> None:
        """One round: send queued frames, wait for events, resolve replies, check liveness."""
        if self._woken:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            with self._mutex:
                self._woken = False
                outbox, self._outbox = self._outbox, []
            for frames in outbox:
                try:
                    self._send(frames)
                except ServerUnavailable as exc:
                    self._fail_all(exc)
        sock = self._sock
        # A notification fd only says "something changed": EVENTS is the truth, and
        # every message must be drained before polling again.
        events: list[tuple[int, int]] = []
        if not sockets.readable(sock):
            events = self._fdpoll.poll(self._poll_ms)
        while sockets.readable(sock):
            self._dispatch(sock.recv_multipart(copy=False))
        if events:
            fired = {fd for fd, _ in events}
            if self._monitor_fd in fired:
                while sockets.readable(self._monitor):
                    self._monitor.recv_multipart()
                    self.up, self._instance = False, None  # whoever answers next is news
                    self._fail_all(ServerUnavailable(f"lost the connection to {self.address}"))
            self._hb_dirty = self._hb_dirty or self._hb_fd in fired
        if self._hb_dirty:
            self._hb_dirty = False
            while sockets.readable(self._hb):
                self._on_pong(self._hb.recv_multipart())
        self._check_liveness()

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        self._heard = time.monotonic()
        self.up = True
        try:
            header = protocol.decode_header(frames[0].buffer)
        except ProtocolError:
            return  # not from an offload server; nothing to route it to
        with self._mutex:
            if header.kind == protocol.CHECKPOINT:  # the call goes on: keep its entry
                entry = self._pending.get(header.request_id)
            else:
                entry = self._pending.pop(header.request_id, None)
        if entry is None:
            return  # a reply to a call that already failed
        future, decode = entry
        if header.kind == protocol.CHECKPOINT:
            try:
                decode(header, frames[1:])
            except Exception as exc:  # an unloadable checkpoint fails its call
                with self._mutex:
                    self._pending.pop(header.request_id, None)
                _set(future, exc=exc)
            return
        try:
            value = decode(header, frames[1:])
        except BaseException as exc:
            _set(future, exc=exc)
        else:
            _set(future, value=value)

    def _on_pong(self, frames: list[bytes]) -> None:
        self._heard = time.monotonic()
        self.up = True
        try:
            self.note_instance(protocol.decode_json(frames[1]).get("instance"))
        except (IndexError, ProtocolError):
            return

    def note_instance(self, instance: Any) -> None:
        """Record the server instance a PONG names; another one means it restarted."""
        if self._instance is not None and instance != self._instance:
            self._fail_all(ServerUnavailable(f"{self.address} restarted; calls in flight are lost"))
        self._instance = instance

    def _check_liveness(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        silent = now - self._heard
        if silent > self._heartbeat_timeout:
            self.up = False
            self._fail_all(ServerUnavailable(f"no answer from {self.address} for {silent:.1f} s"))
        elif now - self._pinged > self._heartbeat_interval:
            # Both ways: the PONG tells this side the server lives; the PING tells the
            # server this client does (even while checkpoints stream in).
            self._pinged = now
            ping = protocol.encode_header(protocol.PING, 0, flags=protocol.ALIVE)
            with contextlib.suppress(zmq.ZMQError):  # if it cannot go, the silence will tell
                self._hb.send_multipart([ping, self.identity], zmq.NOBLOCK)
            self._hb_dirty = True

    def _fail_all(self, exc: OffloadError) -> None:
        with self._mutex:
            pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            _set(future, exc=exc)


def _dealer(
    context: zmq.Context,
    address: str,
    identity: bytes | None = None,
    curve: tuple[bytes, bytes, bytes] | None = None,
) -> zmq.Socket:
    # No MAXMSGSIZE here: ZeroMQ drops a connection that exceeds it and never
    # reconnects; the client checks sizes itself (UnloadableResult).
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(address)
    return sock


def _set(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve ``future`` unless it already was (e.g. cancelled by its owner)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
