"""The server-worker channel: every message arrives whole, whatever its frames."""

from __future__ import annotations

import array
import socket
import threading

from edge_server.channel import _IOV_MAX, Channel


def _pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a), Channel(b)


def test_small_messages_of_mixed_buffers_arrive_whole_and_in_order():
    left, right = _pair()
    try:
        numbers = array.array("q", range(5))
        left.send([b"J", memoryview(b"header"), numbers, b""])
        left.send([])
        left.send([bytearray(b"x" * 1000)])
        assert [bytes(f) for f in right.recv()] == [b"J", b"header", numbers.tobytes(), b""]
        assert right.recv() == []
        assert [bytes(f) for f in right.recv()] == [b"x" * 1000]
    finally:
        left.close()
        right.close()


def test_more_frames_than_one_sendmsg_takes_and_a_large_message_arrive_whole():
    left, right = _pair()
    frames = [b"%d" % i for i in range(_IOV_MAX + 5)]
    big = bytes(range(256)) * (8 << 12)  # 8 MB: more than the socket buffer holds
    got: list[list[bytes]] = []
    reader = threading.Thread(
        target=lambda: got.extend([bytes(f) for f in right.recv()] for _ in range(2))
    )
    reader.start()
    try:
        left.send(frames)
        left.send([b"head", big, b"tail"])
        reader.join(timeout=30)
        assert got == [frames, [b"head", big, b"tail"]]
    finally:
        left.close()
        right.close()
