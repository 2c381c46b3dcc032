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

While calls are pending the leader pings the server every
``heartbeat_interval``; if nothing at all is heard for ``heartbeat_timeout``,
every pending call fails with :class:`ServerUnavailable`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
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
        max_message_size: int,
    ) -> None:
        self.address = address
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._poll_ms = int(heartbeat_interval * 1000)
        self._sock = context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_message_size + 65536)
        self._sock.setsockopt(zmq.HEARTBEAT_IVL, 5_000)  # traffic the server's heartbeat sees
        self._sock.connect(address)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # Poll the socket's notification fd directly rather than through zmq.Poller:
        # each zmq_poll costs several extra system calls per socket, and a small
        # call's latency is mostly system calls.
        self._fdpoll = select.poll()
        self._fdpoll.register(sockets.fd(self._sock), select.POLLIN)
        self._fdpoll.register(self._wake_r, select.POLLIN)

        self._mutex = threading.Lock()
        self._io_cond = threading.Condition(self._mutex)
        self._pending: dict[int, tuple[Future[Any], Decoder]] = {}
        self._outbox: list[Sequence[Any]] = []
        self._leader = False
        self._io_owner = False
        self._woken = False
        self._closed = False
        self._ids = itertools.count(1)
        self._heard = time.monotonic()
        self._pinged = 0.0
        #: True once the server answered, False after it went silent, None before.
        self.up: bool | None = None
        self._io_thread = threading.Thread(
            target=self._io_loop, name=f"offload-io-{address}", daemon=True
        )
        self._io_thread.start()

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
            lead = not self._leader
            if lead:
                self._leader = True
            else:
                self._outbox.append(frames)
                self._wake()
        if not lead:
            return
        try:
            self._send(frames)
        except ServerUnavailable:
            with self._mutex:
                self._pending.pop(request_id, None)
            self._lead(until=None, handoff=True)  # release, or pass on to the I/O thread
            raise
        if wait:
            self._lead(until=future)
        else:
            self._lead(until=None, handoff=True)

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every pending request to be answered."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Fail pending requests, stop the I/O thread and close the socket."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._io_cond.notify_all()
            self._wake()
        self._io_thread.join(timeout=5)
        self._fail_all(ServerUnavailable(f"connection to {self.address} was closed"))
        self._sock.close(linger=0)
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
            sockets.send_frames(self._sock, frames)
        except zmq.ZMQError as exc:
            raise ServerUnavailable(f"cannot send to {self.address}: {exc}") from exc

    def _lead(self, until: Future[Any] | None, handoff: bool = False) -> None:
        """Pump the socket until ``until`` is done (the I/O thread: until nothing is pending).

        ``handoff``: the caller only had to send; pass leadership to the I/O thread now.
        """
        while True:
            if not handoff:
                self._pump()
            with self._mutex:
                if self._closed:
                    self._leader = self._io_owner = False
                    return
                if self._outbox and not handoff:
                    continue
                if until is not None and not until.done():
                    continue
                if not self._pending:
                    self._leader = self._io_owner = False
                    return
                if until is not None or handoff:
                    self._io_owner = True
                    self._io_cond.notify()
                    return

    def _io_loop(self) -> None:
        while True:
            with self._mutex:
                while not self._io_owner and not self._closed:
                    self._io_cond.wait()
                if self._closed:
                    return
            self._lead(until=None)

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
        # The notification fd only says "something changed": EVENTS is the truth,
        # and every message must be drained before polling again.
        if not sockets.readable(sock):
            self._fdpoll.poll(self._poll_ms)
        while sockets.readable(sock):
            self._dispatch(sock.recv_multipart(copy=False))
        self._check_liveness()

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        self._heard = time.monotonic()
        self.up = True
        try:
            header = protocol.decode_header(frames[0].buffer)
        except ProtocolError:
            return  # not from an offload server; nothing to route it to
        with self._mutex:
            entry = self._pending.pop(header.request_id, None)
        if entry is None:
            return  # a heartbeat reply, or a reply to a call that already failed
        future, decode = entry
        try:
            value = decode(header, frames[1:])
        except BaseException as exc:
            _set(future, exc=exc)
        else:
            _set(future, value=value)

    def _check_liveness(self) -> None:
        if not self._pending:
            return
        now = time.monotonic()
        silent = now - self._heard
        if silent > self._heartbeat_timeout:
            self.up = False
            self._fail_all(ServerUnavailable(f"no answer from {self.address} for {silent:.1f} s"))
        elif silent > self._heartbeat_interval and now - self._pinged > self._heartbeat_interval:
            self._pinged = now
            self._sock.send(protocol.encode_header(protocol.PING, 0), copy=True)

    def _fail_all(self, exc: OffloadError) -> None:
        with self._mutex:
            pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            _set(future, exc=exc)


def _set(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve ``future`` unless it already was (e.g. cancelled by its owner)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
