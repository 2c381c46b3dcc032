"""Results go to their owner's key, and what hostile clients send costs the server little.

A routing id is picked by the client, so after Alice disconnects, Bob (with a
valid key of his own) could connect under her routing id: he must not get
her result, and what he sends under it is dropped. PINGs create no client
entries, and floods of malformed messages are counted, not logged line by line.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

import offload
from offload.runtime import protocol, serialize

from . import apps
from .test_auth import keys


def call_frames(fn: offload.OffloadedFunction, args: tuple, request_id: int) -> list[bytes]:
    codecs, frames = serialize.dumps((args, {}))
    header = protocol.encode_header(
        protocol.CALL,
        request_id,
        fingerprint=fn.fingerprint,
        name=fn.wire_name.encode(),
        codecs=codecs,
    )
    return [header, *[bytes(memoryview(f)) for f in frames]]


def dealer(server: object, identity: bytes, secret: Path, server_key: Path) -> zmq.Socket:
    """A raw CurveZMQ DEALER with a routing id of the test's choice."""
    public, private = zmq.auth.load_certificate(secret)
    server_public, _ = zmq.auth.load_certificate(server_key)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.curve_publickey, sock.curve_secretkey = public, private
    sock.curve_serverkey = server_public
    sock.connect(str(server))
    return sock


@pytest.fixture
def two_keys(tmp_path, make_server):
    """A CurveZMQ server that lets Alice and Bob in; orphaned jobs run on."""
    server_public, server_secret = keys(tmp_path / "server", "server")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secrets_of = {}
    for name in ("alice", "bob"):
        public, secret = keys(tmp_path / name, name)
        (allowed / f"{name}.key").write_bytes(public.read_bytes())
        secrets_of[name] = secret
    args = ("--secret-key", str(server_secret), "--authorized-keys", str(allowed))
    # Started by the test, so that capfd sees its log.
    return lambda: make_server(*args, "--orphans", "keep"), server_public, secrets_of


def test_a_routing_id_taken_over_by_another_key_gets_no_result(two_keys, capfd):
    start, server_key, secret = two_keys
    server = start()
    alice_key = zmq.auth.load_certificate(secret["alice"])[0].decode()
    x = b"c" + secrets.token_bytes(15)
    settings = {"server_key": str(server_key), "client_key": str(secret["alice"])}
    with offload.Client(server, **settings) as alice_jobs:
        alice = dealer(server, x, secret["alice"], server_key)
        try:
            alice.send_multipart(call_frames(apps.nap, (5.0,), 7))
            deadline = time.monotonic() + 30
            while not alice_jobs.server.jobs() and time.monotonic() < deadline:
                time.sleep(0.05)
            (job,) = alice_jobs.server.jobs()
        finally:
            alice.close()  # Alice is gone; her call runs on (--orphans keep)
        # Bob takes Alice's routing id. ZeroMQ gives it to a new connection once hers is
        # gone; the server refuses his messages under it, and says so to him (and in its log).
        deadline = time.monotonic() + 30
        while True:
            bob = dealer(server, x, secret["bob"], server_key)
            bob.send_multipart(call_frames(apps.add, (1, 2), 8))
            if bob.poll(500):
                break
            bob.close()
            assert time.monotonic() < deadline, "Bob never got Alice's routing id"
        try:
            refusal = bob.recv_multipart()
            assert protocol.decode_header(refusal[0]).kind == protocol.ERROR
            assert "belongs to another key" in protocol.decode_json(refusal[1])["message"]
            assert alice_jobs.server.status(job.id).state != "done", "too late to tell"
            assert alice_jobs.server.wait(job.id, timeout=30).state == "done"
            # Had the result been sent, it would have been sent before the job was done.
            assert not bob.poll(1000), "Bob received a reply meant for Alice"
        finally:
            bob.close()
        health = alice_jobs.server.health()
    assert health["owners"] is True
    assert health["undelivered"] >= 1
    settings = {"server_key": str(server_key), "client_key": str(secret["bob"])}
    with offload.Client(server, **settings) as bob_client:  # Bob under his own routing id
        assert bob_client.call(apps.add, (1, 2), {}, mode="remote") == 3
        assert all(j.id != job.id for j in bob_client.server.jobs())
    log = capfd.readouterr().err
    assert "WARNING" in log and f"belongs to key {alice_key}" in log


def test_an_insecure_server_says_results_have_no_owners(client):
    assert client.ping(timeout=10)["owners"] is False
    assert client.server.health()["owners"] is False


def _raw(server: object) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(str(server))
    return sock


def test_pings_naming_random_connections_make_no_entries(make_server):
    server = make_server()
    sock = _raw(server)
    try:
        n = 5000
        for i in range(n):
            ping = protocol.encode_header(protocol.PING, i, flags=protocol.ALIVE)
            sock.send_multipart([ping, secrets.token_bytes(16)])
        answered = 0
        while answered < n and sock.poll(10_000):
            sock.recv_multipart()
            answered += 1
        assert answered == n  # every PING gets its PONG
    finally:
        sock.close()
    with offload.Client(server) as client:
        health = client.server.health()
    assert health["dropped_pings"] >= n
    assert health["connections"] == 1  # the one that asked


def test_a_flood_of_malformed_messages_is_counted_not_logged_line_by_line(make_server, capfd):
    server = make_server()
    sock = _raw(server)
    try:
        n = 2000
        for i in range(n):
            sock.send_multipart([b"OFLD\x09garbage" + i.to_bytes(4, "big")])
        answered = 0
        while answered < n and sock.poll(10_000):
            header = protocol.decode_header(sock.recv_multipart()[0])
            assert header.kind == protocol.ERROR  # each still gets a clear error
            answered += 1
        assert answered == n
    finally:
        sock.close()
    with offload.Client(server) as client:
        assert client.call(apps.add, (1, 2), {}, mode="remote") == 3  # serving on
        health = client.server.health()
    assert health["malformed"] == n
    lines = [line for line in capfd.readouterr().err.splitlines() if "malformed" in line]
    assert 1 <= len(lines) <= 10
    assert "health: malformed" in lines[-1] or "only counted" in lines[-1]
