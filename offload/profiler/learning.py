"""What the decider learns from finished calls: function models, drifts, the links.

Split from :mod:`~offload.profiler.decision` (which keeps the per-call path):
this is the part that runs after a call, under a lock, off the decision path.
A remote call teaches the link of the server it ran on (each server has its
own :class:`~offload.profiler.network.Link`: RTT, bandwidth and the server's
speed as its ``server_drift``), and the function's model, shared by all
servers, learns its cost as that server's drift says it would be on a
server of nominal speed.
"""

from __future__ import annotations

import threading
from math import log
from typing import Any

from .device import DeviceProfiler
from .energy import EnergyModel
from .history import HERE, THERE, FunctionProfile
from .models import Drift
from .network import LARGE, Link


def log_size(size: int) -> float:
    """The models' x: the log of a call's size (sizes of 0 and 1 both give 0)."""
    return log(size) if size > 1 else 0.0


def contention(cpu_load: float) -> float:
    """How much slower a call runs here while others take ``cpu_load`` of the CPU.

    It gets what they leave, ``1 - cpu_load`` (at most 4 times slower).
    """
    return 1.0 / (1.0 - cpu_load) if cpu_load < 0.75 else 4.0


class Learning:
    """The learning half of :class:`~offload.profiler.decision.AdaptiveDecider`."""

    _link: Link
    _energy: EnergyModel
    _device: DeviceProfiler
    _local_drift: Drift
    _learning: threading.Lock
    _spent: float
    _fresh: list[float]
    _fresh_link: float

    def profile(self, fn: Any) -> FunctionProfile:
        raise NotImplementedError

    def observe_local(self, fn: Any, size: int, seconds: float) -> None:
        prof = self.profile(fn)
        busy = contention(self._device.state.cpu_load)  # learned as if the CPU were free
        with self._learning, prof.lock:
            self._learn(prof, log_size(size), seconds / busy, HERE, self._local_drift)
            prof.add("local", seconds, 0, 0, self._energy.local(seconds))

    def observe_remote(
        self,
        fn: Any,
        size: int,
        turnaround: float,
        server: float,
        up: int,
        down: int,
        alone: bool = True,
        link: Link | None = None,
    ) -> None:
        """A remote call finished; ``link``: the server's it ran on (default the configured one)."""
        prof = self.profile(fn)
        x = log_size(size)
        link = link or self._link
        with self._learning, prof.lock:
            if alone:  # else queueing behind other calls would pass for a slow link
                link.on_call(up, down, turnaround, server)
                if up >= LARGE or down >= LARGE:
                    self._fresh_link = self._spent
            self._learn(prof, x, server, THERE, link.server_drift)
            prof.up.add(x, float(up), prof.clock)
            # Until sizes differ enough to tell, a result grows as its input does (a
            # sort, a matrix product) or not at all (a power): the input's slope decides.
            prof.down.slope_prior = prof.up.params[1]
            prof.down.add(x, float(down), prof.clock)
            energy = self._energy.remote(link.radio_up_s(up), link.radio_down_s(down), turnaround)
            prof.add("remote", turnaround, up, down, energy)

    def observe_transfer(
        self, fn: Any, up: int, down: int, seconds: float, server: float = 0.0
    ) -> None:
        """Bytes moved for ``fn`` outside its calls (its app deployed first): totals and link."""
        prof, link = self.profile(fn), self._link
        with self._learning, prof.lock:
            if up >= LARGE or down >= LARGE:  # a bandwidth sample, like a large call's
                link.on_call(up, down, seconds, server)
                self._fresh_link = self._spent
            energy = self._energy.remote(link.radio_up_s(up), link.radio_down_s(down), seconds)
            prof.add("remote", seconds, up, down, energy, calls=0)

    def _learn(
        self, prof: FunctionProfile, x: float, seconds: float, side: int, drift: Drift
    ) -> None:
        """One execution time (at log size ``x``) into the function's model, drift, slowdown."""
        m, slowdown = prof.time, self._link.slowdown
        updates = drift.updates
        cost = drift.normalize(m, x, seconds, side)
        if drift.updates != updates:  # news of that side's speed, not just a call
            self._fresh[side] = self._spent
        m.add(x, cost, prof.clock, side, slowdown.mean or 0.0)
        if side == HERE and seconds >= drift.floor:
            prof.timed_here += 1
        if m.counts[HERE] >= 2 and m.counts[THERE] >= 2:
            slowdown.add(m.params[2])
