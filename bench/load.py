"""Load: many clients at once against a small server; every call answered exactly once.

``python -m bench load [--quick]``: ``clients`` client processes' worth of
``offload.Client`` s (spread over a few processes, threads within each) each
make ``calls`` calls of :func:`bench.workloads.echo` with a value naming the
client and the call, against a 2-worker edge server on loopback. Every
result must come back exactly once and be the value sent; the only error a
client may see is ``ServerBusy`` (none with the default queue). Reports calls
per second and p50/p99 latency to ``bench/results/load.json`` and ``load.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import offload

from .workloads import echo

RESULTS = Path(__file__).parent / "results"
PROCESSES = 4


def _clients(address: str, first: int, count: int, calls: int, out: Any) -> None:
    """One process: ``count`` clients, a thread each, ``calls`` calls each."""
    latencies: list[float] = []
    seen: list[tuple[int, int]] = []
    busy = 0
    wrong: list[str] = []
    lock = threading.Lock()

    def run(client_id: int) -> None:
        nonlocal busy
        with offload.Client(address, profile_cache="", heartbeat_timeout=60) as client:
            for i in range(calls):
                start = time.perf_counter()
                try:
                    value = client.call(echo, ((client_id, i),), {})
                except offload.ServerBusy:
                    with lock:
                        busy += 1
                    continue
                except Exception as exc:  # anything else is a failure of the test
                    with lock:
                        wrong.append(repr(exc))
                    continue
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    seen.append(tuple(value))

    threads = [threading.Thread(target=run, args=(first + k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"latencies": latencies, "seen": seen, "busy": busy, "wrong": wrong})


def run(clients: int, calls: int, workers: int = 2) -> dict[str, Any]:
    """Measure one load run; returns the report (and checks exactly-once delivery)."""
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    with offload.serve_local(
        ["bench.workloads"], workers=workers, extra_args=["--log-level", "WARNING"]
    ) as server:
        per = [clients // PROCESSES + (k < clients % PROCESSES) for k in range(PROCESSES)]
        starts = [sum(per[:k]) for k in range(PROCESSES)]
        procs = [
            mp.Process(target=_clients, args=(server.address, s, n, calls, out))
            for s, n in zip(starts, per)
            if n
        ]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        parts = [out.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - start
        for proc in procs:
            proc.join(timeout=30)
    latencies = sorted(x for p in parts for x in p["latencies"])
    seen = [tuple(v) for p in parts for v in p["seen"]]
    expected = {(c, i) for c in range(clients) for i in range(calls)}
    busy = sum(p["busy"] for p in parts)
    report = {
        "clients": clients,
        "calls_per_client": calls,
        "workers": workers,
        "answered": len(seen),
        "duplicates": len(seen) - len(set(seen)),
        "wrong_values": len(set(seen) - expected),
        "lost": len(expected) - len(set(seen)) - busy,
        "server_busy": busy,
        "other_errors": [e for p in parts for e in p["wrong"]][:10],
        "elapsed_s": elapsed,
        "calls_per_s": len(seen) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "mean_ms": 1000 * statistics.mean(latencies) if latencies else None,
    }
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench load")
    parser.add_argument("--quick", action="store_true", help="20 clients x 20 calls")
    opts = parser.parse_args(argv)
    report = run(*((20, 20) if opts.quick else (100, 100)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(report, indent=1))
    table = (
        f"# Load: {report['clients']} clients x {report['calls_per_client']} calls, "
        f"{report['workers']} workers, loopback\n\n"
        "| answered | duplicates | lost | wrong | busy | calls/s | p50 ms | p99 ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {report['answered']} | {report['duplicates']} | {report['lost']} | "
        f"{report['wrong_values']} | {report['server_busy']} | {report['calls_per_s']:.0f} | "
        f"{report['p50_ms']:.1f} | {report['p99_ms']:.1f} |\n"
    )
    (RESULTS / "load.md").write_text(table)
    print(table)
    return report
