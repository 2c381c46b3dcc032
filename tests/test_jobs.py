"""Checkpointed jobs against real servers: kills, lost servers, pauses, closing time."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import psutil
import pytest

import offload
from offload.checkpoints import read_checkpoint

from . import apps

N, STEP = 40, 0.02
EXPECTED = sum(i * i for i in range(N))


def workers(server: offload.LocalServer) -> list[psutil.Process]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    return [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]


def steps(log: Path) -> list[tuple[int, int]]:
    """(pid, step) lines the function logged, in order."""
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]  # type: ignore[misc]


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_worker_killed_mid_job_resumes_from_its_last_checkpoint(make_server, tmp_path):
    server = make_server(workers=1)
    log = tmp_path / "steps"
    with offload.Client(server, heartbeat_timeout=10) as client:
        client.ping(timeout=10)
        job = client.submit(
            offload.offload(apps.count_up.__wrapped__, mode="remote", checkpoint_every=0.05),
            N,
            STEP,
            str(log),
        )
        assert isinstance(job, offload.Job)
        wait_for(lambda: job.progress.checkpoints >= 5)
        for worker in workers(server):
            worker.kill()
        assert job.result(timeout=30) == EXPECTED
        done = steps(log)
        redone = len(done) - N
        interval_steps = 0.05 / STEP + 2  # one checkpoint interval, and the step in flight
        assert 0 <= redone <= interval_steps, done
        assert job.progress.runs == 2 and job.progress.where == server.address


def test_resumes_here_when_the_server_dies(make_server, tmp_path):
    server = make_server(workers=1)
    log = tmp_path / "steps"
    with offload.Client(server, heartbeat_interval=0.1, heartbeat_timeout=1.0) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, N, STEP, str(log))
        wait_for(lambda: job.progress.checkpoints >= 5)
        checkpoints_before = job.progress.checkpoints
        with pytest.warns(RuntimeWarning, match=f"job {job.id} .* resumes here"):
            server.process.kill()
            assert job.result(timeout=30) == EXPECTED
        pids = [pid for pid, _ in steps(log)]
        assert pids[-1] == os.getpid()  # finished here
        assert pids.count(os.getpid()) <= N - checkpoints_before + 1  # from the checkpoint on


def test_a_remote_mode_job_pauses_instead_of_going_on_here(make_server, tmp_path, caplog):
    server = make_server(workers=1)
    log = tmp_path / "steps"
    remote = offload.offload(apps.count_up.__wrapped__, mode="remote", checkpoint_every=0.05)
    outcome: list[BaseException] = []
    with offload.Client(server, heartbeat_interval=0.1, heartbeat_timeout=1.0) as client:
        client.ping(timeout=10)

        def call() -> None:
            try:
                client.call(remote, (N, STEP, str(log)), {})
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call)
        with pytest.warns(RuntimeWarning, match="paused"):
            caller.start()
            wait_for(lambda: len(steps(log)) >= 5)
            server.process.kill()
            caller.join(30)
        (exc,) = outcome
        assert isinstance(exc, offload.JobPaused)
        assert not [pid for pid, _ in steps(log) if pid == os.getpid()]  # nothing ran here
        assert "paused" in caplog.text
        job = exc.job
        assert job.paused and not job.done() and " paused" in repr(job)
        job.resume("local")  # the user's choice
        assert job.result(timeout=30) == EXPECTED


def test_resumes_on_the_backup_server(make_server, tmp_path):
    first, second = make_server(workers=1), make_server(workers=1)
    log = tmp_path / "steps"
    with offload.Client(
        first, backup_server=str(second), heartbeat_interval=0.1, heartbeat_timeout=1.0
    ) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, N, STEP, str(log))
        wait_for(lambda: job.progress.checkpoints >= 5)
        first.process.kill()
        assert job.result(timeout=30) == EXPECTED
        pids = {pid for pid, _ in steps(log)}
        assert os.getpid() not in pids and len(pids) == 2  # two servers' workers, not here


def test_pause_then_resume_on_the_other_side(server, tmp_path):
    log = tmp_path / "steps"
    with offload.Client(server) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, N, STEP, str(log))
        wait_for(lambda: job.progress.checkpoints >= 3)
        job.pause()
        paused = job.progress
        assert paused.where == "paused" and not job.done()
        assert paused.checkpoints >= 3 and job.checkpoint[0] >= 3  # the state came home
        time.sleep(0.2)
        assert len(steps(log)) == job.checkpoint[0]  # it stopped at that checkpoint
        job.resume("local")
        assert job.result(timeout=30) == EXPECTED
        assert steps(log)[-1][0] == os.getpid()
        # And the other way round: started here, paused, finished on the server.
        here = offload.offload(apps.count_up.__wrapped__, mode="local", checkpoint_every=0.05)
        local = client.submit(here, N, STEP, str(tmp_path / "b"))
        wait_for(lambda: local.progress.checkpoints >= 2)
        local.pause()
        local.resume("remote")
        assert local.result(timeout=30) == EXPECTED


def test_the_servers_records_say_where_a_job_went_on(server, tmp_path):
    log = tmp_path / "steps"
    with offload.Client(server) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, N, STEP, str(log))
        wait_for(lambda: job.progress.checkpoints >= 2)
        first = job.id  # the server's id, from the moment it accepted the call
        assert first is not None and job.server == server.address
        assert client.server.status(first).state == "running"
        progress = job.progress
        assert progress.job_id == first and progress.total == N
        assert progress.fraction is not None and 0 < progress.fraction <= 1
        assert "% done" in str(progress) and f"(job {first})" in str(progress)
        job.pause()
        assert client.server.wait(first, timeout=10).state == "paused"
        job.resume("remote")
        wait_for(lambda: job.id != first)
        second = job.id
        wait_for(lambda: client.server.status(first).state == "resumed")
        assert client.server.status(first).moved_to == f"job {second}"
        job.pause()
        job.resume("local")
        assert job.result(timeout=30) == EXPECTED
        wait_for(lambda: client.server.status(second).state == "moved")
        assert client.server.status(second).moved_to == "local"
        assert job.id == second  # the id of its latest run on a server
        with pytest.raises(offload.NotMovable, match="not paused or interrupted"):
            client.server.moved(second, "local")


def test_closing_time_hands_running_jobs_back(tmp_path):
    server = offload.serve_local(
        ["tests.apps"], workers=2, extra_args=["--log-level", "WARNING", "--close-grace", "10"]
    )
    try:
        with offload.Client(server, heartbeat_timeout=10) as client:
            client.ping(timeout=10)
            jobs = [client.submit(apps.count_up, N, STEP, str(tmp_path / f"j{k}")) for k in (1, 2)]
            wait_for(lambda: all(j.progress.checkpoints >= 3 for j in jobs))
            server.process.send_signal(signal.SIGTERM)
            assert [j.result(timeout=30) for j in jobs] == [EXPECTED, EXPECTED]
            assert server.process.wait(timeout=15) == 0
            for k in (1, 2):
                done = steps(tmp_path / f"j{k}")
                assert done[-1][0] == os.getpid() and len(done) <= N + 3
    finally:
        server.stop()


def test_purge_on_exit_leaves_no_job_data(tmp_path):
    from edge_server.arena import arena_dir

    server = offload.serve_local(
        ["tests.apps"],
        workers=1,
        extra_args=["--log-level", "WARNING", "--purge-on-exit", "--keep-results", "all"],
        data_dir=str(tmp_path),
    )
    pid = server.process.pid
    try:
        with offload.Client(server) as client:
            client.ping(timeout=10)
            big = os.urandom(4 * 2**20)  # incompressible: staged through shared memory
            hold = offload.offload(apps.hold.__wrapped__, mode="remote")
            running = client.submit(hold, big, 1.0)
            wait_for(lambda: list(arena_dir().glob(f"offload-{pid}-*")))  # data on disk
            server.process.send_signal(signal.SIGTERM)  # closing with the job running
            assert running.result(timeout=15) == len(big)  # it was let finish
            assert server.process.wait(timeout=15) == 0
        assert not list(arena_dir().glob(f"offload-{pid}-*"))
        store = sqlite3.connect(tmp_path / "jobs.sqlite")  # the job, its payload and result gone
        assert store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
        assert store.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
        store.close()
    finally:
        server.stop()


def test_a_checkpoint_over_the_message_limit_is_a_clear_error(make_server):
    server = make_server("--max-message-size", str(2**20))
    with offload.Client(server) as client:
        client.ping(timeout=10)
        job = client.submit(
            offload.offload(apps.big_checkpoint.__wrapped__, mode="remote", checkpoint_every=0), 2
        )
        with pytest.raises(offload.PayloadTooLarge, match="checkpoint of 2097"):
            job.result(timeout=20)


def test_retries_rerun_an_idempotent_call_and_only_it(make_server):
    server = make_server(workers=1)
    with offload.Client(server) as client:
        client.ping(timeout=10)
        job = client.submit(
            offload.offload(apps.slow_square.__wrapped__, mode="remote", retries=1), 7, 1.0
        )
        time.sleep(0.3)
        for worker in workers(server):
            worker.kill()
        assert job.result(timeout=20) == 49  # run again from scratch
        plain = offload.offload(apps.slow_square.__wrapped__, mode="remote")
        future = client.submit(plain, 7, 1.0)
        time.sleep(0.3)
        for worker in workers(server):
            worker.kill()
        with pytest.raises(offload.WorkerCrashed):
            future.result(timeout=20)


def test_checkpoints_also_go_to_a_directory(server, tmp_path):
    with offload.Client(server, checkpoint_dir=str(tmp_path / "ckpt")) as client:
        client.ping(timeout=10)
        job = client.submit(apps.count_up, 10, 0.01, str(tmp_path / "steps"))
        assert job.result(timeout=20) == sum(i * i for i in range(10))
        (path,) = (tmp_path / "ckpt").glob("*.ckpt")
        state, count = read_checkpoint(path, apps.count_up)
        assert count == job.progress.checkpoints >= 1 and state == job.checkpoint


def test_checkpoint_and_restore_are_no_ops_outside_a_job():
    assert apps.count_up.local(3, 0, os.devnull) == 0 + 1 + 4
    assert offload.restore("start") == "start"
    offload.checkpoint("ignored")  # no job: nothing happens


def test_a_vanished_clients_job_is_stopped(make_server):
    server = make_server("--client-timeout", "1.5", workers=1)
    hold = offload.offload(apps.hold.__wrapped__, mode="remote")
    with offload.Client(server) as alive:  # heartbeats keep a long call's client known
        assert alive.call(hold, (b"xy", 3.0), {}) == 2
    client = offload.Client(server)
    client.ping(timeout=10)
    client.submit(hold, b"x", 30.0)
    wait_for(lambda: len(workers(server)) == 1)
    time.sleep(0.3)  # the job is running on the one worker
    (before,) = workers(server)
    client.servers.close()  # the client goes away without a word
    client.shutdown(wait=False)
    wait_for(lambda: not before.is_running() or before.status() == psutil.STATUS_ZOMBIE, 10)
    with offload.Client(server) as other:  # a new worker serves the next client
        assert other.call(apps.add, (1, 2), {}, mode="remote") == 3


def test_a_restarted_app_resumes_from_the_checkpoint_file(server, tmp_path):
    log, directory = tmp_path / "steps", tmp_path / "ckpt"
    with offload.Client(server, checkpoint_dir=str(directory)) as first:
        first.ping(timeout=10)
        job = first.submit(apps.count_up, N, STEP, str(log))
        wait_for(lambda: job.progress.checkpoints >= 5)
        job.pause()  # then this "app" goes away
    (path,) = directory.glob("*.ckpt")
    done_before = len(steps(log))
    with offload.Client(server) as second:  # a new process would do the same
        second.ping(timeout=10)
        resumed = second.resume_from(path, apps.count_up, N, STEP, str(log))
        assert resumed.result(timeout=30) == EXPECTED
    assert len(steps(log)) == N and done_before < N  # nothing done twice


def test_edge_server_stop_closes_a_server_by_its_pid_file(tmp_path):
    import subprocess
    import sys

    pid_file = tmp_path / "edge.pid"
    server = offload.serve_local(
        ["tests.apps"],
        workers=1,
        extra_args=["--log-level", "WARNING", "--pid-file", str(pid_file)],
    )
    try:
        assert int(pid_file.read_text().split()[0]) == server.process.pid
        stop = subprocess.run(
            [sys.executable, "-m", "edge_server", "stop", "--pid-file", str(pid_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0, stop.stderr
        assert f"server {server.process.pid} stopped" in stop.stdout  # it says what it did
        assert server.process.wait(timeout=5) == 0 and not pid_file.exists()
    finally:
        server.stop()


def test_edge_server_stop_never_signals_a_process_that_reused_the_pid(tmp_path):
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for content in (f"{other.pid}\n", f"{other.pid}\n1.0\ntcp://127.0.0.1:1\n"):
            pid_file = tmp_path / "stale.pid"
            pid_file.write_text(content)
            stop = subprocess.run(
                [sys.executable, "-m", "edge_server", "stop", "--pid-file", str(pid_file)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert stop.returncode == 1 and "stale pid file" in stop.stderr
            assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


def _shipped_count(n: int, step: float) -> int:
    """Like apps.count_up, but defined here: a server must be sent it by value."""
    i, total = offload.restore((0, 0))
    while i < n:
        time.sleep(step)
        total += i * i
        i += 1
        offload.checkpoint((i, total))
    return total


def test_a_job_shipped_by_value_can_still_be_paused(shipping_server):
    fn = offload.offload(_shipped_count, mode="remote", checkpoint_every=0.05)
    with offload.Client(shipping_server) as client:
        assert client.ping(timeout=10)["code_shipping"]
        job = client.submit(fn, N, STEP)  # UnknownFunction, then sent again by value
        wait_for(lambda: job.progress.checkpoints >= 3)
        job.pause()  # the PAUSE names the call the server is running
        assert job.progress.where == "paused"
        job.resume("local")
        assert job.result(timeout=30) == EXPECTED


def test_a_late_stop_signal_for_an_earlier_job_does_not_stop_the_next(make_server, tmp_path):
    import signal

    from edge_server import stopsig

    server = make_server(workers=1)
    where = offload.offload(apps.where.__wrapped__, mode="remote")
    counting = offload.offload(apps.count_up.__wrapped__, mode="remote", checkpoint_every=0.05)
    with offload.Client(server) as client:
        worker = client.call(where, (), {})  # the worker's job 0
        job = client.submit(counting, N, STEP, str(tmp_path / "steps"))  # its job 1
        wait_for(lambda: job.progress.checkpoints >= 2)
        os.kill(worker, stopsig.signum(stopsig.PAUSE, 0))  # late: meant for job 0
        os.kill(worker, signal.SIGUSR1)  # not a stop signal any more: ignored
        assert job.result(timeout=30) == EXPECTED
        assert job.progress.runs == 1  # never stopped, never resumed
