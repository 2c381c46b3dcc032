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


def test_the_disk_limit_holds_in_scratch_and_shm_and_a_jobs_files_go_with_it(make_server):
    import os

    from edge_server.arena import arena_dir

    server = make_server("--limit-disk-mb", "32", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert _call(client, apps.fill, "kept", 8) == 8  # in its cwd, the scratch directory
        assert _call(client, apps.listdir, ".") == []  # deleted when the job ended
        with pytest.raises(offload.LimitExceeded, match="disk limit of 32 MB"):
            _call(client, apps.fill, "big", 100)
        big = os.urandom(3 * 2**20)  # through the arenas both ways, beside the private tmpfs
        assert _call(client, apps.echo, big) == big
        if os.geteuid() == 0:  # a private tmpfs over /dev/shm bounds the sum of all files
            with pytest.raises(offload.LimitExceeded, match="disk limit of 32 MB"):
                _call(client, apps.fill, "/dev/shm/big", 100)
            with pytest.raises(offload.LimitExceeded, match="disk limit of 32 MB"):
                _call(client, apps.fill, "/dev/shm/many", 10, 10)  # each file within it
            assert _call(client, apps.fill, "/dev/shm/small", 8) == 8
            assert not list(arena_dir().glob("small*")) and not list(arena_dir().glob("many*"))
            assert _call(client, apps.listdir, "/dev/shm") == ["job"]
        assert _call(client, apps.add, 1, 2) == 3


def test_shared_memory_counts_against_the_memory_limit_as_root(make_server):
    import os

    if os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("a memory cgroup per worker needs root and the v1 memory controller")
    server = make_server("--limit-memory-mb", "128", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert _call(client, apps.touch_shared, 32) == 32
        with pytest.raises(offload.LimitExceeded, match="memory limit of 128 MB"):
            _call(client, apps.touch_shared, 512)
        assert _call(client, apps.add, 1, 2) == 3  # a fresh worker serves on
