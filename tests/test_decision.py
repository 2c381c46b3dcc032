"""The decision engine on synthetic histories: cold start, choices, critical conditions."""

from __future__ import annotations

import itertools

import pytest

import offload
from offload.profiler import AdaptiveDecider, DeviceState, Policy, Profiler
from offload.profiler.history import FunctionProfile


def _work(n: int) -> int:
    return n


@pytest.fixture
def fn() -> offload.OffloadedFunction:
    return offload.offload(_work, size=lambda n: n)


def make(policy: Policy | None = None, **profiler: object) -> AdaptiveDecider:
    decider = AdaptiveDecider(Profiler(profile_cache=None, **profiler), policy)  # type: ignore[arg-type]
    decider.profiler.device.state = DeviceState()  # a quiet, plugged-in device
    return decider


def teach(decider, fn, size, local, remote, up=1000, down=100):
    """Outcomes of one call on each side: local seconds; remote server seconds."""
    decider.observe_local(fn, size, local)
    decider.observe_remote(fn, size, remote + 0.001, remote, up, down)


def side(decider, fn, size, up=True):
    return decider.decide(fn, (size,), {}, up)[0]


def test_cold_start_offloads_once_then_runs_here_once(fn):
    d = make()
    assert side(d, fn, 100) == "remote"
    d.observe_remote(fn, 100, 0.01, 0.009, 100, 100)
    assert side(d, fn, 100) == "local"
    d.observe_local(fn, 100, 0.001)
    assert side(d, fn, 100) == "local"  # now by the estimates: 1 ms here, 10 ms there


def test_cold_start_does_not_send_a_burst_of_tries(fn):
    d = make()
    sides = [side(d, fn, 100) for _ in range(10)]  # none has reported yet
    assert sides[0] == "remote" and sides.count("local") <= 2  # tries spaced out


def test_an_expensive_function_is_not_tried_here_on_a_big_call(fn):
    d = make()
    assert side(d, fn, 10_000) == "remote"
    d.observe_remote(fn, 10_000, 2.1, 2.0, 100, 100)  # 2 s on the server
    sides = [side(d, fn, 10_000) for _ in range(3)]
    assert sides == ["remote"] * 3  # trying it here could cost many times that
    assert side(d, fn, 10_000) == "local"  # ...but after a few calls, once
    d.observe_local(fn, 10_000, 9.0)
    assert side(d, fn, 10_000) == "remote"


def test_other_functions_teach_how_slow_this_device_is(fn):
    d = make()
    other = offload.offload(lambda n: n, size=lambda n: n)
    for _ in range(3):
        teach(d, other, 1000, local=0.5, remote=0.1)  # this device is 5x slower
    assert side(d, fn, 1000) == "remote"
    d.observe_remote(fn, 1000, 0.21, 0.2, 100, 100)
    why = d.explain(fn, (1000,), {}, True)
    assert why.side == "remote"
    assert why.estimates["local"]["time_s"] == pytest.approx(1.0, rel=0.1)


def test_a_new_functions_tiny_local_runs_do_not_hide_how_slow_this_device_is(fn):
    d = make()
    other = offload.offload(lambda n: n, size=lambda n: n)
    for _ in range(3):
        teach(d, other, 1000, local=0.5, remote=0.1)  # this device is 5x slower
    for size in (10, 1000, 10, 1000):  # its time on the server grows with its size
        d.observe_remote(fn, size, size * 0.0002 + 0.01, size * 0.0002, 100, 100)
    d.observe_local(fn, 10, 0.0001)  # a call of 0.1 ms here measures fixed costs, not speed
    assert side(d, fn, 1000) == "remote"  # here is 5x slower, as the other function says
    assert d.explain(fn, (1000,), {}, True).estimates["local"]["time_s"] > 0.5
    d.observe_local(fn, 1000, 0.3)  # a run long enough to measure: its own speed counts now
    assert d.explain(fn, (1000,), {}, True).estimates["local"]["time_s"] < 0.5


def test_a_busy_server_is_noticed_by_every_function_at_once(fn):
    d = make()
    other = offload.offload(lambda n: n, size=lambda n: n)
    for f in (fn, other):
        for _ in range(4):
            teach(d, f, 1000, local=0.5, remote=0.1)
    assert side(d, fn, 1000) == "remote"
    for _ in range(2):
        d.observe_remote(other, 1000, 1.01, 1.0, 100, 100)  # the server got 10x slower
    assert side(d, fn, 1000) == "local"  # fn itself has not seen it yet


def test_offline_runs_everything_here(fn):
    d = make()
    teach(d, fn, 100, local=1.0, remote=0.01)
    assert side(d, fn, 100, up=False) == "local"
    assert d.explain(fn, (100,), {}, False).reasons[0].startswith("no server answers")


def test_chooses_by_size_where_the_costs_cross(fn):
    d = make()
    d.profiler.link.on_rtt(0.005)
    for n in (10, 100, 1000):  # n^2 us here, 5 times faster there, 5 ms round trip
        for _ in range(3):
            teach(d, fn, n, local=1e-6 * n * n, remote=2e-7 * n * n)
    assert side(d, fn, 20) == "local"
    assert side(d, fn, 5000) == "remote"
    explained = d.explain(fn, (5000,), {}, True)
    assert explained.estimates["local"]["time_s"] == pytest.approx(25.0, rel=0.2)
    assert explained.estimates["remote"]["server_s"] == pytest.approx(5.0, rel=0.2)


def test_energy_objective_can_disagree_with_time(fn):
    # Remote is a little faster but keeps the radio busy: 1.3 W sending vs 0.9 W computing.
    args = dict(local=0.10, remote=0.001, up=270_000)  # ~80 ms of upload at the prior rate
    by_time, by_energy = make(Policy(time_weight=1.0)), make(Policy(time_weight=0.0))
    for d in (by_time, by_energy):
        d.profiler.link.on_rtt(0.001)
        for _ in range(3):
            teach(d, fn, 1000, **args)
    assert side(by_time, fn, 1000) == "remote"
    assert side(by_energy, fn, 1000) == "local"


def test_a_sites_price_counts_as_the_time_it_is_worth(fn):
    # The server is 5x faster (0.2 s against 1 s here); a second there costs 0.01 credits.
    free, thrifty, hurried = (
        make(),
        make(Policy(credit_value_s=500)),
        make(Policy(credit_value_s=5)),
    )
    for d in (free, thrifty, hurried):
        d.profiler.link.on_rtt(0.001)
        d.profiler.link.price_s = 0.01
        for _ in range(3):
            teach(d, fn, 1000, local=1.0, remote=0.2)
    assert side(free, fn, 1000) == "remote"  # credits do not count by default
    assert side(thrifty, fn, 1000) == "local"  # 0.002 credits = 1 s more: not worth it
    assert side(hurried, fn, 1000) == "remote"  # 0.002 credits = 0.01 s more


@pytest.mark.parametrize(
    "state, why",
    [
        (DeviceState(battery=0.1, charging=False), "battery"),
        (DeviceState(cpu_load=0.97), "cpu"),
        (DeviceState(memory_free=0.05), "memory"),
    ],
)
def test_critical_conditions_prefer_online(fn, state, why):
    d = make()
    for _ in range(3):
        teach(d, fn, 1000, local=0.010, remote=0.012)  # local slightly cheaper
    assert side(d, fn, 1000) == "local"
    d.profiler.device.state = state
    assert side(d, fn, 1000) == "remote"
    assert why in " ".join(d.explain(fn, (1000,), {}, True).reasons)
    # A low battery while charging is not critical.
    d.profiler.device.state = DeviceState(battery=0.1, charging=True)
    assert side(d, fn, 1000) == "local"


def test_hysteresis_keeps_a_near_tie_from_flapping(fn):
    d = make(Policy(explore_every=10_000))
    for _ in range(3):
        teach(d, fn, 1000, local=0.0100, remote=0.0095)
    sides = []
    for i in range(200):  # costs wobble 5% around a tie
        wobble = 1.05 if i % 2 else 0.95
        sides.append(side(d, fn, 1000))
        teach(d, fn, 1000, local=0.0100 * wobble, remote=0.0100 / wobble - 0.001)
    switches = sum(a != b for a, b in itertools.pairwise(sides))
    assert switches <= 2


def test_exploration_is_bounded_and_notices_a_recovery(fn):
    d = make(Policy(explore_every=32))
    for _ in range(3):
        teach(d, fn, 1000, local=0.010, remote=0.030)  # remote 3x worse: a slow link
    sides = []
    for _ in range(1000):
        s = side(d, fn, 1000)
        sides.append(s)
        if s == "local":
            d.observe_local(fn, 1000, 0.010)
        else:
            d.observe_remote(fn, 1000, 0.031, 0.030, 1000, 100)
    explored = sides.count("remote")
    assert 3 <= explored <= 1000 // 32  # a few, at most one in 32
    # The link recovers: the next exploration sees it and the decision follows.
    for _ in range(400):
        s = side(d, fn, 1000)
        if s == "local":
            d.observe_local(fn, 1000, 0.010)
        else:
            d.observe_remote(fn, 1000, 0.003, 0.002, 1000, 100)
    assert side(d, fn, 1000) == "remote"


def test_stats_count_calls_bytes_and_energy_by_side(fn):
    d = make()
    teach(d, fn, 1000, local=0.5, remote=0.1, up=4000, down=40)
    stats = d.stats()["tests.test_decision:_work"]
    assert stats["local"]["calls"] == 1 and stats["local"]["seconds"] == pytest.approx(0.5)
    assert stats["local"]["energy_j"] == pytest.approx(0.45)  # 0.9 W x 0.5 s
    assert stats["remote"]["bytes_up"] == 4000 and stats["remote"]["bytes_down"] == 40
    assert stats["energy_source"] == "modelled (smartphone-wifi)"


def test_a_busy_cpu_makes_running_here_look_slower(fn):
    d = make()
    for _ in range(3):
        teach(d, fn, 1000, local=0.010, remote=0.008)
    quiet = d.explain(fn, (1000,), {}, True).estimates["local"]["time_s"]
    d.profiler.device.state = DeviceState(cpu_load=0.5)  # another app takes half the CPU
    busy = d.explain(fn, (1000,), {}, True).estimates["local"]["time_s"]
    assert busy == pytest.approx(2 * quiet, rel=0.01)
    d.observe_local(fn, 1000, 0.020)  # and a slow run under load is not news
    assert d.explain(fn, (1000,), {}, True).estimates["local"]["time_s"] == pytest.approx(
        busy, rel=0.01
    )


def test_exploration_waits_for_an_ordinary_call(fn):
    twins = [make(Policy(explore_every=4)), make(Policy(explore_every=4))]
    for d in twins:
        for n in (10, 10, 10, 1000):
            teach(d, fn, n, local=1e-4 * n, remote=3e-4 * n)  # remote 3x worse at any size
    first, second = twins
    for _ in range(100):  # ordinary (small) calls in lockstep until one is explored
        if side(first, fn, 10) == "remote":
            break
        assert side(second, fn, 10) == "local"
        for d in twins:
            d.observe_local(fn, 10, 1e-3)
    else:
        pytest.fail("no exploration in 100 calls")
    assert side(second, fn, 100_000) == "local"  # due, but not on an unusually big call
    assert side(second, fn, 10) == "remote"  # the next ordinary one


def test_a_weaker_link_reported_by_the_device_moves_a_big_transfer_here(fn):
    d = make()
    d.profiler.device.state = DeviceState(link_mbit=54.0)
    d.profiler.link.on_rtt(0.001)
    for _ in range(3):  # 400 kB each way: 0.15 s of transfer at 54 Mbit/s, 0.1 s there
        d.observe_local(fn, 400_000, 0.5)
        d.observe_remote(fn, 400_000, 0.251, 0.1, 400_000, 400_000)
    assert side(d, fn, 400_000) == "remote"
    d.profiler.device.state = DeviceState(link_mbit=2.0)  # no call has measured it yet
    assert side(d, fn, 400_000) == "local"
    d.profiler.device.state = DeviceState(link_mbit=54.0)  # and back
    assert side(d, fn, 400_000) == "remote"


def test_when_a_critical_condition_begins_or_ends_the_server_is_tried_again_once(fn):
    d = make()
    for _ in range(3):
        teach(d, fn, 1000, local=0.10, remote=0.05)
    for _ in range(3):  # then the server got 8x slower: this device is better
        d.observe_remote(fn, 1000, 0.41, 0.40, 1000, 100)
    for _ in range(5):
        assert side(d, fn, 1000) == "local"
        d.observe_local(fn, 1000, 0.10)
    d.profiler.device.state = DeviceState(memory_free=0.05)  # critical: memory short
    assert side(d, fn, 1000) == "remote"  # is the server still slow? one call finds out
    d.observe_remote(fn, 1000, 0.41, 0.40, 1000, 100)  # it is
    for _ in range(5):
        assert side(d, fn, 1000) == "local"
        d.observe_local(fn, 1000, 0.10)
    d.profiler.device.state = DeviceState()  # memory freed: the condition ended
    assert side(d, fn, 1000) == "remote"  # is the server still slow? one call finds out
    d.observe_remote(fn, 1000, 0.41, 0.40, 1000, 100)  # it is
    assert side(d, fn, 1000) == "local"


def test_the_count_of_timed_local_runs_is_saved_and_older_files_count_every_run(fn):
    d = make()
    d.observe_local(fn, 10, 0.0001)
    d.observe_local(fn, 1000, 0.3)
    saved = d.profile(fn).to_json()
    restored = FunctionProfile("k")
    restored.load(saved)
    assert restored.timed_here == 1
    del saved["timed_here"]  # a file written before it was counted
    restored.load(saved)
    assert restored.timed_here == 2
