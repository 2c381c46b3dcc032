"""Emulating a weak device and a Wi-Fi link on one machine (Linux, as root).

* :class:`SlowDevice`: this process (the client) goes into a cgroup with a CPU
  quota (v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``) and is pinned to CPU 0,
  so it computes ``1 / share`` times slower than the edge server, which gets
  the other CPUs. :meth:`SlowDevice.busy` adds a competing process inside the
  quota (another app keeping the phone's CPU busy).
* :class:`SlowLink`: the edge server runs in its own network namespace,
  reached over a veth pair whose two ends are shaped by a ``tc`` token-bucket
  filter (``tbf``) to ``mbit`` Mbit/s; :meth:`SlowLink.set_rate` changes it
  mid-run. ``netem`` (added latency) is used when the kernel has it; where it
  does not, nothing pretends: the RTT is measured and reported instead.
* :func:`hog`: CPU-bound processes pinned next to the server (a competing job).

Each piece is a context manager that undoes what it did. Where a piece is not
permitted (not root, no cgroup, one CPU), :func:`available` says why and the
benchmarks run unemulated, saying so in their report.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

CGROUP = Path("/sys/fs/cgroup")
_PERIOD_US = 4_000  # short, so a 4 ms call already runs at the quota, not in a burst


def available() -> dict[str, str | None]:
    """For each emulation, ``None`` if it can run here, else why not."""
    reasons: dict[str, str | None] = {"device": None, "link": None}
    if os.geteuid() != 0:
        return {"device": "not root", "link": "not root"}
    if (os.cpu_count() or 1) < 2:
        reasons["device"] = "one CPU: client and server cannot be separated"
    elif (
        not (CGROUP / "cpu" / "cpu.cfs_quota_us").exists()
        and not (CGROUP / "cgroup.controllers").exists()
    ):
        reasons["device"] = "no cgroup cpu controller"
    try:
        _run("ip", "netns", "add", "offload-probe")
        _run("ip", "netns", "del", "offload-probe")
    except (OSError, subprocess.CalledProcessError) as exc:
        reasons["link"] = f"cannot create a network namespace: {exc}"
    return reasons


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


E = TypeVar("E", bound="_Emulation")


class _Emulation:
    """Set up in ``_enter``; whatever fails half-way is undone by ``__exit__``."""

    def __enter__(self: E) -> E:
        try:
            self._enter()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _enter(self) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        raise NotImplementedError


class SlowDevice(_Emulation):
    """This process under a CPU quota of ``share`` of one CPU, pinned to CPU 0."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.name = f"offload-device-{os.getpid()}"
        self._groups: list[Path] = []
        self._homes: list[Path] = []  # the group this process was in, per hierarchy
        self._affinity: set[int] = set()

    def _enter(self) -> None:
        # The kernel's least quota is 1 ms: below a quarter of one CPU, the period grows
        # with it (a call shorter than the quota then runs at full speed: a burst).
        period = max(_PERIOD_US, round(1000 / self.share))
        quota = max(1000, int(self.share * period))
        v1 = CGROUP / "cpu" / "cpu.cfs_quota_us"
        if v1.exists():
            cpu = CGROUP / "cpu" / self.name
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.cfs_period_us").write_text(str(period))
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))
            self._add(cpu, CGROUP / "cpu" / _current("cpu"))
            if (CGROUP / "cpuacct").is_dir() and not (cpu / "cpuacct.usage").exists():
                acct = CGROUP / "cpuacct" / self.name
                acct.mkdir(exist_ok=True)
                self._add(acct, CGROUP / "cpuacct" / _current("cpuacct"))
        else:
            group = CGROUP / self.name
            group.mkdir(exist_ok=True)
            self._add(group, CGROUP / _current(""))
            (group / "cpu.max").write_text(f"{quota} {period}")
        self._affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        self._join(os.getpid())

    def _add(self, group: Path, home: Path) -> None:
        self._groups.append(group)
        self._homes.append(home)

    def _join(self, pid: int) -> None:
        for group in self._groups:
            (group / "cgroup.procs").write_text(str(pid))

    def busy(self) -> contextlib.AbstractContextManager[None]:
        """Another process saturating the device's CPU while the block runs."""
        return self._busy()

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        proc = _spin(cpus="0")
        try:
            self._join(proc.pid)
            yield
        finally:
            _stop(proc)

    def __exit__(self, *exc: object) -> None:
        for home in self._homes:  # back home, then remove our groups
            with contextlib.suppress(OSError):
                (home / "cgroup.procs").write_text(str(os.getpid()))
        if self._affinity:
            os.sched_setaffinity(0, self._affinity)
        for group in self._groups:
            with contextlib.suppress(OSError):
                group.rmdir()


class SlowLink(_Emulation):
    """A network namespace for the server, a veth pair, and ``tc tbf`` at ``mbit`` Mbit/s."""

    def __init__(self, mbit: float, subnet: int = 77) -> None:
        self.mbit = mbit
        self.netns = f"offload-edge-{os.getpid()}"
        self._host, self._peer = f"oe{os.getpid() % 100000}a", f"oe{os.getpid() % 100000}b"
        self.client_ip, self.server_ip = f"10.{subnet}.0.1", f"10.{subnet}.0.2"
        self.netem = False

    @property
    def launcher(self) -> list[str]:
        """Command prefix that starts a process inside the server's namespace, off CPU 0."""
        return ["ip", "netns", "exec", self.netns, *pinned_off_device()]

    @property
    def bind(self) -> str:
        return f"tcp://{self.server_ip}:*"

    def _enter(self) -> None:
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self._host, "type", "veth", "peer", "name", self._peer)
        _run("ip", "link", "set", self._peer, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.client_ip}/24", "dev", self._host)
        _run("ip", "link", "set", self._host, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "addr", "add", f"{self.server_ip}/24", "dev", self._peer)
        _run(*inside, "ip", "link", "set", self._peer, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        self.set_rate(self.mbit, add=True)

    def set_rate(self, mbit: float, add: bool = False) -> None:
        """Shape both directions to ``mbit`` Mbit/s."""
        self.mbit = mbit
        verb = "add" if add else "change"
        # A bucket of ~10 ms at the rate (at least 16 KB) and a 50 ms queue, as a
        # Wi-Fi access point roughly behaves.
        burst = max(16_000, int(mbit * 1e6 / 8 * 0.01))
        spec = ("tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms")
        _run("tc", "qdisc", verb, "dev", self._host, "root", *spec)
        _run(
            "ip", "netns", "exec", self.netns, "tc", "qdisc", verb, "dev", self._peer, "root", *spec
        )

    def set_up(self, up: bool) -> None:
        """Take the client's end of the link down (nothing gets through) or bring it back."""
        _run("ip", "link", "set", self._host, "up" if up else "down")

    def counters(self) -> tuple[int, int]:
        """(bytes sent towards the server, bytes received from it) on the client's veth end.

        Everything the link carried: IP packets with their TCP headers, ACKs and
        heartbeats included, as the radio would.
        """
        stats = Path("/sys/class/net") / self._host / "statistics"
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())

    def __exit__(self, *exc: object) -> None:
        _run("ip", "netns", "del", self.netns, check=False)  # takes the veth pair with it
        _run("ip", "link", "del", self._host, check=False)


def pinned_off_device() -> list[str]:
    """Command prefix that keeps a process (the server) off the device's CPU 0."""
    return ["taskset", "-c", _server_cpus()]


def _current(controller: str) -> str:
    """This process's cgroup path for ``controller`` ("" for cgroup v2), relative to its root."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == controller or controller in controllers.split(","):
            return path.lstrip("/")
    return ""


def _server_cpus() -> str:
    return ",".join(str(c) for c in range(1, os.cpu_count() or 1)) or "0"


def _to_root(pid: int) -> None:
    """Move ``pid`` out of any emulated-device cgroup (children inherit their parent's)."""
    for root in (CGROUP / "cpu", CGROUP / "cpuacct", CGROUP):
        with contextlib.suppress(OSError):
            (root / "cgroup.procs").write_text(str(pid))


def _spin(cpus: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", cpus, sys.executable, "-c", "while True: pass"],
        stdin=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


@contextlib.contextmanager
def hog(processes: int) -> Iterator[None]:
    """``processes`` busy loops on the server's CPUs while the block runs (a competing job)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(processes):
            procs.append(_spin(_server_cpus()))
            _to_root(procs[-1].pid)
        yield
    finally:
        for proc in procs:
            _stop(proc)
