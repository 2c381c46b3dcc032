"""A deadline batch with several servers: spread over them, and complete when one dies.

Real edge-server processes on loopback (issue 13, item 9): a ``map_within``
batch goes to every usable server (by predicted finish time,
:mod:`offload.spread`), not to one; one server is killed mid-batch and the
batch completes on the others with every item run exactly once (each run
appends its item to a file once done, so a run killed with its server leaves
no line). An item the victim's worker had taken may have run: it is not run
again (its function has no ``retries``) and fails visibly in its slot; the
victim's queued items go on to the best server left, or here when the
decision finds that sooner (a batch may run items here).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import offload
from offload.batch import Failed
from offload.profiler import FunctionProfile
from offload.profiler.choice import Candidate, ServerChoice
from offload.profiler.network import Link
from offload.spread import spread
from tests import apps


def _lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_items_go_where_they_finish_first():
    """Equal servers share a batch; a busy one takes fewer items; a non-serving one none."""
    choice = ServerChoice(0.1, 32)
    prof = FunctionProfile("f")
    link = Link()
    link.on_rtt(0.001)
    items = [(i, 100) for i in range(12)]
    a, b = Candidate("a", link, workers=1), Candidate("b", link, workers=1)
    where = Counter(spread(choice, prof, "f", items, [a, b]).values())
    assert where == {"a": 6, "b": 6}
    busy = Candidate("busy", link, workers=1, others=6)
    where = Counter(spread(choice, prof, "f", items, [a, busy]).values())
    assert where["a"] > where["busy"]
    lacking = Candidate("c", link, functions=frozenset({"g"}))
    assert set(spread(choice, prof, "f", items, [a, lacking]).values()) == {"a"}
    assert spread(choice, prof, "f", items, [lacking]) == {}


def test_a_batch_spreads_over_the_servers_and_loses_no_item_with_one(make_server, tmp_path):
    servers = [make_server() for _ in range(3)]
    by_pid = {s.process.pid: s for s in servers}
    addresses = [s.address for s in servers]
    settings = dict(mode="remote", heartbeat_interval=0.25, probation=1.0, heartbeat_timeout=10)
    log = tmp_path / "batch.log"
    n = 24
    with offload.Client(servers=addresses, **settings) as client:
        client.call(apps.mark, (str(tmp_path / "warm.log"), 0, 0.0), {})
        deadline = time.monotonic() + 30  # each has a worker ready (none left out as starting)
        while len(client.servers.candidates()) < len(servers):
            assert time.monotonic() < deadline, "not every server became usable"
            time.sleep(0.05)
        done = SimpleNamespace(result=None, error=None)

        def batch() -> None:
            try:
                done.result = client.map_within(
                    apps.mark, [str(log)] * n, range(n), [0.2] * n, deadline=60, late="complete"
                )
            except BaseException as exc:  # the test's thread says it below
                done.error = exc

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said, and logged
            thread = threading.Thread(target=batch)
            thread.start()
            deadline = time.monotonic() + 30
            while len(_lines(log)) < 3:
                assert time.monotonic() < deadline, "the batch did not start"
                time.sleep(0.02)
            loaded = [c.address for c in client.servers.candidates() if c.in_flight() > 0]
            assert len(loaded) >= 2, f"the batch went to one server: {loaded}"
            victim = next(s for s in servers if s.address == loaded[0])  # it has items
            os.kill(victim.process.pid, signal.SIGKILL)
            thread.join(90)
        assert not thread.is_alive() and done.error is None, done.error
        result = done.result
        assert result is not None
    time.sleep(0.3)  # a worker of the victim's still running would have logged by now
    counts = Counter(_lines(log))
    assert max(counts.values()) == 1, f"an item ran twice: {counts}"
    failed = {i: result[i].exception for i in result.failed}
    assert set(counts) | set(failed) == set(range(n)), "an item was lost"
    assert len(failed) <= 1, failed  # the one the victim's single worker had taken
    for exc in failed.values():
        assert isinstance(exc, offload.ServerUnavailable) and "may have run" in str(exc)
    assert not result.dropped and not result.late
    ran_on = Counter(result[i] for i in result.there if not isinstance(result[i], Failed))
    assert set(ran_on) <= {*by_pid, os.getppid()}  # a lost item may go on here (auto's choice)
    assert len(set(ran_on) & set(by_pid)) >= 2, f"the batch went to one server: {ran_on}"
    assert victim.process.pid in ran_on or failed  # it had taken some before it died


def test_a_call_that_ended_between_ping_and_pong_is_not_another_clients():
    """The server counted this client's call; its reply was read before the PONG."""
    from offload.pongs import server_load

    pong = {"load": {"queued": 0, "running": 1, "workers": 2, "rate_per_s": 3.0}}
    remote = SimpleNamespace(server_info=pong, calls_at_pong=0, load_memo=None)
    assert server_load(remote)[:3] == (1, 2, 3.0)  # read alone, it looks like another client's
    assert server_load(remote, mine=1)[:3] == (0, 2, 3.0)  # in flight when the PING left
