"""The decider's interface: the sides, the :class:`Decider` protocol, its knobs and its answers.

The client and the batch planner talk to a decider only through
:class:`Decider`; :class:`~offload.profiler.decision.AdaptiveDecider` is the
default one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .. import human
from .choice import Candidate
from .history import FunctionProfile
from .network import Link

Side = Literal["local", "remote"]
LOCAL: Side = "local"
REMOTE: Side = "remote"


class Decider(Protocol):
    """Chooses the side for one call and learns from how calls went."""

    def decide(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        server_up: bool,
        extra_up: int = 0,
    ) -> tuple[Side, int]:
        """Return the side for ``fn(*args, **kwargs)`` and the call's size.

        ``extra_up``: bytes that must go to the server before this call could
        run there (its app, when the server lacks it: provisioning on first
        use); the remote side's estimate includes sending them. The router
        passes it only when it is not 0.
        """
        ...

    def decide_among(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], servers: Sequence[Candidate]
    ) -> tuple[str, int]:
        """Where a call runs among here and ``servers``: "local" or an address; and its size."""
        ...

    def where_among(
        self,
        fn: Any,
        size: int,
        servers: Sequence[Candidate],
        here: bool = True,
        explore: bool = True,
    ) -> str:
        """ "local" or the address of the server a call goes to (``here``: may be local;
        ``explore`` False: a call sent on after a loss goes to the best, never to explore)."""
        ...

    def observe_local(self, fn: Any, size: int, seconds: float) -> None:
        """A call of ``size`` ran here in ``seconds``."""
        ...

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
        """A call of ``size`` took ``turnaround`` s remotely, ``server`` s of it executing.

        ``alone``: no other call shared the connection meanwhile, so the time
        outside execution was this call's own transfer and overhead.
        """
        ...

    def observe_transfer(
        self, fn: Any, up: int, down: int, seconds: float, server: float = 0.0
    ) -> None:
        """A transfer for ``fn`` outside its calls: its app deployed to the server first.

        ``seconds`` of the round trip that moved ``up`` and ``down`` bytes,
        ``server`` of them the server's own work. It counts in the function's
        remote totals (time, bytes, energy) and teaches the link.
        """
        ...

    def explain(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        server_up: bool,
        servers: Sequence[Candidate] | None = None,
    ) -> Explanation:
        """What :meth:`decide` would answer for this call now, and why; changes nothing."""
        ...

    def costs(self, fn: Any, size: int) -> tuple[float, float, float, float, float] | None:
        """(local s, server s, transfer s, local J, remote J) of a call, if both sides are known."""
        ...

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function and side: calls, seconds, bytes up and down, joules."""
        ...

    def profile(self, fn: Any) -> FunctionProfile:
        """What has been learned about ``fn``."""
        ...


@dataclass(frozen=True)
class Policy:
    """The decision's knobs (:mod:`~offload.profiler.decision`), from :class:`~offload.Config`."""

    time_weight: float = 1.0
    credit_value_s: float = 0.0  # seconds one credit is worth (a site's price as time)
    hysteresis: float = 0.1
    explore_every: int = 32
    battery_low: float = 0.2
    cpu_busy: float = 0.9
    memory_low: float = 0.1
    critical_bias: float = 2.0
    cheap_try_s: float = 0.02


@dataclass
class Explanation:
    """A decision with the estimates and reasons behind it (``offload.explain``)."""

    side: Side
    reasons: list[str]
    size: int
    estimates: dict[str, dict[str, float | None]]
    device: dict[str, Any]
    link: dict[str, Any]
    energy_source: str
    objective_time_weight: float = field(default=1.0)
    #: With several servers: the best one (used unless ``side`` is local), and every
    #: candidate with its estimate (``time_s``), ``chosen`` and ``why`` (it lost, or won).
    server: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        local, remote = self.estimates.get("local", {}), self.estimates.get("remote", {})
        device, link = self.device, self.link
        battery = "none" if device.get("battery") is None else human.share(device["battery"])
        charging = ", charging" if device.get("charging") and device.get("battery") else ""
        weight = self.objective_time_weight
        objective = {1.0: "time", 0.0: "energy"}.get(weight, f"time weight {weight:g}")
        assumed = "" if link.get("up_bps") else f" (assumed {human.rate(link.get('prior_bps'))})"
        return "\n".join(
            [
                f"{'here' if self.side == 'local' else 'on the server'} ({self.side}): "
                + "; ".join(self.reasons),
                f"  call size  {human.size(self.size)}",
                f"  here       time {human.seconds(local.get('time_s'))}, energy "
                f"{human.joules(local.get('energy_j'))}",
                f"  server     time {human.seconds(remote.get('time_s'))} (running "
                f"{human.seconds(remote.get('server_s'))}, transfer "
                f"{human.seconds(remote.get('transfer_s'))}), energy "
                f"{human.joules(remote.get('energy_j'))}",
                f"  device     CPU load {human.share(device.get('cpu_load'))}, memory free "
                f"{human.share(device.get('memory_free'))}, battery {battery}{charging}",
                f"  link       round trip {human.seconds(link.get('rtt_s'))}, up "
                f"{human.rate(link.get('up_bps'))}, down {human.rate(link.get('down_bps'))}"
                + assumed,
                f"  energy     {self.energy_source}; objective: {objective}",
                *self._candidate_lines(),
            ]
        )

    def _candidate_lines(self) -> list[str]:
        if not self.candidates:
            return []
        where = "here" if self.side == "local" else self.server
        lines = [f"  chosen     {where}; candidates:"]
        for c in self.candidates:
            mark = "*" if c.get("chosen") else " "
            estimate = human.seconds(c.get("time_s"))
            lines.append(f"   {mark} {c['where']:<24} {estimate:>9}  {c.get('why', '')}")
        return lines


class Stats(dict[str, dict[str, Any]]):
    """``offload.stats()``: per function and side, calls, seconds, bytes and joules.

    A dict (function -> side -> figures); ``str()`` of it is a table.
    """

    def __str__(self) -> str:
        rows = [("function", "side", "calls", "time", "up", "down", "energy")]
        for name, sides in sorted(self.items()):
            for side in ("local", "remote"):
                s = sides.get(side) or {}
                if not s.get("calls"):
                    continue
                rows.append(
                    (
                        name,
                        side,
                        f"{s['calls']:g}",
                        human.seconds(s.get("seconds")),
                        human.size(s.get("bytes_up", 0)),
                        human.size(s.get("bytes_down", 0)),
                        human.joules(s.get("energy_j")),
                    )
                )
        if len(rows) == 1:
            return "no calls yet"
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
        )
