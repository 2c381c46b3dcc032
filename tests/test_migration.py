"""Migration (issue 13, item 7): a running checkpointed job moves to a faster server.

Real edge-server processes on loopback: a job runs on one of two servers,
that server is made slow (each step of :func:`tests.apps.paced` takes 5x
longer there), and with ``migrate="auto"`` the job moves to the other one
from its last checkpoint, each step run exactly once, with a warning; with
``migrate="never"`` it stays. The arithmetic is checked on its own too, on
candidates built by hand and a clock the test sets.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import offload
from offload import migration
from offload.jobhost import Progress
from offload.migration import Migrations
from offload.profiler import Link
from offload.profiler.choice import Candidate

from . import apps

N, STEP = 60, 0.02
EXPECTED = sum(i * i for i in range(N))
SETTINGS = dict(mode="remote", heartbeat_interval=0.25, heartbeat_timeout=10)


def _steps(log: Path) -> list[tuple[int, int]]:
    """(server pid, step) lines the function logged, in order."""
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]  # type: ignore[misc]


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _start(client: offload.Client, migrate: str, tmp_path: Path) -> tuple[offload.Job, Path]:
    fn = offload.offload(apps.paced.__wrapped__, checkpoint_every=0.05, migrate=migrate)
    log, slow = tmp_path / "steps", tmp_path / "slow"
    slow.mkdir()
    job = client.submit(fn, N, STEP, str(log), str(slow))
    assert isinstance(job, offload.Job)
    _wait_for(lambda: job.progress.checkpoints >= 3)
    return job, log


def test_auto_moves_a_job_off_a_server_that_slowed_down(make_server, tmp_path):
    a, b = make_server(), make_server()
    by_address = {s.address: s for s in (a, b)}
    with offload.Client(servers=[a.address, b.address], **SETTINGS) as client:
        with pytest.warns(RuntimeWarning, match=r"moving job \d+ of .*paced from tcp://"):
            job, log = _start(client, "auto", tmp_path)
            first = by_address[job.progress.where]
            (tmp_path / "slow" / str(first.process.pid)).touch()
            assert job.result(timeout=60) == EXPECTED
        second = b if first is a else a
        assert job.progress.runs == 2 and job.server == second.address
        [move] = client.router.migrations.moves
        assert (move.source, move.target) == (first.address, second.address)
        assert move.stay > move.there + move.cost
        steps = _steps(log)
        counts = Counter(i for _, i in steps)
        assert sorted(counts) == list(range(1, N + 1)) and set(counts.values()) == {1}, steps
        pids = [pid for pid, _ in steps]
        split = pids.index(second.process.pid)
        assert set(pids[:split]) == {first.process.pid}
        assert set(pids[split:]) == {second.process.pid}


def test_never_keeps_the_job_where_it_runs(make_server, tmp_path, recwarn):
    a, b = make_server(), make_server()
    by_address = {s.address: s for s in (a, b)}
    with offload.Client(servers=[a.address, b.address], **SETTINGS) as client:
        job, log = _start(client, "never", tmp_path)
        first = by_address[job.progress.where]
        slow = tmp_path / "slow" / str(first.process.pid)
        slow.touch()
        count = job.progress.checkpoints
        _wait_for(lambda: job.progress.checkpoints >= count + 6)  # auto would have moved
        slow.unlink()
        assert job.result(timeout=60) == EXPECTED
        assert job.progress.runs == 1 and client.router.migrations.moves == []
        assert {pid for pid, _ in _steps(log)} == {first.process.pid}
        assert not [w for w in recwarn if "moving job" in str(w.message)]


def test_a_job_resumed_where_its_user_chose_is_not_moved_away(make_server, tmp_path, recwarn):
    a, b = make_server(), make_server()
    by_address = {s.address: s for s in (a, b)}
    with offload.Client(servers=[a.address, b.address], **SETTINGS) as client:
        job, log = _start(client, "auto", tmp_path)
        job.pause(timeout=10)
        chosen = b if job.server == a.address else a  # not where it ran
        job.resume(chosen.address)  # the user's choice: auto leaves the job there
        assert job.pinned == chosen.address
        (tmp_path / "slow" / str(chosen.process.pid)).touch()
        assert job.result(timeout=60) == EXPECTED
        assert job.server == chosen.address and client.router.migrations.moves == []
        assert not [w for w in recwarn if "moving job" in str(w.message)]
        resumed = [pid for pid, _ in _steps(log)][-1]
        assert by_address[job.server].process.pid == resumed


# -- the arithmetic, with a clock the test sets ---------------------------------------------------


@dataclass
class _Fn:
    migrate: str | None = "auto"
    wire_name: str = "tests.apps:paced"


@dataclass
class _Job:
    where: str
    total: int = 100
    done: int = 0
    fn: _Fn = field(default_factory=_Fn)
    key: str = "k"
    id: int | None = 1
    size: int = 1000
    pinned: str | None = None
    moved: list[str] = field(default_factory=list)

    @property
    def progress(self) -> Progress:
        return Progress(0, None, self.where, 1, self.id, self.done, self.total)

    def running(self) -> bool:
        return True

    def move(self, where: str, pin: bool = True) -> bool:
        """As a job does: a run already stopping to move does not move again."""
        assert not pin  # migration's moves are not a user's
        self.moved.append(where)
        return len(self.moved) == 1

    __hash__ = object.__hash__


def _candidate(name: str, mbit: float = 100.0) -> Candidate:
    link = Link(27e6 / 8)
    link.on_rtt(0.001)
    link.on_probe(10**6, 0, 0.001 + 8 / mbit)
    link.on_probe(0, 10**6, 0.001 + 8 / mbit)
    return Candidate(f"tcp://{name}:1", link)


def _feed(monkeypatch, checks: Migrations, job: _Job, servers, per_unit: float, n: int, nbytes=0):
    """``n`` checkpoints of ``job``, 5 units apart at ``per_unit`` s each; the last move."""
    now = [1000.0]
    monkeypatch.setattr(migration.time, "monotonic", lambda: now[0])
    move = None
    for _ in range(n):
        now[0] += 5 * per_unit
        job.done += 5
        move = checks.checkpointed(job, nbytes, servers) or move
    return move


def test_a_job_moves_only_when_its_server_slowed_enough_to_pay_for_the_move(monkeypatch):
    a, b = _candidate("a"), _candidate("b")
    checks, job = Migrations("never"), _Job(a.address)
    assert _feed(monkeypatch, checks, job, [a, b], 0.02, 6) is None  # steady: no gain
    with pytest.warns(RuntimeWarning, match="moving job 1 .* from tcp://a:1 to tcp://b:1"):
        move = _feed(monkeypatch, checks, job, [a, b], 0.2, 2)  # a slowed 10x
    assert move is not None and move.target == b.address and job.moved[0] == b.address
    assert move.stay > 2 * move.there


def test_no_move_without_a_known_total_or_when_the_checkpoint_costs_more(monkeypatch):
    a, b = _candidate("a"), _candidate("b", mbit=0.1)
    job = _Job(a.address, total=0)
    assert _feed(monkeypatch, Migrations("auto"), job, [a, b], 0.02, 3) is None
    assert _feed(monkeypatch, Migrations("auto"), job, [a, b], 0.2, 3) is None
    job = _Job(a.address)
    checks = Migrations("auto")
    _feed(monkeypatch, checks, job, [a, b], 0.02, 3)
    # 10 MB at 0.1 Mbit/s is 800 s: far more than the ~10 s left on the slowed server.
    assert _feed(monkeypatch, checks, job, [a, b], 0.2, 3, nbytes=10**7) is None
    assert job.moved == []


def test_a_job_on_the_server_its_user_chose_stays_there(monkeypatch):
    a, b = _candidate("a"), _candidate("b")
    job, checks = _Job(a.address, pinned=a.address), Migrations("auto")  # job.resume(a)
    _feed(monkeypatch, checks, job, [a, b], 0.02, 3)
    assert _feed(monkeypatch, checks, job, [a, b], 0.2, 3) is None  # a slowed 10x
    assert job.moved == []
    job, checks = _Job(b.address, pinned=a.address), Migrations("auto")  # a failover put it on b
    _feed(monkeypatch, checks, job, [a, b], 0.02, 3)
    with pytest.warns(RuntimeWarning, match="moving job"):  # b slowed: it is not pinned there
        move = _feed(monkeypatch, checks, job, [a, b], 0.2, 3)
    assert move is not None and move.target == a.address and job.moved[0] == a.address


def test_a_large_result_moves_the_job_nearer_the_user_when_its_link_weakens(monkeypatch):
    """As the user moves away from a, a's link falls to 1 Mbit/s: b is as fast and
    near, so a 5 MB result (40 s home from a, 0.4 s from b) is better fetched there."""
    a, b = _candidate("a", mbit=1.0), _candidate("b")
    steady = _Job(a.address)
    assert _feed(monkeypatch, Migrations("auto"), steady, [a, b], 0.02, 6) is None
    assert steady.moved == []  # no result to bring home: the same pace, nothing to gain
    job = _Job(a.address)
    with pytest.warns(RuntimeWarning, match="its result's way home included"):
        move = _feed(monkeypatch, Migrations("auto", lambda job: 5e6), job, [a, b], 0.02, 3)
    assert move is not None and move.target == b.address and job.moved == [b.address]
    # 85 units left at 0.02 s: 1.7 s on either, plus the result's way home from each.
    assert move.stay == pytest.approx(1.7 + 40, rel=0.02)
    assert move.there == pytest.approx(1.7 + 0.4, rel=0.02)
    small = _Job(a.address)  # 5 kB comes home from a in 0.04 s: not worth a move
    assert _feed(monkeypatch, Migrations("auto", lambda job: 5e3), small, [a, b], 0.02, 6) is None


def test_the_function_or_the_client_says_whether_jobs_move():
    assert Migrations("never").enabled(_Job("tcp://a:1")) is True  # the function says auto
    assert Migrations("auto").enabled(_Job("tcp://a:1", fn=_Fn(None))) is True
    assert Migrations("never").enabled(_Job("tcp://a:1", fn=_Fn(None))) is False
    assert Migrations("auto").enabled(_Job("tcp://a:1", fn=_Fn("never"))) is False
    with pytest.raises(offload.ConfigError):
        offload.offload(apps.paced.__wrapped__, migrate="sometimes")
    with pytest.raises(offload.ConfigError):
        offload.Config(migrate="always")
