"""Who watches a :class:`~offload.runtime.transport.Connection`'s messages, and telling them.

Split from the transport, which owns the sockets: this owns the observers
(:meth:`~offload.runtime.transport.Connection.observe` says what they see)
and the one loop that tells them about a message, so that an observer's
failure is logged and dropped, never the connection's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("offload")

#: ``observer(request_id, direction, kind, frames, nbytes)``; see ``Connection.observe``.
Observer = Callable[[int, str, int, int, int], None]
SENT = "sent"
RECEIVED = "received"

_KIND_AND_ID = struct.Struct("!5xB2xQ")  # a header's kind (byte 5) and request id (8-15)


def notify_sent(observers: Sequence[Observer], frames: Sequence[Any]) -> None:
    """Tell ``observers`` that ``frames`` went (their header says what and for which request)."""
    kind, request_id = _KIND_AND_ID.unpack_from(frames[0])
    notify(observers, request_id, SENT, kind, frames)


def notify(
    observers: Sequence[Observer],
    request_id: int,
    direction: str,
    kind: int,
    frames: Sequence[Any],
) -> None:
    """Call every observer with a message's request id, direction, kind, frames and bytes."""
    nbytes = sum(memoryview(frame).nbytes for frame in frames)
    for observer in observers:
        try:
            observer(request_id, direction, kind, len(frames), nbytes)
        except Exception:
            log.exception("a connection observer failed")
