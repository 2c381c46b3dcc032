"""A measured trace: DCOF's three services, each call run on both sides under changing conditions.

The trace is a sequence of phases (Wi-Fi, a weak signal, a busy server, a
busy device, a low battery, Wi-Fi again); in each, the three services of DCOF
are called at several intensities in a seeded random order. Every call is run
here (under the emulated device's CPU quota) and on the edge server (over the
emulated link), and both outcomes are recorded with the device state and the
RTT at that moment: the ground truth that policies are replayed against
(:mod:`bench.decisions`).
"""

from __future__ import annotations

import contextlib
import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import offload
from examples import workloads
from offload.profiler import REMOTE, DeviceProfiler, Side
from offload.profiler.sizes import call_size

from . import delay, emulation

SERVICES: dict[str, offload.OffloadedFunction[..., Any]] = {
    "bubble_sort": workloads.bubble_sort,
    "matrix_multiply": workloads.matrix_multiply,
    "power": workloads.power,
}

#: Intensities per service: DCOF's ranges scaled to pure Python on an emulated device.
INTENSITIES = {
    "quick": {
        "bubble_sort": [40, 400, 1200, 2400],
        "matrix_multiply": [8, 50, 100, 150],
        "power": [2_000, 60_000, 300_000, 1_000_000],
    },
    "full": {
        "bubble_sort": [40, 150, 400, 800, 1200, 1800, 2400, 3000],
        "matrix_multiply": [8, 20, 40, 60, 80, 100, 130, 160],
        "power": [2_000, 20_000, 60_000, 150_000, 300_000, 600_000, 1_000_000, 1_600_000],
    },
}


@dataclass(frozen=True)
class Phase:
    """Conditions held for a stretch of the trace."""

    name: str
    mbit: float = 54.0
    server_hogs: int = 0
    device_busy: bool = False
    battery: int = 80  # percent, discharging
    drop_s: float = 0.0  # the link stalls for this long when the phase begins, then returns
    rtt_ms: float = 0.0  # added to every round trip (a far server: bench.delay)


PHASES = (
    Phase("wifi"),
    Phase("weak-signal", mbit=2.0),
    Phase("server-busy", server_hogs=6),
    Phase("device-busy", device_busy=True),
    Phase("low-battery", mbit=8.0, battery=12),
    Phase("wifi-again"),
    Phase("link-drop", drop_s=3.0),
    Phase("far-server", rtt_ms=150.0),  # a high RTT, the bandwidth of good Wi-Fi
)


@dataclass
class Step:
    """One call, measured on both sides."""

    phase: str
    service: str
    intensity: int
    size: int
    mbit: float | None
    rtt_s: float
    device: dict[str, Any]
    local_s: float
    remote_s: float
    server_s: float
    up: int
    down: int
    same: bool = field(default=True)  # both sides returned the same value
    server_up: bool = True  # a PING was answered within UP_S before the call


def arguments(service: str, intensity: int, seed: int) -> tuple[Any, ...]:
    """The arguments of one call: DCOF's inputs at ``intensity``, from ``seed``."""
    rng = random.Random(seed)
    if service == "bubble_sort":
        return ([rng.randrange(2**20) for _ in range(intensity)],)
    if service == "matrix_multiply":
        n = intensity
        return tuple([[rng.randrange(2**20) for _ in range(n)] for _ in range(n)] for _ in "ab")
    return (3, intensity)


#: A server that does not answer a PING within this many seconds is taken as down.
UP_S = 0.5

#: Times each (service, intensity) is called per phase: conditions hold for a while.
ROUNDS = {"quick": 1, "full": 2}


def plan(size: str, seed: int) -> list[tuple[Phase, str, int, int]]:
    """(phase, service, intensity, argument seed) for every call, in trace order."""
    rng = random.Random(seed)
    calls = []
    for phase in PHASES:
        batch = [(s, i) for s, levels in INTENSITIES[size].items() for i in levels]
        batch *= ROUNDS[size]
        rng.shuffle(batch)
        calls += [(phase, s, i, rng.randrange(2**31)) for s, i in batch]
    return calls


class Recorder:
    """A decider for ``mode="remote"`` calls that keeps the client's measurement of each."""

    def __init__(self) -> None:
        self.last: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)

    def decide(self, fn: Any, args: Any, kwargs: Any, server_up: bool) -> tuple[Side, int]:
        return REMOTE, call_size(fn, args, kwargs)

    def observe_local(self, fn: Any, size: int, seconds: float) -> None:
        pass

    def observe_remote(
        self,
        fn: Any,
        size: int,
        turnaround: float,
        server: float,
        up: int,
        down: int,
        alone: bool = True,
        link: Any = None,
    ) -> None:
        self.last = (turnaround, server, up, down)


#: How the decider learns the link's rate here, for every report (it flatters the decider).
LINK_RATE_NOTE = (
    "a sysfs-style interface whose speed the phases set to the emulated tbf rate, read by the "
    "decider: exactly the bottleneck's rate, which a real Wi-Fi link's reported PHY rate "
    "overstates, so ours is helped more here than it would be on a real device"
)


class Testbed:
    """The emulated device, link, battery and edge server the trace runs on."""

    def __init__(
        self,
        emulate: bool = True,
        device_share: float = 0.25,
        apps: tuple[str, ...] = ("examples.workloads",),
        allow_code_shipping: bool = False,
        extra_args: tuple[str, ...] = (),
        others: tuple[tuple[str, ...], ...] = (),
        far: bool = False,
    ) -> None:
        self.why_not = emulation.available() if emulate else {"device": "off", "link": "off"}
        self.device_share = device_share
        self.apps = apps
        self.allow_code_shipping = allow_code_shipping
        self.extra_args = extra_args
        #: The extra arguments of more servers beside the first, behind the same link.
        self.others_args = others
        self.others: list[offload.LocalServer] = []
        self._launcher: list[str] = []
        self._bind = "tcp://127.0.0.1:*"
        self.stack = contextlib.ExitStack()
        self.link: emulation.SlowLink | None = None
        self.device: emulation.SlowDevice | None = None
        self.server: offload.LocalServer | None = None
        #: ``far``: clients reach the server through a relay that can add a round-trip time.
        self.far = far
        self.delay: delay.Delay | None = None
        self.power_supply = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        self.set_battery(80)
        #: A sysfs-style network interface whose ``speed`` is the emulated link's rate.
        self.interface = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        self.set_link_speed(PHASES[0].mbit if self.why_not["link"] is None else None)

    def __enter__(self) -> Testbed:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def _start(self) -> None:
        launcher: list[str] = []
        bind = "tcp://127.0.0.1:*"
        if self.why_not["link"] is None:
            self.link = self.stack.enter_context(emulation.SlowLink(PHASES[0].mbit))
            launcher, bind = self.link.launcher, self.link.bind
        elif self.why_not["device"] is None:  # still keep the server off the device's CPU
            launcher = emulation.pinned_off_device()
        self._launcher, self._bind = launcher, bind
        self.server = self._serve(self.apps, self.allow_code_shipping, self.extra_args)
        self.others = [self._serve((), False, args) for args in self.others_args]
        if self.far:
            host = self.link.server_ip if self.link is not None else "127.0.0.1"
            scratch = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
            self.delay = delay.Delay(str(self.server), host, launcher, scratch)
            self.stack.callback(self.delay.stop)
        if self.why_not["device"] is None:  # after the server: children inherit the cgroup
            self.device = self.stack.enter_context(emulation.SlowDevice(self.device_share))

    def _serve(
        self, apps: tuple[str, ...], allow_code_shipping: bool, extra_args: tuple[str, ...]
    ) -> offload.LocalServer:
        """A server behind the link, off the device's CPU (stopped with the testbed)."""
        return self.stack.enter_context(
            offload.serve_local(
                apps,
                workers=1,
                allow_code_shipping=allow_code_shipping,
                bind=self._bind,
                launcher=self._launcher,
                extra_args=["--log-level", "WARNING", *extra_args],
            )
        )

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    @property
    def address(self) -> str:
        """Where clients connect: the server, or the relay in front of it."""
        return self.delay.address if self.delay is not None else str(self.server)

    def describe(self) -> dict[str, Any]:
        """What was emulated, for the report's header."""
        return {
            "device": f"client under a CPU quota of {self.device_share} of one CPU, pinned to CPU 0"
            if self.device
            else f"unemulated ({self.why_not['device']})",
            "link": "server in a network namespace behind a veth pair shaped by tc tbf "
            "(no added latency: the RTT is measured)"
            if self.link
            else f"unemulated: loopback ({self.why_not['link']})",
            "battery": "a sysfs-style power_supply directory the phases rewrite",
            **(
                {
                    "far": "every connection through a user-space TCP relay beside the server "
                    "(bench.delay) that holds each chunk for half the phase's added RTT each way"
                }
                if self.delay is not None
                else {}
            ),
            "link rate": LINK_RATE_NOTE,
        }

    def set_battery(self, percent: int) -> None:
        bat = self.power_supply / "BAT0"
        bat.mkdir(exist_ok=True)
        (bat / "type").write_text("Battery\n")
        (bat / "capacity").write_text(f"{percent}\n")
        (bat / "status").write_text("Discharging\n")

    def set_link_speed(self, mbit: float | None) -> None:
        """What the device's interface reports as its rate (-1, as sysfs: not known)."""
        (self.interface / "speed").write_text(f"{mbit if mbit is not None else -1:g}\n")

    @contextlib.contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Hold ``phase``'s conditions while the block runs."""
        self.set_battery(phase.battery)
        if self.link is not None:
            self.link.set_rate(phase.mbit)
            self.set_link_speed(phase.mbit)
        if self.delay is not None:
            self.delay.set(phase.rtt_ms)
        with contextlib.ExitStack() as stack:
            if phase.server_hogs:
                stack.enter_context(emulation.hog(phase.server_hogs))
            if phase.device_busy and self.device is not None:
                stack.enter_context(self.device.busy())
            time.sleep(0.3)  # let the load settle before measuring
            if phase.drop_s and self.link is not None:
                stack.enter_context(self._dropped(phase))
            yield

    @contextlib.contextmanager
    def _dropped(self, phase: Phase) -> Iterator[None]:
        """The link goes down for ``phase.drop_s`` (open connections survive it), then up."""
        assert self.link is not None
        link = self.link
        link.set_up(False)
        timer = threading.Timer(phase.drop_s, link.set_up, (True,))
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()
            link.set_up(True)

    def mbit(self, phase: Phase) -> float | None:
        return phase.mbit if self.link is not None else None


def run(
    bed: Testbed, size: str, seed: int, progress: Any = print
) -> Iterator[tuple[Phase, str, int, tuple[Any, ...]]]:
    """Yield every call of the plan (phase, service, intensity, arguments) under its phase."""
    with contextlib.ExitStack() as held:
        current: Phase | None = None
        for n, (phase, service, intensity, arg_seed) in enumerate(plan(size, seed)):
            if phase is not current:
                held.close()
                held.enter_context(bed.phase(phase))
                current = phase
                progress(f"  phase {phase.name}: from call {n + 1}")
            yield phase, service, intensity, arguments(service, intensity, arg_seed)


def measure(bed: Testbed, size: str, seed: int, progress: Any = print) -> list[Step]:
    """Run every call of the plan on both sides; return the trace."""
    recorder = Recorder()
    device = DeviceProfiler(power_supply=bed.power_supply, interface=bed.interface)
    steps: list[Step] = []
    with offload.Client(bed.address, decider=recorder, profile_cache="") as client:
        client.ping(timeout=30)
        for phase, service, intensity, args in run(bed, size, seed, progress):
            fn = SERVICES[service]
            start = time.perf_counter()
            try:  # what a client would see: is the server answering right now?
                client.ping(timeout=UP_S)
                answering = True
            except offload.ServerUnavailable:  # the remote call below waits for the link
                answering = False
            rtt = time.perf_counter() - start
            state = device.sample()
            start = time.perf_counter()
            here = fn.__wrapped__(*args)
            local_s = time.perf_counter() - start
            there = client.call(fn, args, {}, mode="remote")
            remote_s, server_s, up, down = recorder.last
            steps.append(
                Step(
                    phase=phase.name,
                    service=service,
                    intensity=intensity,
                    size=call_size(fn, args, {}),
                    mbit=bed.mbit(phase),
                    rtt_s=rtt,
                    device=asdict(state),
                    local_s=local_s,
                    remote_s=remote_s,
                    server_s=server_s,
                    up=up,
                    down=down,
                    same=here == there,
                    server_up=answering,
                )
            )
    return steps


def saved_path(results: Path, size: str) -> Path:
    """Where the measured trace of ``size`` is saved under ``results``."""
    return results / ("decisions_trace.json" if size == "full" else f"decisions_trace_{size}.json")


def save(path: Path, size: str, seed: int, testbed: dict[str, Any], steps: list[Step]) -> None:
    """Write a measured trace, one step a line, so that it can be replayed (``--replay``)."""
    head = json.dumps({"size": size, "seed": seed, "testbed": testbed})
    body = ",\n".join(json.dumps(asdict(s)) for s in steps)
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'{{"meta": {head},\n"steps": [\n{body}\n]}}\n')


def load(path: Path) -> tuple[dict[str, Any], list[Step]]:
    """(meta, steps) of a trace saved by :func:`save`."""
    data = json.loads(Path(path).read_text())
    return data["meta"], [Step(**s) for s in data["steps"]]
