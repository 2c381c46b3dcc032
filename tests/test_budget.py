"""Byte budgets (issue 19): what one client, and all of them, may make the server hold.

Raw ZeroMQ clients send calls and choose whether to read the replies, against
real servers with small budgets. The refusals are ServerBusy saying which
budget and how much is held; replies a client does not read are dropped past
its budget, and its jobs' records say so; what it held is let go when its
connection closes.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import zmq

import offload
from offload.runtime import protocol, serialize

from . import apps


def call(fn: Any, *args: Any, rid: int) -> list[Any]:
    codecs, frames = serialize.dumps((args, {}))
    header = protocol.encode_header(
        protocol.CALL,
        rid,
        fingerprint=fn.fingerprint,
        name=fn.wire_name.encode(),
        codecs=codecs,
    )
    return [header, *frames]


def connect(server: offload.LocalServer, **options: int) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(server.address)
    return sock


def reply(sock: zmq.Socket, timeout: float = 20.0) -> tuple[int, int, dict[str, Any]]:
    """The next reply: (request id, kind, the ERROR's JSON body or {})."""
    assert sock.poll(int(timeout * 1000)), "no reply"
    frames = sock.recv_multipart()
    header = protocol.decode_header(frames[0])
    body = protocol.decode_json(frames[1]) if header.kind == protocol.ERROR else {}
    return header.request_id, header.kind, body


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_call_past_a_budget_is_refused_saying_which_and_others_are_served(make_server):
    server = make_server("--client-budget", "4M", "--memory-budget", "5M", workers=1)
    data = os.urandom(3 * 2**20)
    greedy, other, small = connect(server), connect(server), connect(server)
    try:
        greedy.send_multipart(call(apps.hold, data, 1.0, rid=1))  # 3 MB held: running
        greedy.send_multipart(call(apps.hold, data, 0.0, rid=2))  # 6 MB: past its 4 MB
        rid, kind, body = reply(greedy)
        assert (rid, kind, body["code"]) == (2, protocol.ERROR, "busy")
        assert "client budget" in body["message"] and "holds 3.0 MB of 4.0 MB" in body["message"]
        other.send_multipart(call(apps.hold, data, 0.0, rid=3))  # 6 MB in all: past 5 MB
        rid, kind, body = reply(other)
        assert (rid, kind, body["code"]) == (3, protocol.ERROR, "busy")
        assert "memory budget" in body["message"] and "holds 3.0 MB of 5.0 MB" in body["message"]
        small.send_multipart(call(apps.add, 1, 2, rid=4))  # a small call still fits
        assert reply(small)[:2] == (4, protocol.RESULT)
        assert reply(greedy)[:2] == (1, protocol.RESULT)  # done: its bytes are let go
        other.send_multipart(call(apps.hold, data, 0.0, rid=5))
        assert reply(other)[:2] == (5, protocol.RESULT)
        with offload.Client(server) as client:
            health = client.server.health()
        assert health["held_bytes"] == 0 and health["memory_budget"] == 5 * 2**20
        # The refused calls never reached the store.
        with offload.Client(server) as client:
            assert len(client.server.jobs()) == 3
    finally:
        for sock in (greedy, other, small):
            sock.close()


def _kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer grows to (the server's side of a stuck client)."""
    try:
        return int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 2**20  # Linux's usual


@pytest.mark.parametrize(
    ("megabytes", "calls", "budget"),
    [(1.5, 12, 6), (0.2, 40, 1)],  # sent from a result arena; inline (under 256 KB)
)
def test_unread_replies_past_the_client_budget_are_dropped_and_recorded(
    make_server, megabytes, calls, budget
):
    # Enough replies to fill the kernel's buffers (the server's send buffer, the client's
    # receive buffer), then twice the budget: some must be dropped, however fast or slowly
    # the buffers were filled.
    absorbed = _kernel_send_buffer_max() + 2**20
    calls = max(calls, int((absorbed + 2 * budget * 2**20) / (megabytes * 2**20)) + 1)
    server = make_server("--client-budget", f"{budget}M", workers=1)
    # A client that never reads: small buffers, so its replies back up into the server.
    stuck = connect(server, RCVHWM=1, RCVBUF=65536)
    try:
        for rid in range(1, calls + 1):
            stuck.send_multipart(call(apps.blob, megabytes, rid=rid))  # small calls, large replies
        with offload.Client(server) as watcher:
            peak = 0

            def all_ended() -> bool:
                nonlocal peak
                peak = max(peak, watcher.server.health()["held_bytes"])
                jobs = watcher.server.jobs(limit=calls + 10)
                return len(jobs) == calls and all(j.state in ("done", "failed") for j in jobs)

            wait_for(all_ended, timeout=60)
            jobs = watcher.server.jobs(limit=calls + 10)
            assert watcher.ping(timeout=5)  # the server serves everyone else meanwhile
            dropped = [j for j in jobs if j.error and "dropped" in j.error]
            assert dropped, (watcher.server.health(), [(j.state, j.error) for j in jobs])
            assert all("client budget" in j.error and j.state == "failed" for j in dropped)
            assert peak <= budget * 2**20
            held = watcher.server.health()["held_bytes"]
            assert 0 < held <= budget * 2**20  # the replies still being sent to it
            stuck.close()  # its connection closes: ZeroMQ lets its replies go
            wait_for(lambda: watcher.server.health()["held_bytes"] == 0)
    finally:
        stuck.close()


def test_large_arenas_are_not_kept_idle(tmp_path, monkeypatch):
    from edge_server import arena

    monkeypatch.setattr(arena, "KEEP_MAX", 4 * 2**20)
    results = arena.ArenaPool(tmp_path, "offload-1-t-w1-out")
    reader = arena.ArenaReader(tmp_path)
    small, large = os.urandom(2 * 2**20), os.urandom(8 * 2**20)
    name, spans, inline = results.pack([small])
    reader.unpack(name, spans, inline)
    results.release(name)  # small: kept for the next result
    assert len(list(tmp_path.iterdir())) == 1
    name, spans, inline = results.pack([large])
    assert bytes(reader.unpack(name, spans, inline)[0]) == large
    results.release(name)  # grown past KEEP_MAX: kept while calls keep coming...
    assert len(list(tmp_path.iterdir())) == 1
    results.trim()  # ...and given back once the worker is idle
    assert not list(tmp_path.iterdir())
    name, spans, inline = results.pack([small])
    reader.unpack(name, spans, inline)
    assert list(reader._maps) == [name]  # the reader let go of the removed ones
    writer = arena.ArenaWriter(tmp_path, "offload-1-t-w1-in")
    writer.pack([large])
    writer.trim()  # a worker's in arena after a large job
    assert writer.size == 0 and len(list(tmp_path.iterdir())) == 1
    results.close()


def test_the_store_gives_freed_pages_back_in_slices(tmp_path):
    from edge_server.store import Store

    store = Store(tmp_path / "jobs.sqlite", file_min=2**30)  # payloads in SQLite pages
    for job in range(1, 41):
        store.added(job, "", "f", job, b"c", 2**20, 1.0, False)
        store.waiting(job, [b"h", os.urandom(2**20)])
    store.flush()
    for job in range(1, 41):
        store.started(job, True)  # the payloads are no longer needed
    store.flush()
    size = (tmp_path / "jobs.sqlite").stat().st_size + (tmp_path / "jobs.sqlite-wal").stat().st_size
    free = store.reclaim(1.0)
    assert free > 40 * 2**20 // 4096 * 0.9  # pages of 4 KB
    now = 2.0
    while store.reclaim(now):  # 256 pages a slice, a slice at most every 0.1 s
        now += 1.0
    store.close()
    after = (tmp_path / "jobs.sqlite").stat().st_size
    assert after < size / 10, (size, after)


def test_budget_options_read_sizes_and_refuse_nonsense():
    from edge_server.options import parse_args

    config, _ = parse_args(["--insecure", "--memory-budget", "512M", "--client-budget", "64M"])
    assert (config.memory_budget, config.client_budget) == (512 * 2**20, 64 * 2**20)
    assert parse_args(["--insecure"])[0].memory_budget == 2**30  # the default: 1G
    for bad in (["--memory-budget", "lots"], ["--client-budget", "2G"], ["--client-budget", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["--insecure", *bad])


def test_a_connected_client_that_never_reads_is_dropped_with_what_it_held(make_server):
    server = make_server("--client-timeout", "2", "--client-budget", "16M", workers=1)
    stuck = connect(server, RCVHWM=1, RCVBUF=65536)  # alive, connected, reading nothing
    try:
        for rid in range(1, 9):
            stuck.send_multipart(call(apps.blob, 1.5, rid=rid))
        with offload.Client(server) as watcher:
            wait_for(lambda: watcher.server.health()["held_bytes"] > 0)
            # No data taken for client_timeout: its connection goes (TCP_MAXRT), and with
            # it the replies and arenas held for it, though the socket is still open.
            wait_for(lambda: watcher.server.health()["held_bytes"] == 0, timeout=30)
    finally:
        stuck.close()


def test_large_arenas_are_reused_while_calls_come_and_given_back_when_idle(make_server):
    from edge_server.arena import KEEP_MAX, arena_dir

    server = make_server(workers=1)
    echo = offload.offload(apps.echo.__wrapped__, mode="remote")
    big = os.urandom(KEEP_MAX + 2**20)

    def large_arenas() -> set[str]:
        prefix = f"offload-{server.process.pid}-"
        return {
            p.name
            for p in arena_dir().glob(prefix + "*")
            if p.is_file() and p.stat().st_size > KEEP_MAX
        }

    with offload.Client(server) as client:
        assert client.call(echo, (big,), {}) == big
        first = large_arenas()
        assert client.call(echo, (big,), {}) == big
        assert first and large_arenas() == first  # the same arenas, reused
        deadline = time.monotonic() + 15
        while large_arenas() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not large_arenas()  # idle: given back
        assert client.call(echo, (big,), {}) == big


def test_kept_results_count_against_their_client_until_written(tmp_path, monkeypatch):
    from edge_server.budget import Budget
    from edge_server.payloads import PayloadFiles
    from edge_server.store import Store

    gate = threading.Event()
    write = PayloadFiles._write
    monkeypatch.setattr(PayloadFiles, "_write", lambda *a: gate.wait(20) and write(*a))
    store = Store(tmp_path / "jobs.sqlite", file_min=2**20)
    budget = Budget(8 * 2**20, 4 * 2**20)
    budget.outside = store.held
    try:
        store.added(1, "", "f", 1, b"a", 10, 1.0, False)
        store.added(2, "", "f", 2, b"b", 10, 1.0, False)
        store.waiting(2, [b"h", os.urandom(2 * 2**20)])  # a queued call: its job counts it
        store.ended(1, "", "done", 10, 3 * 2**20, 0.0, None, [b"h", bytes(3 * 2**20)], holder=b"a")
        store.added(3, "", "f", 3, b"a", 10, 1.0, False)
        store.ended(3, "", "done", 10, 5, 0.0, None, [b"h", b"small"], holder=b"a")
        kept = 3 * 2**20 + 1 + 6  # with their headers
        assert store.held(b"a") == kept and store.held() == kept and store.held(b"b") == 0
        assert budget.snapshot()["held_bytes"] == kept
        with pytest.raises(offload.ServerBusy, match="client budget"):
            budget.take(b"a", 2**20)  # 3 MB kept for it, not yet on disk: 1 MB more is over 4
        store.started(2, True)  # the call's write, still queued, is dropped: its frames go
        assert store.files.held() == 3 * 2**20 + 1
        store.flush()  # the small result is written
        gate.set()
        wait_for(lambda: store.held() == 0 and store.files.held() == 0)
        assert budget.take(b"a", 2**20) == 2**20  # written: its bytes no longer count
        assert store.frames(1, "result")[1] == bytes(3 * 2**20)
    finally:
        gate.set()
        store.close()
