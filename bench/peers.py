"""``offload`` beside Ray, Dask distributed, RPyC and Pyro5: the same calls on loopback.

Each framework gets one remote worker process on this machine (a Ray actor,
a one-worker ``LocalCluster``, an RPyC ``ThreadedServer``, a Pyro5 daemon,
an edge server with one worker) and the same three calls of
:mod:`bench.peer_servers`: a no-op, an echo of random int64 arrays (1 MB
and 16 MB), and DCOF's matrix product of two 300x300 int32 matrices by the
numba kernel the worker already holds. Each framework runs with its
defaults; how arrays travel differs and the report says how. The peers are
an optional extra (``pip install -e '.[peers]'``); one that is not
installed is skipped and reported so.

``python -m bench peers [--quick]`` writes ``bench/results/peers.json`` and
``peers.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import pickle
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import offload

from . import compiled, peer_servers
from .dcof_report import describe, machine
from .overhead import _pct
from .progress import steps
from .rawzmq import interleaved

RESULTS = Path(__file__).parent / "results"


@dataclass
class Calls:
    """One framework's way of making the three calls."""

    noop: Callable[[], Any]
    echo: Callable[[Any], Any]
    matmul: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Peer:
    """A framework: the package it needs, how it starts, how arrays travel."""

    name: str
    package: str
    start: Callable[[], contextlib.AbstractContextManager[Calls]]
    transport: str


@contextlib.contextmanager
def _ours() -> Iterator[Calls]:
    from .workloads import echo, noop

    apps = ["bench.workloads", "bench.compiled"]
    with (
        offload.serve_local(apps, workers=1, extra_args=["--log-level", "WARNING"]) as server,
        offload.Client(server, profile_cache="") as client,
    ):
        client.ping(timeout=60)
        yield Calls(
            noop=lambda: client.call(noop, (), {}),
            echo=lambda v: client.call(echo, (v,), {}),
            matmul=lambda a, b: client.call(compiled.matrix_multiply, (a, b), {}),
        )


@contextlib.contextmanager
def _ray() -> Iterator[Calls]:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        actor: Any = ray.remote(num_cpus=1)(peer_servers.Worker).remote()
        yield Calls(
            noop=lambda: ray.get(actor.noop.remote()),
            echo=lambda v: ray.get(actor.echo.remote(v)),
            matmul=lambda a, b: ray.get(actor.matmul.remote(a, b)),
        )
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _dask() -> Iterator[Calls]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):

        def call(fn: Any, *args: Any) -> Any:
            return client.submit(fn, *args, pure=False).result()

        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        yield Calls(
            noop=lambda: call(peer_servers.noop),
            echo=lambda v: call(peer_servers.echo, v),
            matmul=lambda a, b: call(peer_servers.matmul, a, b),
        )


@contextlib.contextmanager
def _server(kind: str) -> Iterator[str]:
    """``python -m bench.peer_servers KIND`` in a child process; its address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peer_servers", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pickling(call: Callable[[bytes], bytes]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        return pickle.loads(call(pickle.dumps(args, protocol=5)))

    return wrapped


@contextlib.contextmanager
def _rpyc() -> Iterator[Calls]:
    import rpyc

    with _server("rpyc") as address:
        host, port = address.rsplit(":", 1)
        for attempt in range(100):  # the port is bound before the server listens
            try:
                conn = rpyc.connect(host, int(port), config={"sync_request_timeout": 300})
                break
            except ConnectionRefusedError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        try:
            root = conn.root
            yield Calls(noop=root.noop, echo=_pickling(root.echo), matmul=_pickling(root.matmul))
        finally:
            conn.close()


@contextlib.contextmanager
def _pyro5() -> Iterator[Calls]:
    import Pyro5.api

    with _server("pyro5") as uri, Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroSerializer = "marshal"  # carries bytes as they are (serpent: base64)
        yield Calls(noop=proxy.noop, echo=_pickling(proxy.echo), matmul=_pickling(proxy.matmul))


PEERS = (
    Peer("offload", "offload", _ours, "ZeroMQ; pickle 5, arrays out of band, lz4 where it pays"),
    Peer("ray", "ray", _ray, "gRPC; arrays over 100 KB through the shared-memory object store"),
    Peer("dask", "distributed", _dask, "TCP (tornado); pickle 5 frames"),
    Peer("rpyc", "rpyc", _rpyc, "TCP (brine); arrays as pickle-5 bytes (objects pass by ref)"),
    Peer("pyro5", "Pyro5", _pyro5, "TCP; marshal serializer, arrays as pickle-5 bytes"),
)


def _times(fn: Callable[[], Any], n: int, warmup: int) -> list[float]:
    (times,) = interleaved([fn], n, warmup)
    return times


#: Calls per figure: no-op, 1 MB echo, 16 MB echo, matrix product.
COUNTS = {
    "full": {"noop": 1000, "echo_1MB": 40, "echo_16MB": 10, "matmul": 15},
    "quick": {"noop": 200, "echo_1MB": 10, "echo_16MB": 3, "matmul": 5},
    "smoke": {"noop": 20, "echo_1MB": 2, "echo_16MB": 1, "matmul": 2},
}


def measure(calls: Calls, counts: dict[str, int]) -> dict[str, Any]:
    """The three calls' figures for one framework (results checked against local runs)."""
    rng = np.random.default_rng(0)
    noop = _times(calls.noop, counts["noop"], 50)
    row: dict[str, Any] = {
        "noop_p50_us": _pct(noop, 0.5) * 1e6,
        "noop_p99_us": _pct(noop, 0.99) * 1e6,
    }
    for mb in (1, 16):
        array = rng.integers(0, 2**63, size=mb * 2**20 // 8, dtype=np.int64)
        assert np.array_equal(calls.echo(array), array)
        echo: Callable[[], Any] = functools.partial(calls.echo, array)
        seconds = statistics.median(_times(echo, counts[f"echo_{mb}MB"], 1))
        row[f"echo_{mb}MB_ms"] = seconds * 1e3
        row[f"echo_{mb}MB_MBps"] = 2 * mb / seconds  # there and back
    a, b = compiled.arguments("matrix_multiply", 300, 0)
    assert np.array_equal(calls.matmul(a, b), compiled.matrix_multiply.__wrapped__(a, b))
    matmul = _times(lambda: calls.matmul(a, b), counts["matmul"], 1)
    row["matmul_300_ms"] = statistics.median(matmul) * 1e3
    return row


def run(names: list[str] | None = None, size: str = "full") -> dict[str, Any]:
    """Measure every framework in ``names`` (default all) that is installed."""
    os.environ["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *sys.path])  # workers import bench
    compiled.warm()
    rows: dict[str, Any] = {}
    for peer in steps(PEERS, "peers", unit="peer"):
        if names and peer.name not in names:
            continue
        if importlib.util.find_spec(peer.package) is None:
            rows[peer.name] = {"skipped": f"{peer.package} not installed (pip install '.[peers]')"}
            print(f"{peer.name}: skipped, not installed")
            continue
        version = importlib.metadata.version(peer.package)
        start = time.perf_counter()
        with peer.start() as calls:
            calls.noop()
            startup = time.perf_counter() - start
            row = measure(calls, COUNTS[size])
        rows[peer.name] = {"version": version, "startup_s": startup, "transport": peer.transport}
        rows[peer.name] |= row
        print(f"{peer.name}: {json.dumps({k: round(v, 2) for k, v in row.items()})}")
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Peers on loopback, one remote worker process each ({report['size']})",
        "",
        f"- machine: {describe(report['machine']) if report['machine'] else '-'}",
        "- no-op: p50 / p99 of sequential calls; echo: median round trip of random int64 "
        "arrays, MB/s counting both ways; matrix: DCOF's 300x300 int32 product on the worker "
        "(numba kernel already loaded there), median turnaround",
        "",
        "| framework | version | startup s | no-op p50 us | no-op p99 us | echo 1 MB ms (MB/s) "
        "| echo 16 MB ms (MB/s) | matrix 300 ms | how arrays travel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["peers"].items():
        if "skipped" in r:
            lines.append(f"| {name} | - | {r['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['version']} | {r['startup_s']:.1f} | {r['noop_p50_us']:.0f} "
            f"| {r['noop_p99_us']:.0f} | {r['echo_1MB_ms']:.2f} ({r['echo_1MB_MBps']:.0f}) "
            f"| {r['echo_16MB_ms']:.1f} ({r['echo_16MB_MBps']:.0f}) | {r['matmul_300_ms']:.1f} "
            f"| {r['transport']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench peers")
    parser.add_argument("--quick", action="store_true", help="fewer calls per figure")
    parser.add_argument("--only", nargs="*", help="frameworks to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args(argv)

    size = "quick" if opts.quick else "full"
    report = {"size": size, "machine": machine(), "peers": run(opts.only, size)}
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "peers.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (opts.out / "peers.md").write_text(text)
    print(text)
    return report
