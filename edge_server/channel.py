"""Multipart messages over a Unix stream socket: the hop between the server and a worker.

A ZeroMQ ``ipc://`` hop costs two more thread wake-ups per direction (each
side's I/O thread); on a small board that is most of a small call's latency.
A plain Unix socket wakes the reading process directly, and large frames do
not travel here at all (they go through shared-memory arenas), so the
framing can stay minimal::

    u32 frame count n | n x u32 frame length | frame bytes ...

(network byte order). A message is written with one ``sendmsg`` call.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

_COUNT = struct.Struct("!I")
MAX_FRAMES = 1 << 16
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16
_CHUNK = 1 << 16


@functools.lru_cache(maxsize=64)
def _lengths(count: int) -> struct.Struct:
    """The struct of ``count`` u32 lengths (cached: a message's format is built once)."""
    return struct.Struct(f"!{count}I")


class Channel:
    """One end of a server-worker connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frames: Sequence[Any]) -> None:
        """Write one message (blocking until the kernel has all of it).

        One ``sendmsg`` when the kernel takes it all (a small message, the
        usual case); else the rest is written in more calls, at most
        ``IOV_MAX`` buffers each.
        """
        count = len(frames)
        if count > MAX_FRAMES:
            raise ValueError(f"{count} frames, more than {MAX_FRAMES}")
        sizes = [memoryview(f).nbytes for f in frames]
        prefix = _lengths(count + 1).pack(count, *sizes)
        if count < _IOV_MAX:
            sent = self.sock.sendmsg([prefix, *frames])
            if sent == len(prefix) + sum(sizes):
                return
        else:
            sent = 0
        pending = [memoryview(prefix), *(memoryview(f).cast("B") for f in frames)]
        i = 0
        while True:
            while i < len(pending) and sent >= pending[i].nbytes:
                sent -= pending[i].nbytes
                i += 1
            if i == len(pending):
                return
            if sent:
                pending[i] = pending[i][sent:]
            sent = self.sock.sendmsg(pending[i : i + _IOV_MAX])

    def recv(self) -> list[memoryview]:
        """Read one whole message, blocking; raise EOFError if the peer closed."""
        while True:
            message = self._parse() if self._buf else None
            if message is not None:
                return message
            self._fill(blocking=True)

    def feed(self) -> list[list[memoryview]]:
        """Read what is available without blocking; return the messages completed."""
        self._fill(blocking=False)
        messages = []
        while (message := self._parse()) is not None:
            messages.append(message)
        return messages

    def _fill(self, blocking: bool) -> None:
        flags = 0 if blocking else socket.MSG_DONTWAIT
        try:
            chunk = self.sock.recv(_CHUNK, flags)
        except BlockingIOError:
            return
        if not chunk:
            raise EOFError("channel closed by peer")
        self._buf += chunk

    def _parse(self) -> list[memoryview] | None:
        buf = self._buf
        if len(buf) < 4:
            return None
        (count,) = _COUNT.unpack_from(buf)
        if count > MAX_FRAMES:
            raise ValueError(f"message claims {count} frames")
        head = 4 + 4 * count
        if len(buf) < head:
            return None
        lengths = _lengths(count).unpack_from(buf, 4)
        end = head + sum(lengths)
        if len(buf) < end:
            return None
        if end == len(buf):  # the usual case: the buffer holds this message only
            data = memoryview(bytes(buf))[head:]
            buf.clear()
        else:
            data = memoryview(bytes(buf[head:end]))
            del buf[:end]
        return [data[stop - n : stop] for n, stop in zip(lengths, accumulate(lengths))]

    def close(self) -> None:
        self.sock.close()
