"""The profiler against a real server and real files: explain, stats, persistence, link, device."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import offload
from offload.profiler import DeviceProfiler, EnergyModel, Profiler
from offload.profiler.device import _CgroupCpu
from offload.runtime import protocol

from . import apps


def test_explain_runs_nothing_and_says_why(server):
    ran: list[int] = []  # the local function's side effect

    def counted(x: int) -> int:
        ran.append(x)
        return x

    here = offload.offload(counted, mode="local")
    sent: list[int] = []  # kinds of the messages the client sends the server

    def observe(request_id: int, direction: str, kind: int, frames: int, nbytes: int) -> None:
        if direction == "sent":
            sent.append(kind)

    def calls_counted() -> float:
        return sum(
            s[side]["calls"] for s in client.stats().values() for side in ("local", "remote")
        )

    with offload.Client(server) as client:
        client.ping(timeout=10)
        client.servers.require().conn.observe(observe)
        cold = client.explain(apps.crash)  # would kill a worker if it ran
        assert cold.side == "remote" and "no history" in cold.reasons[0]
        forced = client.explain(here, 1)
        assert forced.side == "local" and "mode='local'" in forced.reasons[0]
        # Nothing ran: no call went to the server, none ran here, none was counted.
        assert protocol.CALL not in sent
        assert ran == []
        assert calls_counted() == 0
        # Whereas real calls show: sent, run here, counted (the remote one).
        assert client.call(here, (2,), {}) == 2
        assert client.call(apps.where, (), {}, mode="remote") != os.getpid()
        assert protocol.CALL in sent and ran == [2] and calls_counted() >= 1


def test_stats_and_explain_after_real_calls(server):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        client.ping(timeout=10)  # on an idle connection: a round-trip time
        data = list(range(20_000))
        for _ in range(3):  # remote (cold), local (cold), then by the estimates
            assert client.call(apps.echo, (data,), {}) == data
        stats = client.stats()["tests.apps:echo"]
        assert stats["local"]["calls"] + stats["remote"]["calls"] == 3
        assert stats["local"]["calls"] >= 1 and stats["remote"]["calls"] >= 1
        assert stats["remote"]["bytes_up"] > 20_000 and stats["remote"]["bytes_down"] > 20_000
        assert stats["remote"]["energy_j"] > 0 and stats["local"]["energy_j"] > 0
        why = client.explain(apps.echo, data)
        assert why.estimates["remote"]["time_s"] > why.estimates["remote"]["server_s"] > 0
        assert why.energy_source.startswith("modelled")
        assert why.link["rtt_s"] is not None


def test_module_level_explain_and_stats(server):
    offload.configure(server=server)
    try:
        offload.default_client().ping(timeout=10)
        assert offload.explain(apps.add, 1, 2).side == "remote"
        assert apps.add(1, 2) == 3
        assert offload.stats()["tests.apps:add"]["remote"]["calls"] == 1
    finally:
        offload.configure(server=None)


def test_profiles_persist_across_clients(server, tmp_path):
    cache = tmp_path / "profiles.json"
    with offload.Client(server, profile_cache=str(cache)) as client:
        client.ping(timeout=10)
        for _ in range(3):
            client.call(apps.add, (1, 2), {})
    assert cache.is_file()
    with offload.Client(server, profile_cache=str(cache)) as client:
        client.ping(timeout=10)
        warm = client.explain(apps.add, 1, 2)
        assert "no history" not in warm.reasons[0]
        assert warm.estimates["local"]["time_s"] is not None
        assert warm.link["rtt_s"] is not None  # the link to this server was saved too
    cache.write_text("{not json")
    with offload.Client(server, profile_cache=str(cache)) as client:  # a bad file: start cold
        client.ping(timeout=10)
        assert "no history" in client.explain(apps.add, 1, 2).reasons[0]


def test_rtt_from_pings_and_bandwidth_from_a_probe(server):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        client.ping(timeout=10)
        link = client.profiler.link
        assert link.rtt.count >= 1 and 0 < link.rtt.mean < 1.0
        assert link.up_bps.mean is None
        measured = client.probe(1_000_000)
        assert measured["up_bps"] > 1e6 and measured["down_bps"] > 1e6  # loopback


def test_server_dying_mid_call_completes_it_here(make_server):
    server = make_server()
    with offload.Client(server, heartbeat_interval=0.1, heartbeat_timeout=0.8) as client:
        client.ping(timeout=10)
        assert client.call(apps.slow_where, (0,), {}) != os.getpid()  # cold: remote
        client.decider.observe_local(apps.slow_where, 9, 10.0)  # here is slow: stay remote
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(client.call(apps.slow_where, (1.0,), {}))
        )
        worker.start()
        time.sleep(0.3)
        server.process.kill()  # the server dies with the call running
        with pytest.warns(RuntimeWarning, match="ServerUnavailable"):
            worker.join(timeout=20)
        assert result == [os.getpid()]  # the app got a result, computed here
        assert client.explain(apps.slow_where, 0).side == "local"  # offline now


def _battery(root: Path, capacity: int, status: str, power_uw: int | None) -> None:
    bat = root / "BAT0"
    bat.mkdir(parents=True, exist_ok=True)
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text(f"{capacity}\n")
    (bat / "status").write_text(f"{status}\n")
    if power_uw is not None:
        (bat / "power_now").write_text(f"{power_uw}\n")
    else:
        (bat / "power_now").unlink(missing_ok=True)
    (root / "AC").mkdir(exist_ok=True)
    (root / "AC" / "type").write_text("Mains\n")


def test_device_profiler_reads_battery_and_power_from_sysfs(tmp_path):
    _battery(tmp_path, 15, "Discharging", 3_250_000)
    profiler = DeviceProfiler(interval=0.05, power_supply=tmp_path)
    state = profiler.state
    assert state.battery == pytest.approx(0.15) and state.charging is False
    assert state.power_w == pytest.approx(3.25)
    assert 0.0 <= state.cpu_load <= 1.0 and 0.0 < state.memory_free <= 1.0
    energy = EnergyModel("smartphone-wifi")
    energy.measured(state.power_w, not state.charging)
    assert energy.local(2.0) == pytest.approx(6.5) and energy.source.startswith("measured")
    profiler.start()
    try:
        _battery(tmp_path, 80, "Charging", None)  # plugged in: the thread notices
        deadline = time.monotonic() + 5
        while profiler.state.battery != pytest.approx(0.8) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert profiler.state.charging is True and profiler.state.power_w is None
    finally:
        profiler.stop()


def test_low_battery_from_sysfs_turns_a_client_online(server, tmp_path):
    _battery(tmp_path, 10, "Discharging", None)
    profiler = Profiler(power_supply=tmp_path, address=str(server))
    with offload.Client(server, profiler=profiler) as client:
        client.ping(timeout=10)
        for _ in range(3):
            client.decider.observe_local(apps.add, 17, 0.001)
            client.decider.observe_remote(apps.add, 17, 0.0012, 0.0001, 100, 50)
        assert client.explain(apps.add, 1, 2).side == "remote"
        assert "battery 0.1" in " ".join(client.explain(apps.add, 1, 2).reasons)


def test_cgroup_quota_gives_the_cpu_load_of_an_emulated_device(tmp_path):
    line = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    v1 = [entry.split(":", 2) for entry in line if "cpu" in entry.split(":")[1].split(",")]
    if not v1:
        pytest.skip("no cgroup v1 cpu controller line for this process")
    group = tmp_path / "cpu" / v1[0][2].lstrip("/")
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("20000\n")  # a fifth of one CPU
    (group / "cpu.cfs_period_us").write_text("100000\n")
    (group / "cpuacct.usage").write_text("0\n")
    cpu = _CgroupCpu.find(tmp_path)
    assert cpu is not None and cpu.capacity == pytest.approx(0.2)
    assert cpu.used() == 0.0
    start = time.monotonic()
    profiler = DeviceProfiler(cgroup_root=tmp_path, power_supply=tmp_path)
    own = time.process_time()
    time.sleep(0.2)
    # Others used half of the 0.2 CPU; this process's own use is added and must not count.
    others = 0.5 * 0.2 * (time.monotonic() - start)
    spent = time.process_time() - own
    (group / "cpuacct.usage").write_text(f"{int((others + spent) * 1e9)}\n")
    assert profiler.sample().cpu_load == pytest.approx(0.5, abs=0.15)


def test_probe_on_connect_measures_the_link(server):
    with offload.Client(server, probe_bytes=200_000, profile_interval=0.05) as client:
        client.ping(timeout=10)  # answered promptly: the probe does not hold the connection
        deadline = time.monotonic() + 10
        while client.profiler.link.down_bps.mean is None and time.monotonic() < deadline:
            time.sleep(0.02)
        snapshot = client.profiler.link.snapshot()
        assert snapshot["up_bps"] > 1e6 and snapshot["down_bps"] > 1e6


@pytest.mark.parametrize(
    "content",
    [
        '{"version": 2, "functions": [], "links": {}}',
        '{"version": 2, "functions": {}, "links": [1, 2]}',
        '{"version": 2, "functions": {"KEY": {"time": [0, 0, 0], "up": [], "down": []}}}',
        '{"version": 2, "functions": {"KEY": {"time": [0,0,0,0,0, 0,0,0,0,0, -1,0, 3,0, 0,0],'
        ' "up": 1, "down": 2, "clock": 1}}}',
        '{"version": 2, "links": {"ADDR": {"rtt": ["fast", 0, 1], "up_bps": [1000, 0, 1]}}}',
    ],
)
def test_a_malformed_profile_file_costs_nothing(server, tmp_path, content):
    cache = tmp_path / "profiles.json"
    key = f"{apps.add.wire_name}@{apps.add.fingerprint.hex()[:16]}"
    cache.write_text(content.replace("KEY", key).replace("ADDR", str(server)))
    with offload.Client(server, profile_cache=str(cache)) as client:
        client.ping(timeout=10)
        for _ in range(3):
            assert client.call(apps.add, (1, 2), {}) == 3
        assert client.stats()["tests.apps:add"]["remote"]["calls"] >= 1
    assert '"version": 2' in cache.read_text()  # rewritten whole, readable again


def test_measured_power_only_while_discharging(tmp_path):
    energy = EnergyModel("smartphone-wifi")
    energy.measured(4.0, discharging=False)  # a charger's current, not the device's draw
    assert energy.cpu_w == 0.9 and energy.source.startswith("modelled")
    energy.measured(4.0, discharging=True)
    assert energy.cpu_w == 4.0
    energy.measured(None, discharging=True)  # the figure went away: back to the profile
    assert energy.cpu_w == 0.9


def test_device_profiler_reads_the_link_speed_of_an_interface(tmp_path):
    (tmp_path / "speed").write_text("54\n")
    profiler = DeviceProfiler(power_supply=tmp_path / "none", interface=tmp_path)
    assert profiler.state.link_mbit == 54.0
    (tmp_path / "speed").write_text("-1\n")  # sysfs: link down or not known
    assert profiler.sample().link_mbit is None
    assert DeviceProfiler(power_supply=tmp_path / "none").state.link_mbit is None
