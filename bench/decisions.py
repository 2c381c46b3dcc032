"""How well each policy decides, against an oracle, on a measured trace; then a live check.

1. Trace (:mod:`bench.trace`): every call of DCOF's three services, across
   phases of changing link, server load, device load and battery, is run on
   both sides on an emulated slow device and link.
2. Replay: each policy walks the trace, choosing a side per call from what it
   could know then (the device state and RTT of the moment, the rate the
   device's interface reports, which is the emulated link's, and the outcomes
   of the sides it chose before), and is charged the measured outcome of its
   choice. Policies: always local, always remote, DCOF's rule (online only in
   a critical condition, and then only for intensive functions), ours with the
   time objective and with the energy objective, and the oracle (the better
   side of every call, by time and by energy).
3. Live: a real client in ``auto`` mode runs the same calls under the same
   phases; its choices are compared with the replayed ones.
4. Decision cost: ``AdaptiveDecider.decide`` on a warm profile, against a raw
   pyzmq round trip measured in the same process.

Energy is the profiler's model (``smartphone-wifi``: Kumar & Lu 2010) applied
to the measured times and bytes; transfer times use the emulated link rate.
``python -m bench decisions [--quick] [--no-emulation]`` writes
``bench/results/decisions.json`` and ``decisions.md`` (``decisions_quick.*``
with ``--quick``), and saves the measured trace (``decisions_trace.json``, or
``decisions_trace_quick.json``);
``--replay PATH`` skips the measurement (and the live run) and replays a saved
trace, so every figure can be reproduced from a committed trace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import offload
from offload.profiler import AdaptiveDecider, DeviceState, EnergyModel, Policy, Profiler

from . import battery, progress, reshuffle, trace
from .decision_floor import noise_floor
from .decisions_md import markdown
from .rawzmq import RawEcho

RESULTS = Path(__file__).parent / "results"
ENERGY = EnergyModel("smartphone-wifi")
FIXED = ("always_local", "always_remote", "dcof_rule")
ASSUMED_MBIT = 27.0  # link rate for energy when the link is not emulated (Config's default)


def _profiler() -> Profiler:
    """A profiler for replays: this machine's own battery must not change the energy model."""
    return Profiler(profile_cache=None, power_supply=Path("/nonexistent/power_supply"))


def outcomes(step: trace.Step) -> tuple[float, float, float, float]:
    """(local s, remote s, local J, remote J) of one measured call."""
    rate = (step.mbit or ASSUMED_MBIT) * 1e6 / 8
    return (
        step.local_s,
        step.remote_s,
        ENERGY.local(step.local_s),
        ENERGY.remote(step.up / rate, step.down / rate, step.remote_s),
    )


def device_state(step: trace.Step, link_rate: bool = True) -> DeviceState:
    """The device as the client saw it at ``step``.

    A trace that did not record its interface's rate gets the emulated one of
    the moment; ``link_rate`` False: a device whose link reports no rate.
    """
    state = dict(step.device)
    state.setdefault("link_mbit", step.mbit)
    if not link_rate:
        state["link_mbit"] = None
    return DeviceState(**state)


class Replay:
    """Our decider walking the trace, learning only from the sides it chose.

    ``link_rate`` False: the device reports no link rate, so the decider
    learns the bandwidth from the transfers it makes, as on most devices.
    """

    def __init__(self, time_weight: float, link_rate: bool = True) -> None:
        self.decider = AdaptiveDecider(_profiler(), Policy(time_weight=time_weight))
        self.link_rate = link_rate

    def __call__(self, step: trace.Step) -> str:
        d, fn = self.decider, trace.SERVICES[step.service]
        d.profiler.device.state = device_state(step, self.link_rate)
        d.profiler.link.on_rtt(step.rtt_s)
        side = d.choose(d.profile(fn), step.size, step.server_up)
        if side == "local":
            d.observe_local(fn, step.size, step.local_s)
        else:
            d.observe_remote(fn, step.size, step.remote_s, step.server_s, step.up, step.down)
        return side


class DcofRule:
    """DCOF's execution manager: offline mode unless a critical condition; then online for
    intensive components (local time on record over ``intensive_s``, or none on record)."""

    def __init__(self, intensive_s: float = 0.05) -> None:
        self.policy = Policy()
        self.intensive_s = intensive_s
        self.local_time: dict[tuple[str, int], float] = {}

    def __call__(self, step: trace.Step) -> str:
        if not step.server_up:  # offline mode
            return "local"
        p, state = self.policy, DeviceState(**step.device)
        critical = (
            (state.battery is not None and state.battery < p.battery_low and not state.charging)
            or state.cpu_load > p.cpu_busy
            or state.memory_free < p.memory_low
        )
        seen = self.local_time.get((step.service, step.intensity))
        if critical and (seen is None or seen > self.intensive_s):
            return "remote"
        self.local_time[(step.service, step.intensity)] = step.local_s
        return "local"


def replay(steps: list[trace.Step]) -> dict[str, Any]:
    """Totals of every policy, and their ratios to the oracles."""
    policies: dict[str, Any] = {
        "always_local": lambda s: "local",
        "always_remote": lambda s: "remote",
        "dcof_rule": DcofRule(),
        "ours": Replay(1.0),
        "ours_energy": Replay(0.0),
        "ours_no_link_rate": Replay(1.0, link_rate=False),
        "ours_energy_no_link_rate": Replay(0.0, link_rate=False),
    }
    outs = [outcomes(s) for s in steps]
    oracle_time = sum(min(o[0], o[1]) for o in outs)
    oracle_energy = sum(min(o[2], o[3]) for o in outs)
    report: dict[str, Any] = {
        "oracle": {
            "time_s": oracle_time,
            "energy_j": oracle_energy,
            "time_ratio_to_oracle": 1.0,
            "energy_ratio_to_oracle": 1.0,
        }
    }
    choices: dict[str, list[str]] = {}
    for name, choose in policies.items():
        sides = [choose(s) for s in steps]
        choices[name] = sides
        t = sum(o[0] if c == "local" else o[1] for o, c in zip(outs, sides))
        e = sum(o[2] if c == "local" else o[3] for o, c in zip(outs, sides))
        report[name] = {
            "time_s": t,
            "energy_j": e,
            "time_ratio_to_oracle": t / oracle_time,
            "energy_ratio_to_oracle": e / oracle_energy,
            "remote_share": sides.count("remote") / len(sides),
            "agrees_with_time_oracle": sum(
                (c == "local") == (o[0] <= o[1]) for o, c in zip(outs, sides)
            )
            / len(sides),
        }
    report["_choices"] = choices
    return report


def first_calls(
    steps: list[trace.Step], choices: dict[str, list[str]], n: int = 10
) -> dict[str, dict[str, float]]:
    """Each policy's ratios to the oracle over only the first ``n`` calls of each function.

    What a new function costs while the decider learns it: the same sums as
    :func:`replay`'s, over those calls.
    """
    seen: dict[str, int] = {}
    first = []
    for i, step in enumerate(steps):
        seen[step.service] = seen.get(step.service, 0) + 1
        if seen[step.service] <= n:
            first.append(i)
    outs = [outcomes(steps[i]) for i in first]
    oracle_time = sum(min(o[0], o[1]) for o in outs)
    oracle_energy = sum(min(o[2], o[3]) for o in outs)
    report = {}
    for name, sides in choices.items():
        picked = [sides[i] for i in first]
        t = sum(o[0] if c == "local" else o[1] for o, c in zip(outs, picked))
        e = sum(o[2] if c == "local" else o[3] for o, c in zip(outs, picked))
        report[name] = {
            "time_ratio_to_oracle": t / oracle_time,
            "energy_ratio_to_oracle": e / oracle_energy,
        }
    return report


def reshuffled(steps: list[trace.Step], runs: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each policy's ratios over ``runs`` replays of the trace shuffled within each phase."""
    return reshuffle.reshuffled(
        steps,
        lambda s: s.phase,
        [phase.name for phase in trace.PHASES],
        lambda order, run: replay(order),
        FIXED,
        runs,
        seed,
        each=lambda runs: progress.steps(runs, "reshuffles", unit="order"),
    )


def live(bed: trace.Testbed, size: str, seed: int) -> dict[str, Any]:
    """The same calls from a real client in auto mode; its sides and turnarounds."""
    profiler = Profiler(
        profile_cache=None,
        power_supply=bed.power_supply,
        address=bed.address,
        interface=bed.interface,
    )
    sides: list[str] = []
    seconds: list[float] = []
    with offload.Client(bed.address, profiler=profiler) as client:
        client.ping(timeout=30)
        decider = client.decider
        decide = decider.decide

        def recording(*args: Any) -> Any:
            side, call_size = decide(*args)
            sides.append(side)
            return side, call_size

        decider.decide = recording  # type: ignore[method-assign,assignment]
        phase = None
        for now, service, _, args in trace.run(bed, size, seed):
            if now is not phase:  # a new phase: see it at once, not at the next sample
                phase = now
                profiler.device.sample()
            start = time.perf_counter()
            client.call(trace.SERVICES[service], args, {})
            seconds.append(time.perf_counter() - start)
    return {"sides": sides, "seconds": seconds}


def decision_cost(rounds: int = 9, calls: int = 20_000) -> dict[str, float]:
    """Median microseconds of one warm ``decide``, and of one raw pyzmq round trip.

    ``decide`` is timed in this process's CPU time (``process_time``): on a shared
    machine, wall time would count the moments others' processes hold the CPU.
    The round trip crosses another process, so it stays in wall time.
    """
    decider = AdaptiveDecider(_profiler())
    fn = trace.SERVICES["bubble_sort"]
    args = trace.arguments("bubble_sort", 2000, 0)
    for _ in range(3):
        decider.observe_local(fn, 16_001, 0.5)
        decider.observe_remote(fn, 16_001, 0.2, 0.15, 12_000, 12_000)
    per_round = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            decider.decide(fn, args, {}, True)
        per_round.append((time.process_time() - start) / calls * 1e6)
    with RawEcho() as raw:
        frames = [b"x" * 64]
        for _ in range(200):
            raw.roundtrip(frames)
        trips = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(500):
                raw.roundtrip(frames)
            trips.append((time.perf_counter() - start) / 500 * 1e6)
    decide_us, trip_us = statistics.median(per_round), statistics.median(trips)
    return {
        "decide_us": decide_us,
        "raw_zmq_roundtrip_us": trip_us,
        "decide_share_of_roundtrip": decide_us / trip_us,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench decisions")
    parser.add_argument("--quick", action="store_true", help="reduced trace (under 2 minutes)")
    parser.add_argument("--no-emulation", action="store_true", help="loopback, no CPU quota")
    parser.add_argument("--no-live", action="store_true", help="skip the live run")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument(
        "--replay", type=Path, metavar="PATH", help="replay a saved trace instead of measuring"
    )
    opts = parser.parse_args(argv)
    size, seed = "quick" if opts.quick else "full", opts.seed
    began = time.time()
    cost = decision_cost()
    print(
        f"decision: {cost['decide_us']:.2f} us "
        f"(raw pyzmq round trip {cost['raw_zmq_roundtrip_us']:.0f} us)"
    )
    live_run, meter = None, None
    unmeasured = battery.why_not(replayed=opts.replay is not None or opts.no_live)
    if opts.replay is not None:
        meta, steps = trace.load(opts.replay)
        size, seed, testbed = meta["size"], meta["seed"], meta["testbed"]
        testbed = dict(testbed, trace=f"replayed from {opts.replay.name}")
        testbed.setdefault(  # traces measured before the decider read the link's rate
            "link rate",
            trace.LINK_RATE_NOTE + "; this trace did not record it: each call's emulated rate "
            "is given",
        )
    else:
        with trace.Testbed(emulate=not opts.no_emulation, far=True) as bed:
            print("testbed:", json.dumps(bed.describe(), indent=1))
            print("measuring the trace (each call on both sides)")
            steps = trace.measure(bed, size, seed)
            testbed = bed.describe()
            trace.save(trace.saved_path(RESULTS, size), size, seed, testbed, steps)
            if not opts.no_live:
                path = battery.counter()
                with battery.Meter(path) if path is not None else contextlib.nullcontext() as meter:
                    live_run = live(bed, size, seed)
    results = replay(steps)
    shuffles = reshuffled(steps, runs=20, seed=seed)
    choices = results.pop("_choices")
    report: dict[str, Any] = {
        "size": size,
        "seed": seed,
        "testbed": testbed,
        "energy_profile": ENERGY.profile.name,
        "energy_source": ENERGY.source + ": " + ENERGY.profile.source,
        "calls": len(steps),
        "policies": results,
        "reshuffled": shuffles,
        "first_10_calls_of_each_function": first_calls(steps, choices),
        "noise_floor": noise_floor(steps, outcomes),
        "decision_cost": cost,
        "wall_s": None,
    }
    modelled = None
    if live_run is not None and meter is not None:  # the model, on the sides it chose
        modelled = sum(
            o[2] if side == "local" else o[3]
            for o, side in zip(map(outcomes, steps), live_run["sides"])
        )
    report["battery"] = battery.report(meter, modelled, unmeasured)
    if live_run is not None:
        ours = choices["ours"]
        agree = sum(a == b for a, b in zip(live_run["sides"], ours)) / len(ours)
        report["live"] = {
            "agreement_with_replayed_choices": agree,
            "remote_share": live_run["sides"].count("remote") / len(ours),
            "time_s": sum(live_run["seconds"]),
            "trace_oracle_time_s": results["oracle"]["time_s"],
        }
    report["wall_s"] = time.time() - began
    report["trace"] = [dict(asdict(s), ours=c) for s, c in zip(steps, choices["ours"])]
    RESULTS.mkdir(exist_ok=True)
    name = "decisions" if size == "full" else f"decisions_{size}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
    return report
