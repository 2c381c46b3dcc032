"""The job store on a real SQLite file: records, waiting payloads, recovery, retention, locking."""

from __future__ import annotations

import sqlite3
import time

import pytest

import offload
from edge_server.store import Store
from offload import ConfigError
from offload.runtime.states import JobState


def _add(store: Store, job_id: int, owner: str = "alice", request_id: int = 7) -> None:
    store.added(job_id, owner, "app:f", request_id, b"client", 10, 30.0, False)


def test_a_job_is_recorded_from_queue_to_done_with_metering(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    _add(store, 1)
    store.waiting(1, [b"header", b"payload"])
    assert store.due() == 0.0  # a waiting payload is written at once
    store.flush()
    store.started(1, stored_payload=True)
    store.ended(1, "alice", "done", 10, 5, 0.25, None, reply=[b"h", b"value"])
    store.flush()
    job = store.job(1, "alice")
    assert job is not None
    assert (job["state"], job["bytes_in"], job["bytes_out"], job["cpu_s"]) == ("done", 10, 5, 0.25)
    assert job["kept"] and job["started"] <= job["finished"]
    assert store.frames(1, "call") == []  # the payload went with the start
    assert store.frames(1, "result") == [b"h", b"value"]
    assert store.usage("alice") == {
        "owner": "alice",
        "jobs": 1,
        "cpu_s": 0.25,
        "bytes_in": 10,
        "bytes_out": 5,
    }
    assert store.usage("mallory")["jobs"] == 0
    assert store.job(1, "mallory") is None  # another owner's job does not exist for them
    store.close()


def test_changes_wait_in_memory_until_due_then_go_in_one_transaction(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    _add(store, 1)
    due = store.due()
    assert due is not None and due > time.monotonic()  # no payload at stake: batched
    reader = sqlite3.connect(tmp_path / "jobs.sqlite")
    assert reader.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    store.flush()
    assert reader.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    assert store.due() is None
    reader.close()
    store.close()


def test_recovery_requeues_waiting_calls_and_interrupts_running_ones(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    for job_id in (1, 2, 3):
        _add(store, job_id, request_id=2**64 - job_id)  # request ids use all 64 bits
    store.waiting(2, [b"h2", b"p2"])
    store.waiting(3, [b"h3", b"p3"])
    store.flush()
    store.started(1, stored_payload=False)
    store.flush()
    last_alive = time.time()
    _add(store, 4)  # accepted, but never written before the "crash"
    del store  # no close, no last flush (the lock goes with the file handle, as in a crash)
    reopened = Store(tmp_path / "jobs.sqlite")
    waiting = reopened.recover()
    assert [(w.id, w.request_id, w.frames) for w in waiting] == [
        (2, 2**64 - 2, [b"h2", b"p2"]),
        (3, 2**64 - 3, [b"h3", b"p3"]),
    ]
    lost = reopened.job(1, None)
    assert lost is not None and lost["state"] == "interrupted"  # not the job's failure
    assert "stopped while this job ran" in lost["error"]
    assert lost["started"] <= lost["finished"] <= last_alive  # it ran until the last flush
    reopened.flush()
    assert reopened.job(4, None) is None
    assert reopened.last_id() == 3
    reopened.close()


def test_one_server_per_store(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    with pytest.raises(ConfigError, match="another server uses"):
        Store(tmp_path / "jobs.sqlite")
    store.close()
    Store(tmp_path / "jobs.sqlite").close()  # free again once closed


def test_results_and_history_expire(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    for job_id in (1, 2):
        _add(store, job_id)
        store.ended(job_id, "alice", "done", 10, 1, 0.0, None, reply=[b"h", b"v"])
    store.flush()
    store._db.execute("UPDATE jobs SET finished = finished - 100 WHERE id = 1")
    assert store.expire(result_ttl=50, history_ttl=1000) == 0
    first, second = store.job(1, None), store.job(2, None)
    assert first is not None and not first["kept"] and store.frames(1, "result") == []
    assert second is not None and second["kept"]
    assert store.expire(result_ttl=50, history_ttl=50) == 1
    assert store.job(1, None) is None
    assert store.usage("alice")["jobs"] == 2  # metering outlives the history
    store.purge()
    _add(store, 3)
    store.flush()
    assert store.last_id() == 3  # ids are not given again, even with every job gone
    store.purge()
    assert store.last_id() == 3
    store.close()


def test_jobs_lists_newest_first_by_owner_and_state(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    for job_id, owner in ((1, "alice"), (2, "bob"), (3, "alice")):
        _add(store, job_id, owner)
    store.ended(3, "alice", "failed", 10, 0, 0.0, "remote: boom")
    assert [j["id"] for j in store.jobs("alice")] == [3, 1]
    assert [j["id"] for j in store.jobs("alice", states=["queued"])] == [1]
    assert [j["id"] for j in store.jobs("alice", limit=1, before=3)] == [1]
    store.purge()
    assert store.jobs("alice") == []
    store.close()


def test_database_failures_leave_the_store_as_store_errors(tmp_path):
    from offload import OffloadError, StoreError
    from offload.runtime.states import JobState

    store = Store(tmp_path / "jobs.sqlite")
    _add(store, 1)
    store.flush()
    assert store.job(1, None)["state"] is JobState.QUEUED  # states come back as the enum
    store.ended(2**70, "alice", JobState.DONE, 1, 1, 0.0, None)  # an id SQLite cannot hold
    with pytest.raises(StoreError, match="job store"):
        store.flush()
    assert store.due() is None  # what could not be written is dropped, not retried forever
    store._db.close()
    with pytest.raises(StoreError) as info:
        store.job(1, None)
    assert isinstance(info.value, OffloadError) and isinstance(info.value.__cause__, sqlite3.Error)
    store._lock.close()


def test_the_ledger_serves_on_when_the_store_fails(tmp_path, caplog):
    import json

    from edge_server.config import ServerConfig
    from edge_server.ledger import Ledger
    from offload.runtime import errors, protocol

    store = Store(tmp_path / "jobs.sqlite")
    sent: list[tuple[bytes, list]] = []
    ledger = Ledger(
        store,
        ServerConfig(),
        lambda client, frames: sent.append((client, frames)),
        lambda client: True,
        lambda job_id: False,
        lambda: {"ok": True},
    )
    store._db.close()  # every query now fails inside SQLite
    request = json.dumps({"op": "status", "job": 1}).encode()
    ledger.control(b"me", "", 9, request)
    ((to, (header, body)),) = sent
    assert to == b"me" and protocol.decode_header(header).request_id == 9
    exc = errors.rebuild(protocol.decode_json(body))
    assert isinstance(exc, offload.ServerUnavailable) and "server:" in str(exc)
    store.ended(1, "alice", "done", 1, 1, 0.0, None)
    ledger.commit()  # logged, not raised: the server serves on
    assert "could not be written" in caplog.text
    store._lock.close()


def test_a_paused_or_interrupted_job_is_recorded_as_gone_on_elsewhere(tmp_path):
    store = Store(tmp_path / "jobs.sqlite")
    for job_id in (1, 2, 3):
        _add(store, job_id)
        store.started(job_id, stored_payload=False)
    store.ended(1, "alice", JobState.PAUSED, 10, 0, 0.1, None)
    store.ended(2, "alice", JobState.PAUSED, 10, 0, 0.1, None)
    assert store.moved(1, "alice", "job 4")  # resumed on this server as job 4
    assert store.moved(2, "alice", "tcp://10.0.0.2:5555")
    assert not store.moved(2, "alice", "local")  # once moved, it stays where it went
    assert not store.moved(3, "alice", "local")  # still running: not the client's to move
    assert not store.moved(1, "mallory", "local")  # only its owner says where it went
    assert [(j["state"], j["moved_to"]) for j in (store.job(1, None), store.job(2, None))] == [
        (JobState.RESUMED, "job 4"),
        (JobState.MOVED, "tcp://10.0.0.2:5555"),
    ]
    store.close()


def test_a_store_of_schema_1_is_migrated_in_place(tmp_path):
    path = tmp_path / "jobs.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN moved_to")  # as version 1 made it
    db.execute(
        "INSERT INTO jobs (id, owner, function, request_id, client, state, submitted, "
        "bytes_in, timeout, checkpointed) VALUES (7, 'alice', 'm:f', 1, x'00', 'done', 1.0, "
        "3, 0, 0)"
    )
    db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.commit()
    db.close()
    store = Store(path)
    job = store.job(7, "alice")
    assert job is not None and job["state"] == "done" and job["moved_to"] is None
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
    db.close()


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        ({"op": "moved", "job": 1}, offload.ProtocolError),  # where to?
        ({"op": "moved", "job": 1, "to": 5}, offload.ProtocolError),
        ({"op": "moved", "job": 1, "to": "x" * 301}, offload.ProtocolError),
        ({"op": "moved", "job": "1", "to": "local"}, offload.ProtocolError),
        ({"op": "moved", "job": 2, "to": "local"}, offload.UnknownJob),  # another owner's
        ({"op": "moved", "job": 1, "to": "local"}, offload.NotMovable),  # still running
    ],
)
def test_a_bad_moved_request_gets_a_clear_error(tmp_path, request_body, error):
    import json

    from edge_server.config import ServerConfig
    from edge_server.ledger import Ledger
    from offload.runtime import errors, protocol

    store = Store(tmp_path / "jobs.sqlite")
    _add(store, 1, owner="alice")
    _add(store, 2, owner="bob")
    store.started(1, stored_payload=False)
    sent: list[tuple[bytes, list]] = []
    ledger = Ledger(store, ServerConfig(), lambda c, f: sent.append((c, f)), bool, bool, dict)
    ledger.control(b"me", "alice", 9, json.dumps(request_body).encode())
    ((_, (header, body)),) = sent
    assert protocol.decode_header(header).kind == protocol.ERROR
    assert type(errors.rebuild(protocol.decode_json(body))) is error
    assert store.job(1, None)["state"] == "running"  # nothing changed
    store.close()


def test_the_operators_overview_reads_live_jobs_usage_and_failures_read_only(tmp_path):
    from edge_server.overview import StoreOverview

    path = tmp_path / "jobs.sqlite"
    with pytest.raises(offload.StoreError):  # no store yet: the error tree's error, not sqlite3's
        StoreOverview(path).read()
    store = Store(path)
    for job_id in (1, 2, 3):
        _add(store, job_id, owner="alice" if job_id < 3 else "bob")
    store.started(2, stored_payload=False)
    store.ended(3, "bob", JobState.FAILED, 10, 0, 0.5, "ValueError: no")
    store.flush()
    seen = StoreOverview(path).read()
    assert [(j[0], j[1], j[3]) for j in seen.live] == [
        (2, "alice", "running"),
        (1, "alice", "queued"),
    ]
    assert [(f[0], f[1], f[4]) for f in seen.failed] == [(3, "bob", "ValueError: no")]
    assert [(u[0], u[1], u[2]) for u in seen.usage] == [("bob", 1, 0.5)]
    store.close()


def test_the_last_id_kept_is_the_highest_given_not_the_latest(tmp_path):
    """meta.last_id (ids are never reused, even once their jobs expire) never goes down:
    the value is compared as a number (text, as the column keeps it, ranks above any)."""
    store = Store(tmp_path / "jobs.sqlite")
    _add(store, 100)
    store.flush()
    _add(store, 50, request_id=8)
    store.flush()
    store.close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite")
    try:
        (value,) = db.execute("SELECT value FROM meta WHERE key='last_id'").fetchone()
    finally:
        db.close()
    assert int(value) == 100
