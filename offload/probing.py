"""Bandwidth probes of the servers a client chooses among (issue 13, item 5).

With several servers, a server none of this client's calls went to yet is
ranked by the bandwidth assumed for every link (``assumed_mbit_s``): three
servers behind links of 8, 40 and 100 Mbit/s all look the same, and the
first calls go to whichever the RTT prior favours, then stay there while it
is not much worse than the assumed figure of the others. So each server's
link is measured once it answers, by an active probe: ``nbytes`` up in a
PING, then ``nbytes`` down in its PONG (:meth:`~offload.profiler.network.Link.on_probe`),
one direction at a time, only while this client has nothing else in flight
there (the probe would measure the queue behind its own calls). A server
lost and back is probed again: it may have come back elsewhere, or behind
another link. So is a link whose estimate a call moved by a step (four times
or more): the step stands until the probe confirms it (a weakened link) or
undoes it (one call slowed by the server or the host, not the link), and a
link no call measured for a while (an estimate that old decides failovers).
A link calls saw drop gets a small look each way it dropped, every heartbeat
while the client makes calls and time counts in its objective: it may have
come back, and calls, which avoid it, would never tell (:class:`Schedule`).

A probe and a call at once on one link would slow each other, and the call
would teach its link a rate the probe took half of. So the client's first
call, which waits for the first PONGs anyway, waits for the probes too
(:meth:`Prober.wait`: each server both ways, the servers at once), and a
server lost and back is probed as soon as it answers, most often before it
takes calls again (while on probation, or while its workers start).
Otherwise nothing here blocks. The probe's time includes serializing and the
server's turnaround of a PING, so it bounds the bandwidth from below; calls
then refine it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from .profiler.network import LARGE, Link
from .remote import Remote

log = logging.getLogger("offload")

#: Bytes each way of a server's probe when ``probe_bytes`` is not set: above the
#: size from which a transfer teaches the bandwidth (``network.LARGE``), small
#: enough for 64 ms on an 8 Mbit/s link.
PROBE_BYTES = 64 * 1024
#: Bytes of a look at a link that dropped, one way: the least that teaches a bandwidth.
LOOK_BYTES = LARGE
#: Heartbeats after which a link neither a call nor a round measured is probed again.
STALE_HEARTBEATS = 10
#: Heartbeats between looks at a link that dropped, while the client makes calls.
RECOVER_HEARTBEATS = 1

#: A link's rate this many times off what its last probe left (a call saw a step) is
#: probed again: one slow call (a hiccup of the server's or the host's) would otherwise
#: keep a good server out of the choice until an exploration, a weakened link is
#: confirmed.
CHANGED = 4.0

#: What a probe moves: (bytes up, bytes down), one direction at a time.
Probe = tuple[int, int]


class _Seen:
    """What the schedule knows of one link: its rates and calls when last noted, and when."""

    __slots__ = ("by_calls", "calls", "down", "drop", "looked_at", "measured_at", "sent", "up")

    def __init__(self, link: Link, now: float) -> None:
        self.note(link)
        self.by_calls = False  # whether calls measured it since it was last probed
        self.measured_at = now  # when a call or a full round last measured it
        self.looked_at = now
        #: its (up, down) rates before calls saw it drop, while it stays that low
        self.drop: tuple[float, float] | None = None
        self.sent: str | None = None  # "round" or "look": probes sent, not noted yet

    def note(self, link: Link) -> None:
        """Keep what ``link``'s estimate says now, to compare the next one with."""
        self.up, self.down, self.calls = link.up_rate, link.down_rate, link.calls

    def low(self, link: Link) -> tuple[bool, bool]:
        """Whether each way is still :data:`CHANGED` times below its rate before the drop."""
        if self.drop is None:
            return False, False
        return self.drop[0] >= CHANGED * link.up_rate, self.drop[1] >= CHANGED * link.down_rate


class Schedule:
    """Which probes a server's link is due: the rules, without sockets or a clock.

    A full round (``nbytes`` up, then down) when the server first answers (again,
    after it was lost), when a call stepped the link's estimate up (:data:`CHANGED`),
    and when neither a call nor a round measured it for ``stale_s``. When calls saw it
    step down, a look (:data:`LOOK_BYTES`) each way it stepped confirms the drop or
    undoes it. A link that dropped may come back, and nothing else would tell, since
    calls avoid it: with ``recover_s``, while the client makes calls (``busy``: a link
    that came back would take some), it gets a look each way it is still low every
    ``recover_s``, until it is back within :data:`CHANGED` of its rate before the drop;
    an idle client waits for the stale round, so looks cost in proportion to the calls
    that may gain from them. A look that finds it back is followed by a full round.
    The drop is measured against the rate calls and rounds left before it, never
    against a single high reading (a short transfer may pass in a token bucket's burst).
    :class:`Prober` follows it; so does a replay of a trace, on its own clock.
    """

    def __init__(self, nbytes: int, stale_s: float, recover_s: float | None) -> None:
        self.round: tuple[Probe, ...] = ((nbytes, 0), (0, nbytes))
        self._stale_s = stale_s
        self._recover_s = recover_s
        self._seen: dict[str, _Seen] = {}

    def forget(self, address: str) -> None:
        """``address`` was lost: it may come back elsewhere, behind another link."""
        self._seen.pop(address, None)

    def knows(self, address: str) -> bool:
        """Whether ``address``'s first round ended (and it was not lost since)."""
        return address in self._seen

    def due(self, address: str, link: Link, now: float, busy: bool = True) -> tuple[Probe, ...]:
        """The probes ``address``'s link is due now, after its previous ones (none: ``()``).

        A step counts only between two estimates calls made: a probe and a call measure
        a little differently (a short probe may pass in the link's burst), and comparing
        one with the other would probe again and again.
        """
        seen = self._seen.get(address)
        if seen is None:  # its first round just ended
            self._seen[address] = _Seen(link, now)
            return ()
        if seen.sent is not None:  # the probes it was due just ended: what they left
            sent, seen.sent = seen.sent, None
            seen.note(link)
            seen.by_calls = False
            if sent == "round":
                seen.measured_at = now
            low = seen.low(link)
            if not any(low):
                seen.drop = None
                return self._send(seen, "round") if sent == "look" else ()
            return ()
        if link.calls != seen.calls:  # calls measured it
            up_step = max(seen.up / link.up_rate, link.up_rate / seen.up) >= CHANGED
            down_step = max(seen.down / link.down_rate, link.down_rate / seen.down) >= CHANGED
            if seen.by_calls and (up_step or down_step):
                if (up_step and link.up_rate > seen.up) or (
                    down_step and link.down_rate > seen.down
                ):
                    return self._send(seen, "round")  # faster: a round costs little
                # Slower: a look each way it stepped, at half a round's bytes (a round over
                # a link fallen to 2 Mbit/s costs the radio half a second).
                seen.drop = seen.drop or (seen.up, seen.down)
                return self._looks(seen, (up_step, down_step), now)
            seen.note(link)
            seen.by_calls, seen.measured_at = True, now
            return ()
        if now - seen.measured_at > self._stale_s:
            return self._send(seen, "round")  # nothing measured it for a while
        low = seen.low(link)
        recover = self._recover_s
        if any(low) and busy and recover is not None and now - seen.looked_at > recover:
            return self._looks(seen, low, now)
        return ()

    def _send(self, seen: _Seen, kind: str) -> tuple[Probe, ...]:
        seen.sent = kind
        return self.round

    def _looks(self, seen: _Seen, ways: tuple[bool, bool], now: float) -> tuple[Probe, ...]:
        seen.sent, seen.looked_at = "look", now
        looks = (((LOOK_BYTES, 0), ways[0]), ((0, LOOK_BYTES), ways[1]))
        return tuple(probe for probe, way in looks if way)


def schedule(nbytes: int, heartbeat_s: float, time_weight: float) -> Schedule:
    """A client's :class:`Schedule`: looks at links that dropped only when time counts in
    its objective (``time_weight`` above 0): a look spends the radio's energy on a sooner
    choice of a link that came back (for the energy objective, a replay of the three-server
    trace lost more to the looks than they won)."""
    recover = RECOVER_HEARTBEATS * heartbeat_s if time_weight > 0 else None
    return Schedule(nbytes, STALE_HEARTBEATS * heartbeat_s, recover)


class Prober:
    """Probes each answering server's link, one probe at a time, as its :class:`Schedule`
    says."""

    def __init__(self, schedule: Schedule) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()
        #: address -> the probes of its current round not sent yet
        self._todo: dict[str, list[Probe]] = {}
        self._pending: dict[str, Future[None]] = {}

    def forget(self, address: str) -> None:
        """``address`` was lost: probe its link again once it answers."""
        with self._lock:
            self._todo.pop(address, None)
            self._schedule.forget(address)

    def step(self, remotes: Iterable[Remote], busy: bool = True) -> list[Future[None]]:
        """Send the next probe to each of ``remotes`` that answers and needs one (``busy``:
        this client makes calls); the probes sent (each resolves once measured, or failed)."""
        sent = []
        now = time.monotonic()
        for remote in remotes:
            address = remote.address
            with self._lock:
                pending = self._pending.get(address)
                if pending is not None and not pending.done():
                    continue
                todo = self._todo.setdefault(address, list(self._schedule.round))
                if not todo:
                    todo.extend(self._schedule.due(address, remote.link, now, busy))
                if not todo or remote.conn.up is not True or remote.conn.in_flight():
                    continue
                up, down = todo.pop(0)
                probe = self._pending[address] = _probe(remote, up, down)
            sent.append(probe)
        return sent

    def wait(self, remotes: list[Remote], deadline: float) -> None:
        """Probe each of ``remotes`` both ways now (one direction at a time, the servers at
        once) and wait for them until ``deadline``."""
        for _ in self._schedule.round:
            for probe in self.step(remotes):
                try:
                    probe.result(max(0.0, deadline - time.monotonic()))
                except Exception:  # not answering, or too slow: the choice goes on without it
                    log.debug("a bandwidth probe did not finish", exc_info=True)


def _probe(remote: Remote, up: int, down: int) -> Future[None]:
    """PING ``remote`` with ``up`` bytes (asking ``down`` back); resolves once its link
    learned the rate (a PING's own future may wake a waiter before its callbacks ran)."""
    start = time.perf_counter()
    measured: Future[None] = Future()
    measured.set_running_or_notify_cancel()

    def learn(pinged: Future[Any]) -> None:
        error = None if pinged.cancelled() else pinged.exception()
        if pinged.cancelled() or error is not None:
            measured.set_exception(error or TimeoutError("the probe was cancelled"))
            return
        remote.link.on_probe(up, down, time.perf_counter() - start)
        measured.set_result(None)

    remote.ping(up=up, down=down).add_done_callback(learn)
    return measured
