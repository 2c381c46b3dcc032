"""``python -m bench abuse [--quick]``: abusive clients against budgets, with a legitimate one.

Issue 19's measurements, replayed against a real server (2 workers, one call
running per client) with byte budgets:

* ``uploads``: one worker busy with the abuser's long call, its large echo
  calls arriving at a steady rate queue behind it (the budget refuses what
  does not fit);
* ``unread``: the abuser sends large echo calls and never reads a reply;
* ``stop``: the upload flood, then SIGTERM (time to exit), then the same
  again with SIGKILL and a restart on the same data directory (what the
  restart leaves in /dev/shm and the data directory);
* ``floods``: PINGs with random ALIVE ids, malformed headers and garbage, as
  fast as one socket sends them.

Meanwhile a legitimate client calls ``noop`` every 20 ms and records each
latency, and a sampler records the server's RSS (its own, and its workers'),
its arenas in /dev/shm and its data directory (bytes in use), every 0.2 s.
Results: ``bench/results/abuse.json`` and ``abuse.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

import offload
from offload.runtime import protocol, serialize

from .progress import steps
from .workloads import echo, nap, noop

RESULTS = Path(__file__).parent / "results"
KINDS = [int(k) for k in os.environ.get("ABUSE_KINDS", "012")]
MB = 2**20
FULL = {"seconds": 15.0, "size": 64 * MB, "rate": 4.0, "memory": "1G", "client": "256M"}
QUICK = {"seconds": 3.0, "size": 8 * MB, "rate": 8.0, "memory": "128M", "client": "32M"}


def _call(fn: Any, *args: Any, rid: int) -> list[Any]:
    codecs, frames = serialize.dumps((args, {}))
    name = fn.wire_name.encode()
    header = protocol.encode_header(
        protocol.CALL, rid, fingerprint=fn.fingerprint, name=name, codecs=codecs
    )
    return [header, *frames]


def _used(path: Path) -> int:
    """Bytes a file uses on its file system (arenas are sparse until written)."""
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


class Sampler(threading.Thread):
    """RSS of a server and its workers, its arenas and data directory, every 0.2 s."""

    def __init__(self, pid: int, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.data_dir = pid, data_dir
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.start_at = time.perf_counter()

    def sample(self) -> dict[str, float]:
        rss = workers = 0.0
        try:
            server = psutil.Process(self.pid)
            rss = server.memory_info().rss / MB
            for child in server.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    workers += child.memory_info().rss / MB
        except psutil.Error:
            pass
        shm = sum(_used(p) for p in Path("/dev/shm").glob(f"offload-{self.pid}-*")) / MB
        data = sum(_used(p) for p in self.data_dir.rglob("*") if p.is_file()) / MB
        return {
            "t": round(time.perf_counter() - self.start_at, 2),
            "server_rss_mb": round(rss, 1),
            "workers_rss_mb": round(workers, 1),
            "shm_mb": round(shm, 1),
            "data_mb": round(data, 1),
        }

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append(self.sample())


class Legit(threading.Thread):
    """A well-behaved client: ``noop`` every 20 ms, each latency recorded."""

    def __init__(self, server: offload.LocalServer) -> None:
        super().__init__(daemon=True)
        self.client = offload.Client(server, profile_cache="", heartbeat_timeout=30)
        self.client.ping(timeout=30)
        # A server is ready before its workers are: the first call waits for one to start.
        self.client.call(noop, (), {})
        self.latencies: list[float] = []
        self.at: list[float] = []  # when each call started (s since the scenario began)
        self.began = time.perf_counter()
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            start = time.perf_counter()
            try:
                self.client.call(noop, (), {})
                self.latencies.append(time.perf_counter() - start)
                self.at.append(start - self.began)
            except offload.OffloadError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def summary(self) -> dict[str, Any]:
        times = sorted(self.latencies) or [float("nan")]
        pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1e3, 2)  # noqa: E731
        slowest = sorted(zip(self.latencies, self.at, strict=True), reverse=True)[:5]
        return {
            "calls": len(self.latencies),
            "slowest_ms_at_s": [(round(lat * 1e3, 1), round(at, 2)) for lat, at in slowest],
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": round(times[-1] * 1e3, 2),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
        }


def _start(data_dir: Path, opts: dict[str, Any]) -> offload.LocalServer:
    return offload.serve_local(
        ["bench.workloads"],
        workers=2,
        data_dir=str(data_dir),
        extra_args=[
            *("--log-level", "ERROR", "--client-running", "1", "--close-grace", "2"),
            *("--memory-budget", opts["memory"], "--client-budget", opts["client"]),
        ],
    )


def _uploads(
    sock: zmq.Socket, opts: dict[str, Any], seconds: float, read: bool, busy: bool
) -> dict[str, int]:
    """Large echo calls at ``rate`` (after a long call if ``busy``); replies read if ``read``."""
    if busy:  # its running slot taken: the echo calls queue
        sock.send_multipart(_call(nap, 600.0, rid=1))
    data = os.urandom(opts["size"])
    sent = refused = results = 0
    end, rid = time.perf_counter() + seconds, 1
    while time.perf_counter() < end:
        rid += 1
        sock.send_multipart(_call(echo, data, rid=rid), copy=False)
        sent += 1
        pause = time.perf_counter() + 1 / opts["rate"]
        while read and time.perf_counter() < pause:
            if sock.poll(max(1, int((pause - time.perf_counter()) * 1000))):
                header = protocol.decode_header(sock.recv_multipart(copy=False)[0].buffer)
                refused += header.kind == protocol.ERROR
                results += header.kind == protocol.RESULT
        if not read:
            time.sleep(max(0.0, pause - time.perf_counter()))
    return {"sent": sent, "refused": refused, "results": results}


def _floods(sock: zmq.Socket, seconds: float) -> dict[str, int]:
    rng = random.Random(19)
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            kind = rng.choice(KINDS)
            if kind == 0:  # a heartbeat on behalf of a random data socket
                header = protocol.encode_header(
                    protocol.PING, rng.getrandbits(64), flags=protocol.ALIVE
                )
                frames = [header, rng.randbytes(16)]
            elif kind == 1:  # a header with bytes flipped
                header = bytearray(protocol.encode_header(protocol.PING, rng.getrandbits(64)))
                header[rng.randrange(len(header))] ^= 0xFF
                frames = [bytes(header)]
            else:
                frames = [rng.randbytes(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 4))]
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                break
        while sock.poll(0):  # read what comes back: the flood is of requests, not of replies
            sock.recv_multipart(copy=False)
    return {"sent": sent}


def _abuse(address: str, name: str, opts: dict[str, Any], seconds: float, out: Any) -> None:
    """The abuser, in a process of its own (another device, in effect)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if name == "unread":  # small buffers: its replies back up into the server
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 65536)
    sock.connect(address)
    try:
        if name == "floods":
            out.put(_floods(sock, seconds))
        else:
            out.put(_uploads(sock, opts, seconds, read=name != "unread", busy=name != "unread"))
        if name == "unread":
            out.get()  # the bench says when to close the socket
    finally:
        sock.close()


class Abuser:
    """Runs :func:`_abuse` in a spawned process."""

    def __init__(self, server: offload.LocalServer, name: str, opts: dict, seconds: float):
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.process = context.Process(
            target=_abuse, args=(server.address, name, opts, seconds, self.queue), daemon=True
        )
        self.process.start()

    def result(self, timeout: float) -> dict[str, int]:
        return dict(self.queue.get(timeout=timeout))

    def close(self) -> None:
        self.queue.put("close")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def run_scenario(name: str, opts: dict[str, Any], base: Path) -> dict[str, Any]:
    data_dir = base / name
    server = _start(data_dir, opts)
    sampler = Sampler(server.process.pid, data_dir)
    baseline = sampler.sample()
    legit = Legit(server)
    sampler.start()
    legit.start()
    record: dict[str, Any] = {"scenario": name, "baseline": baseline}
    seconds = opts["seconds"] / 2 if name == "stop" else opts["seconds"]
    abuser = Abuser(server, name, opts, seconds)
    try:
        record["abuser"] = abuser.result(timeout=seconds + 60)
        if name == "unread":
            record["held_before_close_mb"] = legit.client.server.health()["held_bytes"] / MB
            abuser.close()
            time.sleep(1.0)
            record["after_close"] = sampler.sample()
            record["held_after_close_mb"] = legit.client.server.health()["held_bytes"] / MB
            jobs = legit.client.server.jobs(limit=1000)
            record["abuser"]["replies_dropped"] = sum("dropped" in (j.error or "") for j in jobs)
            record["abuser"]["replies_sent"] = sum(
                j.state == "done" and j.function.endswith("echo") for j in jobs
            )
        legit.stop.set()
        legit.join(30)
        if name == "stop":
            start = time.perf_counter()
            server.process.terminate()
            server.process.wait(timeout=60)
            record["sigterm_exit_s"] = round(time.perf_counter() - start, 2)
    finally:
        legit.stop.set()
        legit.join(30)
        legit.client.shutdown()
        sampler.stop.set()
        sampler.join(5)
        abuser.close()
        server.stop()
    if name == "stop":
        record.update(_kill_and_restart(opts, data_dir))
    record["legit"] = legit.summary()
    samples = sampler.samples or [baseline]
    record["peak"] = {k: max(s[k] for s in samples) for k in samples[0] if k != "t"}
    record["samples"] = samples[:: max(1, len(samples) // 100)]
    return record


def _kill_and_restart(opts: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The upload flood, SIGKILL, and what a restart on the same data directory leaves."""
    server = _start(data_dir, opts)
    pid = server.process.pid
    abuser = Abuser(server, "stop", opts, opts["seconds"] / 2)
    try:
        abuser.result(timeout=opts["seconds"] + 60)
        server.process.kill()
        server.process.wait(timeout=30)
    finally:
        abuser.close()
        server.stop()
    left = Sampler(pid, data_dir).sample()
    again = _start(data_dir, opts)
    try:
        swept = Sampler(pid, data_dir).sample()
    finally:
        again.stop()
    return {
        "after_sigkill": {"shm_mb": left["shm_mb"], "data_mb": left["data_mb"]},
        "after_restart": {"shm_mb_of_killed_server": swept["shm_mb"], "data_mb": swept["data_mb"]},
    }


def markdown(report: dict[str, Any]) -> str:
    b = report["budgets"]
    lines = [
        f"# Abuse bench ({'quick' if report['quick'] else 'full'})",
        "",
        f"Budgets: memory {b['memory']}, client {b['client']}; payload {b['size_mb']} MB; "
        f"{b['seconds']} s per scenario; 2 workers, one running call per client.",
        "",
        "| scenario | legit calls | p50 ms | p99 ms | errors | peak server RSS MB | "
        "peak workers RSS MB | peak /dev/shm MB | peak data dir MB | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["scenarios"]:
        legit, peak = r["legit"], r["peak"]
        notes = ", ".join(f"{k} {v}" for k, v in r.get("abuser", {}).items())
        if "sigterm_exit_s" in r:
            notes += f"; SIGTERM exit {r['sigterm_exit_s']} s"
            notes += f"; after SIGKILL shm {r['after_sigkill']['shm_mb']} MB"
            notes += f", after restart {r['after_restart']['shm_mb_of_killed_server']} MB"
            notes += f", data dir {r['after_restart']['data_mb']} MB"
        if "after_close" in r:
            notes += f"; held {r['held_before_close_mb']:.0f} MB before close"
            notes += f", {r['held_after_close_mb']:.0f} MB after"
            notes += f" (shm {r['after_close']['shm_mb']} MB)"
        lines.append(
            f"| {r['scenario']} | {legit['calls']} | {legit['p50_ms']} | {legit['p99_ms']} | "
            f"{legit['errors']} | {peak['server_rss_mb']} | {peak['workers_rss_mb']} | "
            f"{peak['shm_mb']} | {peak['data_mb']} | {notes} |"
        )
    base = report["scenarios"][0]["baseline"]
    lines += [
        "",
        f"Idle server RSS {base['server_rss_mb']} MB, workers {base['workers_rss_mb']} MB.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, out: Path = RESULTS) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench abuse")
    parser.add_argument("--quick", action="store_true", help="small payloads, 3 s per scenario")
    parser.add_argument("--seconds", type=float, help="seconds per scenario")
    parser.add_argument("--size-mb", type=float, help="payload of each large call")
    parser.add_argument("--scenarios", default="uploads,unread,stop,floods")
    parser.add_argument("--out", type=Path, default=out, help="where abuse.json and .md go")
    opts_in = parser.parse_args(argv)
    out = opts_in.out
    opts = dict(QUICK if opts_in.quick else FULL)
    if opts_in.seconds:
        opts["seconds"] = opts_in.seconds
    if opts_in.size_mb:
        opts["size"] = int(opts_in.size_mb * MB)
    scenarios = []
    with tempfile.TemporaryDirectory(prefix="offload-abuse-") as base:
        for name in steps(opts_in.scenarios.split(","), "scenarios", unit="scenario"):
            record = run_scenario(name, opts, Path(base))
            print(f"{name}: legit {record['legit']}, peak {record['peak']}")
            scenarios.append(record)
    report = {
        "quick": opts_in.quick,
        "budgets": {
            "memory": opts["memory"],
            "client": opts["client"],
            "size_mb": opts["size"] / MB,
            "seconds": opts["seconds"],
        },
        "scenarios": scenarios,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "abuse.json").write_text(json.dumps(report, indent=1))
    (out / "abuse.md").write_text(markdown(report))
    print(markdown(report))
    return report
