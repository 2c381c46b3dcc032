"""Every PONG carries the server's load; the client keeps the latest per server."""

from __future__ import annotations

from types import SimpleNamespace

import offload
from edge_server.load import LoadMeter
from offload.pongs import Load, server_load
from tests.apps import nap


def test_the_service_rate_is_ended_calls_per_second_over_the_window():
    meter = LoadMeter()
    health = {"queued": 0, "running": 0, "workers": 2, "queue_size": 10}
    first = meter.load(health, 0, now=100.0)
    assert first["rate_per_s"] is None  # nothing measured yet
    later = meter.load({**health, "queued": 3, "running": 2}, 25, now=110.0)
    assert later["rate_per_s"] == 2.0  # 20 ended in 10 s
    assert (later["queued"], later["running"], later["workers"]) == (3, 2, 2)
    # Samples older than the window go: the rate follows what happens now.
    for t in range(111, 200):
        meter.load(health, 25, now=float(t))
    assert meter.load(health, 25, now=200.0)["rate_per_s"] == 0.0


def test_the_mean_run_is_busy_worker_seconds_over_ended_calls_whatever_the_idle_share():
    """Idle for 50 s, then 10 s with both workers on 0.3 s calls: the rate over the minute
    is a sixth of the service rate (its ``workers / rate``, 1.8 s, six times a call's
    run); busy worker-seconds over ended calls is the run."""
    meter = LoadMeter(SimpleNamespace(clients=1))
    idle = {"queued": 0, "running": 0, "workers": 2, "queue_size": 10}
    for t in range(50):
        meter.load(idle, 0, now=float(t))
    for tenth in range(101):
        now = 50 + tenth / 10
        ended = int((now - 50) / 0.3 * 2)
        load = meter.load({**idle, "queued": 4, "running": 2}, ended + 6, now=now)
    assert load["rate_per_s"] is not None and 2 / load["rate_per_s"] > 1.5
    assert 0.27 < load["service_s"] < 0.33
    assert load["clients"] == 1  # the one client whose calls wait
    assert LoadMeter().load(idle, 0, now=0.0)["service_s"] is None  # no call ended yet


def test_the_client_reads_the_load_of_a_pong():
    pong = {"load": {"queued": 4, "running": 2, "workers": 2, "rate_per_s": 1.1}}
    remote = SimpleNamespace(server_info=pong, calls_at_pong=0, load_memo=None)
    assert server_load(remote) == Load(6, 2, 1.1, 0.0, None)  # from a server that tells less
    pong["load"].update(service_s=0.3, clients=1)
    remote.load_memo = None
    assert server_load(remote) == Load(6, 2, 1.1, 0.3, 1)
    pong["load"].update(service_s="x", clients=-1)  # nonsense is not told
    remote.load_memo = None
    assert server_load(remote) == Load(6, 2, 1.1, 0.0, None)


def test_a_pong_carries_the_load(server):
    with offload.Client(server) as client:
        for _ in range(3):
            client.call(nap, (0.0,), {}, "remote")
        info = client.ping(timeout=10)
        load = info["load"]
        assert load["running"] == 0 and load["queued"] == 0
        assert load["workers"] >= 1 and "rate_per_s" in load
        assert load["service_s"] is not None and load["clients"] == 0  # its calls ended
        assert client.server_info["load"] == load  # the latest, kept with the connection
