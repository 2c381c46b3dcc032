"""DCOF's evaluation reproduced: three services, three scenarios, on an emulated phone and link.

Shiraz et al., "A Lightweight Distributed Framework for Computational
Offloading in Mobile Cloud Computing" (PLoS ONE 9(8) e102270, 2014;
"Methodology" and "Results and Discussion") ran bubble sort (11,000-40,000
ints), an integer matrix product (160x160-450x450) and a power compute
(exponent 10^6-2x10^8) on a phone over 802.11g (54 Mbit/s), each at 30
intensities, in three scenarios. Here, with :mod:`bench.compiled`:

* ``local``: the compiled kernel runs in this process, the emulated device;
* ``traditional``: the function travels by value with every call and the
  server compiles it anew (numba, no cache) before running it;
* ``dcof``: the server already holds the compiled code; only the arguments
  and the result cross the link.

Each (service, intensity) is run in all three scenarios, in a rotating order,
``reps`` times, with the same arguments per repetition. Measured per call:
turnaround, the ZeroMQ frame bytes each way (header frames included), the
bytes the emulated link carried (TCP/IP and heartbeats included), the
client's CPU seconds, and energy from the profiler's model. The testbed is
:class:`bench.trace.Testbed` (CPU quota for the client, tc tbf link to a
server in its own network namespace). ``python -m bench dcof [--quick]``
writes ``bench/results/dcof.json``, ``dcof.md`` and the figures
(:mod:`bench.dcof_report`).
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import offload
from offload.runtime import protocol
from offload.runtime.functions import pickle_by_value
from offload.runtime.transport import SENT

from . import compiled, dcof_report, trace
from .decisions import ASSUMED_MBIT, ENERGY

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("local", "traditional", "dcof")

#: Intensities per service: list length, matrix side, exponent. ``full`` spans the
#: paper's ranges on its own grids (steps of 1,000 and 10) with 8 of its 30 points.
INTENSITIES: dict[str, dict[str, list[int]]] = {
    "full": {
        "bubble_sort": [11_000, 15_000, 19_000, 23_000, 27_000, 31_000, 35_000, 40_000],
        "matrix_multiply": [160, 200, 240, 280, 320, 360, 400, 450],
        "power": [10**6, *(k * 3 * 10**7 for k in range(1, 7)), 2 * 10**8],
    },
    "quick": {
        "bubble_sort": [11_000, 20_000],
        "matrix_multiply": [160, 300],
        "power": [10**6, 4 * 10**7],
    },
}
REPS = {"full": 5, "quick": 3}


class FrameMeter:
    """Counts the bytes of every ZeroMQ frame one client's data connection sends and receives.

    The framework's own counts (what the profiler learns from) leave out the
    header frame of each message; this counts every frame of each call and
    its reply, header included, through the connection's observer. ZMTP's few bytes of
    framing per frame and TCP/IP are on top (see the link counters).
    """

    def __init__(self, client: offload.Client) -> None:
        self.up = 0
        self.down = 0
        client.servers.require().conn.observe(self._count)

    def _count(self, request_id: int, direction: str, kind: int, frames: int, nbytes: int) -> None:
        # Only calls and their replies: the profiler's idle PINGs share the connection.
        if direction == SENT:
            if kind == protocol.CALL:
                self.up += nbytes
        elif kind in REPLIES:
            self.down += nbytes


REPLIES = frozenset((protocol.RESULT, protocol.ERROR, protocol.CHECKPOINT))


def _seed(seed: int, service: str, intensity: int, rep: int) -> int:
    return zlib.crc32(f"{seed}/{service}/{intensity}/{rep}".encode())


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else bool(a == b)


class Runner:
    """Runs one call in one scenario on a testbed and measures it."""

    def __init__(self, bed: trace.Testbed, client: offload.Client) -> None:
        self.bed = bed
        self.client = client
        self.meter = FrameMeter(client)
        self.rate = (bed.link.mbit if bed.link else ASSUMED_MBIT) * 1e6 / 8

    def _link(self) -> tuple[int, int]:
        return self.bed.link.counters() if self.bed.link else (0, 0)

    def call(
        self, service: str, scenario: str, args: tuple[Any, ...]
    ) -> tuple[Any, dict[str, Any]]:
        """(result, measurement) of one call."""
        replicated, migrated = compiled.SERVICES[service]
        up0, down0, (wire_up0, wire_down0) = self.meter.up, self.meter.down, self._link()
        cpu0 = time.process_time()
        start = time.perf_counter()
        if scenario == "local":
            value = replicated.__wrapped__(*args)
        else:
            fn = migrated if scenario == "traditional" else replicated
            value = self.client.call(fn, args, {}, mode="remote")
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        wire_up, wire_down = self._link()
        up, down = self.meter.up - up0, self.meter.down - down0
        if self.bed.link:  # the radio carries what the link carried
            radio_up, radio_down = wire_up - wire_up0, wire_down - wire_down0
        else:
            radio_up, radio_down = up, down
        energy = (
            ENERGY.local(seconds)
            if scenario == "local"
            else ENERGY.remote(radio_up / self.rate, radio_down / self.rate, seconds)
        )
        return value, {
            "turnaround_s": seconds,
            "bytes_up": up,
            "bytes_down": down,
            "wire_up": wire_up - wire_up0 if self.bed.link else None,
            "wire_down": wire_down - wire_down0 if self.bed.link else None,
            "client_cpu_s": cpu,
            "energy_j": energy,
        }


def calls(plan: dict[str, list[int]], reps: int) -> Iterator[tuple[int, str, int]]:
    """(repetition, service, intensity) in run order."""
    for rep in range(reps):
        for service, levels in plan.items():
            for intensity in levels:
                yield rep, service, intensity


def measure(
    runner: Runner,
    plan: dict[str, list[int]],
    reps: int,
    seed: int,
    tick: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Every call of the plan in every scenario; one record per call."""
    samples: list[dict[str, Any]] = []
    for rep, service, intensity in calls(plan, reps):
        args = compiled.arguments(service, intensity, _seed(seed, service, intensity, rep))
        shift = rep % len(SCENARIOS)  # rotate who goes first: drift hits all alike
        values: dict[str, Any] = {}
        for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
            values[scenario], record = runner.call(service, scenario, args)
            samples.append(
                {"service": service, "scenario": scenario, "intensity": intensity, "rep": rep}
                | record
            )
            tick(f"{service} {intensity} {scenario}")
        for done in samples[-len(SCENARIOS) :]:
            done["correct"] = _same(values[done["scenario"]], values["local"])
    return samples


def rtt(client: offload.Client, pings: int = 30) -> float:
    """Median seconds of a PING round trip (an empty message each way)."""
    times = []
    for _ in range(pings):
        start = time.perf_counter()
        client.ping(timeout=30)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_up(runner: Runner, plan: dict[str, list[int]]) -> None:
    """Load every kernel on both sides and run one compile on the server, unmeasured.

    The first numba compile in a process also initialises numba itself; the
    per-call compile the traditional scenario pays is the steady one after it.
    The first large message on a fresh connection is slower too (buffers grow),
    so one call at each service's smallest intensity goes first.
    """
    compiled.warm()
    for service in compiled.SERVICES:
        args = compiled.arguments(service, 8, 0)
        for scenario in SCENARIOS:
            runner.call(service, scenario, args)
    for service, levels in plan.items():
        runner.call(service, "dcof", compiled.arguments(service, levels[0], 0))


def run(
    plan: dict[str, list[int]],
    reps: int,
    seed: int = 20261122,
    emulate: bool = True,
    device_share: float = 0.25,
    mbit: float = 54.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Set up the testbed, measure the plan, and return the report (not yet written)."""
    began = time.time()
    with trace.Testbed(
        emulate=emulate,
        device_share=device_share,
        apps=("bench.compiled",),
        allow_code_shipping=True,
    ) as bed:
        if bed.link is not None:
            bed.link.set_rate(mbit)
        with offload.Client(bed.server, profile_cache="", heartbeat_timeout=120) as client:
            client.ping(timeout=60)
            runner = Runner(bed, client)
            warm_up(runner, plan)
            round_trip = rtt(client)
            total = reps * sum(len(v) for v in plan.values()) * len(SCENARIOS)
            with _bar(total, progress) as tick:
                samples = measure(runner, plan, reps, seed, tick)
        testbed = bed.describe()
        testbed.pop("battery")  # the trace's phases rewrite it; this run has none
        if bed.link is not None:
            testbed["link"] += f"; rate {mbit} Mbit/s each way"
        else:
            testbed["link"] += f"; energy takes the radio at {ASSUMED_MBIT} Mbit/s"
        testbed["rtt_ms"] = f"{round_trip * 1e3:.3f} (median of 30 PINGs, measured)"
    code = {
        name: len(pickle_by_value(fns[1].__wrapped__)) for name, fns in compiled.SERVICES.items()
    }
    return dcof_report.summarise(
        samples,
        {
            "plan": plan,
            "reps": reps,
            "seed": seed,
            "testbed": testbed,
            "machine": dcof_report.machine(),
            "energy": ENERGY.source + ": " + ENERGY.profile.source,
            "shipped_code_bytes": code,
            "rtt_s": round_trip,
            "wall_s": time.time() - began,
        },
    )


class _bar:
    """A tqdm progress bar over the calls (or nothing), as a context giving its ``tick``."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.show = total, show
        self.bar: Any = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.show:
            return lambda _: None
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, unit="call", dynamic_ncols=True)

        def tick(label: str) -> None:
            self.bar.set_postfix_str(label, refresh=False)
            self.bar.update()

        return tick

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench dcof")
    parser.add_argument("--quick", action="store_true", help="two intensities each (~1 minute)")
    parser.add_argument("--reps", type=int, help="repetitions per intensity (default 5, quick 3)")
    parser.add_argument("--no-emulation", action="store_true", help="loopback, no CPU quota")
    parser.add_argument("--device-share", type=float, default=0.25, help="device CPU quota")
    parser.add_argument("--mbit", type=float, default=54.0, help="emulated link rate")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    parser.add_argument("--no-progress", action="store_true")
    opts = parser.parse_args(argv)
    size = "quick" if opts.quick else "full"
    report = run(
        INTENSITIES[size],
        opts.reps or REPS[size],
        seed=opts.seed,
        emulate=not opts.no_emulation,
        device_share=opts.device_share,
        mbit=opts.mbit,
        progress=not opts.no_progress,
    )
    report["size"] = size
    print(dcof_report.write(report, opts.out))
    return report
