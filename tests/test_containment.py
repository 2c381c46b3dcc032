"""Issue 19: nothing a job does outlives it or takes more than its limits; the server serves on.

Each test starts real servers (one worker, so the next call runs where the
bad one ran) and checks the limit by name, then that the next call runs in a
clean worker.
"""

from __future__ import annotations

import pytest

import offload
from tests import apps


def _remote(fn: offload.OffloadedFunction) -> offload.OffloadedFunction:
    return offload.offload(fn.__wrapped__, mode="remote")


def _call(client: offload.Client, fn: offload.OffloadedFunction, *args: object) -> object:
    return client.call(_remote(fn), args, {})


def test_a_thread_bomb_fails_by_the_process_limit_and_the_next_job_runs_clean(make_server):
    server = make_server("--limit-processes", "8", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        with pytest.raises(offload.LimitExceeded, match="process limit of 8"):
            _call(client, apps.thread_bomb, 100)
        assert _call(client, apps.threads_running) == 1  # a fresh worker, its threads gone
        with pytest.raises(offload.LimitExceeded, match="process limit of 8"):
            _call(client, apps.thread_bomb, 100)  # and the limit holds in it too
        assert _call(client, apps.add, 1, 2) == 3


def test_a_job_that_leaves_threads_or_files_gets_its_worker_replaced(make_server):
    server = make_server(workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        before = _call(client, apps.where)
        assert _call(client, apps.where) == before  # a clean job keeps its worker
        assert _call(client, apps.thread_bomb, 3) == 3  # answered, then the worker leaves
        assert _call(client, apps.threads_running) == 1
        after = _call(client, apps.where)
        assert after != before
        assert _call(client, apps.keep_open) is True  # a file left open: replaced too
        assert _call(client, apps.where) != after
