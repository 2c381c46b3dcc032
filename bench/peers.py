"""``offload`` beside raw pyzmq, a minimal RPC, Pyro5, execnet, ProcessPoolExecutor and clusters.

Issue 16 asks where a no-op call's time goes against what else one could
use on one machine. Each system of :data:`bench.peer_clients.PEERS` gets one
remote worker process on loopback and the same calls: a no-op, and echoes
of a random int64 array of 1 MB and 128 MB. The systems run one at a time,
in rotation (each round starts, measures and stops every system, the next
round starting one further down the list), three rounds in a full run, so
a shared machine's slow spells fall on all of them. Per system:

- no-op p50 and p99 (medians of the rounds' figures) and their ratio to raw pyzmq's;
- CPU per no-op call in the calling process (``time.process_time``) and on
  the server side (``psutil`` CPU times of the system's server processes and
  their children; ``offload``'s edge-server front and its worker apart and
  summed), over every no-op call of every round (10,000 or more in a full
  run; fewer for Ray and Dask, whose calls take milliseconds);
- echo throughput, MB/s counting both ways, and its ratio to raw pyzmq's.

Systems that are not installed are skipped and reported so
(``pip install -e '.[peers]'``); ``--no-clusters`` leaves Ray and Dask out
and the results say so. ``python -m bench peers [--quick]`` writes
``bench/results/peers.json`` and ``peers.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .dcof_report import describe, machine
from .overhead import _pct
from .peer_clients import PEERS, Peer
from .peers_md import markdown
from .progress import steps

RESULTS = Path(__file__).parent / "results"

#: Rounds, no-op calls per round (clusters apart), echo calls per round and the big echo's size.
COUNTS = {
    "full": {
        "rounds": 3,
        "noop": 3400,
        "cluster_noop": 300,
        "echo_1": 30,
        "echo_big": 3,
        "big": 128,
    },
    "quick": {
        "rounds": 3,
        "noop": 400,
        "cluster_noop": 60,
        "echo_1": 10,
        "echo_big": 1,
        "big": 128,
    },
    "smoke": {"rounds": 1, "noop": 50, "cluster_noop": 20, "echo_1": 2, "echo_big": 1, "big": 16},
}
#: Below this 1 MB echo throughput (MB/s) the big echo is not tried: it would take minutes.
SLOW_MBPS = 50.0


def _version(package: str) -> str:
    if package == "concurrent":
        return f"Python {platform.python_version()}"
    return importlib.metadata.version("pyzmq" if package == "zmq" else package)


def _cpu(groups: dict[str, list[psutil.Process]]) -> dict[str, dict[int, float]]:
    """User plus system CPU seconds of each live process, by group and pid."""
    out: dict[str, dict[int, float]] = {}
    for name, procs in groups.items():
        out[name] = {}
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # gone: counted in neither snapshot
                out[name][proc.pid] = sum(proc.cpu_times()[:2])
    return out


def _spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> Any:
    return {
        name: sum(after[name][pid] - cpu for pid, cpu in pids.items() if pid in after[name])
        for name, pids in before.items()
    }


def _timed(fn: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure_round(peer: Peer, counts: dict[str, int], arrays: dict[int, Any]) -> dict[str, Any]:
    """Start ``peer``, time its no-op and echo calls and read its CPU; then stop it."""
    start = time.perf_counter()
    with peer.start() as calls:
        calls.noop()
        row: dict[str, Any] = {"startup_s": time.perf_counter() - start}
        n = counts["cluster_noop" if peer.cluster else "noop"]
        _timed(calls.noop, max(20, n // 10))  # warm: connections, caches, imports
        groups = calls.server()
        cpu_before, client_before = _cpu(groups), time.process_time()
        noop = _timed(calls.noop, n)
        row["client_cpu_s"] = time.process_time() - client_before
        row["server_cpu_s"] = _spent(cpu_before, _cpu(groups))
        row |= {"calls": n, "p50_us": _pct(noop, 0.5) * 1e6, "p99_us": _pct(noop, 0.99) * 1e6}
        for mb, key in ((1, "echo_1"), (counts["big"], "echo_big")):
            if mb > 1 and row["echo_1MB_MBps"] < SLOW_MBPS:
                row[f"echo_{mb}MB_MBps"] = None
                continue
            array = arrays[mb]
            assert np.array_equal(calls.echo(array), array)
            row[f"echo_{mb}MB_MBps"] = (
                2
                * mb
                / statistics.median(_timed(functools.partial(calls.echo, array), counts[key]))
            )
    return row


def summarise(rounds: list[dict[str, Any]], big: int) -> dict[str, Any]:
    """One system's figures over its rounds: medians of the rounds for latency, totals for CPU."""
    calls = sum(r["calls"] for r in rounds)
    server = {
        g: sum(r["server_cpu_s"][g] for r in rounds) / calls * 1e6
        for g in rounds[0]["server_cpu_s"]
    }
    out: dict[str, Any] = {
        "noop_p50_us": statistics.median(r["p50_us"] for r in rounds),
        "noop_p99_us": statistics.median(r["p99_us"] for r in rounds),
        "noop_calls": calls,
        "client_cpu_us": sum(r["client_cpu_s"] for r in rounds) / calls * 1e6,
        "server_cpu_us": server,
        "server_cpu_total_us": sum(server.values()),
        "startup_s": statistics.median(r["startup_s"] for r in rounds),
    }
    for mb in (1, big):
        got = [r[f"echo_{mb}MB_MBps"] for r in rounds if r[f"echo_{mb}MB_MBps"] is not None]
        out[f"echo_{mb}MB_MBps"] = statistics.median(got) if got else None
    return out


def against_raw(rows: dict[str, Any], big: int) -> None:
    """Add each measured system's ratios to raw pyzmq's figures of the same run."""
    raw = rows.get("raw", {})
    if "noop_p50_us" not in raw:
        return
    for row in rows.values():
        if "noop_p50_us" not in row:
            continue
        row["noop_p50_vs_raw"] = row["noop_p50_us"] / raw["noop_p50_us"]
        row["noop_p99_vs_raw"] = row["noop_p99_us"] / raw["noop_p99_us"]
        for mb in (1, big):
            mine, base = row[f"echo_{mb}MB_MBps"], raw[f"echo_{mb}MB_MBps"]
            row[f"echo_{mb}MB_vs_raw"] = mine / base if mine and base else None


def run(
    names: list[str] | None = None, size: str = "full", clusters: bool = True
) -> dict[str, Any]:
    """Measure every system in ``names`` (default all) that is installed, in rotation."""
    os.environ["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])  # workers import bench
    counts = COUNTS[size]
    rows: dict[str, Any] = {}
    chosen: list[Peer] = []
    for peer in PEERS:
        if (names and peer.name not in names) or (peer.cluster and not clusters):
            continue
        if importlib.util.find_spec(peer.package) is None:
            rows[peer.name] = {"label": peer.label, "skipped": f"{peer.package} not installed"}
            print(f"{peer.name}: skipped, not installed")
            continue
        chosen.append(peer)
        rows[peer.name] = {
            "label": peer.label,
            "version": _version(peer.package),
            "transport": peer.transport,
        }
    rng = np.random.default_rng(0)
    arrays = {
        mb: rng.integers(0, 2**63, size=mb * 2**20 // 8, dtype=np.int64)
        for mb in (1, counts["big"])
    }
    rounds: dict[str, list[dict[str, Any]]] = {p.name: [] for p in chosen}
    loads = []
    for r in steps(range(counts["rounds"]), "peers rounds", unit="round"):
        for peer in chosen[r % len(chosen) :] + chosen[: r % len(chosen)]:
            rounds[peer.name].append(measure_round(peer, counts, arrays))
            loads.append(os.getloadavg()[0])
    for peer in chosen:
        rows[peer.name] |= summarise(rounds[peer.name], counts["big"])
        rows[peer.name]["rounds"] = rounds[peer.name]
    against_raw(rows, counts["big"])
    return {
        "rounds": counts["rounds"],
        "big_mb": counts["big"],
        "clusters": clusters,
        "load_average_1min": loads,
        "peers": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench peers")
    parser.add_argument("--quick", action="store_true", help="fewer calls per round")
    parser.add_argument("--only", nargs="*", help="systems to run (default: all installed)")
    parser.add_argument("--no-clusters", action="store_true", help="leave Ray and Dask out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)

    size = "quick" if opts.quick else "full"
    report = {"size": size, "machine": machine()} | run(opts.only, size, not opts.no_clusters)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "peers.json").write_text(json.dumps(report, indent=1))
    text = markdown(report, describe(report["machine"]))
    (opts.out / "peers.md").write_text(text)
    print(text)
    return report
