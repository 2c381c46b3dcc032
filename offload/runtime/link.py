"""The sockets behind one :class:`~offload.runtime.transport.Connection`.

A data DEALER for requests and replies; a second DEALER for heartbeats only,
so that a PING never waits behind a large upload or download on the data
connection; a monitor of the data socket's disconnects (they lose the calls
sent on it) and failed CurveZMQ handshakes (the server refused this client's
key: :class:`~offload.AuthenticationFailed`, not a mere lost connection);
and a pipe that wakes whoever polls.

A frame over ``max_frame`` bytes is refused as it arrives: ZeroMQ's
MAXMSGSIZE cuts the connection after its first bytes, where reading frame by
frame would come too late (ZeroMQ hands a message over only once all of its
frames are in memory). ZeroMQ never reconnects a socket it cut for that, so
the data socket is then made again, under a new routing id: the server may
still hold the old one's connection, and ZeroMQ would leave a second
connection claiming it unread.

Not thread-safe: only the connection's current socket owner (its *leader*)
touches the sockets; any thread may :meth:`Link.wake` it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import time
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.utils.monitor

from .._exceptions import AuthenticationFailed, ServerUnavailable, UnloadableResult
from . import protocol, sockets
from .pending import Pending


class Link:
    """The sockets and wake pipe of one connection to ``address``."""

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        identity: bytes,
        curve: tuple[bytes, bytes, bytes] | None,
        poll_ms: int,
        max_frame: int | None = None,
    ) -> None:
        self.address = address
        self.identity = identity
        self._curve = curve
        self._context = context
        self._max_frame = max_frame
        self._hb = _dealer(context, address, None, curve, max_frame)
        self._hb_fd = sockets.fd(self._hb)
        self._hb_dirty = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # Poll the sockets' notification fds directly rather than through zmq.Poller:
        # each zmq_poll costs several extra system calls per socket, and a small
        # call's latency is mostly system calls.
        self._fdpoll = select.poll()
        for fd in (self._hb_fd, self._wake_r):
            self._fdpoll.register(fd, select.POLLIN)
        sockets.readable(self._hb)  # arms the fd: ZeroMQ signals only readers that looked
        self._open_data()
        self._poll_ms = poll_ms

    def _open_data(self) -> None:
        """The data socket and its monitor, watched by the poll."""
        self.sock = _dealer(self._context, self.address, self.identity, self._curve,
                            self._max_frame)  # fmt: skip
        self._shaken = False  # a handshake succeeded on it (so a cut is not a refusal)
        self._cut_at: float | None = None  # disconnected after a handshake, no retry seen yet
        # The data connection's own fate: a disconnect loses the calls sent on it.
        self._monitor = self.sock.get_monitor_socket(
            zmq.EVENT_DISCONNECTED
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_CONNECT_RETRIED
            | _REFUSED
        )
        self._monitor_fd = sockets.fd(self._monitor)
        for sock in (self.sock, self._monitor):
            sockets.readable(sock)
            self._fdpoll.register(sockets.fd(sock), select.POLLIN)

    def _renew_data(self) -> None:
        """Make the data socket again: ZeroMQ does not reconnect one it cut (an oversize frame)."""
        for sock in (self.sock, self._monitor):
            self._fdpoll.unregister(sockets.fd(sock))
        self._monitor.close(linger=0)
        self.sock.close(linger=0)
        self.identity = new_identity()  # heartbeats vouch for this one from now on
        self._open_data()

    def send(self, frames: Sequence[Any], pending: Pending) -> None:
        """Queue a message on the data socket without blocking (see :meth:`_mend`)."""
        if self._cut_at is not None:
            self._mend(pending, wait=True)
        try:
            sockets.send_frames(self.sock, frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            raise ServerUnavailable(f"cannot send to {self.address}: {exc}") from exc

    def receive(self, pending: Pending, limit: int | None) -> list[zmq.Frame] | None:
        """One reply, frame by frame; one over ``limit`` bytes fails its request, unkept.

        A frame over the limit never arrives (MAXMSGSIZE cuts the connection);
        frames each under it but together over it arrive (ZeroMQ holds all of a
        message's frames before handing over the first), and are let go at once.
        """
        sock = self.sock
        frame = sock.recv(copy=False)
        frames, total = [frame], len(frame)
        while frame.more:
            frame = sock.recv(copy=False)
            total += len(frame)
            if limit is not None and total > limit:
                while frame.more:  # the rest goes straight to the garbage
                    frame = sock.recv(copy=False)
                    total += len(frame)
                pending.heard()
                pending.fail(
                    protocol.peek_request_id(frames[0].buffer),
                    UnloadableResult(f"a reply of {total} bytes, over max_message_size {limit}"),
                )
                return None
            frames.append(frame)
        return frames

    def wake(self) -> None:
        """Interrupt the owner's poll (any thread; the caller writes once per wake-up)."""
        os.write(self._wake_w, b"\0")

    def clear_wake(self) -> None:
        """Empty the wake pipe."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

    def wait(self) -> list[tuple[int, int]]:
        """Poll every fd for up to the heartbeat interval, unless a reply is waiting already.

        A notification fd only says "something changed": ``sockets.readable`` is
        the truth, and every message must be drained before polling again.
        """
        if sockets.readable(self.sock):
            return []
        return self._fdpoll.poll(self._poll_ms)

    def service(self, events: list[tuple[int, int]], pending: Pending) -> None:
        """After a poll: read disconnects and PONGs into ``pending``; send a heartbeat if due."""
        if events:
            fired = {fd for fd, _ in events}
            if self._monitor_fd in fired:
                self._read_monitor(pending)
            self._hb_dirty = self._hb_dirty or self._hb_fd in fired
        if self._cut_at is not None:
            self._mend(pending, wait=False)
        pending.fail_if_refused()
        if self._hb_dirty:
            self._hb_dirty = False
            while sockets.readable(self._hb):
                pending.on_pong(self._hb.recv_multipart())
        if pending.ping_due():
            self._ping()

    def _read_monitor(self, pending: Pending) -> None:
        """What happened to the data connection: into ``pending``, and whether it was cut."""
        while sockets.readable(self._monitor):
            event = zmq.utils.monitor.parse_monitor_message(self._monitor.recv_multipart())
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._shaken, self._cut_at = True, None
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                self._cut_at = None  # ZeroMQ reconnects by itself
            elif kind == zmq.EVENT_DISCONNECTED:
                if self._shaken:  # not a refusal: a new socket would not hammer the server
                    self._cut_at = time.monotonic()
                pending.disconnected(self._max_frame)
            else:
                pending.refused(self._refusal(int(kind)))

    def _mend(self, pending: Pending, wait: bool) -> None:
        """Make the data socket again if ZeroMQ cut it for good.

        ZeroMQ reconnects after a lost connection (it says CONNECT_RETRIED at
        once), never after cutting one itself (an oversize frame). ``wait``:
        a message is about to go, so wait for ZeroMQ's word rather than time.
        """
        assert self._cut_at is not None
        deadline = self._cut_at + _RETRY_SAID_S
        while wait and self._cut_at is not None and time.monotonic() < deadline:
            if self._monitor.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                self._read_monitor(pending)
        if self._cut_at is not None and time.monotonic() >= deadline:
            self._renew_data()

    def _refusal(self, event: int) -> AuthenticationFailed:
        """What a failed handshake says: which keys to check."""
        if self._curve is None:
            return AuthenticationFailed(
                f"{self.address} refused the connection during its handshake: it may require "
                "CurveZMQ (give this client server_key and client_key)"
            )
        public, _, server = self._curve
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = "refused this client's key"
        else:
            why = f"failed the CurveZMQ handshake ({zmq.Event(event).name})"
        return AuthenticationFailed(
            f"{self.address} {why}: check that this client's public key {public.decode()} is "
            f"in the server's --authorized-keys, and that server_key {server.decode()} is "
            "that server's public key"
        )

    def _ping(self) -> None:
        # Both ways: the PONG tells this side the server lives; the PING tells the
        # server this client does (even while checkpoints stream in).
        ping = protocol.encode_header(protocol.PING, 0, flags=protocol.ALIVE)
        with contextlib.suppress(zmq.ZMQError):  # if it cannot go, the silence will tell
            self._hb.send_multipart([ping, self.identity], zmq.NOBLOCK)
        self._hb_dirty = True

    def close(self) -> None:
        """Close the sockets and the pipe."""
        self._monitor.close(linger=0)
        self.sock.close(linger=0)
        self._hb.close(linger=0)
        os.close(self._wake_r)
        os.close(self._wake_w)


_RETRY_SAID_S = 0.2  # ZeroMQ says it will reconnect within this long of a lost connection


def new_identity() -> bytes:
    """A data socket's routing id: random, so that no two clients share one."""
    return b"c" + secrets.token_bytes(15)


_REFUSED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


def _dealer(
    context: zmq.Context,
    address: str,
    identity: bytes | None = None,
    curve: tuple[bytes, bytes, bytes] | None = None,
    max_frame: int | None = None,
) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if max_frame is not None:  # ZeroMQ checks each frame's size as it begins to arrive
        sock.setsockopt(zmq.MAXMSGSIZE, max_frame)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve
    sock.connect(address)
    return sock
