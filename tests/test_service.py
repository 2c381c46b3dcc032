"""The server as a shared service: fair queueing between clients, per-client running limits."""

from __future__ import annotations

import time

import offload

from . import apps

nap = offload.offload(apps.nap.__wrapped__, mode="remote")


def test_one_clients_many_calls_do_not_starve_anothers_one(make_server):
    server = make_server(workers=1)
    with offload.Client(server) as greedy, offload.Client(server) as modest:
        greedy.ping(timeout=10)
        modest.ping(timeout=10)
        flood = [greedy.submit(nap, 0.2) for _ in range(10)]
        time.sleep(0.1)  # the flood is queued; the first one is running
        assert modest.submit(nap, 0.2).result(timeout=20) == 0.2
        # Round-robin: at most the running call and one more of the flood ran ahead of it
        # (counted, not timed: a loaded machine slows every call alike).
        finished_before = sum(f.done() for f in flood)
        assert finished_before <= 3
        assert [f.result(timeout=20) for f in flood] == [0.2] * 10


def both_workers_up(a: offload.Client, b: offload.Client) -> None:
    """Wait until two calls from two clients run side by side (both workers started)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        start = time.perf_counter()
        pair = [a.submit(nap, 0.2), b.submit(nap, 0.2)]
        [f.result(timeout=20) for f in pair]
        if time.perf_counter() - start < 0.35:
            return
    raise AssertionError("the second worker never came up")


def test_a_client_runs_at_most_its_limit_at_once(make_server):
    server = make_server("--client-running", "1", workers=2)
    with offload.Client(server) as first, offload.Client(server) as second:
        both_workers_up(first, second)
        start = time.perf_counter()
        calls = [first.submit(nap, 0.3) for _ in range(3)]
        time.sleep(0.05)
        assert second.submit(nap, 0.3).result(timeout=20) == 0.3  # the other worker is free
        second_done = time.perf_counter() - start
        assert [c.result(timeout=20) for c in calls] == [0.3] * 3
        first_done = time.perf_counter() - start
        assert second_done < 0.3 * 2  # not behind first's calls
        assert first_done >= 0.3 * 3 * 0.95  # first's three ran one at a time


def test_the_queue_takes_one_call_per_client_in_turn():
    from edge_server.admission import Job
    from edge_server.fairqueue import FairQueue

    queue = FairQueue()
    jobs = [Job(i, client, i, [], 0.0) for i, client in enumerate([b"a", b"a", b"a", b"b"])]
    for job in jobs:
        queue.append(job)
    assert queue.clients == 2  # a newcomer's call would wait behind one of each (the PONG's)
    order = [queue.pop(lambda client: False) for _ in range(4)]
    assert [j.id for j in order if j] == [0, 3, 1, 2]  # a, b, a, a
    assert queue.clients == 0
    assert queue.pop(lambda client: False) is None and len(queue) == 0
    for job in jobs:
        queue.append(job)
    assert queue.pop(lambda client: client == b"a").id == 3  # a is at its limit: b goes


def _remote(fn: offload.OffloadedFunction) -> offload.OffloadedFunction:
    return offload.offload(fn.__wrapped__, mode="remote")


def test_resource_limits_fail_the_job_by_name_and_spare_the_rest(make_server):
    import pytest

    server = make_server(
        "--limit-memory-mb", "200", "--limit-cpu", "1", "--limit-files", "64", workers=1
    )
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert client.call(_remote(apps.allocate), (50,), {}) == 50  # within the limits
        with pytest.raises(offload.LimitExceeded, match="memory limit of 200 MB"):
            client.call(_remote(apps.allocate), (1000,), {})
        assert client.call(_remote(apps.open_files), (20,), {}) == 20
        with pytest.raises(offload.LimitExceeded, match="open files limit of 64"):
            client.call(_remote(apps.open_files), (500,), {})
        start = time.perf_counter()
        with pytest.raises(offload.LimitExceeded, match="CPU time limit of 1 s"):
            client.call(_remote(apps.spin), (30.0,), {})
        assert time.perf_counter() - start < 10  # stopped by its CPU limit, not a timeout
        assert client.call(_remote(apps.add), (1, 2), {}) == 3  # a fresh worker serves on


def test_a_fork_bomb_fails_by_name_and_leaves_nothing_behind(make_server):
    import psutil
    import pytest

    server = make_server("--limit-processes", "8", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        with pytest.raises(offload.LimitExceeded, match="process limit of 8"):
            client.call(_remote(apps.fork_bomb), (200,), {})
        assert client.call(_remote(apps.add), (1, 2), {}) == 3  # a fresh worker serves on
        family = psutil.Process(server.process.pid).children(recursive=True)
        assert len(family) <= 2  # the new worker (and multiprocessing's tracker): no bomb left
        pid = client.call(_remote(apps.leave_behind), (), {})
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "a process the job left is still running"
            time.sleep(0.05)
