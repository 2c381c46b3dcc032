"""``bench decisions`` over three servers (issue 17, item 2): here or which server, per call.

1. Trace: every call runs here (the emulated device: :data:`bench.fleet.LOCAL_SLOWDOWN`
   times slower) and on each of three servers, each in its own network namespace
   behind its own ``tc tbf`` link with its own worker count (:class:`bench.fleet.Fleet`:
   near 8 Mbit/s and 1 worker, mid 40 Mbit/s and 2, far 100 Mbit/s and 1). Each
   server's PING (its RTT and the load its PONG reports) is recorded before the call.
   Phases change which one is best: a link weakens to 2 Mbit/s, another client
   keeps a server's workers busy (:func:`bench.fleet.busy`), a server's copy of
   ``dense`` is another version (the call is refused: the wasted round trip is
   measured and charged, and the call runs elsewhere, as the client does), a
   server is killed.
   Calls are :func:`bench.fleet_app.dense` (1 us of service a byte) and
   :func:`~bench.fleet_app.light` (0.1 us a byte) on 2-400 kB of input: services
   are sleeps, as in ``bench fleet``, so that three servers and the client on two
   shared CPUs measure the links and queues rather than the neighbours.
2. Replay (:mod:`bench.decisions_servers_replay`): the oracle takes, per call, the
   best of here and every server up; ``ours`` is the real multi-server choice.

``python -m bench decisions_servers [--quick]`` (root) writes
``bench/results/decisions_servers.json`` and ``.md`` (``decisions_servers_quick.*``
with ``--quick``) and the trace (``decisions_servers_trace[_quick].json``);
``--replay PATH`` replays a saved trace in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import offload
from offload.profiler.sizes import call_size

from . import emulation, fleet, fleet_app
from .decisions_servers_replay import (
    FIXED,
    NAMES,
    SERVICES,
    Step,
    loss_by_phase,
    replay,
    reshuffled,
    unforeseen,
)
from .report_text import UNFORESEEN
from .trace import Recorder

RESULTS = Path(__file__).parent / "results"
SUBNET = 90  # 10.90-92.0.0/24: apart from bench fleet's, which may run at the same time


@dataclass(frozen=True)
class Phase:
    """Which servers' links are weak, which are kept busy by another client, which are down,
    which hold another version of :func:`~bench.fleet_app.dense` (so refuse its calls)."""

    name: str
    weak: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    new_code: tuple[str, ...] = ()


PHASES = (
    Phase("steady"),
    Phase("far-link-weak", weak=("far",)),
    Phase("mid-busy", busy=("mid",)),
    Phase("only-near-good", weak=("far",), busy=("mid",)),
    Phase("far-new-version", new_code=("far",)),
    Phase("mid-down-far-busy", busy=("far",), down=("mid",)),  # last: mid is not restarted
)


def links_changed() -> dict[str, set[str]]:
    """Phase -> the servers whose link weakened or recovered as it began (nothing announces
    that: a PING's round trip does not change behind ``tbf``)."""
    return {
        p.name: set(p.weak) ^ set(before.weak)
        for before, p in itertools.pairwise(PHASES)
        if set(p.weak) ^ set(before.weak)
    }


SIZES = {
    "quick": [2_000, 20_000, 60_000, 150_000, 400_000],
    "tiny": [2_000, 60_000],  # bench/test_decisions.py
    "full": [2_000, 8_000, 20_000, 40_000, 60_000, 100_000, 150_000, 250_000, 400_000],
}
ROUNDS = {"tiny": 1, "quick": 1, "full": 2}


def _dense_elsewhere(data: bytes) -> int:
    """:func:`bench.fleet_app.dense` as another version of the code has it (another fingerprint)."""
    time.sleep(len(data) * fleet_app.DENSE_S_PER_BYTE * fleet_app.SLOWDOWN)
    return len(data) + 0


_dense_elsewhere.__module__, _dense_elsewhere.__qualname__ = "bench.fleet_app", "dense"
#: Sent to a server of a ``new_code`` phase, the call carries a fingerprint that server does
#: not have, exactly as when the server's copy changed: it is refused (VersionMismatch).
OTHER_VERSION = offload.offload(_dense_elsewhere)


def plan(size: str, seed: int) -> list[tuple[Phase, str, int]]:
    """(phase, service, payload bytes) for every call, in trace order."""
    rng = random.Random(seed)
    calls = []
    for phase in PHASES:
        batch = [(s, n) for s in SERVICES for n in SIZES[size]] * ROUNDS[size]
        rng.shuffle(batch)
        calls += [(phase, s, n) for s, n in batch]
    return calls


@contextlib.contextmanager
def conditions(servers: fleet.Fleet, phase: Phase) -> Iterator[None]:
    """Hold ``phase``'s conditions on the servers while the block runs."""
    servers.reset()
    for name in phase.weak:
        servers.links[name].set_rate(fleet.WEAK_MBIT)
    for name in phase.down:
        servers.kill(name)
    with contextlib.ExitStack() as stack:
        for name in phase.busy:
            stack.enter_context(fleet.busy(servers.address[name], fleet.SERVERS[name][2]))
        yield


def _load(info: dict[str, Any]) -> dict[str, Any]:
    """Calls queued or running (``others``), workers, calls ended per second, a call's mean
    run and the clients with calls waiting, from a PONG's self-description."""
    load = info.get("load") if isinstance(info.get("load"), dict) else {}
    assert isinstance(load, dict)
    rate, run = load.get("rate_per_s"), load.get("service_s")
    return {
        "others": int(load.get("queued", 0)) + int(load.get("running", 0)),
        "workers": max(int(load.get("workers") or info.get("workers") or 1), 1),
        "rate": float(rate) if isinstance(rate, (int, float)) else 0.0,
        "service_s": float(run) if isinstance(run, (int, float)) else 0.0,
        "clients": load.get("clients"),
    }


def measure(servers: fleet.Fleet, size: str, seed: int) -> list[Step]:
    """Run every call of the plan here and on every server up; return the trace."""
    steps: list[Step] = []
    recorders = {n: Recorder() for n in NAMES}
    with contextlib.ExitStack() as stack:
        clients = {
            n: stack.enter_context(
                offload.Client(servers.address[n], decider=recorders[n], profile_cache="")
            )
            for n in NAMES
        }
        for client in clients.values():
            client.ping(timeout=30)
        held = contextlib.ExitStack()
        current: Phase | None = None
        with held:
            for phase, service, nbytes in plan(size, seed):
                if phase is not current:
                    held.close()
                    held.enter_context(conditions(servers, phase))
                    current = phase
                    print(f"  phase {phase.name}: from call {len(steps) + 1}")
                fn, payload = SERVICES[service], os.urandom(nbytes)
                start = time.perf_counter()
                fn.__wrapped__(payload)
                local_s = time.perf_counter() - start
                there: dict[str, dict[str, Any] | None] = {}
                for name in NAMES:
                    if name in phase.down:
                        there[name] = None
                        continue
                    start = time.perf_counter()
                    info = clients[name].ping(timeout=5)
                    rtt = time.perf_counter() - start
                    load = _load(info)
                    refused = name in phase.new_code and service == "dense"
                    if refused:
                        turnaround, server_s, up, down = _refused(clients[name], payload), 0.0, 0, 0
                        up = call_size(fn, (payload,), {})  # energy: as if all were sent (a bound)
                    else:
                        clients[name].call(fn, (payload,), {}, mode="remote")
                        turnaround, server_s, up, down = recorders[name].last
                    weak = name in phase.weak
                    there[name] = {
                        "mbit": fleet.WEAK_MBIT if weak else fleet.SERVERS[name][1],
                        "rtt_s": rtt,
                        **load,
                        "remote_s": turnaround,
                        "server_s": server_s,
                        "up": up,
                        "down": down,
                        **({"refused": True} if refused else {}),
                    }
                size_b = call_size(fn, (payload,), {})
                steps.append(Step(phase.name, service, size_b, local_s, there))
    return steps


def _refused(client: offload.Client, payload: bytes) -> float:
    """Seconds of the round trip in which a server of another version refuses a call."""
    start = time.perf_counter()
    try:
        client.call(OTHER_VERSION, (payload,), {}, mode="remote")
    except offload.VersionMismatch:
        return time.perf_counter() - start
    raise RuntimeError("a server with another version of dense ran it")


def trace_path(size: str) -> Path:
    return RESULTS / f"decisions_servers_trace{'' if size == 'full' else '_' + size}.json"


def markdown(report: dict[str, Any]) -> str:
    """The results as a table (``decisions_servers.md``)."""
    lines = [
        f"# Decisions over three servers ({report['size']}, {report['calls']} calls)",
        "",
        "| policy | time / oracle | energy / oracle | 20 orders: time mean (worst) | "
        "energy mean (worst) | orders better than every fixed policy |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in report["policies"].items():
        s = report["reshuffled"].get(name, {})
        shuffled = (
            f"{s['time_ratio_to_oracle_mean']:.2f} ({s['time_ratio_to_oracle_max']:.2f}) | "
            f"{s['energy_ratio_to_oracle_mean']:.2f} ({s['energy_ratio_to_oracle_max']:.2f})"
            if s
            else "- | -"
        )
        beats = s.get("orders_better_than_every_fixed_policy", "")
        lines.append(
            f"| {name} | {p['time_ratio_to_oracle']:.3f} | {p['energy_ratio_to_oracle']:.3f} | "
            f"{shuffled} | {beats} |"
        )
    lines += ["", f"Phases: {', '.join(report['phases'])}. Fixed policies: {', '.join(FIXED)}."]
    ref = report["unforeseen"]
    lines += [
        "",
        f"Unforeseen reference: a decider that {UNFORESEEN} pays "
        f"{ref['time_ratio_to_oracle']:.3f} of the oracle's time and "
        f"{ref['energy_ratio_to_oracle']:.3f} of its energy.",
    ]
    lines += ["", "Where ours loses (excess over the oracle; first 6 calls of the phase):", ""]
    for name, unit in (("ours", "s"), ("ours_energy", "J")):
        for phase, p in report["loss_by_phase"][name].items():
            lines.append(
                f"- {name}, {phase}: {p['excess']:.2f} {unit} over the oracle's "
                f"{p['oracle']:.2f} {unit} ({p['excess_first_6_calls']:.2f} in the first 6 calls)"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench decisions_servers")
    parser.add_argument("--quick", action="store_true", help="reduced trace (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--replay", type=Path, metavar="PATH", help="replay a saved trace")
    opts = parser.parse_args(argv)
    size, seed, began = "quick" if opts.quick else "full", opts.seed, time.time()
    if opts.replay is not None:
        data = json.loads(opts.replay.read_text())
        size, seed, load = data["size"], data["seed"], data["loadavg"]
        steps = [Step(**s) for s in data["steps"]]
    else:
        why = emulation.available()["link"]
        if why is not None:
            raise SystemExit(f"bench decisions_servers needs network namespaces: {why}")
        fleet_app.SLOWDOWN = fleet.LOCAL_SLOWDOWN  # this process is the emulated device
        with contextlib.ExitStack() as stack:
            steps = measure(fleet.Fleet(stack, subnet=SUBNET), size, seed)
        load = os.getloadavg()
        body = ",\n".join(json.dumps(asdict(s)) for s in steps)
        head = json.dumps({"size": size, "seed": seed, "loadavg": load})[:-1]
        trace_path(size).write_text(f'{head}, "steps": [\n{body}\n]}}\n')
    report: dict[str, Any] = {
        "size": size,
        "seed": seed,
        "calls": len(steps),
        "phases": [p.name for p in PHASES],
        "servers": {n: dict(zip(("km", "mbit", "workers"), fleet.SERVERS[n])) for n in NAMES},
        "weak_mbit": fleet.WEAK_MBIT,
        "local_slowdown": fleet.LOCAL_SLOWDOWN,
        "energy": "modelled (smartphone-wifi) from the measured times and bytes",
        "loadavg_at_trace_end": load,
        "policies": replay(steps, seed),
        "reshuffled": reshuffled(steps, [p.name for p in PHASES], runs=20, seed=seed),
        "loss_by_phase": loss_by_phase(steps),
        "unforeseen": unforeseen(steps, links_changed()),
        "trace": trace_path(size).name
        if opts.replay is None
        else f"replayed from {opts.replay.name}",
        "wall_s": time.time() - began,
    }
    stem = "decisions_servers" + ("" if size == "full" else f"_{size}")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return report
