"""Replays of the three-server trace (:mod:`bench.decisions_servers`) against the oracle.

Each policy walks the trace choosing, per call, here or one of the servers
that were up, from what it could know then, and is charged the measured
outcome of its choice. ``ours`` is the real multi-server choice
(``AdaptiveDecider.where_among`` over one :class:`~offload.profiler.choice.Candidate`
per server, each with its own link, fed each call's measured RTT and the load
the server's PONG reported); it learns only from the sides it chose, and, as
:mod:`offload.lessons` does, a call sent while other clients' calls filled its
server's workers teaches the function there but not the link (its wait in the
queue would pass for a slow link). A server
that is down is not a candidate (as :mod:`offload.usable` leaves it out); the
time the client takes to notice is not charged here (``bench fleet`` measures
that failover gap). A server whose copy of the function is another version
refuses the call: a policy that sends it there is charged the measured refused
round trip, then where the call went next (:func:`charge`): for ours, as
``offload.routing`` does, that server is marked as lacking the function (for
good: the client's fallback is sticky) and the call goes to the best place left;
for a fixed policy (a one-server client in ``auto`` mode), here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from math import log
from pathlib import Path
from typing import Any

from offload.config import Config
from offload.probing import PROBE_BYTES, Probe, schedule
from offload.profiler import AdaptiveDecider, DeviceState, EnergyModel, Policy, Profiler
from offload.profiler.choice import Candidate
from offload.profiler.network import Link

from . import fleet_app, reshuffle

ENERGY = EnergyModel("smartphone-wifi")
SERVICES = {"dense": fleet_app.dense, "light": fleet_app.light}
FIXED = ("always_local", "nearest", "random_server")
NAMES = ("near", "mid", "far")  # nearest first


@dataclass
class Step:
    """One call, measured here and on every server (``servers[name]`` None: that one was down)."""

    phase: str
    service: str
    size: int
    local_s: float
    servers: dict[str, dict[str, Any] | None]


def outcomes(step: Step) -> dict[str, tuple[float, float]]:
    """(seconds, joules) of the call here ("local") and on each server up that could run it."""
    out = {"local": (step.local_s, ENERGY.local(step.local_s))}
    for name, s in step.servers.items():
        if s is not None and not s.get("refused"):
            out[name] = _cost(s)
    return out


def _cost(s: dict[str, Any]) -> tuple[float, float]:
    rate = s["mbit"] * 1e6 / 8
    return s["remote_s"], ENERGY.remote(s["up"] / rate, s["down"] / rate, s["remote_s"])


def charge(step: Step, route: list[str]) -> tuple[float, float]:
    """(seconds, joules) of a call that went along ``route``: every place but the last
    refused it (another version there: its round trip is wasted), the last ran it."""
    out = outcomes(step)
    t, e = out[route[-1]]
    for name in route[:-1]:
        s = step.servers[name]
        assert s is not None and s.get("refused")
        t, e = t + _cost(s)[0], e + _cost(s)[1]
    return t, e


def _refused(step: Step, where: str) -> bool:
    s = step.servers.get(where)
    return s is not None and bool(s.get("refused"))


class Ours:
    """Our decider choosing among here and the servers up, learning from what it chose."""

    def __init__(self, time_weight: float) -> None:
        profiler = Profiler(profile_cache=None, power_supply=Path("/nonexistent/power_supply"))
        self.decider = AdaptiveDecider(profiler, Policy(time_weight=time_weight))
        # Each server's link is its own (shaped apart): no access-link rate is reported; on
        # battery (80%, discharging), so that the energy objective counts.
        self.decider.profiler.device.state = DeviceState(
            battery=0.8, charging=False, link_mbit=None
        )
        self.candidates = {n: Candidate(n, Link(), distance_km=None) for n in NAMES}
        self.schedule = schedule(PROBE_BYTES, Config().heartbeat_interval, time_weight)
        self.clock = 0.0  # the seconds of this policy's calls so far: its client's clock
        self.probe_j = 0.0  # the radio's joules for the probes

    def _probe(self, name: str, s: dict[str, Any], probes: tuple[Probe, ...]) -> None:
        """``probes`` (:mod:`offload.probing`), as the client's prober sends them: the trace
        holds none, so each takes the RTT plus its bytes at the link's rate then (its shaped
        rate: no token bucket's burst makes it read high, as a real one may). In the
        background: the radio's energy is charged, not the time."""
        link, rate = self.candidates[name].link, s["mbit"] * 1e6 / 8
        for up, down in probes:
            link.on_probe(up, down, s["rtt_s"] + (up + down) / rate)
            self.probe_j += ENERGY.remote(up / rate, down / rate, (up + down) / rate)
        if more := self.schedule.due(name, link, self.clock):  # notes what they left
            self._probe(name, s, more)  # a look that found the link back: a round

    def __call__(self, step: Step) -> list[str]:
        d, fn = self.decider, SERVICES[step.service]
        usable = []
        for name, s in step.servers.items():
            if s is None:
                self.schedule.forget(name)  # lost: probed again once back
                continue
            c = self.candidates[name]
            c.link.on_rtt(s["rtt_s"])
            if not self.schedule.knows(name):  # a server's first round comes before its calls
                self._probe(name, s, self.schedule.round)
            c.others, c.workers, c.rate = s["others"], s["workers"], s["rate"]
            c.service_s, c.clients = s.get("service_s", 0.0), s.get("clients")  # newer traces
            usable.append(c)
        route = [d.where_among(fn, step.size, usable)]
        while _refused(step, route[-1]):  # as offload.routing's next_place: sticky, then elsewhere
            self.candidates[route[-1]].lacks.add(fn.wire_name)
            left = [c for c in usable if c.address not in route]
            route.append(d.where_among(fn, step.size, left) if left else "local")
        self.clock += charge(step, route)[0]
        self._learn(step, fn, route[-1])
        for c in usable:  # the probes now due inform the next call, not this one
            if due := self.schedule.due(c.address, c.link, self.clock):
                s = step.servers[c.address]
                assert s is not None
                self._probe(c.address, s, due)
        return route

    def _learn(self, step: Step, fn: Any, where: str) -> None:
        """What the call that ran at ``where`` teaches."""
        d = self.decider
        if where == "local":
            d.observe_local(fn, step.size, step.local_s)
            return
        s = step.servers[where]
        assert s is not None
        link = self.candidates[where].link
        # As offload.lessons does: a call sent while other clients' calls filled that
        # server's workers (its PONG before the call) teaches the function, not the link.
        alone = s["others"] < s["workers"]
        turnaround, server_s = s["remote_s"], s["server_s"]
        d.observe_remote(fn, step.size, turnaround, server_s, s["up"], s["down"], alone, link)


def _nearest(step: Step) -> list[str]:
    return _then_here(step, next((n for n in NAMES if step.servers.get(n) is not None), "local"))


def _then_here(step: Step, where: str) -> list[str]:
    """A one-server client in ``auto`` mode: refused there, the call runs here."""
    return [where, "local"] if _refused(step, where) else [where]


def replay(steps: list[Step], seed: int = 0) -> dict[str, Any]:
    """Totals of every policy and their ratios to the oracle (best of here and every server)."""
    rng = random.Random(seed)
    policies: dict[str, Any] = {
        "always_local": lambda s: ["local"],
        "nearest": _nearest,
        "random_server": lambda s: _then_here(
            s, rng.choice([n for n in NAMES if s.servers.get(n) is not None] or ["local"])
        ),
        "ours": Ours(1.0),
        "ours_energy": Ours(0.0),
    }
    outs = [outcomes(s) for s in steps]
    oracle_time = sum(min(t for t, _ in o.values()) for o in outs)
    oracle_energy = sum(min(e for _, e in o.values()) for o in outs)
    report: dict[str, Any] = {
        "oracle": {
            "time_s": oracle_time,
            "energy_j": oracle_energy,
            "time_ratio_to_oracle": 1.0,
            "energy_ratio_to_oracle": 1.0,
        }
    }
    for name, choose in policies.items():
        routes = [choose(s) for s in steps]
        costs = [charge(s, r) for s, r in zip(steps, routes)]
        t, e = sum(c[0] for c in costs), sum(c[1] for c in costs)
        e += getattr(choose, "probe_j", 0.0)  # ours' probes, in the background
        where = [r[-1] for r in routes]
        best = [min(o, key=lambda k: o[k][0]) for o in outs]
        report[name] = {
            "time_s": t,
            "energy_j": e,
            "time_ratio_to_oracle": t / oracle_time,
            "energy_ratio_to_oracle": e / oracle_energy,
            "share": {k: where.count(k) / len(where) for k in ("local", *NAMES)},
            "agrees_with_time_oracle": sum(w == b for w, b in zip(where, best)) / len(where),
            "refused_calls": sum(len(r) > 1 for r in routes),
        }
    return report


def reshuffled(
    steps: list[Step], phases: list[str], runs: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Each policy's ratios over ``runs`` replays of the trace shuffled within each phase."""
    return reshuffle.reshuffled(
        steps,
        lambda s: s.phase,
        phases,
        lambda order, run: replay(order, seed=run),
        FIXED,
        runs,
        seed,
    )


def loss_by_phase(steps: list[Step]) -> dict[str, dict[str, dict[str, float]]]:
    """Where ours loses: per phase, the oracle's total and ours' excess over it, and the
    excess of the phase's first 6 calls (learning the change) against the rest (staleness).

    ``ours`` is measured in seconds, ``ours_energy`` in joules (each by its objective).
    """
    report: dict[str, dict[str, dict[str, float]]] = {}
    for name, weight, k in (("ours", 1.0, 0), ("ours_energy", 0.0, 1)):
        ours, by_phase = Ours(weight), report.setdefault(name, {})
        for step in steps:
            best = min(v[k] for v in outcomes(step).values())
            excess = charge(step, ours(step))[k] - best
            p = by_phase.setdefault(step.phase, {"oracle": 0.0, "excess": 0.0, "calls": 0})
            p["oracle"] += best
            p["excess"] += excess
            p["calls"] += 1
            p["excess_first_6_calls"] = p.get("excess_first_6_calls", 0.0) + (
                excess if p["calls"] <= 6 else 0.0
            )
    return report


def unforeseen(steps: list[Step], changed: dict[str, set[str]]) -> dict[str, float]:
    """What a decider that always picks the best place it can know of pays, as ratios
    to the oracle: it knows everything but what nothing announces, a link's new rate.

    The oracle, except for the first call of a phase in which servers' links changed
    (``changed``: phase -> those servers): it believes each of them costs what the
    previous phase measured there for the same service at the nearest size, every other
    place what it costs now, goes to the cheapest so believed, and is charged what that
    place cost now. Every later call is the oracle's: it learns at once. Each objective
    on its own (time in seconds, energy in joules). A reference, not a bound on every
    decider: one that happens to avoid that link at that call pays less.
    """
    outs = [outcomes(s) for s in steps]
    ratios = {}
    for k, name in ((0, "time_ratio_to_oracle"), (1, "energy_ratio_to_oracle")):
        paid = best = 0.0
        for i, (step, out) in enumerate(zip(steps, outs)):
            cost = min(v[k] for v in out.values())
            best += cost
            moved = changed.get(step.phase, set())
            if i and moved and step.phase != steps[i - 1].phase:
                believed = {side: v[k] for side, v in out.items()}
                for side in moved & set(out):
                    before = [
                        (s, o)
                        for s, o in zip(steps[:i], outs[:i])
                        if s.phase == steps[i - 1].phase and s.service == step.service and side in o
                    ]
                    if before:
                        near = min(abs(log(s.size / step.size)) for s, _ in before)
                        alike = [
                            o[side][k] for s, o in before if abs(log(s.size / step.size)) == near
                        ]
                        believed[side] = sum(alike) / len(alike)
                cost = out[min(believed, key=believed.__getitem__)][k]
            paid += cost
        ratios[name] = paid / best
    return ratios
