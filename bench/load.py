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
restarted server, recorded failed by it (running at the kill, or accepted but
not yet stored), or lost.

A call is *lost* only when no answer for it came back (no value, no error from
the server) and the restarted server's store holds nothing of its fate: not
its result, not a failure. ``ServerUnavailable`` is no answer: the client
raises it itself when the connection goes. Lost calls in the kill run are
the ones that ran with their reply lost in the kill (the store says done, and
kept no result since their client was connected) and those that never reached
the store. Failures are told apart by exception class on the client, and by
the store's fields (state, started, finished, kept) on the server, never by
their texts.
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
from collections import Counter
from pathlib import Path
from typing import Any

import offload
from offload.runtime import errors as wire
from offload.runtime.states import JobState

from .progress import bar
from .workloads import echo

RESULTS = Path(__file__).parent / "results"
PROCESSES = 4


def _clients(
    address: str, first: int, count: int, calls: int, out: Any, ride_out: bool = False
) -> None:
    """One process: ``count`` clients, a thread each, ``calls`` calls each.

    ``ride_out``: a call that fails with ``ServerUnavailable`` is noted, and the
    client waits for the server to answer again before its next call.
    Failures are sorted by exception class: ``busy`` and ``unavailable`` hold
    the calls (client, number) that raised those, ``wrong`` any other
    exception as (client, number, class name, repr).
    """
    latencies: list[float] = []
    seen: list[tuple[int, int]] = []
    unavailable: list[tuple[int, int]] = []
    busy: list[tuple[int, int]] = []
    wrong: list[tuple[int, int, str, str]] = []
    lock = threading.Lock()

    def run(client_id: int) -> None:
        with offload.Client(address, profile_cache="", heartbeat_timeout=60) as client:
            for i in range(calls):
                start = time.perf_counter()
                try:
                    value = client.call(echo, ((client_id, i),), {})
                except offload.ServerBusy:  # an answer: the server refused it
                    with lock:
                        busy.append((client_id, i))
                    continue
                except offload.ServerUnavailable as exc:
                    with lock:
                        if ride_out:
                            unavailable.append((client_id, i))
                        else:
                            wrong.append((client_id, i, type(exc).__name__, repr(exc)))
                    if ride_out:
                        _wait_for(client)
                    continue
                except Exception as exc:  # anything else is a failure of the test
                    with lock:
                        wrong.append((client_id, i, type(exc).__name__, repr(exc)))
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
    store: dict[str, Any] = {}
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
        parts = []
        with bar(len(procs), f"{clients} clients x {calls} calls", unit="process") as tick:
            for _ in procs:
                parts.append(out.get(timeout=600))
                tick()
        elapsed = time.perf_counter() - start
        for proc in procs:
            proc.join(timeout=30)
        if kill_at:
            store = _after_restart(server, killed)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    latencies = sorted(x for p in parts for x in p["latencies"])
    expected = {(c, i) for c in range(clients) for i in range(calls)}
    report = {
        "clients": clients,
        "calls_per_client": calls,
        "workers": workers,
        **account(expected, parts, store if kill_at else None),
        "elapsed_s": elapsed,
        "calls_per_s": sum(len(p["seen"]) for p in parts) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "mean_ms": 1000 * statistics.mean(latencies) if latencies else None,
    }
    if kill_at:
        report["killed_at"] = kill_at
    return report


def account(
    expected: set[tuple[int, int]], parts: list[dict[str, Any]], store: dict[str, Any] | None
) -> dict[str, Any]:
    """What became of every call: the clients' ``parts`` and, after a kill, the ``store``'s.

    A call is lost when no answer for it came back (no value, no error from
    the server: ``ServerUnavailable`` is the client's own) and the store holds
    nothing of its fate: neither its kept result (identified by its value) nor
    a failure recorded at the restart (counted: those jobs carry no value).
    """
    seen = [tuple(v) for p in parts for v in p["seen"]]
    unavailable = {tuple(u) for p in parts for u in p["unavailable"]}
    busy = {tuple(b) for p in parts for b in p["busy"]}
    wrong = [w for p in parts for w in p["wrong"]]
    unanswered = expected - set(seen) - busy - {tuple(w[:2]) for w in wrong}
    store = store or {}
    recovered = {tuple(v) for v in store.get("recovered", [])}
    ended_at_restart = store.get("interrupted", 0) + store.get("failed_unstored", 0)
    lost = max(0, len(unanswered - recovered) - ended_at_restart)
    report: dict[str, Any] = {
        "answered": len(seen),
        "duplicates": len(seen) - len(set(seen)),
        "wrong_values": len(set(seen) - expected),
        "lost": lost,
        "server_busy": len(busy),
        "other_errors": [w[3] for w in wrong][:10],
        "errors_by_class": dict(Counter(w[2] for w in wrong)),
    }
    if not store:
        return report
    # Ran, and the store says done with no result kept (its client was there),
    # beyond the calls whose value came back: the reply was lost in the kill.
    reply_lost = min(lost, max(0, store["done_not_kept"] - len(set(seen))))
    report.update(
        unavailable=len(unavailable),
        recovered=len(store["recovered"]),
        recovered_correct=len(recovered & unavailable) == len(store["recovered"]),
        recovered_also_answered=len(recovered & set(seen)),
        interrupted=store["interrupted"],
        failed_unstored=store["failed_unstored"],
        store_other_failures=store["other_failures"],
        reply_lost=reply_lost,
        never_stored=lost - reply_lost,
        reply_lost_or_never_arrived=lost,
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


def _after_restart(server: offload.LocalServer, killed: float) -> dict[str, Any]:
    """What the restarted server's store holds of the calls the killed server had.

    Asked through the control plane (``client.server``), and classified by the
    jobs' fields, not their error texts: ``recovered``, the kept results of the
    calls it ran from its store; ``interrupted``, the jobs running at the kill
    (recorded interrupted when it started again); ``failed_unstored``, those
    accepted with the payload not yet written (recorded failed, never started);
    ``done_not_kept``, every other job done (its result went to
    its client, or was lost on the way); ``other_failures``, any other job that
    did not end done, by the exception class of its recorded error.
    """
    found: dict[str, Any] = {
        "recovered": [],
        "interrupted": 0,
        "failed_unstored": 0,
        "done_not_kept": 0,
        "other_failures": Counter(),
    }
    with offload.Client(server, profile_cache="") as client:
        for job in client.server.all_jobs():
            ended_at_restart = job.finished is not None and job.finished >= killed
            if job.state is JobState.DONE and job.kept and job.submitted <= killed:
                found["recovered"].append(client.server.result(job.id))
            elif job.state is JobState.DONE:
                found["done_not_kept"] += 1
            elif job.state is JobState.INTERRUPTED and job.submitted <= killed:
                found["interrupted"] += 1
            elif job.state is JobState.FAILED and ended_at_restart and job.started is None:
                found["failed_unstored"] += 1
            elif job.state is not JobState.DONE:
                found["other_failures"][_error_class(job.error)] += 1
    found["other_failures"] = dict(found["other_failures"])
    return found


def _error_class(error: str | None) -> str:
    """The exception class a job's recorded error names (``code: message``), if any."""
    code, sep, _ = (error or "").partition(":")
    return wire.error_class(code).__name__ if sep else "unrecorded"


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
        "from the store, results correct | running at the kill | accepted, not yet stored | "
        "lost: ran with the reply lost | lost: never reached the store | duplicates |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {kill['answered']} | {kill['unavailable']} | {kill['recovered']}, "
        f"{'yes' if kill['recovered_correct'] else 'NO'} | "
        f"{kill.get('interrupted', kill.get('failed_running'))} | "
        f"{kill['failed_unstored']} | {kill['reply_lost']} | {kill['never_stored']} | "
        f"{kill['duplicates'] + kill['recovered_also_answered']} |\n\n"
        "Lost: no answer came back (no value, no error from the server) and the "
        "restarted server's store holds neither its result nor its failure.\n"
    )
