"""Here among several servers: when a function never run here is first tried here.

With one server, here is the only other side and is tried after a few calls
(``COLD_LOCAL_AFTER``). With several, here is one side of many and the last
resort once they are gone: it is tried on a dear call (its best server's
estimate twice the typical), else only after ``explore_every`` decisions per
server. Real :class:`~offload.profiler.Link` objects, fed as calls would feed them.
"""

from __future__ import annotations

from offload.profiler import AdaptiveDecider, DeviceState, Link, Profiler
from offload.profiler.choice import Candidate
from offload.profiler.cold import COLD_LOCAL_AFTER, dear
from offload.profiler.history import FunctionProfile

SIZE = 100_000


def _server(name: str, mbit: float) -> Candidate:
    link = Link(27e6 / 8)
    link.on_rtt(0.001)
    link.on_probe(10**6, 0, 0.001 + 8 / mbit)  # 1 MB up at mbit
    return Candidate(f"tcp://{name}:1", link)


def _run(decider: AdaptiveDecider, servers: list[Candidate], calls: int, key: str) -> list[str]:
    """Where ``calls`` calls went: 30 ms on any server, 120 ms here."""
    fn = type("F", (), {"key": key, "wire_name": "f", "size": None})()
    places = []
    for _ in range(calls):
        where = decider.where_among(fn, SIZE, servers)
        places.append(where)
        if where == "local":
            decider.observe_local(fn, SIZE, 0.12)
        else:
            link = next(s.link for s in servers if s.address == where)
            turnaround = 0.031 + SIZE / link.up_rate
            decider.observe_remote(fn, SIZE, turnaround, 0.03, SIZE, 100, link=link)
    return places


def _decider() -> AdaptiveDecider:
    decider = AdaptiveDecider(Profiler(profile_cache=None))
    decider.profiler.device.state = DeviceState()
    return decider


def test_with_one_server_a_function_is_tried_here_after_a_few_calls():
    places = _run(_decider(), [_server("a", mbit=100)], 10, "one@1")
    assert places.index("local") <= COLD_LOCAL_AFTER + 1


def test_with_several_fast_servers_here_is_not_tried_while_they_do_as_usual():
    decider = _decider()
    servers = [_server("a", mbit=100), _server("b", mbit=40)]
    assert "local" not in _run(decider, servers, 40, "many@1")


def test_once_the_servers_left_are_dear_here_is_tried_at_once():
    """The fast server gone, the one left takes 4 times as long: here may win, try it."""
    decider = _decider()
    fast, slow = _server("fast", mbit=100), _server("slow", mbit=4)
    _run(decider, [fast, slow], 20, "gone@1")
    assert _run(decider, [slow], 3, "gone@1")[0] == "local"


def test_a_dear_call_is_told_from_the_typical_one_from_the_first_calls():
    """The typical cost starts at 0: its weight so far makes a first call's not dear."""
    prof = FunctionProfile("f@1")
    assert not dear(prof, 1.0)  # nothing typical yet
    prof.typical, prof.typical_w = 0.01, 0.1  # one call of 0.1 s seen
    assert not dear(prof, 0.1) and not dear(prof, 0.19) and dear(prof, 0.2)


def test_explain_says_why_here_is_not_tried_yet():
    decider = _decider()
    servers = [_server("a", mbit=100), _server("b", mbit=40)]
    _run(decider, servers, 6, "said@1")
    fn = type("F", (), {"key": "said@1", "wire_name": "f", "size": None})()
    said = decider.explain(fn, (b"x" * SIZE,), {}, True, servers)
    assert said.side != "local" and said.reasons[0].startswith("never run here")
