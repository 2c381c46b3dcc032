"""The baseline: a raw pyzmq DEALER/ROUTER echo, in its own process like the edge server."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import zmq


def _serve(address: Any) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    address.put(f"tcp://127.0.0.1:{port}")
    while True:
        frames = sock.recv_multipart(copy=False)
        # len() first: ``.bytes`` copies the frame, and an array echo is two frames too
        if len(frames) == 2 and len(frames[1]) == 4 and frames[1].bytes == b"STOP":
            break
        sock.send_multipart(frames, copy=False)
    sock.close()
    context.term()


class RawEcho:
    """An echo server process and a DEALER connected to it."""

    def __enter__(self) -> RawEcho:
        mp = multiprocessing.get_context("spawn")
        queue = mp.Queue()
        self._process = mp.Process(target=_serve, args=(queue,), daemon=True)
        self._process.start()
        self.address = queue.get(timeout=30)
        self._context = zmq.Context()
        self.sock = self._context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.address)
        return self

    def roundtrip(self, frames: Sequence[Any]) -> list[zmq.Frame]:
        """Send ``frames`` zero-copy and wait for them to come back."""
        self.sock.send_multipart(frames, copy=False)
        return self.sock.recv_multipart(copy=False)

    def __exit__(self, *exc: object) -> None:
        self.sock.send_multipart([b"STOP"])
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self.sock.close()
        self._context.term()


def interleaved(fns: Sequence[Any], n: int, warmup: int = 10) -> list[list[float]]:
    """Seconds per call of each of ``fns``, called in turn ``n`` times after ``warmup`` rounds.

    Alternating the contenders call by call gives both the same share of a noisy,
    shared machine, so their ratio means something even when absolute times drift.
    """
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + n):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                out.append(time.perf_counter() - start)
    return times
