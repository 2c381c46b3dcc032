"""Jobs as a service: history, kept results, wait, cancel, metering, restart after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import offload

from . import apps
from .test_auth import keys
from .test_jobs import wait_for

nap = offload.offload(apps.nap.__wrapped__, mode="remote")
spin = offload.offload(apps.spin.__wrapped__, mode="remote")
scaled = offload.offload(apps.scaled.__wrapped__, mode="remote")


def call(client: offload.Client, fn, *args):
    """A call through ``client``, waited for (bounded)."""
    return client.submit(fn, *args).result(timeout=30)


def test_every_call_is_a_job_with_its_bytes_and_cpu_seconds(make_server):
    server = make_server()
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert call(client, spin, 0.2) >= 0.2
        data = np.random.default_rng(0).random(1000)  # incompressible: 8,000 bytes each way
        assert np.array_equal(call(client, scaled, data, 2.0), data * 2.0)
        jobs = client.server.jobs()
        usage = client.server.usage()
    assert [(j.function, j.state) for j in jobs] == [
        ("tests.apps:scaled", "done"),
        ("tests.apps:spin", "done"),
    ]
    assert jobs[1].cpu_s >= 0.15  # CPU the worker spent, measured there
    assert jobs[0].bytes_in > 8000 and jobs[0].bytes_out > 8000  # the arrays each way
    assert not jobs[0].kept  # delivered to a client that was there: not kept
    assert usage["jobs"] == 2
    assert usage["bytes_in"] == sum(j.bytes_in for j in jobs)
    assert usage["cpu_s"] == pytest.approx(sum(j.cpu_s for j in jobs))


def test_a_job_stopped_at_its_timeout_is_metered_too(make_server):
    server = make_server()
    endless = offload.offload(apps.spin.__wrapped__, mode="remote", timeout=0.5)
    with offload.Client(server) as client:
        with pytest.raises(offload.CallTimeout):
            call(client, endless, 30.0)
        (job,) = client.server.jobs()
        assert job.state == "failed" and job.cpu_s >= 0.3  # the CPU it burnt until stopped
        assert client.server.usage()["cpu_s"] == pytest.approx(job.cpu_s)


def test_a_vanished_clients_result_is_kept_for_later(make_server):
    server = make_server("--orphans", "keep", "--client-timeout", "0.5")
    first = offload.Client(server)
    first.ping(timeout=10)
    future = first.submit(nap, 2.0)
    wait_for(lambda: first.server.jobs() and first.server.jobs()[0].state == "running")
    job_id = first.server.jobs()[0].id
    first.servers.close()  # gone without a word, the job still running
    first.shutdown(wait=False)
    with pytest.raises(offload.ServerUnavailable):
        future.result(timeout=10)
    with offload.Client(server) as later:  # the same owner (an open server: everyone)
        with pytest.raises(offload.JobNotFinished):
            later.server.result(job_id)
        assert later.server.wait(job_id, timeout=15).state == "done"
        assert later.server.status(job_id).kept
        assert later.server.result(job_id) == 2.0


def test_keep_all_results_and_a_kept_error_is_raised(make_server):
    server = make_server("--keep-results", "all")
    failing = offload.offload(apps.fail.__wrapped__, mode="remote")
    with offload.Client(server) as client:
        assert call(client, scaled, np.arange(3), 2.0).tolist() == [0, 2, 4]
        with pytest.raises(ValueError):
            call(client, failing, "boom")
        failed, done = client.server.jobs()
        assert failed.state == "failed" and "boom" in (failed.error or "")
        assert client.server.result(done.id).tolist() == [0, 2, 4]
        with pytest.raises(ValueError, match="boom"):
            client.server.result(failed.id)


def test_results_delivered_are_not_kept_by_default(make_server):
    server = make_server()
    with offload.Client(server) as client:
        call(client, nap, 0.0)
        (job,) = client.server.jobs()
        with pytest.raises(offload.ResultNotKept):
            client.server.result(job.id)
        with pytest.raises(offload.UnknownJob):
            client.server.status(job.id + 1000)


def test_cancel_a_queued_and_a_running_job(make_server):
    server = make_server(workers=1)
    with offload.Client(server) as client:
        running = client.submit(nap, 30.0)
        queued = client.submit(nap, 0.0)
        wait_for(lambda: [j.state for j in client.server.jobs()] == ["queued", "running"])
        newer, older = client.server.jobs()
        assert client.server.cancel(newer.id).state == "cancelled"
        with pytest.raises(offload.JobCancelled):
            queued.result(timeout=10)
        assert client.server.cancel(older.id).state == "cancelled"
        with pytest.raises(offload.JobCancelled):
            running.result(timeout=10)
        with pytest.raises(offload.NotCancellable):
            client.server.cancel(older.id)
        assert call(client, nap, 0.0) == 0.0  # a fresh worker took the killed one's place


def test_a_wait_times_out_and_the_job_goes_on(make_server):
    server = make_server()
    with offload.Client(server) as client:
        future = client.submit(nap, 1.0)
        wait_for(lambda: bool(client.server.jobs()))
        (job,) = client.server.jobs()
        with pytest.raises(TimeoutError):
            client.server.wait(job.id, timeout=0.1)
        assert future.result(timeout=10) == 1.0
        assert client.server.wait(job.id, timeout=10).state == "done"


def test_clients_see_only_their_own_jobs(tmp_path, make_server):
    server_public, server_secret = keys(tmp_path / "server", "server")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secrets = {}
    for name in ("alice", "bob"):
        public, secrets[name] = keys(tmp_path / name, name)
        (allowed / f"{name}.key").write_bytes(public.read_bytes())
    secure = ("--secret-key", str(server_secret), "--authorized-keys", str(allowed))
    server = make_server(*secure, "--keep-results", "all")

    def client(name: str) -> offload.Client:
        return offload.Client(server, server_key=str(server_public), client_key=str(secrets[name]))

    with client("alice") as alice, client("bob") as bob:
        assert call(alice, nap, 0.0) == 0.0
        (job,) = alice.server.jobs()
        assert job.owner and job.owner == alice.server.usage()["owner"]
        assert bob.server.jobs() == []
        for ask in (bob.server.status, bob.server.result, bob.server.cancel, bob.server.wait):
            with pytest.raises(offload.UnknownJob):
                ask(job.id)
        assert bob.server.usage()["jobs"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": "drop tables"}',
        b'{"op": "status", "job": "1"}',
        b'{"op": "jobs", "limit": 1e9}',
        b'{"op": "jobs", "states": [1]}',
        b'{"op": "status"}',
        b"[" * 60_000,  # nested past the JSON parser's recursion limit
        b'{"op": "jobs", "states": ["\\ud800"]}',  # a lone surrogate, no state at all
    ],
)
def test_a_malformed_control_request_gets_a_clear_error(server, client, body):
    from offload.runtime import protocol

    with socket_to(server) as sock:
        sock.send_multipart([protocol.encode_header(protocol.CONTROL, 5), body])
        assert sock.poll(10_000)
        header_frame, detail = sock.recv_multipart()
    header = protocol.decode_header(header_frame)
    assert (header.kind, header.request_id) == (protocol.ERROR, 5)
    assert protocol.decode_json(detail)["code"] == "protocol"
    assert call(client, apps.add, 1, 2) == 3  # and the server serves on


def socket_to(server: offload.LocalServer):
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)
    return sock


def _start(data_dir: str, port: int, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "edge_server", "--insecure", "--app", "tests.apps"]
    command += ["--bind", f"tcp://127.0.0.1:{port}", "--data-dir", data_dir, "--workers", "1"]
    command += ["--print-address", "--exit-with-stdin", "--log-level", "WARNING", *extra]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().startswith("tcp://")
    return process


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=15)
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def test_queued_calls_survive_sigkill_and_run_after_the_restart(tmp_path, unused_tcp_port):
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    process = _start(str(tmp_path), unused_tcp_port)
    try:
        with offload.Client(address, heartbeat_timeout=2) as client:
            client.ping(timeout=10)
            running = client.submit(nap, 30.0)
            queued = [client.submit(scaled, np.full(4, i), 10.0) for i in range(5)]
            wait_for(
                lambda: [j.state for j in client.server.jobs()] == ["queued"] * 5 + ["running"]
            )
            time.sleep(0.3)  # the waiting payloads are written within one loop pass
            killed_at = time.time()
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            for future in [running, *queued]:  # their client learns the server is gone
                with pytest.raises(offload.ServerUnavailable):
                    future.result(timeout=15)
        process = _start(str(tmp_path), unused_tcp_port)
        with offload.Client(address) as later:
            ids = sorted(j.id for j in later.server.jobs())
            for i, job_id in enumerate(ids[1:]):
                assert later.server.wait(job_id, timeout=30).state == "done"
                assert later.server.result(job_id).tolist() == [10.0 * i] * 4
            lost = later.server.status(ids[0])
            # Not the job's failure: the server stopped under it, and it ran until then
            # (the store's last note that the server lived), not until the restart.
            assert lost.state == "interrupted" and "stopped while this job ran" in lost.error
            assert lost.started is not None and lost.finished is not None
            assert lost.started <= lost.finished <= killed_at
            assert later.server.usage()["jobs"] == 6
    finally:
        _stop(process)


def test_edge_server_reads_a_toml_config_and_logs_json(tmp_path, unused_tcp_port):
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[edge-server]\napp = ["tests.apps"]\nworkers = 1\nkeep-results = "all"\n'
        f'data-dir = "{tmp_path / "data"}"\ninsecure = true\n'
        f'bind = "tcp://127.0.0.1:{unused_tcp_port}"\nlog-format = "json"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_server", "--config", str(config), "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("tcp://")
        with offload.Client(f"tcp://127.0.0.1:{unused_tcp_port}") as client:
            assert client.server.health()["workers"] == 1
            assert call(client, nap, 0.0) == 0.0
            (job,) = client.server.jobs()
            assert client.server.result(job.id) == 0.0  # keep-results = "all" from the file
        assert (tmp_path / "data" / "jobs.sqlite").exists()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(r["level"] == "WARNING" and "INSECURE" in r["message"] for r in records)
    assert any(r["logger"] == "edge_server" and "serving" in r["message"] for r in records)


def test_an_unknown_option_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text("insecure = true\nwrokers = 2\n")
    result = subprocess.run(
        [sys.executable, "-m", "edge_server", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown options wrokers" in result.stderr


def _offload(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_the_offload_command_line(make_server, tmp_path):
    server = make_server("--keep-results", "all")
    with offload.Client(server) as client:
        call(client, scaled, np.arange(4.0), 3.0)
        (job,) = client.server.jobs()
    listed = _offload("jobs", "--server", server.address)
    assert listed.returncode == 0 and "tests.apps:scaled" in listed.stdout
    assert listed.stdout.splitlines()[0].split()[:3] == ["id", "state", "function"]
    at = ("--server", server.address)
    status = json.loads(_offload("status", str(job.id), *at, "--json").stdout)
    assert status["state"] == "done" and status["id"] == job.id
    assert _offload("wait", str(job.id), "--server", server.address).returncode == 0
    out = tmp_path / "result.npy"
    fetched = _offload("result", str(job.id), "--server", server.address, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert np.load(out).tolist() == [0.0, 3.0, 6.0, 9.0]
    usage = json.loads(_offload("usage", "--server", server.address, "--json").stdout)
    assert usage["jobs"] == 1
    missing = _offload("cancel", "9999", "--server", server.address)
    assert missing.returncode == 1 and "UnknownJob" in missing.stderr
    servers = _offload("servers", "--server", server.address, "--json")
    assert servers.returncode == 0 and json.loads(servers.stdout)[0]["ok"] is True


def test_an_error_text_sqlite_cannot_store_loses_nothing_else(make_server):
    server = make_server("--keep-results", "all")
    failing = offload.offload(apps.fail.__wrapped__, mode="remote")
    with offload.Client(server) as client:
        with pytest.raises(ValueError):
            call(client, failing, "bad \ud800 text")  # a lone surrogate in the error
        assert call(client, nap, 0.0) == 0.0
        failed = client.server.jobs()[1]
        assert failed.state == "failed" and "bad ? text" in (failed.error or "")


def test_an_interrupted_job_is_recorded_as_moved_once_its_server_is_back(tmp_path, unused_tcp_port):
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    process = _start(str(tmp_path), unused_tcp_port)
    steps, n = tmp_path / "steps", 40
    try:
        with offload.Client(address, heartbeat_interval=0.1, heartbeat_timeout=1.0) as client:
            client.ping(timeout=10)
            job = client.submit(apps.count_up, n, 0.02, str(steps))
            wait_for(lambda: job.progress.checkpoints >= 3)
            first = job.id
            with pytest.warns(RuntimeWarning, match="resumes here"):
                process.kill()
                assert job.result(timeout=30) == sum(i * i for i in range(n))
            process.wait(timeout=10)
            process = _start(str(tmp_path), unused_tcp_port)

            def moved() -> bool:  # a restarted server may miss a request while it starts
                try:
                    return client.server.status(first).state == "moved"
                except offload.ServerUnavailable:
                    return False

            # The client told the dead server where the job went; it hears it once back.
            wait_for(moved, timeout=20)
            assert client.server.status(first).moved_to == "local"
    finally:
        _stop(process)
