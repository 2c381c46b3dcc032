"""Load: many clients at once against a small server; every call answered exactly once.

``python -m bench load [--quick]``: ``clients`` client processes' worth of
``offload.Client`` s (spread over a few processes, threads within each) each
make ``calls`` calls of :func:`bench.workloads.echo` with a value naming the
client and the call, against a 2-worker edge server on loopback. Every
result must come back exactly once and be the value sent; the only error a
client may see is ``ServerBusy`` (none with the default queue). Reports calls
per second and p50/p99 latency to ``bench/results/load.json`` and ``load.md``.

Then the same load again, but the server is killed with SIGKILL mid-run and
started again on the same port and job store. Calls in flight then fail with
``ServerUnavailable`` (the clients wait for the server and go on with their
next calls); the calls that were waiting in the queue are in the store, run
after the restart, and their kept results are fetched and checked against
what was sent. Every call is accounted for: answered, recovered by the
restarted server, or failed while it ran.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import offload

from .workloads import echo

RESULTS = Path(__file__).parent / "results"
PROCESSES = 4


def _clients(
    address: str, first: int, count: int, calls: int, out: Any, ride_out: bool = False
) -> None:
    """One process: ``count`` clients, a thread each, ``calls`` calls each.

    ``ride_out``: a call that fails with ``ServerUnavailable`` is noted, and the
    client waits for the server to answer again before its next call.
    """
    latencies: list[float] = []
    seen: list[tuple[int, int]] = []
    unavailable: list[tuple[int, int]] = []
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
                except offload.ServerUnavailable as exc:
                    with lock:
                        (unavailable if ride_out else wrong).append((client_id, i, repr(exc)))
                    if ride_out:
                        _wait_for(client)
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
    out.put(
        {
            "latencies": latencies,
            "seen": seen,
            "busy": busy,
            "wrong": wrong,
            "unavailable": unavailable,
        }
    )


def _wait_for(client: offload.Client, timeout: float = 120.0) -> None:
    """Until the server answers a ping again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping(timeout=1.0)
            return
        except offload.ServerUnavailable:
            time.sleep(0.2)


def run(clients: int, calls: int, workers: int = 2, kill_at: float = 0.0) -> dict[str, Any]:
    """Measure one load run; returns the report (and checks exactly-once delivery).

    ``kill_at`` > 0: SIGKILL the server once it has taken that fraction of
    all calls, and restart it on the same port and job store.
    """
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    data_dir = tempfile.mkdtemp(prefix="offload-load-")
    serve = functools.partial(
        offload.serve_local,
        ["bench.workloads"],
        workers=workers,
        extra_args=["--log-level", "WARNING"],
        bind=f"tcp://127.0.0.1:{_free_port()}",
        data_dir=data_dir,
    )
    server = serve()
    recovered: list[Any] = []
    lost_with_server: dict[str, int] = {}
    try:
        per = [clients // PROCESSES + (k < clients % PROCESSES) for k in range(PROCESSES)]
        starts = [sum(per[:k]) for k in range(PROCESSES)]
        procs = [
            mp.Process(target=_clients, args=(server.address, s, n, calls, out, bool(kill_at)))
            for s, n in zip(starts, per)
            if n
        ]
        start = time.perf_counter()
        for proc in procs:
            proc.start()
        if kill_at:
            _wait_for_jobs(server, int(kill_at * clients * calls))
            server.process.kill()  # SIGKILL: no goodbye, no last write
            server.process.wait()
            killed = time.time()
            server.stop()
            server = serve()
        parts = [out.get(timeout=600) for _ in procs]
        elapsed = time.perf_counter() - start
        for proc in procs:
            proc.join(timeout=30)
        if kill_at:
            recovered, lost_with_server = _after_restart(server, killed)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    latencies = sorted(x for p in parts for x in p["latencies"])
    seen = [tuple(v) for p in parts for v in p["seen"]]
    unavailable = {tuple(u[:2]) for p in parts for u in p["unavailable"]}
    expected = {(c, i) for c in range(clients) for i in range(calls)}
    busy = sum(p["busy"] for p in parts)
    report = {
        "clients": clients,
        "calls_per_client": calls,
        "workers": workers,
        "answered": len(seen),
        "duplicates": len(seen) - len(set(seen)),
        "wrong_values": len(set(seen) - expected),
        "lost": len(expected) - len(set(seen)) - busy - len(unavailable),
        "server_busy": busy,
        "other_errors": [e for p in parts for e in p["wrong"]][:10],
        "elapsed_s": elapsed,
        "calls_per_s": len(seen) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "mean_ms": 1000 * statistics.mean(latencies) if latencies else None,
    }
    if kill_at:
        recovered_set = {tuple(v) for v in recovered}
        report.update(
            killed_at=kill_at,
            unavailable=len(unavailable),
            recovered=len(recovered),
            recovered_correct=len(recovered_set & unavailable) == len(recovered),
            recovered_also_answered=len(recovered_set & set(seen)),
            **lost_with_server,
            reply_lost_or_never_arrived=len(unavailable)
            - len(recovered_set & unavailable)
            - sum(lost_with_server.values()),
        )
    return report


def _wait_for_jobs(server: offload.LocalServer, count: int, timeout: float = 300.0) -> None:
    """Until the server has accepted ``count`` calls (job ids count up from 1)."""
    deadline = time.monotonic() + timeout
    with offload.Client(server, profile_cache="") as client:
        while time.monotonic() < deadline:
            newest = client.server.jobs(limit=1)
            if newest and newest[0].id >= count:
                return
            time.sleep(0.02)
    raise TimeoutError(f"the server took fewer than {count} calls in {timeout:g} s")


def _after_restart(server: offload.LocalServer, killed: float) -> tuple[list[Any], dict[str, int]]:
    """What became of the calls the killed server had: recovered results, and the others.

    Returns the kept results of the calls the restarted server ran from its
    store, and counts of the failures the store recorded: ``failed_running``
    (running at the kill) and ``failed_unstored`` (accepted, payload not yet
    written). The other calls in flight had run with their reply lost in the
    kill, or had not got past the sockets.
    """
    counts = {"failed_running": 0, "failed_unstored": 0}
    recovered = []
    with offload.Client(server, profile_cache="") as client:
        for job in client.server.all_jobs():
            if job.submitted > killed:
                continue  # a call made after the restart
            if job.kept and job.state == "done":
                recovered.append(client.server.result(job.id))
            elif "stopped while this job ran" in (job.error or ""):
                counts["failed_running"] += 1
            elif "payload was stored" in (job.error or ""):
                counts["failed_unstored"] += 1
    return recovered, counts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench load")
    parser.add_argument("--quick", action="store_true", help="20 clients x 20 calls")
    opts = parser.parse_args(argv)
    size = (20, 20) if opts.quick else (100, 100)
    report = {"steady": run(*size), "sigkill": run(*size, kill_at=0.4)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (RESULTS / "load.md").write_text(table)
    print(table)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as two markdown tables: steady load, and the SIGKILL-and-restart run."""
    steady, kill = report["steady"], report["sigkill"]
    return (
        f"# Load: {steady['clients']} clients x {steady['calls_per_client']} calls, "
        f"{steady['workers']} workers, loopback\n\n"
        "| answered | duplicates | lost | wrong | busy | calls/s | p50 ms | p99 ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {steady['answered']} | {steady['duplicates']} | {steady['lost']} | "
        f"{steady['wrong_values']} | {steady['server_busy']} | {steady['calls_per_s']:.0f} | "
        f"{steady['p50_ms']:.1f} | {steady['p99_ms']:.1f} |\n\n"
        f"## SIGKILL after {kill['killed_at']:.0%} of the calls, then a restart on the same "
        "job store\n\n"
        "| answered | in flight at the kill (ServerUnavailable) | of those: queued, recovered "
        "from the store, results correct | running (failed) | accepted, not yet stored | "
        "ran with the reply lost, or never arrived | duplicates | lost |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {kill['answered']} | {kill['unavailable']} | {kill['recovered']}, "
        f"{'yes' if kill['recovered_correct'] else 'NO'} | {kill['failed_running']} | "
        f"{kill['failed_unstored']} | {kill['reply_lost_or_never_arrived']} | "
        f"{kill['duplicates'] + kill['recovered_also_answered']} | "
        f"{kill['lost']} |\n"
    )
