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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.auth

import offload
from offload.bundle import Bundle, pack
from offload.runtime.functions import pickle_by_value

from . import compiled, dcof_report, trace
from .dcof_runner import SCENARIOS, Runner, measure, rtt, warm_up
from .decisions import ASSUMED_MBIT, ENERGY

RESULTS = Path(__file__).parent / "results"

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
