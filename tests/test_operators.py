"""The operator's client list (issue 13, item 8): nearby users, for operator keys only.

A real CurveZMQ server with ``--operator-keys``: an ordinary client calls it
(sharing its location) and is refused the list; the operator lists it with
``offload clients --json``, with its calls, bytes and distance.
"""

from __future__ import annotations

import json
import shutil

import pytest
import zmq.auth

import offload
from edge_server.config import ServerConfig
from offload import cli
from tests import apps

AALBORG, COPENHAGEN = "57.0488,9.9217", "55.6761,12.5683"


@pytest.fixture
def operated(tmp_path, make_server):
    for name in ("server", "alice", "operator"):
        zmq.auth.create_certificates(str(tmp_path), name)
    allowed, operators = tmp_path / "allowed", tmp_path / "operators"
    allowed.mkdir()
    operators.mkdir()
    for name in ("alice", "operator"):
        shutil.copy(tmp_path / f"{name}.key", allowed)
    shutil.copy(tmp_path / "operator.key", operators)
    secure = ["--secret-key", str(tmp_path / "server.key_secret")]
    secure += ["--authorized-keys", str(allowed), "--operator-keys", str(operators)]
    server = make_server(*secure, "--location", AALBORG)
    return server, tmp_path


def test_only_operators_list_the_clients_seen(operated, capsys):
    server, keys = operated
    alice = dict(server_key=str(keys / "server.key"), client_key=str(keys / "alice.key_secret"))
    with offload.Client(server, location=COPENHAGEN, share_location=True, **alice) as client:
        assert client.call(apps.add, (1, 2), {}, mode="remote") == 3
        assert client.call(apps.echo, (b"x" * 1000,), {}, mode="remote") == b"x" * 1000
        with pytest.raises(offload.NotAllowed, match="operator"):
            client.server.clients()
    argv = ["clients", "--server", server.address, "--server-key", str(keys / "server.key")]
    argv += ["--client-key", str(keys / "operator.key_secret")]
    assert cli.main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    alice_key = zmq.auth.load_certificate(str(keys / "alice.key"))[0].decode()
    (row,) = [r for r in rows if r["client"] == alice_key]
    assert row["calls"] == 2 and row["bytes_in"] >= 1000 and row["bytes_out"] >= 1000
    assert row["first_seen"] <= row["last_seen"]
    assert row["location"] and row["distance_km"] == pytest.approx(224, abs=3)
    assert cli.main(argv) == 0
    assert alice_key in capsys.readouterr().out


def test_an_open_server_lists_no_one_and_operator_keys_need_curve(make_server, tmp_path):
    server = make_server()
    with offload.Client(server, heartbeat_timeout=10) as client:
        client.call(apps.add, (1, 2), {}, mode="remote")
        with pytest.raises(offload.NotAllowed):
            client.server.clients()
    with pytest.raises(offload.ConfigError, match="CurveZMQ"):
        ServerConfig(operator_keys=str(tmp_path))
    keys = tmp_path / "none"
    keys.mkdir()
    zmq.auth.create_certificates(str(tmp_path), "s")
    with pytest.raises(offload.ConfigError, match="no operator keys"):
        ServerConfig(
            secret_key=str(tmp_path / "s.key_secret"),
            authorized_keys=str(keys),
            operator_keys=str(keys),
        )
