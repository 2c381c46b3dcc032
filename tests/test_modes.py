"""Where calls run: modes, the offline app, a lost server, the default client, shutdown."""

from __future__ import annotations

import os
import time

import psutil
import pytest

import offload
from tests import apps


def test_no_server_configured_runs_locally():
    with offload.Client(config=offload.Config()) as client:
        assert client.call(apps.where, (), {}) == os.getpid()
        assert client.submit(apps.add, 1, 2).result(timeout=5) == 3
        with pytest.raises(offload.ServerUnavailable, match="no server"):
            client.call(apps.add, (1, 2), {}, mode="remote")


def test_unreachable_server_auto_runs_locally_remote_fails(unused_tcp_port):
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    with offload.Client(
        address, connect_timeout=0.2, heartbeat_interval=0.1, heartbeat_timeout=0.5
    ) as client:
        start = time.monotonic()
        assert client.call(apps.where, (), {}) == os.getpid()
        assert time.monotonic() - start < 2
        assert client.call(apps.where, (), {}) == os.getpid()  # no new wait
        with pytest.raises(offload.ServerUnavailable, match="no answer"):
            client.call(apps.add, (1, 2), {}, mode="remote")


def test_lost_server_auto_falls_back_to_local(make_server, caplog):
    server = make_server()
    with offload.Client(server, heartbeat_interval=0.1, heartbeat_timeout=0.8) as client:
        remote_pid = client.call(apps.where, (), {})  # cold: tried remotely first
        assert remote_pid != os.getpid()
        client.decider.observe_local(apps.where, 1, 10.0)  # running here is slow
        assert client.explain(apps.where).side == "remote"
        server.stop()
        with pytest.warns(RuntimeWarning, match="ServerUnavailable"):
            assert client.call(apps.where, (), {}) == os.getpid()
        (record,) = [r for r in caplog.records if "locally" in r.getMessage()]
        assert record.levelname == "WARNING" and "ServerUnavailable" in record.getMessage()
        assert not client.server_up()
        assert client.submit(apps.where).result(timeout=5) == os.getpid()


def test_function_modes(server):
    local_where = offload.offload(apps.where.__wrapped__, mode="local")
    with offload.Client(server) as client:
        client.ping(timeout=10)
        assert client.call(local_where, (), {}) == os.getpid()
        assert client.call(apps.where, (), {}) != os.getpid()  # auto, server up
        assert client.call(apps.where, (), {}, mode="local") == os.getpid()


def test_default_client_from_configure(server):
    client = offload.configure(server=server)
    try:
        assert offload.default_client() is client
        assert apps.where() != os.getpid()
        assert apps.where.remote() != os.getpid()
        assert apps.where.local() == os.getpid()
        assert apps.add.submit(2, 2).result(timeout=5) == 4
        assert list(apps.add.map([1, 2], [3, 4])) == [4, 6]
    finally:
        offload.configure(server=None)


def test_default_client_from_environment(server, monkeypatch):
    monkeypatch.setenv("OFFLOAD_SERVER", str(server))
    monkeypatch.setenv("OFFLOAD_HEARTBEAT_TIMEOUT", "7.5")
    import offload._default as default

    monkeypatch.setattr(default, "_client", None)
    try:
        client = offload.default_client()
        assert client.config.server == str(server)
        assert client.config.heartbeat_timeout == 7.5
        assert apps.where() != os.getpid()
    finally:
        default._shutdown_default()


def test_shutdown_waits_and_refuses_new_calls(server):
    client = offload.Client(server)
    future = client.submit(apps.nap, 0.2)
    client.shutdown(wait=True)
    assert future.result(timeout=0) == 0.2
    with pytest.raises(RuntimeError, match="shutdown"):
        client.submit(apps.add, 1, 2)


def _arena_files() -> set[str]:
    from edge_server.arena import arena_dir

    return {p.name for p in arena_dir().glob("offload-*")}


def test_server_stop_leaves_no_process_behind():
    before = _arena_files()
    srv = offload.serve_local(["tests.apps"], workers=2, extra_args=["--log-level", "WARNING"])
    parent = psutil.Process(srv.process.pid)
    with offload.Client(srv) as client:
        big = client.call(apps.echo, (os.urandom(2**20),), {}, mode="remote")  # via arenas
        assert len(big) == 2**20
        children = parent.children(recursive=True)
        assert len(children) >= 2
        assert _arena_files() - before
        srv.stop()
    _gone, alive = psutil.wait_procs([parent, *children], timeout=10)
    assert not alive, alive
    assert not _arena_files() - before


def test_server_killed_hard_takes_its_workers_along():
    srv = offload.serve_local(["tests.apps"], workers=2, extra_args=["--log-level", "WARNING"])
    parent = psutil.Process(srv.process.pid)
    with offload.Client(srv) as client:
        client.call(apps.add, (1, 1), {}, mode="remote")
    children = parent.children(recursive=True)
    srv.process.kill()
    srv.stop()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive


def test_default_client_from_toml_file(server, tmp_path, monkeypatch):
    config = tmp_path / "offload.toml"
    config.write_text(f'[offload]\nserver = "{server}"\nconnect_timeout = 2.5\n')
    monkeypatch.setenv("OFFLOAD_CONFIG", str(config))
    monkeypatch.delenv("OFFLOAD_SERVER", raising=False)
    import offload._default as default

    monkeypatch.setattr(default, "_client", None)
    try:
        client = offload.default_client()
        assert client.config.server == str(server)
        assert client.config.connect_timeout == 2.5
        assert apps.where() != os.getpid()
    finally:
        default._shutdown_default()


def test_restarted_server_fails_the_calls_it_lost(unused_tcp_port):
    address = f"tcp://127.0.0.1:{unused_tcp_port}"
    first = offload.serve_local(["tests.apps"], workers=1, bind=address)
    second = None
    try:
        with offload.Client(address, heartbeat_interval=0.2, heartbeat_timeout=30) as client:
            lost = client.submit(offload.offload(apps.nap.__wrapped__, mode="remote"), 5)
            time.sleep(0.5)
            first.process.kill()  # no goodbye
            first.stop()
            second = offload.serve_local(["tests.apps"], workers=1, bind=address)
            assert isinstance(lost.exception(timeout=15), offload.ServerUnavailable)
            assert client.call(apps.add, (1, 2), {}, mode="remote") == 3
    finally:
        if second is not None:
            second.stop()


def test_shutdown_from_a_callback(server):
    client = offload.Client(server)
    client.ping(timeout=10)
    slow = client.submit(offload.offload(apps.nap.__wrapped__, mode="remote"), 2)
    client.submit(offload.offload(apps.nap.__wrapped__, mode="remote"), 0.05).add_done_callback(
        lambda _: client.shutdown(wait=False)
    )
    assert slow.result(timeout=10) == 2  # shutdown(wait=False) lets calls in flight finish
    with pytest.raises(RuntimeError):
        client.submit(apps.add, 1, 2)


def test_local_server_dies_with_its_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, offload\n"
        "srv = offload.serve_local(['tests.apps'], workers=1)\n"
        "print(srv.process.pid, flush=True)\n"
        "os._exit(0)  # no cleanup: as if killed\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    server = psutil.Process(int(out.stdout.split()[0]))
    children = server.children(recursive=True)
    _, alive = psutil.wait_procs([server, *children], timeout=15)
    assert not alive, alive
