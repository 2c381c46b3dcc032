"""The connection's observer: every message's frames and bytes, both ways, against a real server."""

from __future__ import annotations

import random
import threading
from concurrent.futures import Future
from typing import Any

import zmq

import offload
from offload.runtime import protocol
from offload.runtime.transport import RECEIVED, SENT, Connection

from . import apps


class Recorder:
    """An observer keeping (request_id, direction, kind, frames, nbytes) of each message."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, int, int, int]] = []
        self._lock = threading.Lock()

    def __call__(
        self, request_id: int, direction: str, kind: int, frames: int, nbytes: int
    ) -> None:
        with self._lock:
            self.seen.append((request_id, direction, kind, frames, nbytes))

    def of(self, request_id: int) -> list[tuple[str, int, int, int]]:
        with self._lock:
            return [(d, k, f, n) for r, d, k, f, n in self.seen if r == request_id]

    def kinds(self, direction: str) -> list[int]:
        with self._lock:
            return [k for _, d, k, _, _ in self.seen if d == direction]


def _conn(client: offload.Client) -> Connection:
    return client.servers.require().conn


def test_observer_counts_a_call_and_its_reply(client):
    rec = Recorder()
    _conn(client).observe(rec)
    data = random.Random(0).randbytes(100_000)  # random: compression cannot shrink it
    assert client.call(apps.echo, (data,), {}, mode="remote") == data
    calls = [r for r, d, k, _, _ in rec.seen if d == SENT and k == protocol.CALL]
    assert len(calls) == 1
    (up, down) = rec.of(calls[0])  # nothing else under this request id, and in this order
    assert up[:2] == (SENT, protocol.CALL) and down[:2] == (RECEIVED, protocol.RESULT)
    # Header, pickle stream, and the bytes out of band: frames and bytes header included.
    for _, _, frames, nbytes in (up, down):
        assert frames >= 2
        assert len(data) + protocol.HEADER_PREFIX.size < nbytes < len(data) + 2_000
    assert up[3] > down[3]  # the CALL's header names the function
    _conn(client).unobserve(rec)
    count = len(rec.seen)
    client.call(apps.add, (1, 2), {}, mode="remote")
    assert len(rec.seen) == count  # no longer called


def test_observer_sees_checkpoints_pings_and_async_replies_before_they_resolve(client, tmp_path):
    rec = Recorder()
    conn = _conn(client)
    conn.observe(rec)
    try:
        # An asynchronous call's reply comes in on the I/O thread: observed before it resolves.
        seen_when_done: list[list[int]] = []
        counting = offload.offload(apps.count_up.__wrapped__, mode="remote", checkpoint_every=0.05)
        future = client.submit(counting, 6, 0.03, str(tmp_path / "log"))
        future.add_done_callback(lambda _: seen_when_done.append(rec.kinds(RECEIVED)))
        assert future.result(timeout=20) == sum(i * i for i in range(6))
        assert seen_when_done and protocol.RESULT in seen_when_done[0]
        (request_id,) = {r for r, _, k, _, _ in rec.seen if k == protocol.CALL}
        kinds = [k for d, k, _, _ in rec.of(request_id) if d == RECEIVED]
        assert kinds[-1] == protocol.RESULT and protocol.CHECKPOINT in kinds[:-1]
        client.ping(timeout=10)  # a PING on the data connection is a request like any other
        assert protocol.PING in rec.kinds(SENT) and protocol.PONG in rec.kinds(RECEIVED)
    finally:
        conn.unobserve(rec)


def test_a_failing_observer_breaks_nothing(client):
    def broken(*_: Any) -> None:
        raise RuntimeError("observer bug")

    rec = Recorder()
    conn = _conn(client)
    conn.observe(broken)
    conn.observe(rec)  # observers after a failing one still run
    try:
        assert client.call(apps.add, (2, 3), {}, mode="remote") == 5
        assert [
            (d, k) for _, d, k, _, _ in rec.seen if k != protocol.PING and k != protocol.PONG
        ] == [
            (SENT, protocol.CALL),
            (RECEIVED, protocol.RESULT),
        ]
    finally:
        conn.unobserve(broken)
        conn.unobserve(rec)


def test_observer_given_to_the_connection(server):
    """``observer=`` at construction, on a bare connection: a PING and its PONG."""
    rec = Recorder()
    conn = Connection(
        zmq.Context.instance(),
        server.address,
        heartbeat_interval=0.5,
        heartbeat_timeout=10,
        observer=rec,
    )
    try:
        future: Future[Any] = Future()
        request_id = conn.next_id()
        ping = [protocol.encode_header(protocol.PING, request_id), b"x" * 100]
        conn.request(request_id, ping, future, lambda header, frames: header.kind, wait=True)
        assert future.result(timeout=10) == protocol.PONG
        (sent, received) = rec.of(request_id)
        assert sent == (SENT, protocol.PING, 2, len(ping[0]) + 100)
        assert received[:2] == (RECEIVED, protocol.PONG) and received[2] >= 2
    finally:
        conn.close()
