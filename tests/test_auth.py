"""CurveZMQ: encrypted connections, and only clients with an authorized key get in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import offload

from . import apps


def keys(directory: Path, name: str) -> tuple[Path, Path]:
    """``offload keys generate NAME``: (public key file, secret key file)."""
    result = subprocess.run(
        [sys.executable, "-m", "offload.cli", "keys", "generate", name, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture
def secure_server(tmp_path, make_server):
    server_public, server_secret = keys(tmp_path / "server", "server")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    client_public, _ = keys(tmp_path / "alice", "alice")
    (allowed / "alice.key").write_bytes(client_public.read_bytes())
    keys(tmp_path / "mallory", "mallory")
    server = make_server("--secret-key", str(server_secret), "--authorized-keys", str(allowed))
    return server, server_public, tmp_path


def test_an_authorized_client_gets_in(secure_server):
    server, server_key, home = secure_server
    secret = home / "alice" / "alice.key_secret"
    with offload.Client(server, server_key=str(server_key), client_key=str(secret)) as client:
        assert client.ping(timeout=10)["functions"]
        assert client.call(apps.add, (1, 2), {}, mode="remote") == 3


@pytest.mark.parametrize("who", ["mallory", None])
def test_anyone_else_is_refused_before_a_byte_of_a_call(secure_server, who):
    server, server_key, home = secure_server
    settings = {"connect_timeout": 1.0, "heartbeat_timeout": 2.0}
    if who is not None:  # keys of its own, not authorized
        settings |= {
            "server_key": str(server_key),
            "client_key": str(home / who / f"{who}.key_secret"),
        }
    with offload.Client(server, **settings) as client:
        with pytest.raises(offload.ServerUnavailable):
            client.ping(timeout=1.5)
        with pytest.raises(offload.ServerUnavailable):
            client.call(apps.add, (1, 2), {}, mode="remote")
        assert client.call(apps.add, (1, 2), {}) == 3  # auto: it runs here instead


def test_a_client_key_file_without_its_secret_is_a_clear_error(secure_server):
    server, server_key, home = secure_server
    public_only = home / "alice" / "alice.key"
    with pytest.raises(offload.ConfigError, match="no secret key"):
        offload.Client(server, server_key=str(server_key), client_key=str(public_only))


def test_a_key_the_server_does_not_know_is_told_which_key_to_check(tmp_path, make_server, capfd):
    server_public, server_secret = keys(tmp_path / "server", "server")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    mallory_public, mallory_secret = keys(tmp_path / "mallory", "mallory")
    mallory = mallory_public.read_text().split('public-key = "')[1].split('"')[0]
    server = make_server("--secret-key", str(server_secret), "--authorized-keys", str(allowed))
    settings = {"server_key": str(server_public), "client_key": str(mallory_secret)}
    refused = pytest.warns(RuntimeWarning, match="AuthenticationFailed")
    with offload.Client(server, heartbeat_timeout=30, **settings) as client, refused:
        assert client.call(apps.add, (1, 2), {}) == 3  # auto: here instead, and said so
    expected = pytest.raises(offload.AuthenticationFailed, match=re.escape(mallory))
    with offload.Client(server, heartbeat_timeout=30, **settings) as client, expected:
        client.call(apps.add, (1, 2), {}, mode="remote")
    log = capfd.readouterr().err
    assert any("WARNING" in line and mallory in line for line in log.splitlines()), log
