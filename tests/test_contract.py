"""The Future and Executor contract where offload adds to it: withdrawing queued calls,
cancelling jobs, shutting down without failing or rerunning calls, joins at exit.

CPython's own suite, adapted, is in ``tests/futures/``; these are the cases
only an edge server has (a queue on another machine, jobs that pause).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import CancelledError

import pytest

import offload
from tests import apps


def remote(fn):
    return offload.offload(fn.__wrapped__, mode="remote")


def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_call_queued_on_the_server_can_be_cancelled(make_server):
    server = make_server(workers=1)
    nap = remote(apps.nap)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        running = client.submit(nap, 1.0)
        _until(lambda: [j.state for j in client.server.jobs()] == ["running"])
        queued = client.submit(nap, 0.01)
        _until(lambda: len(client.server.jobs()) == 2)
        assert not running.cancel()  # a worker took it: not withdrawn
        assert queued.cancel() and queued.cancelled() and queued.done()
        with pytest.raises(CancelledError):
            queued.result()
        assert running.result(timeout=10) == 1.0
        (withdrawn,) = [j for j in client.server.jobs() if j.state == "cancelled"]
        assert "withdrawn" in (withdrawn.error or "")


def test_shutdown_waits_for_every_call_beyond_the_heartbeat_timeout(server):
    client = offload.Client(server, heartbeat_interval=0.2, heartbeat_timeout=1.0)
    client.ping(timeout=10)
    nap = remote(apps.nap)
    futures = [client.submit(nap, 2.5) for _ in range(2)]  # longer than heartbeat_timeout + 1
    client.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [2.5, 2.5]  # none failed, none rerun here


def test_shutdown_without_wait_lets_running_calls_finish_once(server, tmp_path):
    # As the stdlib pools: wait=False returns at once, calls already running go on to
    # their results; none fails with ServerUnavailable and none runs a second time here.
    log = tmp_path / "marks"
    on_server = remote(apps.mark)
    auto = offload.offload(apps.mark.__wrapped__, mode="auto")
    client = offload.Client(server, mode="auto")
    client.ping(timeout=10)
    futures = [client.submit(on_server, str(log), 1, 1.0), client.submit(auto, str(log), 2, 1.0)]
    client.shutdown(wait=False)
    assert not any(f.done() for f in futures)
    results = [f.result(timeout=20) for f in futures]
    assert results[0] == server.process.pid
    assert sorted(log.read_text().split()) == ["1", "2"]  # each ran exactly once


def test_shutdown_with_cancel_futures_cancels_what_has_not_started(make_server):
    server = make_server(workers=1)
    nap = remote(apps.nap)
    client = offload.Client(server)
    client.ping(timeout=10)
    first = client.submit(nap, 0.5)
    _until(lambda: [j.state for j in client.server.jobs()] == ["running"])
    rest = [client.submit(nap, 0.5) for _ in range(3)]
    _until(lambda: len(client.server.jobs()) == 4)
    client.shutdown(wait=True, cancel_futures=True)
    assert first.result(timeout=0) == 0.5
    assert all(f.cancelled() for f in rest)


def test_a_running_checkpointed_job_cancelled_ends_cancelled(server, tmp_path):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, 10_000, 0.01, str(tmp_path / "log"))
        deadline = time.monotonic() + 10
        while job.progress.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.running()
        seen = []
        job.add_done_callback(lambda f: seen.append(f.cancelled()))
        assert job.cancel()
        assert job.cancelled() and job.done() and seen == [True]
        with pytest.raises(CancelledError):
            job.result()
        with pytest.raises(CancelledError):
            job.exception()
        assert offload.wait([job], return_when=offload.FIRST_EXCEPTION).not_done == set()


def test_keyword_arguments_named_self_or_fn_reach_the_function():
    @offload.offload(mode="local")
    def kw(**kwargs):
        return kwargs

    with offload.Client(None) as client:
        assert kw(self=1, fn=2) == {"self": 1, "fn": 2}
        assert kw.submit(self=1).result() == {"self": 1}
        assert client.submit(kw, self=1, fn=2).result() == {"self": 1, "fn": 2}
        assert kw.local(self=3) == {"self": 3}


def test_submitting_plain_functions_keeps_one_profile_and_no_instance_alive(server):
    import gc
    import weakref

    class Holder:
        def value(self) -> int:
            return 1

    with offload.Client(None, mode="auto") as client:
        for _ in range(300):
            client.submit(apps.where.__wrapped__).result()
        holder = Holder()
        ref = weakref.ref(holder)
        client.submit(holder.value).result()
        del holder
        gc.collect()
        assert ref() is None  # the decider keeps no bound method, nor its instance
        assert len(client.stats()) <= 2


def test_pending_calls_are_joined_at_interpreter_exit(server, tmp_path):
    out = tmp_path / "done"
    script = textwrap.dedent(
        f"""
        import offload
        from tests import apps
        client = offload.Client({str(server)!r}, mode="remote")
        client.ping(timeout=10)
        future = client.submit(apps.nap, 0.5)
        future.add_done_callback(lambda f: open({str(out)!r}, "w").write(str(f.result())))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30, cwd=".")
    assert out.read_text() == "0.5"
