"""Every PONG carries the server's load; the client keeps the latest per server."""

from __future__ import annotations

import offload
from edge_server.load import LoadMeter
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


def test_a_pong_carries_the_load(server):
    with offload.Client(server) as client:
        for _ in range(3):
            client.call(nap, (0.0,), {}, "remote")
        info = client.ping(timeout=10)
        load = info["load"]
        assert load["running"] == 0 and load["queued"] == 0
        assert load["workers"] >= 1 and "rate_per_s" in load
        assert client.server_info["load"] == load  # the latest, kept with the connection
