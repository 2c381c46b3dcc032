"""Device profiler: CPU load, free memory, battery and power draw, sampled off the call path.

A background thread takes a :class:`DeviceState` every ``interval`` seconds
and publishes it as one attribute, so a decision reads the latest snapshot
with no system call. Sources, in order of preference:

* CPU load: the CPU quota of this process's cgroup when it has one (v2
  ``cpu.max``/``cpu.stat``, v1 ``cpu.cfs_quota_us``/``cpuacct.usage``): a
  container or an emulated slow device is saturated long before the host is.
  Else all CPUs (``psutil.cpu_times``). This process's own CPU time is
  subtracted: the question is how contended the CPU is by others.
* Battery and power: ``/sys/class/power_supply/*`` (``capacity``, ``status``,
  ``power_now`` or ``current_now`` x ``voltage_now``), else
  ``psutil.sensors_battery`` (no power figure). Mains-only machines have none.
* The access link's rate, when given a network interface's sysfs directory
  (``/sys/class/net/wlan0``): its ``speed`` in Mbit/s (the decider follows a
  change at once, see :mod:`~offload.profiler.network`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

POWER_SUPPLY = Path("/sys/class/power_supply")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One snapshot of the device.

    cpu_load: fraction of the CPU this process may use that *other* processes
        kept busy over the last interval (0-1).
    memory_free: fraction of memory available (0-1).
    battery: charge fraction (0-1), ``None`` without a battery.
    charging: on external power; ``True`` without a battery.
    power_w: the draw the battery reports, ``None`` where it reports none.
    link_mbit: the rate (Mbit/s) the access link reports (a network interface's
        ``speed``), ``None`` where it reports none.
    """

    cpu_load: float = 0.0
    memory_free: float = 1.0
    battery: float | None = None
    charging: bool = True
    power_w: float | None = None
    link_mbit: float | None = None


class DeviceProfiler:
    """Keeps :attr:`state` up to date from a daemon thread (``start``/``stop``)."""

    def __init__(
        self,
        interval: float = 1.0,
        power_supply: Path = POWER_SUPPLY,
        cgroup_root: Path = CGROUP_ROOT,
        interface: Path | None = None,
    ) -> None:
        self.interval = interval
        self._power_supply = power_supply
        self._speed = interface / "speed" if interface is not None else None
        self._cpu = _CgroupCpu.find(cgroup_root)
        self._capacity = self._cpu.capacity if self._cpu else float(psutil.cpu_count() or 1)
        self._last: tuple[float, float, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The latest snapshot; replaced whole, never mutated.
        self.state = self.sample()

    def sample(self) -> DeviceState:
        """Measure now, publish and return the snapshot."""
        load = self._others_load()
        memory = psutil.virtual_memory()
        battery, charging, power = _battery(self._power_supply)
        self.state = DeviceState(
            cpu_load=load,
            memory_free=memory.available / memory.total,
            battery=battery,
            charging=charging,
            power_w=power,
            link_mbit=_speed(self._speed) if self._speed is not None else None,
        )
        return self.state

    def _others_load(self) -> float:
        """Fraction of the CPU allowed to this process that others used since the last sample.

        This process's own use is left out: a call computing here is not a
        reason to stop computing here.
        """
        used = self._cpu.used() if self._cpu is not None else None
        if used is None:
            used = _system_used()
        now, own = time.monotonic(), time.process_time()
        last, self._last = self._last, (now, used, own)
        if last is None or now <= last[0]:
            return self.state.cpu_load if hasattr(self, "state") else 0.0
        others = (used - last[1]) - (own - last[2])
        return min(1.0, max(0.0, others / ((now - last[0]) * self._capacity)))

    def start(self) -> None:
        """Sample every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="offload-device", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):  # a vanished sysfs file: keep the last state
                self.sample()


def _battery(root: Path) -> tuple[float | None, bool, float | None]:
    """(charge fraction, charging, watts drawn) from sysfs, else from psutil."""
    with contextlib.suppress(OSError):
        for supply in sorted(root.iterdir()):
            if _read(supply / "type") != "Battery":
                continue
            capacity = _read(supply / "capacity")
            status = _read(supply / "status") or ""
            return (
                float(capacity) / 100 if capacity else None,
                status in ("Charging", "Full", "Not charging"),
                _power(supply),
            )
    with contextlib.suppress(Exception):  # psutil raises odd things on odd platforms
        info = psutil.sensors_battery()
        if info is not None:
            return info.percent / 100, bool(info.power_plugged), None
    return None, True, None


def _power(supply: Path) -> float | None:
    watts = _read(supply / "power_now")
    if watts:
        return abs(int(watts)) / 1e6
    current, voltage = _read(supply / "current_now"), _read(supply / "voltage_now")
    if current and voltage:
        return abs(int(current)) * int(voltage) / 1e12
    return None


def _speed(path: Path) -> float | None:
    """Mbit/s from a sysfs ``speed`` file; ``None`` if absent or unknown (-1: link down)."""
    raw = _read(path)
    try:
        mbit = float(raw) if raw else 0.0
    except ValueError:
        return None
    return mbit if mbit > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class _CgroupCpu:
    """CPU seconds used by this process's cgroup, and the CPUs its quota allows."""

    def __init__(self, usage: Path, scale: float, capacity: float) -> None:
        self._usage, self._scale, self.capacity = usage, scale, capacity

    @classmethod
    def find(cls, root: Path) -> _CgroupCpu | None:
        """The quota'd cgroup this process is in, or ``None`` if there is no quota."""
        try:
            lines = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            rel = path.lstrip("/")
            if controllers == "":  # v2
                base = root if (root / "cgroup.controllers").exists() else root / "unified"
                group = base / rel
                limit = (_read(group / "cpu.max") or "max").split()
                if limit[0] != "max":
                    return cls(group / "cpu.stat", 1e-6, int(limit[0]) / int(limit[1]))
            elif "cpu" in controllers.split(","):
                group = root / "cpu" / rel
                quota = _read(group / "cpu.cfs_quota_us")
                period = _read(group / "cpu.cfs_period_us")
                if quota and period and int(quota) > 0:
                    acct = root / "cpuacct" / rel / "cpuacct.usage"
                    usage = acct if acct.exists() else group / "cpuacct.usage"
                    return cls(usage, 1e-9, int(quota) / int(period))
        return None

    def used(self) -> float | None:
        """CPU seconds the group has used so far."""
        raw = _read(self._usage)
        if raw is None:
            return None
        if raw.startswith("usage_usec"):
            raw = raw.split()[1]
        return int(raw) * self._scale


def _system_used() -> float:
    """CPU seconds all CPUs have been busy since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)
