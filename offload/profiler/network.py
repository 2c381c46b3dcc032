"""Network profiler: round-trip time, per-call overhead and bandwidth of the link to a server.

Everything is learned from traffic the client sends anyway:

* RTT from PING/PONG pairs (the connection's heartbeats and probes),
  smoothed as TCP does (:class:`~offload.profiler.models.Smoothed`).
* Per-call overhead (serialization, the server's queue and its worker hop)
  from small calls: turnaround minus the server's reported execution time
  minus the RTT.
* Bandwidth from large calls (over ``LARGE`` bytes in one direction): bytes
  over the time left once execution, RTT and overhead are taken out. A call
  whose bytes go mostly one way teaches that direction; a balanced one
  teaches both the same figure. A smaller call (over ``BOUND`` bytes, past
  what a shaper's burst or TCP's first window carries at once) tells a step:
  one ``STEP`` faster than the estimate lifts a stale one (a link measured
  while weak, then only tried with small calls), one ``STEP`` slower, its
  transfer well past the round trip, lowers it (the link weakened: the next
  large call there would pay for it).

Until a large transfer has been seen, bandwidth is ``prior_bps`` (a
configured guess, or what an active probe measured). A server that stops
answering is reported by the connection (``Connection.up``), not here.

Where the device reports its access link's rate (a Wi-Fi interface's link
speed, :attr:`~offload.profiler.device.DeviceState.link_mbit`), a call's time
outside execution is taken as two parts per byte: the wire's, ``1 / rate``,
and the rest (serializing, copying: this device's own, which a new rate does
not change). When the reported rate changes, the estimate keeps the rest and
swaps the wire's part (:meth:`Link.on_reported`), so a link that weakens or
recovers is known at once, before a large call measures it; and a call's
radio time (its energy) is its bytes over the reported rate, not the whole
time outside execution.
"""

from __future__ import annotations

import math
from typing import Any

from .models import Drift, Smoothed

LARGE = 32 * 1024  # bytes in one direction before a call says anything about bandwidth
#: A bandwidth sample this far from the estimate (a log: 8 times) replaces it.
STEP = math.log(8.0)
#: Bytes one way from which a call too small to measure the bandwidth still bounds it
#: (:meth:`Link._bound`); a smaller one may have gone in a token bucket's burst.
BOUND = LARGE // 2


def rewire(rate: float, then: float, now: float) -> float:
    """A transfer rate measured while the link reported ``then``, now that it reports ``now``.

    Each byte's time is the wire's ``1 / then`` and the rest; the rest stays.
    """
    return 1.0 / max(1.0 / rate - 1.0 / then + 1.0 / now, 1.0 / now)


class Link:
    """What is known about the path to one server."""

    __slots__ = (
        "calls",
        "down_bps",
        "down_rate",
        "fixed",
        "learned_at",
        "overhead",
        "price_s",
        "prior_bps",
        "radio_down",
        "radio_up",
        "reported",
        "rtt",
        "server_drift",
        "slowdown",
        "up_bps",
        "up_rate",
    )

    def __init__(self, prior_bps: float = 54e6 / 8 * 0.5) -> None:
        self.rtt = Smoothed()
        self.overhead = Smoothed(gain=0.2)
        # Bandwidth moves in steps, by factors (the user walks away from the access
        # point), and each large transfer measures it well: smoothed as a logarithm,
        # the latest measurement dominating.
        self.up_bps = Smoothed(gain=0.75)
        self.down_bps = Smoothed(gain=0.75)
        #: How the server's speed has drifted from what the function models learned:
        #: a busy server is seen in one call or two, one odd call does not swing it.
        self.server_drift = Drift(gain=0.5)
        #: log(local time / server time) at equal input, over functions run on both.
        self.slowdown = Smoothed(gain=0.25)
        self.prior_bps = prior_bps
        #: Credits a second of the server's time costs (a site's, from its PONG; 0: free).
        self.price_s = 0.0
        self.calls = 0
        #: The figures a decision uses, kept current by every update: seconds of
        #: RTT plus overhead, and bytes per second each way.
        self.fixed = 0.0
        self.up_rate = self.down_rate = prior_bps
        #: The rate (bytes/s) the access link reports now, and the one it reported when
        #: the bandwidth was last measured (or the prior taken); ``None``: not reported.
        self.reported: float | None = None
        self.learned_at: float | None = None
        #: The share of a transfer's time the radio is busy (sending, receiving): 1.0
        #: unless the access link reports its rate.
        self.radio_up = self.radio_down = 1.0

    def up_s(self, nbytes: float) -> float:
        return nbytes / self.up_rate

    def down_s(self, nbytes: float) -> float:
        return nbytes / self.down_rate

    def radio_up_s(self, nbytes: float) -> float:
        """Seconds the radio sends ``nbytes`` (the wire's share of the transfer)."""
        return nbytes / self.up_rate * self.radio_up

    def radio_down_s(self, nbytes: float) -> float:
        """Seconds the radio receives ``nbytes``."""
        return nbytes / self.down_rate * self.radio_down

    def _refresh(self) -> None:
        rtt, over = self.rtt.mean, self.overhead.mean
        self.fixed = (rtt if rtt is not None else 0.0) + (over if over is not None else 0.0)
        up, down = self.up_bps.mean, self.down_bps.mean  # logs of bytes per second
        self.up_rate = math.exp(min(up, 40.0)) if up is not None else self.prior_bps
        self.down_rate = math.exp(min(down, 40.0)) if down is not None else self.prior_bps
        now, then = self.reported, self.learned_at
        if now is None or then is None:
            self.radio_up = self.radio_down = 1.0
            return
        if now != then:  # the wire's part of each byte's time changed, the rest did not
            self.up_rate = rewire(self.up_rate, then, now)
            self.down_rate = rewire(self.down_rate, then, now)
        self.radio_up, self.radio_down = self.up_rate / now, self.down_rate / now

    def on_reported(self, bps: float | None) -> None:
        """The access link now reports ``bps`` bytes per second (``None``: it stopped)."""
        if bps is not None and bps <= 0:
            bps = None
        self.reported = bps
        if self.learned_at is None:
            self.learned_at = bps  # the estimate so far (the prior, or a load) is for this rate
        self._refresh()

    def on_rtt(self, seconds: float) -> None:
        """A PING answered after ``seconds``."""
        self.rtt.add(seconds)
        self._refresh()

    def on_call(self, up: int, down: int, turnaround: float, server: float) -> None:
        """A call sent ``up`` bytes, got ``down`` back, took ``turnaround`` s, ran ``server`` s.

        A small call moves only the RTT or the overhead, so only :attr:`fixed` is
        refreshed (the rates are :meth:`_refresh`'s of unchanged figures): every
        call does this. The exception, a small call that shows a bandwidth
        estimate stale (:meth:`_bound`), refreshes all.
        """
        self.calls += 1
        if up < LARGE and down < LARGE:
            rtt, outside = self.rtt, turnaround - server
            if rtt.mean is None:  # no PING answered yet: the first small call stands in
                rtt.add(0.0 if outside < 0.0 else outside)  # max(outside, 0.0)
            else:
                # A step in the bandwidth first: else its transfer would pass for overhead.
                step = (up >= BOUND or down >= BOUND) and self._bound(up, down, outside)
                if step:
                    self._refresh()
                left = outside - rtt.mean - up / self.up_rate - down / self.down_rate
                self.overhead.add(0.0 if left < 0.0 else left)
                if step:  # the bandwidth estimate moved: all figures move
                    self._refresh()
                    return
            rtt_mean, over = rtt.mean, self.overhead.mean
            self.fixed = (rtt_mean if rtt_mean is not None else 0.0) + (
                over if over is not None else 0.0
            )
            return
        self._learn(up, down, turnaround - server)
        self._refresh()

    def _measured(self, smoothed: Smoothed, bps: float) -> None:
        """A bandwidth sample for one direction, at the rate the link reports now.

        The direction's estimate is first moved to the reported rate of now (as
        the decision saw it), then learns the sample there.
        """
        now, then = self.reported, self.learned_at
        if now is not None and then is not None and now != then:
            for other in (self.up_bps, self.down_bps):
                if other.mean is not None:
                    other.mean = math.log(rewire(math.exp(min(other.mean, 40.0)), then, now))
            self.prior_bps = rewire(self.prior_bps, then, now)
            self.learned_at = now
        sample = math.log(bps)
        if smoothed.mean is not None and abs(sample - smoothed.mean) > STEP:
            # A step, not noise (the link weakened or recovered): averaging it in would
            # leave the estimate off by several times; the sample is the link now.
            smoothed.mean = sample
            smoothed.count += 1
        else:
            smoothed.add(sample)

    def _learn(self, up: int, down: int, outside: float) -> None:
        """Learn the bandwidth from ``outside`` seconds of a large call not spent executing
        (a small call's figures are :meth:`on_call`'s own)."""
        wire = outside - self.fixed
        if wire <= 0:
            return
        if up >= 4 * down:
            left = wire - self.down_s(down)
            if left > 0:
                self._measured(self.up_bps, up / left)
        elif down >= 4 * up:
            left = wire - self.up_s(up)
            if left > 0:
                self._measured(self.down_bps, down / left)
        else:
            bps = (up + down) / wire
            self._measured(self.up_bps, bps)
            self._measured(self.down_bps, bps)

    def _bound(self, up: int, down: int, outside: float) -> bool:
        """A call too small to measure the bandwidth (under ``LARGE`` bytes each way) still
        tells a step in it: its bytes (``BOUND`` at least, past a token bucket's burst) did
        not move faster than the link does. A bound ``STEP`` above the estimate says the
        estimate is stale (measured while the link was weak; it recovered since, and the
        large calls that would measure it go elsewhere). A rate ``STEP`` below it, over a
        transfer eight times the round trip and overhead (not their jitter), says the link
        weakened (even a burst did not hide it): left to the next large call, that one
        would pay for it (bench decisions_servers: 20 KB to far took 0.04 s where 0.02 s
        were predicted, then 400 KB went there and took 1.65 s). Either replaces the
        estimate, and True says so.
        """
        nbytes, smoothed = (up, self.up_bps) if up >= down else (down, self.down_bps)
        if nbytes < BOUND or outside <= 0 or smoothed.mean is None:
            return False
        wire = outside - self.fixed
        if wire <= 0:  # faster than the RTT estimate's noise: the whole time bounds it below
            wire = outside
        off = math.log(nbytes / wire) - smoothed.mean
        if off > STEP or (off < -STEP and wire > 8.0 * self.fixed):
            self._measured(smoothed, nbytes / wire)
            return True
        return False

    def on_probe(self, up: int, down: int, seconds: float) -> None:
        """A probe moved ``up`` bytes out or ``down`` bytes in, in ``seconds`` (RTT included)."""
        wire = seconds - (self.rtt.mean or 0.0)
        if wire <= 0:  # faster than the RTT estimate's noise: the whole time bounds it below
            wire = seconds
        if wire > 0:
            self._measured(self.up_bps if up else self.down_bps, (up or down) / wire)
            self._refresh()

    def snapshot(self) -> dict[str, Any]:
        """Current estimates, for ``explain`` and ``stats``."""
        return {
            "rtt_s": self.rtt.mean,
            "rtt_dev_s": self.rtt.dev,
            "overhead_s": self.overhead.mean,
            "up_bps": self.up_rate if self.up_bps.mean is not None else None,
            "down_bps": self.down_rate if self.down_bps.mean is not None else None,
            "prior_bps": self.prior_bps,
            "reported_bps": self.reported,
            "server_drift": self.server_drift.value,
            "device_slowdown": None if self.slowdown.mean is None else math.exp(self.slowdown.mean),
        }

    def to_json(self) -> dict[str, Any]:
        keys = ("rtt", "overhead", "up_bps", "down_bps", "slowdown")
        return {k: getattr(self, k).to_json() for k in keys}

    def load(self, data: dict[str, Any]) -> None:
        """Restore from :meth:`to_json`, all or nothing; raises on anything malformed."""
        restored = {}
        for key in ("rtt", "overhead", "up_bps", "down_bps", "slowdown"):
            if key in data:
                value = Smoothed(getattr(self, key).gain)
                value.load(data[key])
                restored[key] = value
        for key, value in restored.items():
            setattr(self, key, value)
        self._refresh()
