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

from .remote import Remote

log = logging.getLogger("offload")

#: Bytes each way of a server's probe when ``probe_bytes`` is not set: above the
#: size from which a transfer teaches the bandwidth (``network.LARGE``), small
#: enough for 64 ms on an 8 Mbit/s link.
PROBE_BYTES = 64 * 1024
#: The directions probed, in order: (up, down) multipliers of the probe size.
DIRECTIONS = ((1, 0), (0, 1))


#: A link's rate this many times off what its last probe left (a call saw a step) is
#: probed again: one slow call (a hiccup of the server's or the host's) would otherwise
#: keep a good server out of the choice until an exploration, a weakened link is
#: confirmed.
CHANGED = 4.0


class Prober:
    """Probes each answering server's link, a direction a step: once it answers (again after
    it was lost), when a call changed its estimate by a step (:data:`CHANGED`), and once
    ``stale_s`` passed with no call there to keep the estimate current."""

    def __init__(self, nbytes: int, stale_s: float) -> None:
        self._nbytes = nbytes
        self._stale_s = stale_s
        self._lock = threading.Lock()
        #: address -> how many directions were probed (or are being probed) in this round
        self._stage: dict[str, int] = {}
        self._pending: dict[str, Future[None]] = {}
        #: address -> (up rate, down rate, calls) of its link when last looked at, when, and
        #: whether calls had measured it since its last round of probes
        self._left: dict[str, tuple[float, float, int, float, bool]] = {}

    def forget(self, address: str) -> None:
        """``address`` was lost: probe its link again once it answers."""
        with self._lock:
            self._stage.pop(address, None)
            self._left.pop(address, None)

    def step(self, remotes: Iterable[Remote]) -> list[Future[None]]:
        """Send the next probe to each of ``remotes`` that answers and needs one; the
        probes sent (each resolves once measured, or failed)."""
        sent = []
        now = time.monotonic()
        for remote in remotes:
            address = remote.address
            with self._lock:
                pending = self._pending.get(address)
                if pending is not None and not pending.done():
                    continue
                stage = self._stage.get(address, 0)
                if stage >= len(DIRECTIONS) and not self._due(address, remote, now):
                    continue
                if remote.conn.up is not True or remote.conn.in_flight():
                    continue
                stage %= len(DIRECTIONS)
                self._stage[address] = stage + 1
                up, down = (self._nbytes * k for k in DIRECTIONS[stage])
                probe = self._pending[address] = _probe(remote, up, down)
            sent.append(probe)
        return sent

    def _due(self, address: str, remote: Remote, now: float) -> bool:
        """Whether a link probed both ways is due another round (lock held).

        A step counts only between two estimates calls made: a probe and a call measure
        a little differently (a short probe may pass in the link's burst), and comparing
        one with the other would probe again and again.
        """
        link = remote.link
        left = self._left.get(address)
        if left is None:  # its round just ended: what it left, to compare with
            self._left[address] = (link.up_rate, link.down_rate, link.calls, now, False)
            return False
        up, down, calls, when, by_calls = left
        if calls == link.calls:
            if now - when > self._stale_s:  # no call measured it for a while
                del self._left[address]
                return True
            return False
        stepped = max(up / link.up_rate, link.up_rate / up) >= CHANGED or (
            max(down / link.down_rate, link.down_rate / down) >= CHANGED
        )
        if by_calls and stepped:
            del self._left[address]
            return True
        self._left[address] = (link.up_rate, link.down_rate, link.calls, now, True)
        return False

    def wait(self, remotes: list[Remote], deadline: float) -> None:
        """Probe each of ``remotes`` both ways now (one direction at a time, the servers at
        once) and wait for them until ``deadline``."""
        for _ in DIRECTIONS:
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
