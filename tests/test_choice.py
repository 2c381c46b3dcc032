"""The choice among servers (``offload.profiler.choice``): link, load, distance, exploring.

The decision's own arithmetic, on candidates built by hand (each with a
real :class:`~offload.profiler.Link` fed as calls would feed it).
"""

from __future__ import annotations

from math import log

from offload.profiler import (
    AdaptiveDecider,
    DeviceState,
    FunctionProfile,
    Link,
    Policy,
    Profiler,
)
from offload.profiler.choice import BEST, EXPLORE, KEPT, Candidate, ServerChoice

X = log(100_000)  # a call of 100 KB


def _profile() -> FunctionProfile:
    prof = FunctionProfile("f@1")
    for _ in range(3):  # 100 KB up, 20 ms on a server, a small reply
        prof.time.add(X, 0.02, 0, 0)
        prof.up.add(X, 100_000.0)
        prof.down.add(X, 100.0)
    prof.typical = 0.05
    return prof


def _server(name: str, mbit: float | None = None, rtt: float = 0.001, **kw) -> Candidate:
    link = Link(27e6 / 8)
    if rtt:
        link.on_rtt(rtt)
    if mbit is not None:
        link.on_probe(10**6, 0, rtt + 8 / mbit)  # 1 MB up at mbit
    return Candidate(f"tcp://{name}:1", link, **kw)


def test_the_faster_link_and_the_idler_server_win():
    prof, choice = _profile(), ServerChoice(0.1, 32)
    slow, fast = _server("slow", mbit=8), _server("fast", mbit=100)
    server, why, ranked = choice.pick(prof, X, [slow, fast], "f")
    assert server is fast and why == BEST and [c for _, c in ranked] == [fast, slow]
    fast.others, fast.workers = 40, 1  # another client's calls queued there
    server, _, _ = choice.pick(prof, X, [slow, fast], "f")
    assert server is slow
    fast.rate = 50.0  # ...served quickly: 40 ahead at 50 a second is 0.8 s
    assert 0.7 < fast.wait(0.02) < 0.9


def test_distance_is_the_prior_before_any_round_trip_is_measured():
    prof, choice = _profile(), ServerChoice(0.1, 32)
    near = _server("near", rtt=0, distance_km=2)
    far = _server("far", rtt=0, distance_km=900)
    assert choice.pick(prof, X, [far, near], "f")[0] is near
    far.link.on_rtt(0.0005)  # measured: the prior no longer counts
    near.link.on_rtt(0.05)
    assert choice.pick(prof, X, [far, near], "f")[0] is far


def test_hysteresis_keeps_the_last_server_and_exploring_retries_a_stale_one():
    prof, choice = _profile(), ServerChoice(0.1, 32)
    a, b = _server("a", mbit=50), _server("b", mbit=52)
    first, why, ranked = choice.pick(prof, X, [a, b], "f")
    assert first is b
    choice.commit(prof, b, why, ranked[0][0])
    b.link.on_probe(10**6, 0, 0.001 + 8 / 49)  # now a little slower than a
    server, why, _ = choice.pick(prof, X, [a, b], "f")
    assert server is b and why == KEPT
    a.link.on_probe(10**6, 0, 0.001 + 8 / 500)  # a is now much faster
    server, why, ranked = choice.pick(prof, X, [a, b], "f")
    assert server is a and why == BEST
    choice.commit(prof, a, why, ranked[0][0])
    # b is left alone until enough seconds went elsewhere to pay for one try.
    explored = None
    for _ in range(200):
        server, why, ranked = choice.pick(prof, X, [a, b], "f")
        if why == EXPLORE:  # but a call going on after a lost server goes to the best one
            assert choice.pick(prof, X, [a, b], "f", explore=False)[:2] == (a, BEST)
        prof.clock += 1
        choice.commit(prof, server, why, dict((c.address, t) for t, c in ranked)[server.address])
        if why == EXPLORE:
            explored = server
            break
    assert explored is b


def test_a_server_that_lacks_the_function_is_not_a_candidate():
    prof, choice = _profile(), ServerChoice(0.1, 32)
    a, b = _server("a", mbit=100), _server("b", mbit=8)
    a.lacks.add("f")
    assert choice.pick(prof, X, [a, b], "f")[0] is b
    b.functions, b.ships_code = frozenset({"g"}), False
    assert choice.pick(prof, X, [a, b], "f")[0] is None


def test_every_server_hears_the_rate_this_devices_link_reports():
    decider = AdaptiveDecider(Profiler(profile_cache=None))
    decider.profiler.device.state = DeviceState(link_mbit=54.0)
    servers = [_server("a", mbit=27.0), _server("b", mbit=27.0)]
    fn = type("F", (), {"key": "f@1", "wire_name": "f", "size": None})()
    decider.where_among(fn, 100_000, servers)
    assert [s.link.reported for s in servers] == [54e6 / 8] * 2
    before = servers[0].link.up_rate
    decider.profiler.device.state = DeviceState(link_mbit=2.0)  # a weak signal
    decider.where_among(fn, 100_000, servers)
    assert servers[0].link.up_rate < before / 5


def test_a_server_explored_takes_a_call_bound_for_a_server_not_one_here_wins():
    """Here faces the best server: exploring a server whose estimate loses to here must not
    send the call here instead (calls the best server does faster than here)."""
    decider = AdaptiveDecider(Profiler(profile_cache=None))
    decider.profiler.device.state = DeviceState()
    fast, weak = _server("fast", mbit=100), _server("weak", mbit=2)
    fn = type("F", (), {"key": "g@1", "wire_name": "g", "size": None})()
    size = 100_000
    places = []
    for _ in range(2000):  # here and weak share the exploration budget: weak's turn is late
        where = decider.where_among(fn, size, [fast, weak])
        places.append(where)
        if where == "local":
            decider.observe_local(fn, size, 0.2)
        else:  # 20 ms there, and the transfer at that link's rate
            link = fast.link if where == fast.address else weak.link
            turnaround = 0.021 + size / link.up_rate
            decider.observe_remote(fn, size, turnaround, 0.02, size, 100, link=link)
    assert weak.address in places  # explored, on a call that would have gone to a server
    # Here only on its cold start and its own explorations (one in ~500 calls); before, a
    # server due for exploring sent every call here (42 of 1000) until it was tried.
    assert places.count("local") < 10


def test_the_energy_objective_weighs_a_slow_link_by_its_radio_time():
    """A slow link and a busy server: by time the slow link wins (0.12 s against 0.23 s);
    by energy the busy server does (the device idles while it waits; its radio sends for
    the whole slow transfer)."""
    prof = _profile()
    slow = _server("slow", mbit=8)  # 100 KB up in 0.1 s
    busy = _server("busy", mbit=100, others=2, rate=10.0)  # two 0.1 s runs ahead
    for weight, winner in ((1.0, slow), (0.0, busy)):
        decider = AdaptiveDecider(Profiler(profile_cache=None), Policy(time_weight=weight))
        assert decider.servers.pick(prof, X, [slow, busy], "f")[0] is winner


def test_the_wait_behind_a_busy_server_counts_one_call_per_client_and_the_told_run():
    """Another client keeps six 0.3 s calls on a two-worker server; its rate over the last
    minute still says 1.33 a second (it was idle before). Taken as calls queued first come
    first served and ``workers / rate`` (1.5 s) long, the wait is 4.5 s; the server takes
    calls round-robin between clients (one ahead of ours, not four) and its PONG tells a
    call's mean run: 0.3 s."""
    busy = _server("busy", mbit=100, others=6, workers=2, rate=1.33)
    assert 4.4 < busy.wait(0.02) < 4.6  # a server that tells neither: as before
    busy.service_s = 0.3
    assert 0.85 < busy.wait(0.02) < 0.95  # six ahead, 0.3 s each, on two workers
    busy.clients = 1
    assert 0.4 < busy.wait(0.02) < 0.5  # two running, and one of its client's queued
    busy.others = 1  # a worker free: no wait, whatever is told
    assert busy.wait(0.02) == 0.0


def test_a_link_measured_weak_and_since_tried_only_with_small_calls_is_explored():
    """weak's link was measured at 2 Mbit/s; since, only small calls went there (they tell
    its speed, not its link's). A call that would tell its bandwidth goes there once the
    seconds spent elsewhere pay for the try, though every server had a call lately."""
    prof, choice = _profile(), ServerChoice(0.1, 32)
    fast, weak = _server("fast", mbit=50), _server("weak", mbit=2)
    small = log(2_000)
    explored = None
    for _ in range(2000):
        choice.commit(prof, weak, EXPLORE, 0.001, small)  # a small call of another kind
        server, why, ranked = choice.pick(prof, X, [fast, weak], "f")
        if why == EXPLORE:
            explored = server
            break
        prof.clock += 1
        choice.commit(prof, server, why, dict((c.address, t) for t, c in ranked)[server.address], X)
    assert explored is weak
