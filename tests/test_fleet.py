"""Many servers: locations and distances, TXT records, trust, and discovery on a real LAN.

The discovery test runs real processes in a network namespace it creates
(loopback only: mDNS works there), so it needs root and ``ip``; it is skipped
with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import zmq.auth

import offload
from offload import cli_output as out
from offload._exceptions import ConfigError
from offload.config import Config
from offload.discovery import Found, app_digest, decode_txt, encode_txt
from offload.fleet import listing
from offload.geo import distance_km, parse_location
from offload.profiler import Link
from offload.servers import Servers, config_bps

BERLIN, MUNICH = (52.5200, 13.4050), (48.1351, 11.5820)
LONDON, NEW_YORK = (51.5074, -0.1278), (40.7128, -74.0060)
AALBORG, COPENHAGEN = (57.0488, 9.9217), (55.6761, 12.5683)


def test_great_circle_distances_match_known_ones():
    assert distance_km(BERLIN, MUNICH) == pytest.approx(504, abs=2)
    assert distance_km(LONDON, NEW_YORK) == pytest.approx(5570, abs=15)
    assert distance_km(AALBORG, COPENHAGEN) == pytest.approx(224, abs=3)
    assert distance_km(BERLIN, BERLIN) == 0.0
    assert distance_km((0.0, 0.0), (0.0, 180.0)) == pytest.approx(20015, abs=1)  # half way


def test_locations_are_checked():
    assert parse_location(" 57.05, 9.92") == (57.05, 9.92)
    for bad in ("57.05", "91,0", "0,181", "a,b", "1,2,3"):
        with pytest.raises(ValueError):
            parse_location(bad)
    with pytest.raises(ConfigError, match="location"):
        Config(location="north")
    env = {"OFFLOAD_LOCATION": "57.05,9.92", "OFFLOAD_SERVERS": "tcp://a:1, tcp://b:2"}
    config = Config.load(env=env, profile_cache="")
    assert config.static_servers == ("tcp://a:1", "tcp://b:2") and not config.discover
    assert Config.load(env={"OFFLOAD_SERVERS": "auto", "OFFLOAD_INSECURE": "yes"}).insecure


def test_txt_records_round_trip_and_large_app_lists_become_one_digest():
    fields = {"name": "bench", "site": "Aalborg", "loc": "57.05,9.92", "proto": "1"}
    apps = {"tests.apps": app_digest({"f": b"\1" * 16})}
    props = encode_txt(fields, apps)
    found = decode_txt("x._offload._tcp.local.", "tcp://10.0.0.1:5555", b"", _raw(props))
    assert found.apps == apps and found.location == (57.05, 9.92) and found.name == "bench"
    many = {f"app.module_number_{i}": "0123456789abcdef" for i in range(60)}
    props = encode_txt(fields, many)
    assert "apps" in props and not any(k.startswith("app:") for k in props)
    assert sum(len(f"{k}={v}") + 1 for k, v in props.items()) < 1300
    with pytest.raises(ConfigError):
        encode_txt({"site": "x" * 300}, {})


@pytest.mark.parametrize(
    "props",
    [
        {"txtvers": "1", "key": "short"},
        {"txtvers": "1", "loc": "999,0"},
        {"txtvers": "2"},
        {"txtvers": "1", "workers": "many"},
        {"txtvers": "1", "app:m": "not-hex-digest!!"},
        {"txtvers": "1", "surprise": "x"},
        {"txtvers": "1", "name": None},
    ],
)
def test_a_malformed_record_is_refused(props):
    with pytest.raises(ValueError):
        decode_txt("x._offload._tcp.local.", "tcp://10.0.0.1:1", b"", _raw(props))


def test_an_oversized_record_is_refused():
    with pytest.raises(ValueError, match="bytes"):
        decode_txt("x._offload._tcp.local.", "tcp://10.0.0.1:1", b"x" * 3000, {b"txtvers": b"1"})


def test_only_known_keys_are_trusted(tmp_path):
    known = tmp_path / "known"
    known.mkdir()
    public, _ = zmq.auth.create_certificates(str(known), "ours")
    ours = zmq.auth.load_certificate(public)[0].decode()
    theirs = "x" * 40
    found = [
        Found("a", "tcp://10.0.0.1:1", "ours", key=ours, location=MUNICH),
        Found("b", "tcp://10.0.0.2:1", "theirs", key=theirs),
        Found("c", "tcp://10.0.0.3:1", "open"),
    ]
    config = Config(known_servers=str(known), location="52.52,13.405", server="tcp://s:1")
    by_name = {k.found.name if k.found else k.role: k for k in listing(config, found)}
    assert by_name["server"].trusted and by_name["server"].why == "configured"
    assert by_name["ours"].trusted and by_name["ours"].key_file == public
    assert by_name["ours"].distance_km(config) == pytest.approx(504, abs=2)
    assert not by_name["theirs"].trusted and by_name["theirs"].why == "unknown key"
    assert not by_name["open"].trusted
    insecure = {k.address: k.trusted for k in listing(config.replace(insecure=True), found)}
    assert insecure["tcp://10.0.0.3:1"] and not insecure["tcp://10.0.0.2:1"]


def _raw(props: dict[str, str | None]) -> dict[bytes, bytes | None]:
    return {k.encode(): None if v is None else v.encode() for k, v in props.items()}


# -- real processes in a network namespace --------------------------------------------------------


@pytest.fixture
def netns():
    """A network namespace with loopback up; removed (and what ran in it stopped) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    pytest.importorskip("zeroconf", reason="discovery needs offload[fleet] (zeroconf)")
    name = f"offload-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    processes: list[subprocess.Popen] = []
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name, processes
    finally:
        for process in processes:
            process.kill()
            process.wait(5)
        subprocess.run(["ip", "netns", "del", name], timeout=10, check=False)


BOGUS = """
import sys, zeroconf
zc = zeroconf.Zeroconf()
info = zeroconf.ServiceInfo("_offload._tcp.local.", "bogus._offload._tcp.local.", port=9,
    properties={"txtvers": "1", "key": "not-a-key", "loc": "999,999"},
    server="bogus.local.", parsed_addresses=["127.0.0.1"])
zc.register_service(info)
print("registered", flush=True)
sys.stdin.read()
"""


def test_servers_are_found_on_the_lan_and_only_trusted_ones_called(netns, tmp_path):
    ns, processes = netns
    launcher = ["ip", "netns", "exec", ns]
    keys = tmp_path / "keys"
    clients, known = keys / "clients", keys / "known"
    for d in (clients, known):
        d.mkdir(parents=True)
    zmq.auth.create_certificates(str(keys), "server")
    zmq.auth.create_certificates(str(keys), "client")
    shutil.copy(keys / "client.key", clients)
    shutil.copy(keys / "server.key", known)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    bogus = subprocess.Popen(  # registers while the servers start
        [*launcher, sys.executable, "-c", BOGUS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    processes.append(bogus)
    advertise = ["--advertise", "--log-level", "WARNING"]
    open_server = offload.serve_local(
        ["tests.apps"],
        workers=1,
        launcher=launcher,
        extra_args=[
            *advertise,
            "--name",
            "bench-open",
            "--site",
            "Aalborg Hovedbibliotek",
            "--location",
            "57.0488,9.9217",
        ],
    )
    secure = ["--secret-key", str(keys / "server.key_secret"), "--authorized-keys", str(clients)]
    secure_server = offload.serve_local(
        ["tests.apps"],
        workers=1,
        launcher=launcher,
        extra_args=[*advertise, *secure, "--name", "bench-secure", "--location", "52.52,13.405"],
    )
    try:
        assert bogus.stdout is not None and bogus.stdout.readline() == b"registered\n"
        client = ["--client-key", str(keys / "client.key_secret")]
        base = [*launcher, sys.executable, "-m", "offload.cli", "servers", "--servers", "auto"]
        base += ["--location", "55.6761,12.5683", "--insecure", "--app", "tests.apps", "--json"]
        # Registering takes ~1.7 s; a browser that starts meanwhile sees the announcement.
        # Two clients at once: one knows the secure server's key, the other does not.
        runs = [
            subprocess.Popen(
                [*base, *client, "--known-servers", str(directory), "--wait", "3"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for directory in (known, tmp_path)
        ]
        processes.extend(runs)
        (out, err), (untrusted_out, untrusted_err) = (r.communicate(timeout=30) for r in runs)
        assert runs[0].returncode == 0, out + err
        rows = {row["name"]: row for row in json.loads(out)}
        assert set(rows) == {"bench-open", "bench-secure"}, err  # not the bogus one
        assert err.count("ignoring the malformed advertisement") == 1
        assert "bogus._offload._tcp.local." in err
        for row in rows.values():
            assert {"address", "name", "distance_km", "answering", "rtt_ms", "trusted"} <= set(row)
            assert row["trusted"] and row["answering"] and row["rtt_ms"] > 0
            assert row["holds_app"] is True and row["load"]["workers"] == 1
        assert rows["bench-open"]["address"] == open_server.address
        assert rows["bench-open"]["site"] == "Aalborg Hovedbibliotek"
        assert rows["bench-open"]["distance_km"] == pytest.approx(224, abs=3)
        assert rows["bench-secure"]["address"] == secure_server.address
        assert rows["bench-secure"]["distance_km"] == pytest.approx(355, abs=5)
        assert len(rows["bench-secure"]["key"]) == 40

        # Without its key among the known ones, the secure server is listed, never called.
        listed = {row["name"]: row for row in json.loads(untrusted_out)}
        assert set(listed) == {"bench-open", "bench-secure"}, untrusted_out + untrusted_err
        assert listed["bench-secure"]["trusted"] is False
        assert listed["bench-secure"]["trust"] == "unknown key"
        assert listed["bench-secure"]["answering"] is None
        assert listed["bench-secure"]["rtt_ms"] is None
        assert listed["bench-open"]["answering"] is True

        # A server that stops withdraws its advertisement.
        open_server.stop()
        gone = subprocess.run(
            [*base, "--wait", "2"], capture_output=True, text=True, timeout=30, env=env
        )
        assert {row["name"] for row in json.loads(gone.stdout)} == {"bench-secure"}, gone.stderr
    finally:
        open_server.stop()
        secure_server.stop()


WITHOUT_ZEROCONF = """
import sys
sys.modules["zeroconf"] = None  # as if offload[fleet] were not installed
import offload
from offload import cli_output as out
from offload._exceptions import ConfigError
with offload.Client(mode="local") as client:  # the base install works
    pass
try:
    offload.Client(servers="auto")
except ConfigError as exc:
    print("client:", exc)
from edge_server.cli import main
sys.exit(main(["--insecure", "--advertise"]))
"""


def test_the_base_install_works_without_zeroconf_and_says_what_discovery_needs():
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_ZEROCONF], capture_output=True, text=True, timeout=60
    )
    assert "client: servers='auto' needs python-zeroconf: pip install" in run.stdout
    assert run.returncode == 2 and "--advertise needs python-zeroconf" in run.stderr


def test_offload_servers_json_lists_a_configured_server(server):
    run = subprocess.run(
        [sys.executable, "-m", "offload.cli", "servers", "--server", server.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OFFLOAD_LOCATION": "57.05,9.92"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = json.loads(run.stdout)
    assert {"address", "name", "distance_km", "answering", "rtt_ms", "trusted"} <= set(row)
    assert row["address"] == server.address and row["role"] == "server"
    assert row["answering"] is True and row["trusted"] is True and row["rtt_ms"] > 0
    assert row["distance_km"] is None  # not advertised: where it is is not known
    assert row["load"]["workers"] >= 1 and row["load"]["queued"] == 0


def test_the_servers_table_is_for_people():
    row = {"name": "lab", "address": "tcp://10.0.0.1:5555", "distance_km": 3.25, "rtt_ms": 0.51}
    row |= {"load": {"running": 1, "workers": 2, "queued": 3}, "trusted": False}
    row |= {"trust": "unknown key", "answering": None}
    text = out.table([out.server_row(row)], out.SERVER_COLUMNS)
    assert "1/2 busy, 3 queued" in text and "0.51 ms" in text and "NO (unknown key)" in text


class _FakeBrowser:
    def __init__(self, found: list[Found]) -> None:
        self.found = found

    def servers(self) -> list[Found]:
        return self.found

    def stop(self) -> None:
        pass


def test_servers_know_the_list_and_never_connect_to_an_untrusted_one(server):
    config = Config(server=server.address, servers=("tcp://127.0.0.1:9",), profile_cache="")
    servers = Servers(config, Link(config_bps(config)))
    try:
        servers.browser = _FakeBrowser(  # type: ignore[assignment]
            [Found("x", "tcp://127.0.0.1:7", "stranger", key="k" * 40)]
        )
        roles = {k.address: (k.role, k.trusted) for k in servers.known()}
        assert roles == {
            server.address: ("server", True),
            "tcp://127.0.0.1:9": ("listed", True),
            "tcp://127.0.0.1:7": ("discovered", False),
        }
        with pytest.raises(offload.ServerUnavailable, match="not trusted"):
            servers.get("tcp://127.0.0.1:7")
        servers.ping(timeout=10)
        assert servers.loads()[server.address]["workers"] >= 1  # the latest PONG's load
    finally:
        servers.close()
