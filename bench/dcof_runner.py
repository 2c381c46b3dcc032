"""One call of DCOF's evaluation in one scenario, measured (used by :mod:`bench.dcof`).

:class:`Runner` runs a call locally, the traditional way (the app deployed
anew first), by value, or as DCOF does (arguments only), and measures its
turnaround, the frame bytes each way (:class:`FrameMeter`), the bytes the
emulated link carried, the client's CPU and modelled energy;
:func:`measure` runs a plan in every scenario in a rotating order.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import offload
from offload import deploy
from offload.bundle import Bundle
from offload.runtime import protocol
from offload.runtime.transport import SENT

from . import compiled, trace
from .decisions import ASSUMED_MBIT, ENERGY

SCENARIOS = ("local", "traditional", "by_value", "dcof")


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
