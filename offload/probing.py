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
A link well below its best gets a small look up now and then, sooner than
that, when the objective counts time: it may have come back, and calls,
which avoid it, would never tell (:class:`Schedule`).

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
#: Bytes up of a look at a link below its best: the least that teaches a bandwidth.
LOOK_BYTES = LARGE
#: Heartbeats after which a link no call measured is probed again.
STALE_HEARTBEATS = 10
#: Heartbeats after which a link well below its best is first looked at again.
RECOVER_HEARTBEATS = 1

#: A link's rate this many times off what its last probe left (a call saw a step) is
#: probed again: one slow call (a hiccup of the server's or the host's) would otherwise
#: keep a good server out of the choice until an exploration, a weakened link is
#: confirmed.
CHANGED = 4.0

#: What a probe moves: (bytes up, bytes down), one direction at a time.
Probe = tuple[int, int]


class Schedule:
    """Which probes a server's link is due: the rules, without sockets or a clock.

    A full round (``nbytes`` up, then down) when the server first answers (again,
    after it was lost), when a call stepped the link's estimate up (:data:`CHANGED`;
    down: a look each way it stepped), and when no call measured it for ``stale_s``.
    A link well below the best it was measured at (:data:`CHANGED` times or more,
    either way) may have come back, and nothing else would tell, since calls avoid
    it: with ``recover_s``, while the client
    makes calls (``busy``: a link that came back would take some), it gets a look
    (:data:`LOOK_BYTES` up) every ``recover_s``; an idle client waits for the stale
    round, so looks cost in proportion to the calls that may gain from them. A look that
    finds the link back up is followed by a full round. :class:`Prober` follows it; so
    does a replay of a trace, on its own clock.
    """

    def __init__(self, nbytes: int, stale_s: float, recover_s: float | None) -> None:
        self.round: tuple[Probe, ...] = ((nbytes, 0), (0, nbytes))
        self._stale_s = stale_s
        self._recover_s = stale_s if recover_s is None else min(recover_s, stale_s)
        #: address -> (up rate, down rate, calls) of its link when last looked at, when, and
        #: whether calls had measured it since its last round of probes
        self._left: dict[str, tuple[float, float, int, float, bool]] = {}
        #: address -> the best (up, down) rates its link was measured at
        self._best: dict[str, tuple[float, float]] = {}
        #: the addresses whose latest probe was a look
        self._looked: set[str] = set()

    def forget(self, address: str) -> None:
        """``address`` was lost: it may come back elsewhere, behind another link."""
        for held in (self._left, self._best):
            held.pop(address, None)
        self._looked.discard(address)

    def due(self, address: str, link: Link, now: float, busy: bool = True) -> tuple[Probe, ...]:
        """The probes ``address``'s link is due now, after its previous ones (none: ``()``).

        A step counts only between two estimates calls made: a probe and a call measure
        a little differently (a short probe may pass in the link's burst), and comparing
        one with the other would probe again and again.
        """
        best_up, best_down = self._best.get(address, (0.0, 0.0))
        best = self._best[address] = max(best_up, link.up_rate), max(best_down, link.down_rate)
        left = self._left.get(address)
        if left is None:  # its probes just ended: what they left, to compare with
            self._left[address] = (link.up_rate, link.down_rate, link.calls, now, False)
            return ()
        up, down, calls, when, by_calls = left
        if calls == link.calls:
            low_up = best[0] >= CHANGED * link.up_rate
            low_down = best[1] >= CHANGED * link.down_rate
            if address in self._looked and not low_up and low_down:  # a look found it back up
                del self._left[address]
                self._looked.discard(address)
                return self.round
            look = low_up and busy and self._recover_s < self._stale_s
            if now - when <= (self._recover_s if look else self._stale_s):
                return ()
            del self._left[address]
            if look:
                self._looked.add(address)
                return ((LOOK_BYTES, 0),)
            self._looked.discard(address)
            return self.round  # no call measured it for a while
        up_step = max(up / link.up_rate, link.up_rate / up) >= CHANGED
        down_step = max(down / link.down_rate, link.down_rate / down) >= CHANGED
        if by_calls and (up_step or down_step):
            del self._left[address]
            if (up_step and link.up_rate > up) or (down_step and link.down_rate > down):
                return self.round  # faster: a full round costs little
            # Slower: a look each way it stepped confirms or undoes it at half a round's bytes
            # (a round over a link that fell to 2 Mbit/s costs the radio half a second).
            looks = (((LOOK_BYTES, 0), up_step), ((0, LOOK_BYTES), down_step))
            return tuple(probe for probe, stepped in looks if stepped)
        self._left[address] = (link.up_rate, link.down_rate, link.calls, now, True)
        return ()


def schedule(nbytes: int, heartbeat_s: float, time_weight: float) -> Schedule:
    """A client's :class:`Schedule`: looks at links below their best only when time counts
    in its objective (``time_weight`` above 0): a look spends the radio's energy on a
    sooner choice of a link that came back."""
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
