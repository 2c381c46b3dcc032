"""pytest-benchmark view of the decision's cost, and a smoke run of the trace replay.

``pytest bench --benchmark-enable --benchmark-group-by=group`` compares one
``decide`` with one raw pyzmq round trip (the call it decides about costs at
least that); ``python -m bench decisions`` is the full evaluation.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest

from offload.profiler import AdaptiveDecider, DeviceProfiler, DeviceState, Profiler

from . import battery, decisions_servers, decisions_servers_loss, delay, emulation, fleet, trace
from . import decisions_servers_replay as ds_replay
from .decisions import first_calls, replay


@pytest.fixture(scope="module")
def warm_decider() -> AdaptiveDecider:
    decider = AdaptiveDecider(Profiler(profile_cache=None))
    decider.profiler.device.state = DeviceState()
    fn = trace.SERVICES["bubble_sort"]
    for n in (4_001, 8_001, 16_001):
        decider.observe_local(fn, n, 0.5 * n / 16_001)
        decider.observe_remote(fn, n, 0.2 * n / 16_001, 0.15 * n / 16_001, n, n)
    return decider


@pytest.mark.benchmark(group="decision")
def test_decide(benchmark, warm_decider):
    fn = trace.SERVICES["bubble_sort"]
    args = trace.arguments("bubble_sort", 2000, 0)
    side, size = benchmark(warm_decider.decide, fn, args, {}, True)
    assert (side, size) == ("remote", 16_001)  # 0.5 s here against 0.2 s there


@pytest.mark.benchmark(group="decision")
def test_raw_zmq_roundtrip_baseline(benchmark, raw_echo):
    out = benchmark(raw_echo.roundtrip, [b"x" * 64])
    assert len(out) == 1


def _step(phase: str, local_s: float, remote_s: float, size: int = 1000) -> trace.Step:
    return trace.Step(
        phase=phase,
        service="power",
        intensity=size,
        size=size,
        mbit=54.0,
        rtt_s=0.001,
        device={"cpu_load": 0.0, "memory_free": 0.5, "battery": 0.8, "charging": False},
        local_s=local_s,
        remote_s=remote_s,
        server_s=remote_s - 0.002,
        up=30,
        down=30,
    )


def test_replay_scores_policies_against_the_oracle():
    # Offloading wins for the first 60 calls, then the server slows down 20x.
    steps = [_step("wifi", 0.10, 0.02) for _ in range(60)]
    steps += [_step("server-busy", 0.10, 0.40) for _ in range(60)]
    report = replay(steps)
    oracle = report["oracle"]
    assert oracle["time_s"] == pytest.approx(60 * 0.02 + 60 * 0.10)
    assert report["always_local"]["time_ratio_to_oracle"] == pytest.approx(12.0 / 7.2)
    assert report["always_remote"]["time_ratio_to_oracle"] == pytest.approx(25.2 / 7.2)
    ours = report["ours"]["time_ratio_to_oracle"]
    assert ours < min(
        report["always_local"]["time_ratio_to_oracle"],
        report["always_remote"]["time_ratio_to_oracle"],
    )
    assert ours < 1.15  # a few calls to learn each regime, and it follows


def test_a_saved_trace_replays_the_same(tmp_path):
    steps = [_step("wifi", 0.10, 0.02) for _ in range(12)]
    steps += [_step("server-busy", 0.10, 0.40) for _ in range(12)]
    path = trace.saved_path(tmp_path, "quick")
    trace.save(path, "quick", 7, {"link": "none"}, steps)
    meta, again = trace.load(path)
    assert meta == {"size": "quick", "seed": 7, "testbed": {"link": "none"}}
    assert again == steps
    first, second = replay(steps), replay(again)
    assert first["ours"] == second["ours"]  # the replay is deterministic


def test_first_calls_are_scored_on_their_own():
    steps = [_step("wifi", 0.10, 0.02) for _ in range(30)]
    choices = {"always_local": ["local"] * 30, "mixed": ["local"] * 10 + ["remote"] * 20}
    first = first_calls(steps, choices)
    assert first["always_local"]["time_ratio_to_oracle"] == pytest.approx(5.0)
    assert first["mixed"]["time_ratio_to_oracle"] == pytest.approx(5.0)  # only the first 10


def test_while_the_server_does_not_answer_the_deciders_run_here():
    steps = [_step("wifi", 0.10, 0.02) for _ in range(20)]
    down = [_step("link-drop", 0.10, 3.0) for _ in range(3)]
    for step in down:
        step.server_up = False
    report = replay(steps + down)
    for name in ("ours", "ours_energy", "dcof_rule"):
        assert report["_choices"][name][-3:] == ["local"] * 3


def test_the_testbed_reports_its_link_rate_as_an_interface_would():
    bed = trace.Testbed(emulate=False)  # nothing starts before ``with``
    try:
        device = DeviceProfiler(power_supply=bed.power_supply, interface=bed.interface)
        assert device.state.link_mbit is None  # not emulated: not known (-1, as sysfs)
        bed.set_link_speed(2.0)
        assert device.sample().link_mbit == 2.0
    finally:
        bed.stack.close()


def test_the_battery_is_measured_only_where_it_reports_a_counter(tmp_path):
    assert battery.why_not(tmp_path) is not None  # no battery: skipped, with the reason
    bat = tmp_path / "BAT0"
    bat.mkdir()
    (bat / "energy_now").write_text("20000000\n")  # µWh
    assert battery.why_not(tmp_path) is None
    assert battery.why_not(tmp_path, replayed=True) is not None
    path = battery.counter(tmp_path)
    assert path is not None
    with battery.Meter(path) as meter:
        (bat / "energy_now").write_text("19999000\n")  # 1000 µWh drawn: 3.6 J
    assert meter.joules == pytest.approx(3.6)
    entry = battery.report(meter, 1.8, None)
    assert entry["measured_over_modelled"] == pytest.approx(2.0)
    assert "skipped" in battery.report(None, None, "no battery")


def test_the_far_relay_adds_the_round_trip_it_is_told_and_keeps_order(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as echo:
        port = echo.getsockname()[1]
        relay = delay.Delay(f"tcp://127.0.0.1:{port}", "127.0.0.1", [], tmp_path)
        try:
            host, relay_port = relay.address.removeprefix("tcp://").rsplit(":", 1)
            with socket.create_connection((host, int(relay_port)), timeout=10) as client:
                peer, _ = echo.accept()
                with peer:
                    peer.settimeout(10)
                    relay.set(200.0)  # 100 ms each way
                    start = time.monotonic()
                    client.sendall(b"first")
                    relay.set(0.0)  # a shorter delay must not let later bytes overtake
                    client.sendall(b"second")
                    got = b""
                    while len(got) < len(b"firstsecond"):
                        got += peer.recv(64)
                    assert got == b"firstsecond"
                    assert time.monotonic() - start >= 0.1
        finally:
            relay.stop()


def _server_step(phase: str, local_s: float, **remote_s: float | None) -> ds_replay.Step:
    servers = {
        n: None
        if remote_s.get(n) is None
        else {
            "mbit": 40.0,
            "rtt_s": 0.001,
            "others": 0,
            "workers": 1,
            "rate": 0.0,
            "remote_s": remote_s[n],
            "server_s": remote_s[n] * 0.8,
            "up": 20_000,
            "down": 40,
        }
        for n in ds_replay.NAMES
    }
    return ds_replay.Step(phase, "dense", 20_001, local_s, servers)


def test_over_several_servers_the_oracle_takes_the_best_of_here_and_each_server():
    steps = [_server_step("a", 0.4, near=0.3, mid=0.1, far=0.2) for _ in range(20)]
    steps += [_server_step("b", 0.4, near=0.3, mid=None, far=0.05) for _ in range(20)]
    refusing = [_server_step("c", 0.4, near=0.3, mid=0.1, far=0.02) for _ in range(5)]
    for step in refusing:  # far holds another version: it refuses in 0.02 s
        far = step.servers["far"]
        assert far is not None
        far["refused"] = True
    steps += refusing
    report = ds_replay.replay(steps)
    assert report["oracle"]["time_s"] == pytest.approx(20 * 0.1 + 20 * 0.05 + 5 * 0.1)
    assert report["ours"]["refused_calls"] == 1  # then it knows far lacks the function
    loss = ds_replay.loss_by_phase(steps)["ours"]
    assert [loss[p]["calls"] for p in "abc"] == [20, 20, 5]
    assert all(p["excess"] >= p["excess_first_6_calls"] >= 0 for p in loss.values())
    for name in (*ds_replay.FIXED, "ours", "ours_energy"):
        assert report[name]["time_ratio_to_oracle"] >= 1.0 - 1e-9
    assert report["ours"]["share"]["mid"] > 0  # it found the best server of phase a
    assert report["ours"]["time_ratio_to_oracle"] < report["nearest"]["time_ratio_to_oracle"]
    shuffles = ds_replay.reshuffled(steps, ["a", "b"], runs=2, seed=1)
    assert set(shuffles["ours"]) >= {"time_ratio_to_oracle_mean", "time_ratio_to_oracle_max"}


def test_the_unforeseen_pays_the_first_call_after_a_link_changed_where_it_was_good():
    steps = [_server_step("a", 0.4, near=0.3, mid=0.1, far=0.2) for _ in range(10)]
    steps += [_server_step("b", 0.4, near=0.3, mid=0.5, far=0.05) for _ in range(10)]
    ref = ds_replay.unforeseen(steps, {"b": {"mid", "far"}})
    # Both links changed unannounced: phase b's first call goes to mid (best in a), costs 0.5.
    oracle = 10 * 0.1 + 10 * 0.05
    assert ref["time_ratio_to_oracle"] == pytest.approx((oracle - 0.05 + 0.5) / oracle)
    assert ref["energy_ratio_to_oracle"] > 1.0
    assert ds_replay.unforeseen(steps, {"b": {"mid"}}) == {
        "time_ratio_to_oracle": 1.0,
        "energy_ratio_to_oracle": 1.0,
    }  # far's new cost is known (only mid's link changed): the oracle itself


def test_the_per_call_dump_charges_what_the_replay_does():
    steps = [_server_step("a", 0.4, near=0.3, mid=0.1, far=0.2) for _ in range(10)]
    steps += [_server_step("b", 0.4, near=0.3, mid=None, far=0.05) for _ in range(10)]
    rows = decisions_servers_loss.rows(steps, 1.0)
    assert [r["phase"] for r in rows] == [s.phase for s in steps]
    assert all("mid" not in r["servers"] for r in rows[10:])  # down: no figures
    charged = sum(ds_replay.charge(s, r["route"])[0] for s, r in zip(steps, rows))
    assert charged == pytest.approx(ds_replay.replay(steps)["ours"]["time_s"])
    assert all(r["excess"] >= 0 for r in rows)
    assert decisions_servers_loss.line(0, rows[0]).startswith("  0 a")


@pytest.mark.skipif(os.geteuid() != 0, reason="three servers in network namespaces need root")
def test_the_three_server_trace_measures_every_server_up_and_none_down():
    if (why := emulation.available()["link"]) is not None:
        pytest.skip(f"no network emulation: {why}")
    with contextlib.ExitStack() as stack:
        steps = decisions_servers.measure(fleet.Fleet(stack, subnet=93), "tiny", 1)
    assert len(steps) == 4 * len(decisions_servers.PHASES)
    for step in steps:
        phase = next(p for p in decisions_servers.PHASES if p.name == step.phase)
        for name, there in step.servers.items():
            assert (there is None) == (name in phase.down)
            assert there is None or there["remote_s"] > 0
            refused = name in phase.new_code and step.service == "dense"
            assert there is None or bool(there.get("refused")) == refused
    report = ds_replay.replay(steps)
    assert report["oracle"]["time_s"] <= report["ours"]["time_s"]
