"""The isolation floor: raw pyzmq relayed through a worker process, no framework code.

``offload`` runs each call in a worker process apart from its edge server's
front (crash, memory and CPU isolation), so a call crosses three processes:
client, front, worker. This baseline has the same three and nothing else. A
front process binds a ZeroMQ ROUTER (as raw pyzmq's echo server does) and
relays each request's frames, unchanged, to a worker process over a Unix
stream socket (``offload``'s edge server reaches its workers the same way);
the worker sends them back and the front relays them to the client. Over the
socket a message is its frame count and sizes (``<I`` then ``<Q`` each), then
the frames: one ``sendmsg`` and, for a small message, one read per side.

What it costs over raw pyzmq's echo is what one worker process per job costs
before any framework code runs: the floor under ``offload``'s figures.
``python -m bench.peer_servers relay`` serves on a free loopback port,
prints its address and runs until its stdin closes.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def send_frames(sock: socket.socket, frames: Sequence[Any]) -> None:
    """Send ``frames`` (buffers) as one message: their count and sizes, then their bytes."""
    views = [memoryview(f).cast("B") for f in frames]
    head = struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views))
    data: list[Any] = [head, *(v for v in views if v.nbytes)]
    while data:
        sent = sock.sendmsg(data)
        while sent:  # drop what went; the rest of a partly sent buffer goes next
            size = len(data[0])
            if sent >= size:
                sent -= size
                data.pop(0)
            else:
                data[0], sent = memoryview(data[0])[sent:], 0


def recv_frames(reader: io.BufferedReader) -> list[bytes] | None:
    """One message's frames from ``reader`` (the socket's buffered file); None at its end."""
    head = reader.read(4)
    if len(head) < 4:
        return None
    (count,) = struct.unpack("<I", head)
    sizes = struct.unpack(f"<{count}Q", reader.read(8 * count))
    frames = [reader.read(size) for size in sizes]
    if any(len(frame) != size for frame, size in zip(frames, sizes)):
        return None  # cut short: the other side is gone
    return frames


def _worker(fd: int) -> None:
    """Send every message back as it came, until the front closes the socket."""
    sock = socket.socket(fileno=fd)
    reader = sock.makefile("rb")
    while (frames := recv_frames(reader)) is not None:
        send_frames(sock, frames)


def serve() -> None:
    """The front: a ROUTER, and a worker process behind a Unix socket pair."""
    import zmq

    from .peer_servers import exit_with_stdin

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.rawrelay", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    reader = ours.makefile("rb")
    router = zmq.Context().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(f"tcp://127.0.0.1:{port}", flush=True)
    exit_with_stdin()  # and the worker reads the socket's end, and exits too
    try:
        while True:
            peer, *frames = router.recv_multipart(copy=False)
            send_frames(ours, frames)
            back = recv_frames(reader)
            if back is None:
                break
            router.send_multipart([peer, *back], copy=False)
    finally:
        ours.close()
        worker.wait(10)


if __name__ == "__main__":
    _worker(int(sys.argv[1]))
    os._exit(0)
