"""offload.probing.Schedule: which probes a link is due, on a clock the test holds."""

from __future__ import annotations

from offload.probing import CHANGED, LOOK_BYTES, Schedule, schedule
from offload.profiler.network import Link

FULL = ((1000, 0), (0, 1000))


def _probed(link: Link, bps: float) -> None:
    """Both ways at ``bps`` (no RTT measured: the probe's whole time is the wire's)."""
    link.on_probe(1000_000, 0, 1000_000 / bps)
    link.on_probe(0, 1000_000, 1000_000 / bps)


def _after_round(s: Schedule, link: Link, now: float) -> None:
    assert s.due("a", link, now) == ()  # notes what the round left


def test_a_link_measured_by_no_call_gets_a_full_round_once_stale():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    assert s.round == FULL
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    assert s.due("a", link, 9.0) == ()
    assert s.due("a", link, 10.5) == FULL


def test_a_link_below_its_best_is_looked_at_every_recover_s_while_calls_are_made():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    _probed(link, 10e6 / (4 * CHANGED))  # weakened (a round after a step, say)
    _probed(link, 10e6 / (4 * CHANGED))
    _after_round(s, link, 0.0)
    looks = []
    for tenth in range(1, 50):
        now = tenth / 10
        due = s.due("a", link, now, busy=True)
        if due:
            assert due == ((LOOK_BYTES, 0),)
            looks.append(now)
            _after_round(s, link, now)  # the look found it as low as before
    assert looks == [1.1, 2.2, 3.3, 4.4]
    # An idle client does not look: the stale round comes, ten seconds after the last look.
    assert all(s.due("a", link, 4.4 + t / 10, busy=False) == () for t in range(1, 100))
    assert s.due("a", link, 14.5, busy=False) == FULL


def test_a_look_that_finds_the_link_back_up_is_followed_by_a_full_round():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    for _ in range(3):
        _probed(link, 10e6 / (4 * CHANGED))
    _after_round(s, link, 0.0)
    assert s.due("a", link, 1.5) == ((LOOK_BYTES, 0),)
    for _ in range(3):
        link.on_probe(LOOK_BYTES, 0, LOOK_BYTES / 10e6)  # up is back
    _after_round(s, link, 1.6)
    assert s.due("a", link, 1.7) == FULL  # the other way is measured too, at once


def test_with_energy_as_the_objective_a_low_link_waits_for_its_stale_round():
    s, link = schedule(1000, 1.0, time_weight=0.0), Link()
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    for _ in range(3):
        _probed(link, 10e6 / (4 * CHANGED))
    _after_round(s, link, 0.0)
    assert all(s.due("a", link, t / 10) == () for t in range(1, 100))
    assert s.due("a", link, 10.5) == FULL
    assert schedule(1000, 1.0, time_weight=1.0).due("a", Link(), 0.0) == ()  # notes only


def test_a_lost_server_forgets_its_best():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    s.forget("a")
    slow = Link()
    _probed(slow, 10e6 / (4 * CHANGED))
    _after_round(s, slow, 0.0)  # back behind a slower link: that is its best now
    assert s.due("a", slow, 5.0) == ()


def test_a_step_down_calls_made_is_confirmed_by_a_look_a_step_up_by_a_round():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    _after_round(s, link, 0.0)
    link.on_call(1_000_000, 100, 0.1, 0.0)  # 1 MB up at the probed 10 MB/s
    assert s.due("a", link, 0.1) == ()  # a call measured it: noted
    link.on_call(1_000_000, 100, 1.6, 0.0)  # 16 times slower: the estimate steps down
    assert link.up_rate < 10e6 / CHANGED
    assert s.due("a", link, 1.7) == ((LOOK_BYTES, 0),)  # up only: down did not step
    link.on_probe(LOOK_BYTES, 0, LOOK_BYTES / 10e6)  # the look: it was one slow call
    _after_round(s, link, 1.8)
    link.on_call(1_000_000, 100, 1.6, 0.0)
    assert s.due("a", link, 1.9) == ()  # calls measured it: noted
    link.on_call(1_000_000, 100, 0.1, 0.0)  # fast again: a step up
    assert s.due("a", link, 2.0) == FULL
