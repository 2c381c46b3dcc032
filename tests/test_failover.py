"""Several servers: each call goes to the best usable one; a lost server's calls go on elsewhere.

Real edge-server processes on loopback (issue 13, items 5, 6 and 9): three
servers, one kept busy by another client; the choice avoids it; one server
is killed mid-batch and the batch completes on the others with every call
run exactly once (each run appends its item to a file only once it is done,
so a run killed with its server leaves no line); the killed server is used
again only after it answers for the probation; and a discovered server whose
key is not trusted is never connected to.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections import Counter
from pathlib import Path

import zmq.auth

import offload
from offload.config import Config
from offload.discovery import Found
from offload.fleet import listing
from offload.usable import Usable
from tests import apps


def _lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_calls_avoid_a_busy_server_and_a_killed_one_loses_no_call(make_server, tmp_path, caplog):
    busy, b, c = make_server(), make_server(), make_server()
    by_pid = {s.process.pid: s for s in (busy, b, c)}
    addresses = [s.address for s in (busy, b, c)]
    settings = dict(mode="remote", heartbeat_interval=0.25, probation=1.0, heartbeat_timeout=10)
    with offload.Client(busy, mode="remote", heartbeat_timeout=10) as other:
        # Another client keeps the busy server's only worker going for ~4 s.
        load = [other.submit(apps.nap, 0.25) for _ in range(16)]
        _wait_for(lambda: sum(f.done() for f in load) >= 2)
        with offload.Client(servers=addresses, **settings) as client:
            first = tmp_path / "first.log"
            ran = [client.call(apps.mark, (str(first), i, 0.0), {}) for i in range(6)]
            assert busy.process.pid not in ran, "a call went to the busy server"
            assert sorted(_lines(first)) == list(range(6))
            shown = client.explain(apps.mark, str(first), 0, 0.0)
            rows = {row["where"]: row for row in shown.candidates}
            assert set(rows) == {"here", *addresses}
            assert not rows[busy.address]["chosen"] and "slower" in rows[busy.address]["why"]
            assert rows[busy.address]["ahead"] >= 1
        for future in load:
            future.result(timeout=30)

    # Kill a server mid-batch: no call is lost, none runs twice. A call its single worker had
    # taken (STARTED) may have run: it fails visibly (ServerUnavailable) rather than being
    # sent again, as its function has no retries; the calls queued there go to the others.
    batch = tmp_path / "batch.log"
    with offload.Client(servers=addresses, **settings) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said, and logged: see below
            futures = [client.submit(apps.mark, str(batch), i, 0.2) for i in range(30)]
            _wait_for(lambda: len(_lines(batch)) >= 3)
            usable = client.servers.usable
            assert usable is not None and all(usable.loads().get(a) for a in addresses)
            victim = b
            os.kill(victim.process.pid, signal.SIGKILL)
            offload.wait(futures, timeout=60)
        failed = {i: f.exception() for i, f in enumerate(futures) if f.exception() is not None}
        pids = [f.result() for f in futures if f.exception() is None]
        time.sleep(0.3)  # a worker of the victim's still running would have logged by now
        counts = Counter(_lines(batch))
        assert max(counts.values()) == 1, f"a call ran twice: {counts}"
        assert set(counts) | set(failed) == set(range(30)), "a call was lost"
        assert len(failed) <= 1, failed  # the one its single worker had taken
        for exc in failed.values():
            assert isinstance(exc, offload.ServerUnavailable) and "may have run" in str(exc)
            assert victim.address in str(exc)
        assert set(pids) <= set(by_pid)
        assert victim.process.pid in pids or failed  # it had taken some: answered, or lost
        moved = f"moving a call of tests.apps:mark from {victim.address} to tcp://"
        assert any(moved in r.getMessage() for r in caplog.records)
        assert victim.address not in {c.address for c in usable.candidates}


def test_a_server_that_answers_again_is_used_after_probation(make_server, tmp_path):
    a = make_server()
    b = make_server()
    settings = dict(mode="remote", heartbeat_interval=0.2, probation=1.0, heartbeat_timeout=10)
    with offload.Client(servers=[a.address, b.address], **settings) as client:
        client.call(apps.where, (), {})
        usable = client.servers.usable
        assert usable is not None
        both = {a.address, b.address}  # once each has a worker ready (not starting)
        _wait_for(lambda: {c.address for c in usable.candidates} == both, timeout=20)
        usable.lose(a.address)  # as a lost call would
        assert {c.address for c in usable.candidates} == {b.address}
        _wait_for(lambda: "probation" in usable.excluded.get(a.address, ""), timeout=10)
        assert a.address not in {c.address for c in usable.candidates}
        _wait_for(lambda: a.address in {c.address for c in usable.candidates}, timeout=10)


def test_an_untrusted_discovered_server_is_never_connected_to(make_server, tmp_path):
    srv = make_server()
    known = tmp_path / "known"
    known.mkdir()
    public, _ = zmq.auth.create_certificates(str(known), "ours")
    ours = zmq.auth.load_certificate(public)[0].decode()
    found = [
        Found("x", srv.address, "stranger", key="y" * 40),  # a real server, an unknown key
        Found("z", "tcp://127.0.0.1:9", "ours", key=ours),
    ]
    config = Config(known_servers=str(known), profile_cache="")
    connected: list[str] = []

    def connect(address: str):
        connected.append(address)
        raise offload.ServerUnavailable("not in this test")

    usable = Usable(config, connect)
    usable.refresh(listing(config, found))
    assert connected == ["tcp://127.0.0.1:9"]
    assert "not trusted" in usable.excluded[srv.address]
    assert usable.candidates == ()


def test_a_checkpointed_job_resumes_on_another_server_from_its_checkpoint(make_server, tmp_path):
    servers = {s.address: s for s in (make_server(), make_server())}
    log = tmp_path / "steps.log"
    settings = dict(mode="remote", heartbeat_interval=0.25, heartbeat_timeout=10)
    with offload.Client(servers=list(servers), **settings) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said and logged
            job = client.submit(apps.count_up, 40, 0.05, str(log))
            _wait_for(lambda: job.progress.checkpoints >= 5)
            first = job.progress.where
            os.kill(servers[first].process.pid, signal.SIGKILL)
            assert job.result(timeout=60) == sum(i * i for i in range(40))
        assert job.progress.where != first and job.progress.where in servers
        assert job.progress.runs == 2
        steps = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
        pids = list(dict.fromkeys(pid for pid, _ in steps))
        assert len(pids) == 2
        resumed = [i for pid, i in steps if pid == pids[1]]
        assert resumed[0] > 1 and resumed[-1] == 40  # from its checkpoint, not from scratch
        assert sorted({i for _, i in steps}) == list(range(1, 41))


def test_a_call_its_lost_server_had_started_is_not_run_again(make_server, tmp_path):
    """No retries: the call may have run on the lost server, so it fails rather than rerun."""
    a, b = make_server(), make_server()
    log = tmp_path / "once.log"
    settings = dict(mode="remote", heartbeat_interval=0.2, heartbeat_timeout=10)
    with offload.Client(servers=[a.address, b.address], **settings) as client:
        client.call(apps.where, (), {})  # both answer
        began = tmp_path / "began.log"
        future = client.submit(apps.mark_begun, str(log), str(began), 7, 1.0)
        _wait_for(lambda: _lines(began) == [7], timeout=20)  # a worker runs it
        assert future.sent is not None  # (connection, request id, timeout) once sent
        victim = a if future.sent[0].address == a.address else b
        os.kill(victim.process.pid, signal.SIGKILL)
        exc = future.exception(timeout=30)
        assert isinstance(exc, offload.ServerUnavailable) and "may have run" in str(exc), repr(exc)
        time.sleep(1.5)  # the run, had it been sent again, would have logged by now
        assert _lines(began) == [7] and _lines(log).count(7) <= 1  # begun once, not again
        assert client.call(apps.where, (), {})  # the other server still takes calls


def test_a_server_that_lacked_a_function_is_asked_again_later(make_server, caplog):
    """A server marked as lacking a function (it failed there as unknown or another version)
    is a candidate for it again once its code changes or a while has passed, warned."""
    a, b = make_server(), make_server()
    settings = dict(mode="remote", heartbeat_interval=0.2, probation=0.1, heartbeat_timeout=10)
    with offload.Client(servers=[a.address, b.address], **settings) as client:
        client.call(apps.where, (), {})
        usable = client.servers.usable
        assert usable is not None
        both = {a.address, b.address}
        _wait_for(lambda: {c.address for c in usable.candidates} == both, timeout=20)
        (marked,) = [c for c in usable.candidates if c.address == a.address]
        name = apps.add.wire_name
        usable.lacks(a.address, name)  # as a call refused there as unknown would
        assert not marked.serves(name)
        _wait_for(lambda: marked.serves(name), timeout=10)  # LACKS_RETRY probations: 1.2 s
    assert any("may go there again" in r.getMessage() for r in caplog.records)
