"""A STARTS call runs only after its client's GO (issue 13, item 6: never twice without retries).

Real edge-server processes, and raw DEALER sockets speaking the protocol: the
server answers a CALL with STARTS by STARTED and holds the call's worker until
the client's GO; without GO the call never runs (its function writes a file
when it does), a client that goes without GO leaves a call that never ran and
a server that serves on, and a GO from another connection is ignored.
"""

from __future__ import annotations

import time

import pytest
import zmq

import offload
from offload.runtime import protocol, serialize
from tests import apps

_QUIET = 1000  # ms a held call is watched for doing nothing (without GO it never does)


def _dealer(server: offload.LocalServer, identity: bytes) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(server.address)
    return sock


def _call(fn: offload.OffloadedFunction, args: tuple, request_id: int, flags: int) -> list[bytes]:
    codecs, frames = serialize.dumps((args, {}))
    header = protocol.encode_header(
        protocol.CALL,
        request_id,
        flags=flags,
        fingerprint=fn.fingerprint,
        name=fn.wire_name.encode(),
        codecs=codecs,
    )
    return [header, *[bytes(memoryview(f)) for f in frames]]


def _reply(sock: zmq.Socket, timeout_ms: int = 20_000) -> protocol.Header:
    assert sock.poll(timeout_ms), "no reply"
    return protocol.decode_header(sock.recv_multipart()[0])


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _go(request_id: int) -> list[bytes]:
    return [protocol.encode_header(protocol.GO, request_id)]


def _held(sock: zmq.Socket, fn: offload.OffloadedFunction, args: tuple, flags: int = 0) -> None:
    """Send a STARTS call as request 7 and take its STARTED."""
    sock.send_multipart(_call(fn, args, 7, protocol.STARTS | protocol.AWAITS_GO | flags))
    header = _reply(sock)
    assert (header.kind, header.request_id, header.flags) == (
        protocol.STARTED,
        7,
        protocol.AWAITS_GO,
    )


def test_a_starts_call_of_a_fleet_client_completes(make_server, tmp_path):
    a, b = make_server(), make_server()
    log = tmp_path / "ran.log"
    with offload.Client(servers=[a.address, b.address], mode="remote") as client:
        pids = [client.call(apps.mark, (str(log), i, 0.0), {}) for i in range(5)]
    assert set(pids) <= {a.process.pid, b.process.pid}
    assert sorted(int(x) for x in log.read_text().split()) == list(range(5))


def test_a_starts_call_runs_only_after_its_go(make_server, tmp_path):
    server = make_server()
    marker = tmp_path / "ran.log"
    with _dealer(server, b"alice") as sock:
        _held(sock, apps.mark, (str(marker), 1, 0.0))
        assert not sock.poll(_QUIET), "a reply came before GO"
        assert not marker.exists(), "the call ran before its GO"
        sock.send_multipart(_go(7))
        header = _reply(sock)
        assert (header.kind, header.request_id) == (protocol.RESULT, 7)
    assert marker.read_text() == "1\n"


def test_a_go_from_another_connection_is_ignored(make_server, tmp_path):
    server = make_server()
    marker = tmp_path / "ran.log"
    with _dealer(server, b"alice") as alice, _dealer(server, b"mallory") as mallory:
        _held(alice, apps.mark, (str(marker), 2, 0.0))
        mallory.send_multipart(_go(7))
        mallory.send_multipart(_go(8))  # a request nobody made: ignored too
        assert not alice.poll(_QUIET) and not mallory.poll(0)
        assert not marker.exists(), "another connection's GO ran the call"
        alice.send_multipart(_go(7))
        assert _reply(alice).kind == protocol.RESULT
        alice.send_multipart(_go(7))  # a finished request's GO: ignored, no reply
        assert not alice.poll(300)
    assert marker.read_text() == "2\n"


def test_a_client_gone_without_go_leaves_a_call_that_never_ran(make_server, tmp_path):
    server = make_server("--client-timeout", "2", workers=2)
    marker = tmp_path / "ran.log"
    settings = dict(mode="remote", heartbeat_interval=0.2)
    with offload.Client(server, **settings) as other:
        _wait_for(lambda: other.server.health()["workers"] == 2)  # no heartbeat: ready first
        with _dealer(server, b"leaver") as sock:
            _held(sock, apps.mark, (str(marker), 3, 0.0))
            assert other.call(apps.add, (1, 2), {}) == 3  # the other worker serves on
        marks = lambda: [j for j in other.server.jobs() if j.function.endswith(":mark")]  # noqa: E731
        assert [j.state for j in marks()] == ["running"]  # held: its worker kept for it
        _wait_for(lambda: [j.state for j in marks()] == ["cancelled"])
        (job,) = marks()
        assert job.error is not None and "GO" in job.error
        assert not marker.exists(), "a call whose client never said GO ran"
        assert other.server.health()["running"] == 0  # its worker was given back
        assert [other.submit(apps.nap, 0.2).result(timeout=20) for _ in range(2)] == [0.2, 0.2]


@pytest.fixture
def inline_server(make_server):
    return make_server("--allow-inline", workers=1)


def test_an_inline_starts_call_runs_only_after_its_go(inline_server):
    with _dealer(inline_server, b"alice") as sock:
        _held(sock, apps.inline_where, (), protocol.INLINE)
        assert not sock.poll(_QUIET), "an inline call ran before its GO"
        sock.send_multipart(_go(7))
        header = _reply(sock)
        assert (header.kind, header.request_id) == (protocol.RESULT, 7)


def test_a_starts_call_without_awaits_go_runs_at_once_as_before(make_server, tmp_path):
    """An older client (STARTS alone) never says GO: its call is not held."""
    server = make_server()
    marker = tmp_path / "ran.log"
    with _dealer(server, b"older") as sock:
        sock.send_multipart(_call(apps.mark, (str(marker), 4, 0.0), 9, protocol.STARTS))
        started, result = _reply(sock), _reply(sock)
    assert (started.kind, started.flags) == (protocol.STARTED, 0)
    assert (result.kind, result.request_id) == (protocol.RESULT, 9)
    assert marker.read_text() == "4\n"


def test_a_request_held_twice_runs_once_and_keeps_no_worker(make_server, tmp_path):
    """The same request id sent again while held: the first never runs, its worker is freed."""
    server = make_server(workers=2)
    marker = tmp_path / "ran.log"
    with offload.Client(server, mode="remote") as other:
        _wait_for(lambda: other.server.health()["workers"] == 2)
        with _dealer(server, b"twice") as sock:
            _held(sock, apps.mark, (str(marker), 5, 0.0))
            _held(sock, apps.mark, (str(marker), 6, 0.0))
            sock.send_multipart(_go(7))
            assert _reply(sock).kind == protocol.RESULT
            assert not sock.poll(300)  # one reply: the first call ended without any
        assert marker.read_text() == "6\n"
        _wait_for(lambda: other.server.health()["running"] == 0)
