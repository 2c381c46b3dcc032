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
sleep is that much longer in this process). All use the same heartbeats. Energy is modelled (the
``smartphone-wifi`` profile: radio power while uploading at the link's rate,
idle power while waiting, CPU power while running here), not measured.

The failover gap is from the SIGKILL to the first call answered after it.
Migration's gain (item 7): :mod:`bench.fleet_migration`, on the same servers.

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
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import offload
from offload.profiler import EnergyModel

from . import emulation, fleet_app, fleet_cpu, fleet_migration
from .fleet_app import work

RESULTS = Path(__file__).parent / "results"
CLIENT_AT = (57.0488, 9.9217)
#: name -> (distance km, link Mbit/s, workers)
SERVERS = {"near": (1.5, 8.0, 1), "mid": (6.0, 40.0, 2), "far": (25.0, 100.0, 1)}
#: name -> the share of one CPU its server and workers may use (a cgroup's quota)
CPU = {"near": 0.5, "mid": 1.0, "far": 0.3}
WEAK_MBIT = 2.0
LOCAL_SLOWDOWN = 4.0
PHASES = ("steady", "mid busy", "far link weak", "mid dead", "mid back")
FULL = {"calls": 24, "payload": 120_000, "serve_s": 0.03}
QUICK = {"calls": 8, "payload": 120_000, "serve_s": 0.03}
CLIENT = {"mode": "remote", "heartbeat_timeout": 2.0, "profile_cache": "", "retry_interval": 1.0}


class FleetLink(emulation.SlowLink):
    """A :class:`~bench.emulation.SlowLink` with names of its own (three at once)."""

    def __init__(self, mbit: float, index: int, subnet: int = 80) -> None:
        super().__init__(mbit, subnet=subnet + index)
        tag = f"{os.getpid() % 10000}{index}"
        self.netns = f"offload-fleet-{tag}"
        self._host, self._peer = f"of{tag}a", f"of{tag}b"


class Fleet:
    """The three servers and their links; kill, restart, reshape."""

    def __init__(self, stack: contextlib.ExitStack, subnet: int = 80) -> None:
        self._stack = stack
        self.links: dict[str, FleetLink] = {}
        self.quotas = {n: stack.enter_context(fleet_cpu.CpuQuota(CPU[n], n)) for n in SERVERS}
        self.servers: dict[str, offload.LocalServer] = {}
        self.address: dict[str, str] = {}
        for index, (name, (_, mbit, _)) in enumerate(SERVERS.items()):
            self.links[name] = stack.enter_context(FleetLink(mbit, index, subnet))
            self.start(name)
        stack.callback(self.stop)

    def start(self, name: str) -> None:
        km, _, workers = SERVERS[name]
        link = self.links[name]
        location = f"{CLIENT_AT[0] + km / 111.2:.5f},{CLIENT_AT[1]:.5f}"
        bind = self.address.get(name, link.bind)
        server = offload.serve_local(
            ["bench.fleet_app"],
            workers=workers,
            bind=bind,
            launcher=[*self.quotas[name].launcher, *link.launcher],
            extra_args=["--log-level", "ERROR", "--name", name, "--location", location],
        )
        self.servers[name] = server
        self.address[name] = server.address
        ready(server.address, workers)

    def kill(self, name: str) -> None:
        process = self.servers[name].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def alive(self, name: str) -> bool:
        return self.servers[name].process.poll() is None

    def reset(self) -> None:
        """Every link at its rate, every server running."""
        for name, (_, mbit, _) in SERVERS.items():
            if self.links[name].mbit != mbit:
                self.links[name].set_rate(mbit)
            if not self.alive(name):
                self.servers[name].stop()
                self.start(name)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def name_of(self, pid: int) -> str:
        """The server whose worker answered (``pid``: its parent), or "here"."""
        return next((n for n, s in self.servers.items() if s.process.pid == pid), "here")


def ready(address: str, workers: int, timeout: float = 60.0) -> None:
    """Wait until the server at ``address`` says all its ``workers`` are ready (started).

    A restarted server answers PINGs seconds before its workers have started;
    the phase begins once they have, so every policy meets the same server
    (ours leaves a server out while its PONG says none is ready; a fixed
    policy's first call would wait there, and the per-call oracle would take
    the calls after that wait from whichever policy paid it).
    """
    deadline = time.monotonic() + timeout
    with offload.Client(address, **CLIENT) as client:
        while True:
            with contextlib.suppress(offload.OffloadError, TimeoutError):
                load = client.ping(timeout=2).get("load", {})
                if load.get("ready", workers) >= workers:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address}: its workers did not start in {timeout:g} s")
            time.sleep(0.1)


@contextlib.contextmanager
def busy(address: str, workers: int) -> Iterator[None]:
    """Another client keeps ``3 * workers`` calls of 0.3 s queued on ``address``."""
    stop = threading.Event()

    def load() -> None:
        with offload.Client(address, **CLIENT) as other:
            pending: list[Any] = []
            while not stop.is_set():
                pending = [f for f in pending if not f.done()]
                while len(pending) < 3 * workers:
                    pending.append(other.submit(work, b"", 0.3))
                time.sleep(0.02)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(1.5)  # its load shows in the server's PONGs
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


# -- policies: each gives a call function, (payload, serve_s) -> where it ran ----------------------

Call = Callable[[bytes, float], str]


def _here(serve_s: float) -> str:
    work(b"", serve_s)  # as slow here as fleet_app.SLOWDOWN says
    return "here"


@contextlib.contextmanager
def fixed(fleet: Fleet, choose: Callable[[dict[str, offload.Client]], list[str]]) -> Iterator[Call]:
    """Calls go to the first answering server of ``choose`` (a preference list), else here."""
    with contextlib.ExitStack() as stack:
        clients = {
            n: stack.enter_context(offload.Client(a, **CLIENT)) for n, a in fleet.address.items()
        }
        for client in clients.values():
            client.server_up()  # the first answer, before the clock runs

        def call(payload: bytes, serve_s: float) -> str:
            for name in choose(clients):
                if clients[name].server_up():
                    try:
                        return fleet.name_of(clients[name].call(work, (payload, serve_s), {}))
                    except offload.OffloadError:
                        continue
            return _here(serve_s)

        yield call


@contextlib.contextmanager
def ours(fleet: Fleet) -> Iterator[Call]:
    """``servers=[...]`` in ``auto`` mode: the per-call choice among here and the servers."""
    settings = {**CLIENT, "mode": "auto", "probation": 2.0}
    with offload.Client(servers=list(fleet.address.values()), **settings) as client:

        def call(payload: bytes, serve_s: float) -> str:
            return fleet.name_of(client.call(work, (payload, serve_s), {}))

        yield call


def _lowest_rtt(clients: dict[str, offload.Client]) -> list[str]:
    rtts = {}
    for name, client in clients.items():
        start = time.perf_counter()
        with contextlib.suppress(offload.OffloadError):
            for _ in range(3):
                client.ping(timeout=2)
            rtts[name] = time.perf_counter() - start
    return sorted(rtts, key=rtts.__getitem__)


def policies(fleet: Fleet, rng: random.Random) -> dict[str, Callable[[], Any]]:
    nearest = min(SERVERS, key=lambda n: SERVERS[n][0])
    ranked: list[str] = []

    def by_rtt(clients: dict[str, offload.Client]) -> list[str]:
        if not ranked:
            ranked.extend(_lowest_rtt(clients))
        return ranked[:1]

    return {
        "nearest": lambda: fixed(fleet, lambda _: [nearest]),
        "lowest_rtt": lambda: fixed(fleet, by_rtt),
        "random": lambda: fixed(fleet, lambda c: [rng.choice(sorted(c))]),
        "primary_backup": lambda: fixed(fleet, lambda _: ["mid", "near"]),
        "ours": lambda: ours(fleet),
    }


# -- one run of the phases ----------------------------------------------------------------------


def run_policy(fleet: Fleet, make: Callable[[], Any], opts: dict[str, Any]) -> dict[str, Any]:
    payload = os.urandom(opts["payload"])
    calls: list[dict[str, Any]] = []
    killed_at = None
    with make() as call:
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
                    start = time.perf_counter()
                    where = call(payload, opts["serve_s"])
                    end = time.perf_counter()
                    calls.append({"phase": phase, "s": end - start, "where": where, "end": end})
    gap = None
    if killed_at is not None:
        after = [c["end"] for c in calls if c["end"] > killed_at and c["where"] != "mid"]
        gap = min(after) - killed_at if after else None
    for c in calls:
        del c["end"]
    return {"calls": calls, "failover_gap_s": gap}


def energy(call: dict[str, Any], payload: int, model: EnergyModel) -> float:
    """Joules of one call, modelled: the upload at its link's rate, then waiting; or CPU here."""
    if call["where"] not in SERVERS:
        return model.local(call["s"])
    mbit = SERVERS[call["where"]][1]
    if call["where"] == "far" and call["phase"] in ("far link weak", "mid dead", "mid back"):
        mbit = WEAK_MBIT
    up = min(payload * 8 / (mbit * 1e6), call["s"])
    return model.remote(up, 0.0, call["s"])


def summarize(runs: dict[str, dict[str, Any]], payload: int) -> dict[str, Any]:
    """Totals per policy, the oracle (per call, the best measured outcome), and the ratios."""
    model = EnergyModel("smartphone-wifi")
    names = list(runs)
    n = len(runs[names[0]]["calls"])
    oracle = []
    for i in range(n):
        best = min((runs[p]["calls"][i] for p in names), key=lambda c: c["s"])
        oracle.append(dict(best))
    everything = {**{p: runs[p]["calls"] for p in names}, "oracle": oracle}
    totals = {}
    for name, calls in everything.items():
        where: dict[str, int] = {}
        for c in calls:
            where[c["where"]] = where.get(c["where"], 0) + 1
        totals[name] = {
            "time_s": sum(c["s"] for c in calls),
            "energy_j": sum(energy(c, payload, model) for c in calls),
            "where": where,
            "per_phase_s": {ph: sum(c["s"] for c in calls if c["phase"] == ph) for ph in PHASES},
            "failover_gap_s": runs[name]["failover_gap_s"] if name in runs else None,
        }
    best_t, best_e = totals["oracle"]["time_s"], totals["oracle"]["energy_j"]
    for t in totals.values():
        t["time_ratio_to_oracle"] = t["time_s"] / best_t
        t["energy_ratio_to_oracle"] = t["energy_j"] / best_e
    return totals


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
        "calls": {name: run["calls"] for name, run in runs.items()},
        "migration": migration,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(report, indent=1))
    (args.out / "fleet.md").write_text(markdown(report))
    figure(report, args.out / "fleet.png")
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    setup, policies_ = report["setup"], report["policies"]
    servers = ", ".join(f"{n} ({_server(s)})" for n, s in setup["servers"].items())
    lines = [
        "# Many servers: per-call choice against fixed policies and the oracle",
        "",
        f"Servers: {servers}. {setup['calls']} sequential calls per phase "
        f"({', '.join(setup['phases'])}), each {setup['payload'] // 1000} KB up and "
        f"{setup['serve_s'] * 1000:g} ms of service; here is {setup['local_slowdown']:g}x slower. "
        "Oracle: per call, the best outcome measured under any policy. Energy is modelled."
        + (" Quick run." if report["quick"] else ""),
        "",
        "| policy | time (s) | x oracle | energy (J) | x oracle | failover gap (s) | calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in sorted(policies_.items(), key=lambda kv: kv[1]["time_s"]):
        gap = p.get("failover_gap_s")
        sides = ", ".join(f"{k} {v}" for k, v in sorted(p["where"].items()))
        lines.append(
            f"| {name} | {p['time_s']:.2f} | {p['time_ratio_to_oracle']:.2f} | "
            f"{p['energy_j']:.2f} | {p['energy_ratio_to_oracle']:.2f} | "
            f"{'-' if gap is None else f'{gap:.2f}'} | {sides} |"
        )
    lines += [
        "",
        "Time per phase (s):",
        "",
        "| policy | " + " | ".join(setup["phases"]) + " |",
        "|---|" + "---|" * len(setup["phases"]),
    ]
    for name, p in sorted(policies_.items(), key=lambda kv: kv[1]["time_s"]):
        cells = " | ".join(f"{p['per_phase_s'][ph]:.2f}" for ph in setup["phases"])
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n\n" + fleet_migration.markdown(report.get("migration"))


def _server(s: dict[str, Any]) -> str:
    """One server of the setup, for people: distance, link, workers, CPU quota."""
    quota = f", {s['cpu']:g} CPU" if "cpu" in s else ""
    workers = f"{s['workers']} worker{'s' * (s['workers'] > 1)}"
    return f"{s['km']} km, {s['mbit']:g} Mbit/s, {workers}{quota}"


def figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup, policies_ = report["setup"], report["policies"]
    names = sorted(policies_, key=lambda n: policies_[n]["time_s"])
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(names)
    for phase in setup["phases"]:
        values = [policies_[n]["per_phase_s"][phase] for n in names]
        ax.bar(names, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("total call time (s)")
    ax.set_title("Per-call server choice vs fixed policies (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
