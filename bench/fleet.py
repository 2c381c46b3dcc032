"""Many servers (issue 13, item 10): which server each call goes to, as conditions change.

Three edge servers, each in its own network namespace behind a veth pair
shaped by ``tc tbf`` (:class:`bench.emulation.SlowLink`), with different
rates, worker counts and CPU quotas (:mod:`bench.fleet_cpu`: a cgroup each,
``CPU`` of one CPU), and locations at different distances from the client.
A workload of sequential calls (an upload of ``payload`` bytes and
``serve_s`` of service, :func:`bench.fleet_app.work`) runs through five
phases: steady; ``mid`` busy (another client keeps its workers' queue full);
``far``'s link weakens (100 to 2 Mbit/s); ``mid`` killed (SIGKILL); ``mid``
back (restarted on its address; the phase begins once its workers have
started, :func:`ready`).

Policies, each run through the same phases from a cold client:

* ``nearest``: the server nearest by distance, always;
* ``lowest_rtt``: the server with the lowest RTT measured at the start;
* ``random``: a server drawn at random per call;
* ``primary_backup``: today's one-server behaviour, ``server`` plus a backup
  used when the primary does not answer;
* ``ours``: ``servers=[...]``, the per-call choice of :mod:`offload.profiler.choice`
  with failover (:mod:`offload.usable`);
* ``oracle``: for each call, the fastest outcome measured for that call under
  any policy (random tries every server in every phase): a lower bound made
  of measured outcomes, as ``bench decisions`` does, not a policy that ran.

``ours`` runs in ``auto`` mode (here is a candidate too); the fixed policies
send every call to their server and run it here only when that server does
not answer (as ``auto`` mode does today: DCOF's offline mode). This device
is emulated as ``LOCAL_SLOWDOWN`` times slower than a server (the service
sleep is that much longer in this process), and this process runs in a cgroup of its
own (:class:`bench.fleet_cpu.Device`), so that the CPU load its client sees is the
device's, not other jobs' on a shared host. All use the same heartbeats. Energy is modelled (the
``smartphone-wifi`` profile: radio power while uploading at the link's rate,
idle power while waiting, CPU power while running here), not measured.

The failover gap is from the SIGKILL to the first call answered after it.
Migration's gain (item 7): :mod:`bench.fleet_migration`, on the same servers.
For ``ours``, each call in ``fleet.json`` also holds what the client predicted
just before it (``predicted``: the side it would choose and its estimate of
each side, from ``offload.explain``), to see where time is lost.

The setup is :mod:`bench.fleet_setup`, the policies :mod:`bench.fleet_policies`,
the oracle, table and figure :mod:`bench.fleet_report`.

``python -m bench fleet [--quick]`` (root) writes ``bench/results/fleet.json``
(``policies.<name>.time_ratio_to_oracle`` among others), ``fleet.md`` and
``fleet.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import offload

from . import emulation, fleet_app, fleet_cpu, fleet_migration
from .fleet_policies import policies
from .fleet_report import PHASES, figure, markdown, summarize, unforeseen
from .fleet_setup import CLIENT, CPU, SERVERS, WEAK_MBIT, Fleet, busy

__all__ = ["CPU", "PHASES", "QUICK", "SERVERS", "main", "markdown", "run_policy", "summarize"]

RESULTS = Path(__file__).parent / "results"
LOCAL_SLOWDOWN = 4.0
FULL = {"calls": 24, "payload": 120_000, "serve_s": 0.03}
QUICK = {"calls": 8, "payload": 120_000, "serve_s": 0.03}


def run_policy(fleet: Fleet, make: Callable[[], Any], opts: dict[str, Any]) -> dict[str, Any]:
    payload = os.urandom(opts["payload"])
    calls: list[dict[str, Any]] = []
    killed_at = None
    with make() as call:
        predict = getattr(call, "predict", None)
        for phase in PHASES:
            with contextlib.ExitStack() as env:
                if phase == "mid busy":
                    env.enter_context(busy(fleet.address["mid"], SERVERS["mid"][2]))
                elif phase == "far link weak":
                    fleet.links["far"].set_rate(WEAK_MBIT)
                elif phase == "mid dead":
                    fleet.kill("mid")
                    killed_at = time.perf_counter()
                elif phase == "mid back":
                    fleet.start("mid")
                for _ in range(opts["calls"]):
                    said = predict(payload, opts["serve_s"]) if predict else None
                    start = time.perf_counter()
                    where = call(payload, opts["serve_s"])
                    end = time.perf_counter()
                    calls.append({"phase": phase, "s": end - start, "where": where, "end": end})
                    if said is not None:
                        calls[-1]["predicted"] = said
    gap = None
    if killed_at is not None:
        after = [c["end"] for c in calls if c["end"] > killed_at and c["where"] != "mid"]
        gap = min(after) - killed_at if after else None
    for c in calls:
        del c["end"]
    return {"calls": calls, "failover_gap_s": gap}


def main(argv: list[str] | None = None, out: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench fleet")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['calls']} calls per phase")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=out, help="where fleet.json, .md, .png go")
    args = parser.parse_args(argv)
    why = emulation.available()["link"]
    if why is not None:
        raise SystemExit(f"bench fleet needs network namespaces: {why}")
    why = fleet_cpu.available()
    if why is not None:
        raise SystemExit(f"bench fleet needs CPU quotas (cgroups): {why}")
    opts = dict(QUICK if args.quick else FULL)
    fleet_app.SLOWDOWN = LOCAL_SLOWDOWN  # this process is the emulated device
    rng = random.Random(args.seed)
    runs: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(fleet_cpu.Device())  # the device's CPU load is its own
        fleet = Fleet(stack)
        for name, make in policies(fleet, rng).items():
            fleet.reset()
            started = time.monotonic()
            runs[name] = run_policy(fleet, make, opts)
            took = time.monotonic() - started
            total = sum(c["s"] for c in runs[name]["calls"])
            print(f"{name}: {total:.2f} s of calls ({took:.0f} s with the phase changes)")
        migration = fleet_migration.run(fleet, CLIENT, args.quick)
    report = {
        "quick": args.quick,
        "setup": {
            "servers": {
                n: {"km": km, "mbit": mbit, "workers": w, "cpu": CPU[n]}
                for n, (km, mbit, w) in SERVERS.items()
            },
            "weak_mbit": WEAK_MBIT,
            "local_slowdown": LOCAL_SLOWDOWN,
            "phases": list(PHASES),
            **opts,
            "heartbeat_interval_s": offload.Config().heartbeat_interval,
            "energy": "modelled (smartphone-wifi)",
        },
        "policies": summarize(runs, opts["payload"]),
        "unforeseen": unforeseen(runs, opts["payload"]),
        "calls": {name: run["calls"] for name, run in runs.items()},
        "migration": migration,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(report, indent=1))
    (args.out / "fleet.md").write_text(markdown(report))
    figure(report, args.out / "fleet.png")
    print(markdown(report))
    return report
