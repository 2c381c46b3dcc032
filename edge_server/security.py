"""What a hostile client can cost the server: logins, routing ids, malformed input, log lines.

* :class:`Throttle`: counters of hostile or broken input (``malformed``,
  ``refused_logins``, ...), shown by ``health``, and WARNING lines about them
  that are rate-limited, each kind on its own (a flood of 200,000 malformed
  messages makes a few lines a minute and one number, not 24 MB of log).
* :class:`Authenticator`: the ZAP handler (pyzmq's, which only logs at
  DEBUG) that also logs each refused CurveZMQ login at WARNING with the
  client's key and why.
* :class:`Owners`: with CurveZMQ, which key owns each routing id. ZeroMQ
  routes a reply by the routing id the *client* picked, so after its owner
  disconnects anyone holding another valid key could connect under the same
  routing id and receive the owner's results. So a routing id belongs to the
  key of its first call (a message under it from another key is dropped), and
  a reply goes out only while the connection holding the routing id is the
  one the owner's last message came from (its file descriptor, ``SRCFD``,
  matched against the frontend's connect and disconnect events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import zmq
import zmq.utils.monitor
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from offload._exceptions import ProtocolError, ServerBusy
from offload.runtime import sockets

log = logging.getLogger("edge_server")

#: Counters shown by ``health``: all of them, zero or not.
COUNTS = (
    "malformed",  # messages that are not offload messages, or break the protocol
    "refused_logins",  # CurveZMQ logins refused (unknown key, failed handshake)
    "dropped_pings",  # heartbeats for a connection the server does not know, or another key's
    "claimed_ids",  # messages under a routing id that belongs to another key
    "undelivered",  # replies withheld: their routing id is not its owner's connection now
    "too_many_clients",  # calls refused because the server tracks too many clients
)


class Throttle:
    """Counts of hostile input, and at most ``burst`` WARNING lines per ``per`` seconds each.

    Thread-safe: the authenticator counts from its own thread.
    """

    def __init__(self, logger: logging.Logger, *, per: float = 60.0, burst: int = 5) -> None:
        self.counts: Counter[str] = Counter({name: 0 for name in COUNTS})
        self._log = logger
        self._per, self._burst = per, burst
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int, int]] = {}  # start, logged, suppressed

    def note(self, what: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
        """Count one ``what``; log ``message % args`` unless too many were logged lately."""
        now = time.monotonic()
        with self._lock:
            self.counts[what] += 1
            start, logged, suppressed = self._window.get(what, (now, 0, 0))
            if now - start > self._per:
                start, logged = now, 0
            if logged >= self._burst:
                self._window[what] = (start, logged, suppressed + 1)
                return
            self._window[what] = (start, logged + 1, 0)
        if suppressed:
            message += " (%d more like it not logged; see health: %s)"
            args = (*args, suppressed, what)
        elif logged + 1 == self._burst:
            message += " (more like it in the next %.0f s are only counted: health %s)"
            args = (*args, self._per, what)
        self._log.log(level, message, *args)


class Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, saying at WARNING (rate-limited) whom it refused and why."""

    def __init__(self, context: zmq.Context, throttle: Throttle, keys_dir: str) -> None:
        super().__init__(context, log=logging.getLogger("edge_server.auth"))
        self._throttle = throttle
        self._keys_dir = keys_dir

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            self._throttle.note(
                "refused_logins",
                "refused a CurveZMQ login: client key %s: %s (authorized keys: %s)",
                z85.encode(client_key).decode() if len(client_key) == 32 else client_key.hex(),
                reason.decode(errors="replace"),
                self._keys_dir or "none",
            )
        return allowed, reason


def owner(frame: zmq.Frame) -> str:
    """The public key (Z85) ZAP admitted the sender of ``frame`` with; "" without CURVE."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:  # no metadata: an insecure connection
        return ""
    return user if isinstance(user, str) else ""


_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class Owners:
    """Routing ids bound to the CurveZMQ key of their first call, and where each is now.

    ``max_ids`` bounds the routing ids tracked; the server releases those of
    clients that are gone and have no jobs (:meth:`release`).
    """

    def __init__(self, frontend: zmq.Socket, throttle: Throttle, max_ids: int) -> None:
        address = f"inproc://offload-owners-{id(self)}"
        frontend.monitor(address, _EVENTS)
        self._monitor = frontend.context.socket(zmq.PAIR)
        # No limit: a connect flood must not make the monitor drop a disconnect.
        self._monitor.setsockopt(zmq.RCVHWM, 0)
        self._monitor.connect(address)
        self._frontend = frontend
        self._throttle = throttle
        self._max_ids = max_ids
        self.keys: dict[bytes, str] = {}  # routing id -> the key that owns it
        self._fd: dict[bytes, int] = {}  # routing id -> its owner's connection (confirmed)
        self._on_fd: dict[int, set[bytes]] = {}
        self._open: set[int] = set()  # connections accepted and not yet disconnected

    def close(self) -> None:
        """Stop watching the frontend's connections."""
        self._frontend.disable_monitor()
        self._monitor.close(linger=0)

    def bind(self, client: bytes, key: str) -> None:
        """``client`` belongs to ``key`` (a call recovered after a restart)."""
        self.keys.setdefault(client, key)

    def admit(self, client: bytes, frame: zmq.Frame) -> str:
        """The key of the message ``frame`` came with, if ``client`` is that key's routing id.

        A message from the owner (its key, first call included) confirms its
        connection: replies to ``client`` go there until it drops. Raises
        :class:`~offload.ProtocolError` if ``client`` is another key's (its sender
        is told so; the owner's replies stay away from that connection) and
        :class:`~offload.ServerBusy` if too many routing ids are tracked.
        """
        key = owner(frame)
        bound = self.keys.get(client)
        if bound is None:
            if len(self.keys) >= self._max_ids:
                self._throttle.note(
                    "too_many_clients", "refused a new client: %d tracked already", len(self.keys)
                )
                raise ServerBusy(f"too many clients ({len(self.keys)})")
            self.keys[client] = bound = key
        if bound != key:
            self._unconfirm(client)
            self._throttle.note(
                "claimed_ids",
                "dropped a message from key %s under routing id %s, which belongs to key %s",
                key,
                client.hex(),
                bound,
            )
            raise ProtocolError("this routing id belongs to another key: pick one of your own")
        # Every connection event before this message's connection was accepted is in the
        # monitor by now: after this look, its fd is open unless that connection is gone.
        self.drain()
        fd = frame.get(zmq.SRCFD)
        if fd in self._open:
            self._unconfirm(client)
            self._fd[client] = fd
            self._on_fd.setdefault(fd, set()).add(client)
        return key

    def same_owner(self, client: bytes, key: str) -> bool:
        """Whether ``client`` is a routing id ``key`` owns (a heartbeat may vouch for it)."""
        return self.keys.get(client) == key

    def deliverable(self, client: bytes) -> bool:
        """Whether a reply to ``client`` would reach its owner's connection (else count it)."""
        self.drain()
        if client in self._fd:
            return True
        self._throttle.note(
            "undelivered",
            "a reply to routing id %s was not sent: its owner's connection is gone",
            client.hex(),
            level=logging.INFO,
        )
        return False

    def release(self, client: bytes) -> None:
        """Forget ``client`` (gone, and no job of it left)."""
        self.keys.pop(client, None)
        self._unconfirm(client)

    def drain(self) -> None:
        """Read the frontend's connection events: a connection that went confirms nothing."""
        monitor = self._monitor
        while sockets.readable(monitor):
            event = zmq.utils.monitor.parse_monitor_message(monitor.recv_multipart())
            kind, fd = event["event"], int(event["value"])
            if kind == zmq.EVENT_ACCEPTED or kind == zmq.EVENT_DISCONNECTED:
                for client in self._on_fd.pop(fd, ()):
                    self._fd.pop(client, None)
                if kind == zmq.EVENT_ACCEPTED:
                    self._open.add(fd)
                else:
                    self._open.discard(fd)
            else:
                self._throttle.note(
                    "refused_logins",
                    "a connection failed its CurveZMQ handshake (%s): a client without "
                    "CurveZMQ, or with another server key",
                    zmq.Event(kind).name,
                )

    def _unconfirm(self, client: bytes) -> None:
        fd = self._fd.pop(client, None)
        if fd is not None:
            on = self._on_fd.get(fd)
            if on is not None:
                on.discard(client)
                if not on:
                    del self._on_fd[fd]
