"""DCOF's evaluation reproduced: three services, three scenarios, on an emulated phone and link.

Shiraz et al., "A Lightweight Distributed Framework for Computational
Offloading in Mobile Cloud Computing" (PLoS ONE 9(8) e102270, 2014;
"Methodology" and "Results and Discussion") ran bubble sort (11,000-40,000
ints), an integer matrix product (160x160-450x450) and a power compute
(exponent 10^6-2x10^8) on a phone over 802.11g (54 Mbit/s), each at 30
intensities, in three scenarios. Each service here is an app of its own
(:mod:`bench.dcof_app`: ``dcof_sort.py``, ``dcof_matrix.py``,
``dcof_power.py``, their kernels compiled with numba), in four scenarios:

* ``local``: the compiled kernel runs in this process, the emulated device;
* ``traditional``, as the paper built it: before every call the app's
  bundle (packed as ``offload deploy`` packs it) travels whole to a server
  of its own and is set up anew there (``deploy --fresh``: unpacked, imported
  in a fresh interpreter, then a fresh worker imports it and compiles the
  kernel) before the call runs;
* ``by_value``: the function travels by value (cloudpickle) with every call
  and the server compiles it anew (numba, no cache) before running it (this
  benchmark's traditional scenario before the apps could be deployed);
* ``dcof``: the app was deployed once; only the arguments and the result
  cross the link.

``--sweep`` repeats a short plan at lower device CPU shares, towards the
paper's ratio of computing here to moving the data (its phone needed 99 s
for a 450x450 product).

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
import importlib
import os
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq.auth

import offload
from offload import deploy
from offload.bundle import Bundle, pack
from offload.runtime import protocol
from offload.runtime.functions import pickle_by_value
from offload.runtime.transport import SENT

from . import compiled, dcof_report, trace
from .decisions import ASSUMED_MBIT, ENERGY

RESULTS = Path(__file__).parent / "results"
SCENARIOS = ("local", "traditional", "by_value", "dcof")

#: Each service's app: a module of bench/dcof_app (not on the servers' path until deployed).
APP_DIR = Path(__file__).parent / "dcof_app"
APPS = {"bubble_sort": "dcof_sort", "matrix_multiply": "dcof_matrix", "power": "dcof_power"}

#: Device CPU shares of the sweep, and its plan (the quick intensities, fewer repetitions).
SWEEP_SHARES = (0.25, 0.1, 0.04, 0.01)
SWEEP_REPS = 2

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
        # Calls, deployments and their replies: the profiler's idle PINGs share the connection.
        if direction == SENT:
            if kind in REQUESTS:
                self.up += nbytes
        elif kind in REPLIES:
            self.down += nbytes


REQUESTS = frozenset((protocol.CALL, protocol.CONTROL))
REPLIES = frozenset((protocol.RESULT, protocol.ERROR, protocol.CHECKPOINT, protocol.CONTROL))


def _seed(seed: int, service: str, intensity: int, rep: int) -> int:
    return zlib.crc32(f"{seed}/{service}/{intensity}/{rep}".encode())


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else bool(a == b)


class Runner:
    """Runs one call in one scenario on a testbed and measures it.

    ``client`` talks to the server that holds the deployed apps (and takes
    functions by value); ``fresh`` to the traditional scenario's server, to
    which every call's app is deployed anew first.
    """

    def __init__(
        self,
        bed: trace.Testbed,
        client: offload.Client,
        fresh: offload.Client,
        services: dict[str, Any],
        bundles: dict[str, Bundle],
    ) -> None:
        self.bed = bed
        self.client = client
        self.fresh = fresh
        self.services = services
        self.bundles = bundles
        self.meter = FrameMeter(client)
        self.fresh_meter = FrameMeter(fresh)
        self.rate = (bed.link.mbit if bed.link else ASSUMED_MBIT) * 1e6 / 8

    def _link(self) -> tuple[int, int]:
        return self.bed.link.counters() if self.bed.link else (0, 0)

    def call(
        self, service: str, scenario: str, args: tuple[Any, ...]
    ) -> tuple[Any, dict[str, Any]]:
        """(result, measurement) of one call."""
        app = self.services[service]
        meter = self.fresh_meter if scenario == "traditional" else self.meter
        up0, down0, (wire_up0, wire_down0) = meter.up, meter.down, self._link()
        setup = 0.0
        cpu0 = time.process_time()
        start = time.perf_counter()
        if scenario == "local":
            value = app.__wrapped__(*args)
        elif scenario == "traditional":  # the app travels and is set up anew, then the call
            remote = self.fresh.servers.require()
            setup = deploy.deploy(remote, self.bundles[service], fresh=True, timeout=600).setup_s
            value = self.fresh.call(app, args, {}, mode="remote")
        elif scenario == "by_value":
            value = self.client.call(compiled.SERVICES[service][1], args, {}, mode="remote")
        else:
            value = self.client.call(app, args, {}, mode="remote")
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        wire_up, wire_down = self._link()
        up, down = meter.up - up0, meter.down - down0
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
            "setup_s": setup,  # traditional: the server unpacking and checking the app
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
    """Load every kernel on both sides and run one compile on the servers, unmeasured.

    The first numba compile in a process also initialises numba itself; the
    per-call set-up the traditional and by-value scenarios pay is the steady
    one after it. The first large message on a fresh connection is slower
    too (buffers grow), so one call at each service's smallest intensity goes first.
    """
    for service, app in runner.services.items():
        app.__wrapped__(*compiled.arguments(service, 8, 0))
        deploy.deploy(runner.client.servers.require(), runner.bundles[service])
    for service in runner.services:
        args = compiled.arguments(service, 8, 0)
        for scenario in SCENARIOS:
            runner.call(service, scenario, args)
    for service, levels in plan.items():
        runner.call(service, "dcof", compiled.arguments(service, levels[0], 0))


def keys(directory: Path) -> dict[str, str]:
    """A server key pair and a client key pair, the client allowed and a deployer."""
    for name in ("server", "device"):
        zmq.auth.create_certificates(str(directory), name)
    for sub in ("allowed", "deployers"):
        (directory / sub).mkdir()
        (directory / sub / "device.key").write_bytes((directory / "device.key").read_bytes())
    return {
        "server_key": str(directory / "server.key"),
        "client_key": str(directory / "device.key_secret"),
    }


def server_args(directory: Path, data: str) -> tuple[str, ...]:
    """The options of a bench server that takes deployments from the device's key."""
    return (
        "--secret-key",
        str(directory / "server.key_secret"),
        "--authorized-keys",
        str(directory / "allowed"),
        "--deployers",
        str(directory / "deployers"),
        "--deploy-keep",
        "2",
        "--data-dir",
        data,
    )


def apps() -> tuple[dict[str, Any], dict[str, Bundle]]:
    """Each service's offloaded function, imported from its app, and the app's bundle.

    Imported only once the servers run: their path must not hold the apps (a
    deployment of a module the server already has is refused).
    """
    if str(APP_DIR) not in sys.path:
        sys.path.append(str(APP_DIR))
    functions, bundles = {}, {}
    for service, module in APPS.items():
        functions[service] = getattr(importlib.import_module(module), service)
        bundles[service] = pack(APP_DIR / f"{module}.py")
    return functions, bundles


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
    began, load = time.time(), os.getloadavg()[0]
    while str(APP_DIR) in sys.path:  # the servers must not find the apps before they are deployed
        sys.path.remove(str(APP_DIR))
    with tempfile.TemporaryDirectory(prefix="bench-dcof-") as tmp:
        home = Path(tmp)
        secrets = keys(home)
        with trace.Testbed(
            emulate=emulate,
            device_share=device_share,
            apps=(),
            allow_code_shipping=True,
            extra_args=server_args(home, str(home / "deployed")),
            others=(server_args(home, str(home / "fresh")),),
        ) as bed:
            if bed.link is not None:
                bed.link.set_rate(mbit)
            services, bundles = apps()
            settings = {"profile_cache": "", "heartbeat_timeout": 120, **secrets}
            with (
                offload.Client(bed.server, **settings) as client,
                offload.Client(bed.others[0], **settings) as fresh,
            ):
                client.ping(timeout=60)
                fresh.ping(timeout=60)
                runner = Runner(bed, client, fresh, services, bundles)
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
            testbed["load"] = (
                f"{load:.1f} before, {os.getloadavg()[0]:.1f} after (one minute, "
                f"{os.cpu_count()} CPUs)"
            )
            testbed["servers"] = (
                "two, CurveZMQ on, one worker each: one holds the deployed apps and takes "
                "functions by value (dcof, by_value), the other gets every call's app anew "
                "(traditional)"
            )
    code = {
        name: len(pickle_by_value(fns[1].__wrapped__)) for name, fns in compiled.SERVICES.items()
    }
    return dcof_report.summarise(
        samples,
        {
            "plan": plan,
            "reps": reps,
            "seed": seed,
            "device_share": device_share,
            "mbit": mbit,
            "testbed": testbed,
            "machine": dcof_report.machine(),
            "energy": ENERGY.source + ": " + ENERGY.profile.source,
            "shipped_code_bytes": code,
            "shipped_bundle_bytes": {s: b.size for s, b in bundles.items()},
            "bundle_files": {s: [e.path for e in b.files] for s, b in bundles.items()},
            "rtt_s": round_trip,
            "wall_s": time.time() - began,
        },
    )


def sweep(
    shares: tuple[float, ...], reps: int, seed: int, emulate: bool, mbit: float, progress: bool
) -> list[dict[str, Any]]:
    """The quick plan at each device CPU share: each share's summary, without its samples."""
    points = []
    for share in shares:
        report = run(INTENSITIES["quick"], reps, seed, emulate, share, mbit, progress)
        points.append(dcof_report.sweep_point(report))
    return points


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
    parser.add_argument("--quick", action="store_true", help="two intensities each (~3 minutes)")
    parser.add_argument("--reps", type=int, help="repetitions per intensity (default 5, quick 3)")
    parser.add_argument("--no-emulation", action="store_true", help="loopback, no CPU quota")
    parser.add_argument("--device-share", type=float, default=0.25, help="device CPU quota")
    parser.add_argument(
        "--sweep",
        nargs="?",
        const=",".join(map(str, SWEEP_SHARES)),
        metavar="SHARES",
        help="also run the quick plan at these device CPU shares (default "
        f"{','.join(map(str, SWEEP_SHARES))}; {SWEEP_REPS} repetitions)",
    )
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
    if opts.sweep:
        shares = tuple(float(x) for x in opts.sweep.split(","))
        report["sweep"] = sweep(
            shares, SWEEP_REPS, opts.seed, not opts.no_emulation, opts.mbit, not opts.no_progress
        )
    print(dcof_report.write(report, opts.out))
    return report
