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
    import psutil

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
        last = _call(client, apps.where)
        assert last != after
        child = _call(client, apps.leave_behind)  # a process it left: killed, and reaped,
        assert not psutil.pid_exists(child)  # before the reply went out
        assert _call(client, apps.where) == last  # and reaped: nothing else left, same worker


def test_the_disk_limit_holds_in_scratch_and_shm_and_a_jobs_files_go_with_it(make_server, tmp_path):
    import os

    from edge_server.arena import arena_dir

    server = make_server("--limit-disk-mb", "32", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert _call(client, apps.fill, "kept", 8) == 8  # in its cwd, the scratch directory
        assert _call(client, apps.listdir, ".") == []  # deleted when the job ended
        with pytest.raises(offload.LimitExceeded, match="disk limit of 32 MB"):
            _call(client, apps.fill, "big", 100)
        with pytest.raises(offload.LimitExceeded, match="disk limit of 32 MB"):
            _call(client, apps.fill, str(tmp_path / "elsewhere"), 100)  # no file past it
        assert (tmp_path / "elsewhere").stat().st_size <= 32 * 2**20  # (left: not scratch)
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

    from edge_server.arena import arena_dir

    if os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("a memory cgroup per worker needs root and the v1 memory controller")
    server = make_server("--limit-memory-mb", "128", workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert _call(client, apps.touch_shared, 32) == 32
        with pytest.raises(offload.LimitExceeded, match="memory limit of 128 MB"):
            _call(client, apps.touch_shared, 512)
        assert _call(client, apps.add, 1, 2) == 3  # a fresh worker serves on
        with pytest.raises(offload.LimitExceeded, match="memory limit of 128 MB"):
            _call(client, apps.fill, "/dev/shm/offload-test-fill", 512)  # files are memory
        assert _call(client, apps.fill, "/dev/shm/offload-test-fill", 8) == 8
        assert _call(client, apps.listdir, "/dev/shm") == []  # a private one, emptied
        assert not (arena_dir() / "offload-test-fill").exists()


def test_pickle_bombs_are_refused_before_loading():
    import pickle
    import struct

    from offload.runtime import serialize

    allow, budget = serialize.Allowlist(), 512 * 2**20
    sets = b"\x80\x05" + b"\x8f" * 5 * 2**20 + b"."  # EMPTY_SET x 5M: 1.2 GB to load
    memo = b"\x80\x05Nr" + struct.pack("<I", 2**31) + b"."  # a memo table of 2**31 slots
    for bomb in (sets, memo):
        with pytest.raises(offload.PayloadTooLarge, match="would take about"):
            serialize.loads(b"\0", [bomb], allow, budget)
    value = ([float(i) for i in range(100_000)], {str(i): i for i in range(10_000)})
    stream = pickle.dumps(value, protocol=5)
    assert serialize.loads(b"\0", [stream], allow, budget) == value
    with pytest.raises(offload.SerializationError, match="unknown opcode"):
        serialize.loads(b"\0", [b"\xff" * 2**20], allow, 2**20)


def test_an_lz4_bomb_is_refused_by_its_declared_size_and_the_server_serves_on(make_server):
    import lz4.block

    from offload.runtime import protocol, serialize
    from tests.test_security import _call as raw_call

    server = make_server("--limit-memory-mb", "256", workers=1)
    head = serialize.dumps(((), {}), compress=False)[1][0]
    bomb = lz4.block.compress(bytes(300 * 2**20))  # 1 MB that inflates to 300 MB
    _, frames = raw_call(server, apps.echo, [head, bomb], bytes([protocol.RAW, protocol.LZ4]))
    error = protocol.decode_json(frames[0])
    assert error["code"] == "payload_too_large", error
    assert "over the limit of 268435456" in error["message"]  # the memory limit: 256 MB
    sets = b"\x80\x05" + b"\x8f" * 2 * 2**20 + b"."  # 2 MB that takes 480 MB to load
    _, frames = raw_call(server, apps.echo, [sets], bytes([protocol.RAW]))
    assert protocol.decode_json(frames[0])["code"] == "payload_too_large"
    with offload.Client(server) as client:
        assert _call(client, apps.add, 1, 2) == 3


def test_nothing_a_killed_server_left_survives_the_next_start(make_server):
    import os
    import signal

    import psutil

    from edge_server import pids
    from edge_server.arena import arena_dir

    limits = ("--limit-processes", "16", "--limit-memory-mb", "256", "--limit-disk-mb", "64")
    server = make_server(*limits, workers=1)
    pid = server.process.pid
    with offload.Client(server) as client:
        big = os.urandom(2**20)  # staged through the arenas both ways
        assert _call(client, apps.echo, big) == big
        worker = psutil.Process(_call(client, apps.where))
    left = list(arena_dir().glob(f"offload-{pid}-*"))
    groups = [g for g in (pids.group(pid, "", c) for c in ("pids", "memory")) if g is not None]
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    worker.wait(timeout=10)  # it dies with its server (PDEATHSIG)
    assert left and all(g.is_dir() for g in groups)  # what the killed server left
    make_server(*limits, workers=1)  # sweeps at its start
    assert not list(arena_dir().glob(f"offload-{pid}-*"))
    assert not any(g.exists() for g in groups)
