"""The clients the server hears from: when each was last heard, whose each is, their PINGs.

A client is a routing id that made a call or a control request; a PING makes
none (400,000 PINGs naming random routing ids as alive would otherwise make
as many entries), and at most ``max_clients`` are tracked. With CurveZMQ,
:class:`~edge_server.security.Owners` says which key owns each routing id:
a message under another key's routing id is dropped, a heartbeat vouches
only for a routing id of its own key.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import zmq

from offload._exceptions import OffloadError, ServerBusy
from offload.runtime import errors, protocol

from .load import pong
from .security import Owners, Throttle, owner


class Clients:
    """Routing id -> when last heard from (``seen``), bounded, and their owners (CurveZMQ)."""

    def __init__(
        self,
        throttle: Throttle,
        transmit: Callable[[bytes, list[Any]], None],
        max_clients: int,
    ) -> None:
        self.seen: dict[bytes, float] = {}
        #: With CurveZMQ: which key owns each routing id, and where its connection is.
        self.owners: Owners | None = None
        self._throttle = throttle
        self._transmit = transmit
        self._max = max_clients

    def watch(self, frontend: zmq.Socket | None) -> None:
        """Bind routing ids to their owners' keys on this CurveZMQ ``frontend`` (None: insecure)."""
        if frontend is not None:
            self.owners = Owners(frontend, self._throttle, self._max)

    def close(self) -> None:
        """Stop watching the frontend."""
        if self.owners is not None:
            self.owners.close()

    def bind(self, client: bytes, key: str) -> None:
        """``client`` belongs to ``key`` (a call queued before a restart)."""
        if self.owners is not None:
            self.owners.bind(client, key)

    def admit(
        self, client: bytes, header: protocol.Header, frame: zmq.Frame, now: float
    ) -> str | None:
        """The owner key ("" insecure) of a call or control message, or None: it was refused.

        Too many clients tracked: refused with :class:`~offload.ServerBusy`.
        Under a routing id of another key: refused with :class:`~offload.ProtocolError`
        (and logged); the routing id's own replies stay away from that connection.
        """
        try:
            if client not in self.seen and len(self.seen) >= self._max:
                self._throttle.note("too_many_clients", "refused a client: %d tracked", self._max)
                raise ServerBusy(f"too many clients ({self._max})")
            key = "" if self.owners is None else self.owners.admit(client, frame)
        except OffloadError as refusal:
            self._transmit(client, errors.error_reply(header.request_id, refusal))
            return None
        self.seen[client] = now
        return key

    def ping(
        self,
        client: bytes,
        header: protocol.Header,
        frames: list[zmq.Frame],
        now: float,
        info: dict[str, Any],
        load: dict[str, Any],
    ) -> None:
        """PONG ``info`` and ``load``; a heartbeat (ALIVE) refreshes the client it names."""
        owners = self.owners
        key = owner(frames[1]) if owners is not None else ""
        if owners is None or owners.same_owner(client, key):
            if client in self.seen:
                self.seen[client] = now
        elif client in owners.keys:
            with contextlib.suppress(OffloadError):  # another key holds it now: no replies there
                owners.admit(client, frames[1])
        if header.flags & protocol.ALIVE and len(frames) == 3 and len(frames[2]) <= 255:
            alive = frames[2].bytes
            if alive in self.seen and (owners is None or owners.same_owner(alive, key)):
                self.seen[alive] = now  # a heartbeat on behalf of a data socket
            else:
                self._throttle.note("dropped_pings", "heartbeat ignored", level=logging.DEBUG)
        self._transmit(client, pong(header.request_id, info, load, header.aux))

    def deliverable(self, client: bytes) -> bool:
        """Whether a reply to ``client`` may go out (with CurveZMQ: to its owner's connection)."""
        return self.owners is None or self.owners.deliverable(client)

    def release(self, busy: Callable[[], set[bytes]]) -> None:
        """Forget the owners of routing ids no longer seen and without jobs (``busy()``: with)."""
        owners = self.owners
        if owners is None or len(owners.keys) <= len(self.seen):
            return
        keep = busy()
        for client in [c for c in owners.keys if c not in self.seen and c not in keep]:
            owners.release(client)
