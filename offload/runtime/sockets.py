"""ZeroMQ helpers shared by the client and the server's hot paths.

pyzmq exposes its constants as enum members, and every ``&`` or ``|`` on them
builds a new enum object; on a small call's path that costs more than the
system calls. These are the same constants as plain ints, and the two
operations both sides repeat per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq
import zmq.backend

EVENTS = int(zmq.EVENTS)
FD = int(zmq.FD)
POLLIN = int(zmq.POLLIN)
SNDMORE = int(zmq.SNDMORE)


def readable(sock: zmq.Socket) -> bool:
    """Whether a message is waiting; also re-arms the socket's notification fd."""
    return bool(int(sock.getsockopt(EVENTS)) & POLLIN)


def fd(sock: zmq.Socket) -> int:
    """The socket's notification fd, for select.poll."""
    return int(sock.getsockopt(FD))


#: pyzmq's own send, under the Python wrapper that only adds DRAFT sockets' routing ids
#: and groups (neither used here): two fewer Python calls per frame.
_send = zmq.backend.Socket.send


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """Send a multipart message; large frames go zero-copy (pyzmq copies small ones).

    With NOBLOCK, only the first frame can fail: ZeroMQ takes the rest with it.
    """
    if not frames:
        return
    send = _send
    flags = int(flags)
    more = flags | SNDMORE
    for i in range(len(frames) - 1):
        send(sock, frames[i], more, copy=False)
    send(sock, frames[-1], flags, copy=False)


def recv_frames(sock: zmq.Socket) -> list[zmq.Frame]:
    """Receive a multipart message zero-copy (``recv_multipart`` asks RCVMORE per frame)."""
    recv = sock.recv
    frame = recv(copy=False)
    frames = [frame]
    while frame.more:
        frame = recv(copy=False)
        frames.append(frame)
    return frames
