"""The demo app: DCOF's three services, run locally and offloaded to a local edge server.

``python -m examples.demo`` starts an edge server in a child process (the
replicated code is :mod:`examples.workloads`), then for each workload and a
few intensities runs the call on this device and on the server, and prints
where it ran, how long it took and how many bytes crossed the link. Then the
same calls in ``auto`` mode, where the profiler decides (on one machine, with
no slow device or link to avoid, running here is usually right), with its
estimates. It ends by stopping the server and showing that the app keeps
working offline.
"""

from __future__ import annotations

import functools
import os
import random
import time
import warnings
from collections.abc import Callable
from typing import Any

import offload
from examples.workloads import bubble_sort, matrix_multiply, power
from offload.runtime import serialize


def _payload_bytes(value: Any) -> int:
    _, frames = serialize.dumps(value)
    return sum(memoryview(f).nbytes for f in frames)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}s"


def _matrix(n: int, rng: random.Random) -> list[list[int]]:
    return [[rng.randrange(100) for _ in range(n)] for _ in range(n)]


def main() -> None:
    rng = random.Random(7)
    cases: list[tuple[str, offload.OffloadedFunction[..., Any], tuple[Any, ...]]] = []
    for n in (2000, 5000):
        cases.append(
            (f"bubble sort {n} ints", bubble_sort, ([rng.randrange(10**6) for _ in range(n)],))
        )
    for n in (100, 160):
        cases.append(
            (f"matrix multiply {n}x{n}", matrix_multiply, (_matrix(n, rng), _matrix(n, rng)))
        )
    for e in (10**6, 10**7):
        cases.append((f"power 3^{e:.0e}", power, (3, e)))

    print("starting a local edge server (python -m edge_server --app examples.workloads) ...")
    with offload.serve_local(
        ["examples.workloads"], workers=2, extra_args=["--log-level", "WARNING"]
    ) as server:
        # A profile of its own, in memory: every run starts cold and tells the same story
        # (an app's client keeps what it learned in ~/.cache/offload/profiles.json).
        client = offload.configure(server=server, profile_cache="")
        client.ping(timeout=30)
        print(f"edge server at {server.address}, serving {client.server_info['functions']}")
        print('(this demo\'s client starts with no history each run: profile_cache="")\n')
        header = f"{'workload':26s} {'ran on':12s} {'time':>9s} {'sent':>10s} {'received':>10s}"
        print(header)
        print("-" * len(header))
        for label, fn, args in cases:
            local, t_local = _timed(functools.partial(fn.local, *args))
            remote, t_remote = _timed(functools.partial(fn.remote, *args))
            assert local == remote, f"{label}: local and remote results differ"
            sent, received = _payload_bytes((args, {})), _payload_bytes(remote)
            print(f"{label:26s} {'this device':12s} {t_local:8.3f}s {'-':>10s} {'-':>10s}")
            print(f"{'':26s} {'edge server':12s} {t_remote:8.3f}s {sent:9,d}B {received:9,d}B")

        print("\nauto mode: the profiler decides each call; offload.explain() says why")
        print(
            "  cold start: a function with no history on a side is tried there once (the\n"
            "  .remote() calls above already taught it the server's side; its local side is\n"
            "  learned from the first auto calls), then each call goes where it is estimated\n"
            "  cheaper. Server and device are the same machine here, so the gap is small."
        )
        series = [
            (
                "bubble sort",
                bubble_sort,
                [
                    ([rng.randrange(10**6) for _ in range(n)],)
                    for n in (300, 800, 1500, 2500, 4000, 2500)
                ],
            ),
            (
                "matrix multiply",
                matrix_multiply,
                [(_matrix(n, rng), _matrix(n, rng)) for n in (20, 50, 90, 130, 160, 130)],
            ),
            ("power", power, [(3, e) for e in (10**4, 10**5, 5 * 10**5, 10**6, 3 * 10**6, 10**6)]),
        ]
        for label, fn, calls in series:
            for args in calls:
                why = offload.explain(fn, *args)
                _, took = _timed(functools.partial(fn, *args))
                here, there = (_seconds(why.estimates[s]["time_s"]) for s in ("local", "remote"))
                print(
                    f"{label:16s} size {why.size:>9,d} -> {why.side:6s} {took:6.3f}s  "
                    f"(estimated here {here}, there {there}: {why.reasons[0]})"
                )
        for name, by_side in offload.stats().items():
            here, there = (
                f"{s['calls']:.0f} calls {s['seconds']:.2f}s {s['energy_j']:.2f}J"
                for s in (by_side["local"], by_side["remote"])
            )
            print(f"  {name.split(':')[1]:16s} here {here}, there {there}")
        print(f"  energy: {why.energy_source}")

        print("\nfour bubble sorts at once: submit() returns futures; the server runs two workers")
        lists = [[rng.randrange(10**6) for _ in range(2000)] for _ in range(4)]
        _, t_seq = _timed(lambda: [bubble_sort.local(x) for x in lists])
        _, t_par = _timed(lambda: [f.result() for f in [bubble_sort.submit(x) for x in lists]])
        print(f"  one after another, locally: {t_seq:.3f}s   offloaded concurrently: {t_par:.3f}s")
        cores = os.cpu_count() or 1
        print(
            f"  this machine has {cores} cores shared by this app, the server and its two\n"
            "  workers, so offloading here can only win by running calls in parallel; on a\n"
            "  real device and edge server the server's cores are its own and the gap is the\n"
            "  difference in speed (see README's DCOF figures for an emulated slow device)."
        )

    print("\nserver stopped; the same calls now run on this device (DCOF's offline mode):")
    client = offload.configure(server=server.address, connect_timeout=0.5, heartbeat_timeout=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for attempt in ("first call (waits up to 0.5 s for the server)", "next call"):
            value, t = _timed(lambda: power(3, 10**5))
            print(f"  {attempt}: power(3, 10**5) = {value} in {t:.3f}s, pid {os.getpid()}")
    offload.configure(server=None)


if __name__ == "__main__":
    main()
