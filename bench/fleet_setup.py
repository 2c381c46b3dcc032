"""bench fleet's setup: three servers behind shaped links, and the conditions that change.

Each server runs in its own network namespace behind a veth pair shaped by
``tc tbf`` (:class:`FleetLink`), in a cgroup of its own with a CPU quota
(:mod:`bench.fleet_cpu`), at a distance from the client (:data:`SERVERS`).
:class:`Fleet` starts, kills, restarts and reshapes them; :func:`busy` is the
other client that keeps a server's queue full.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import offload

from . import emulation, fleet_cpu
from .fleet_app import work

CLIENT_AT = (57.0488, 9.9217)
#: name -> (distance km, link Mbit/s, workers)
SERVERS = {"near": (1.5, 8.0, 1), "mid": (6.0, 40.0, 2), "far": (25.0, 100.0, 1)}
#: name -> the share of one CPU its server and workers may use (a cgroup's quota)
CPU = {"near": 0.5, "mid": 1.0, "far": 0.3}
WEAK_MBIT = 2.0
#: The settings of every client of the bench (each policy's, the busy one's).
CLIENT = {"mode": "remote", "heartbeat_timeout": 2.0, "profile_cache": "", "retry_interval": 1.0}


class FleetLink(emulation.SlowLink):
    """A :class:`~bench.emulation.SlowLink` with names of its own (three at once)."""

    def __init__(self, mbit: float, index: int, subnet: int = 80) -> None:
        super().__init__(mbit, subnet=subnet + index)
        tag = f"{os.getpid() % 10000}{index}"
        self.netns = f"offload-fleet-{tag}"
        self._host, self._peer = f"of{tag}a", f"of{tag}b"


class Fleet:
    """The three servers and their links; kill, restart, reshape."""

    def __init__(self, stack: contextlib.ExitStack, subnet: int = 80) -> None:
        self._stack = stack
        self.links: dict[str, FleetLink] = {}
        self.quotas = {n: stack.enter_context(fleet_cpu.CpuQuota(CPU[n], n)) for n in SERVERS}
        self.servers: dict[str, offload.LocalServer] = {}
        self.address: dict[str, str] = {}
        for index, (name, (_, mbit, _)) in enumerate(SERVERS.items()):
            self.links[name] = stack.enter_context(FleetLink(mbit, index, subnet))
            self.start(name)
        stack.callback(self.stop)

    def start(self, name: str) -> None:
        km, _, workers = SERVERS[name]
        link = self.links[name]
        location = f"{CLIENT_AT[0] + km / 111.2:.5f},{CLIENT_AT[1]:.5f}"
        bind = self.address.get(name, link.bind)
        server = offload.serve_local(
            ["bench.fleet_app"],
            workers=workers,
            bind=bind,
            launcher=[*self.quotas[name].launcher, *link.launcher],
            extra_args=["--log-level", "ERROR", "--name", name, "--location", location],
        )
        self.servers[name] = server
        self.address[name] = server.address
        ready(server.address, workers)

    def kill(self, name: str) -> None:
        process = self.servers[name].process
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def alive(self, name: str) -> bool:
        return self.servers[name].process.poll() is None

    def reset(self) -> None:
        """Every link at its rate, every server running."""
        for name, (_, mbit, _) in SERVERS.items():
            if self.links[name].mbit != mbit:
                self.links[name].set_rate(mbit)
            if not self.alive(name):
                self.servers[name].stop()
                self.start(name)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def name_of(self, pid: int) -> str:
        """The server whose worker answered (``pid``: its parent), or "here"."""
        return next((n for n, s in self.servers.items() if s.process.pid == pid), "here")


def ready(address: str, workers: int, timeout: float = 60.0) -> None:
    """Wait until the server at ``address`` says all its ``workers`` are ready (started).

    A restarted server answers PINGs seconds before its workers have started;
    the phase begins once they have, so every policy meets the same server
    (ours leaves a server out while its PONG says none is ready; a fixed
    policy's first call would wait there, and the per-call oracle would take
    the calls after that wait from whichever policy paid it).
    """
    deadline = time.monotonic() + timeout
    with offload.Client(address, **CLIENT) as client:
        while True:
            with contextlib.suppress(offload.OffloadError, TimeoutError):
                load = client.ping(timeout=2).get("load", {})
                if load.get("ready", workers) >= workers:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address}: its workers did not start in {timeout:g} s")
            time.sleep(0.1)


@contextlib.contextmanager
def busy(address: str, workers: int) -> Iterator[None]:
    """Another client keeps ``3 * workers`` calls of 0.3 s queued on ``address``."""
    stop = threading.Event()

    def load() -> None:
        with offload.Client(address, **CLIENT) as other:
            pending: list[Any] = []
            while not stop.is_set():
                pending = [f for f in pending if not f.done()]
                while len(pending) < 3 * workers:
                    pending.append(other.submit(work, b"", 0.3))
                time.sleep(0.02)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(1.5)  # its load shows in the server's PONGs
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
