"""offload.probing.Schedule: which probes a link is due, on a clock the test holds."""

from __future__ import annotations

from offload.probing import LOOK_BYTES, Schedule, schedule
from offload.profiler.network import Link

FULL = ((1000, 0), (0, 1000))
LOOK_UP = ((LOOK_BYTES, 0),)
MB = 1_000_000


def _probed(link: Link, bps: float) -> None:
    """Both ways at ``bps`` (no RTT measured: the probe's whole time is the wire's)."""
    link.on_probe(MB, 0, MB / bps)
    link.on_probe(0, MB, MB / bps)


def _dropped(s: Schedule, link: Link) -> None:
    """Probed at 10 MB/s, a call at that rate, then a call 16 times slower up: a drop."""
    _probed(link, 10e6)
    assert s.due("a", link, 0.0) == ()  # its first round ended: noted
    link.on_call(MB, 100, 0.1, 0.0)
    assert s.due("a", link, 0.05) == ()  # a call measured it: noted
    link.on_call(MB, 100, 1.6, 0.0)
    assert s.due("a", link, 0.1) == LOOK_UP  # up only: down did not step
    link.on_probe(LOOK_BYTES, 0, LOOK_BYTES * 16 / 10e6)  # the look: as slow
    assert s.due("a", link, 0.2) == ()  # noted: it dropped


def test_a_link_measured_by_nothing_gets_a_full_round_once_stale():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    assert s.due("a", link, 0.0) == ()
    assert s.due("a", link, 9.0) == ()
    assert s.due("a", link, 10.5) == FULL
    _probed(link, 10e6)
    assert s.due("a", link, 10.6) == ()  # the round ended: noted
    assert s.due("a", link, 20.0) == ()
    assert s.due("a", link, 20.7) == FULL


def test_a_link_that_dropped_is_looked_at_every_recover_s_while_calls_are_placed():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _dropped(s, link)
    looks = []
    for tenth in range(3, 50):
        now = tenth / 10
        due = s.due("a", link, now, busy=True)
        if due:
            assert due == LOOK_UP
            looks.append(now)
            link.on_probe(LOOK_BYTES, 0, LOOK_BYTES * 16 / 10e6)  # still low
            assert s.due("a", link, now) == ()
    gaps = [b - a for a, b in zip([0.1, *looks], looks)]  # the drop's own look was at 0.1
    assert len(looks) == 4 and all(1.0 < gap < 1.15 for gap in gaps)
    # An idle client does not look; the stale round comes ten seconds after a call measured it.
    assert all(s.due("a", link, 4.5 + t / 10, busy=False) == () for t in range(1, 55))
    assert s.due("a", link, 10.2, busy=False) == FULL


def test_a_look_that_finds_the_link_back_is_followed_by_a_full_round_and_looks_end():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _dropped(s, link)
    assert s.due("a", link, 1.5) == LOOK_UP
    for _ in range(3):
        link.on_probe(LOOK_BYTES, 0, LOOK_BYTES / 10e6)  # back at 10 MB/s
    assert s.due("a", link, 1.6) == FULL  # the other way is measured too, at once
    _probed(link, 10e6)
    assert s.due("a", link, 1.7) == ()
    assert all(s.due("a", link, t / 10) == () for t in range(18, 100))  # no more looks


def test_a_single_high_reading_does_not_make_a_link_look_dropped():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    assert s.due("a", link, 0.0) == ()
    link.on_probe(LOOK_BYTES, 0, LOOK_BYTES / 1e9)  # a transfer that passed in a burst
    assert all(s.due("a", link, t / 10) == () for t in range(1, 100))  # no looks: no drop


def test_a_step_up_calls_made_gets_a_full_round():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _probed(link, 10e6)
    assert s.due("a", link, 0.0) == ()
    link.on_call(MB, 100, 1.6, 0.0)
    assert s.due("a", link, 0.1) == ()
    link.on_call(MB, 100, 0.01, 0.0)  # much faster than the estimate calls left
    assert s.due("a", link, 0.2) == FULL


def test_with_energy_as_the_objective_a_dropped_link_waits_for_its_stale_round():
    s, link = schedule(1000, 1.0, time_weight=0.0), Link()
    _dropped(s, link)
    assert all(s.due("a", link, t / 10) == () for t in range(3, 101))
    assert s.due("a", link, 10.2) == FULL


def test_a_lost_server_forgets_its_drop():
    s, link = Schedule(1000, stale_s=10.0, recover_s=1.0), Link()
    _dropped(s, link)
    s.forget("a")
    slow = Link()
    _probed(slow, 10e6 / 16)
    assert s.due("a", slow, 0.3) == ()  # back behind a slower link: nothing to look for
    assert all(s.due("a", slow, t / 10) == () for t in range(4, 100))
