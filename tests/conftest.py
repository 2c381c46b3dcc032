"""Fixtures: real edge servers on free loopback ports, and clients connected to them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import offload


def _server(*extra: str, workers: int = 2) -> offload.LocalServer:
    return offload.serve_local(
        ["tests.apps"], workers=workers, extra_args=["--log-level", "WARNING", *extra]
    )


@pytest.fixture(autouse=True)
def _no_profile_file(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """Each test's clients start cold, and servers it starts keep their job stores in tmp.

    No function profiles are read from or written to disk; a server started
    without ``--data-dir`` puts its store under ``XDG_DATA_HOME``.
    """
    monkeypatch.setenv("OFFLOAD_PROFILE_CACHE", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def server() -> Iterator[offload.LocalServer]:
    """A server holding tests.apps, code shipping off."""
    with _server() as srv:
        yield srv


@pytest.fixture(scope="session")
def shipping_server() -> Iterator[offload.LocalServer]:
    """A server that accepts functions shipped by value."""
    with _server("--allow-code-shipping", workers=1) as srv:
        yield srv


@pytest.fixture
def client(server: offload.LocalServer) -> Iterator[offload.Client]:
    with offload.Client(server, heartbeat_timeout=10) as c:
        c.ping(timeout=10)
        yield c


@pytest.fixture
def make_server():
    """Start servers with custom options; all are stopped after the test."""
    started: list[offload.LocalServer] = []

    def start(*extra: str, workers: int = 1) -> offload.LocalServer:
        srv = _server(*extra, workers=workers)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
