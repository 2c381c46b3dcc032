"""CPU quotas for ``bench fleet``'s servers (issue 13, item 10: "different CPU quotas").

Each server runs in a cgroup of its own with a CPU quota (cgroup v2
``cpu.max``, or v1 ``cpu.cfs_quota_us`` where the cpu controller is mounted
alone, as on some kernels still). The server joins its group before it
starts (:attr:`CpuQuota.launcher` prefixes its command with a shell that
writes its own pid into ``cgroup.procs`` and then ``exec`` s it), so its
workers, spawned later, are in it too, and a restarted server joins again.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .emulation import CGROUP

#: The period of the quotas: 100 ms, the kernel's default.
PERIOD_US = 100_000


class CpuQuota:
    """A cgroup limiting its processes to ``share`` of one CPU; removed on exit."""

    def __init__(self, share: float, name: str) -> None:
        self.share = share
        self.name = f"offload-fleet-{os.getpid()}-{name}"
        v1 = CGROUP / "cpu"
        self._v1 = (v1 / "cpu.cfs_quota_us").exists()
        self.group: Path = (v1 if self._v1 else CGROUP) / self.name

    def __enter__(self) -> CpuQuota:
        quota = max(1000, int(self.share * PERIOD_US))
        if not self._v1:  # a v2 group has a cpu.max only if its parent hands the controller down
            with contextlib.suppress(OSError):
                (CGROUP / "cgroup.subtree_control").write_text("+cpu")
        self.group.mkdir(exist_ok=True)
        try:
            if self._v1:
                (self.group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        except BaseException:
            self.group.rmdir()
            raise
        return self

    @property
    def launcher(self) -> list[str]:
        """Command prefix that starts a process (and so its children) in this group."""
        procs = str(self.group / "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs]

    def __exit__(self, *exc: object) -> None:
        # The fleet stops its servers first; their workers may take a moment to go. A
        # straggler's group stays behind rather than fail the bench's results.
        for _ in range(40):
            try:
                self.group.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)


def available() -> str | None:
    """Why CPU quotas cannot be set here, or None."""
    if (CGROUP / "cpu" / "cpu.cfs_quota_us").exists():
        return None if os.access(CGROUP / "cpu", os.W_OK) else "the cpu cgroup is not writable"
    controllers = CGROUP / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return None if os.access(CGROUP, os.W_OK) else "the cgroup root is not writable"
    return "no cgroup cpu controller"


class Device(CpuQuota):
    """The emulated device: this process in a cgroup of its own (with the whole host as its
    quota), so that the CPU load its client measures (:class:`offload.profiler.DeviceProfiler`
    reads a quota'd group's usage) is the device's own, not other tenants' of a shared host.

    On a host that other jobs share, they would count as the device's load, and every
    estimate of a call run here would grow up to 4 times (``contention``) although the
    emulated device's calls (sleeps) do not slow down: the device would look busy because
    its host is. Entered before the clients are made; on exit, the process goes back to
    the root group.
    """

    def __init__(self) -> None:
        super().__init__(float(os.cpu_count() or 1), "device")
        acct = CGROUP / "cpuacct"  # v1 may account CPU time in a hierarchy of its own
        self._acct = acct / self.name if self._v1 and (acct / "cpuacct.usage").exists() else None

    def __enter__(self) -> Device:
        super().__enter__()
        groups = [self.group, *([self._acct] if self._acct is not None else [])]
        if self._acct is not None:
            self._acct.mkdir(exist_ok=True)
        for group in groups:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        for group in (self.group, self._acct):
            if group is not None:
                with contextlib.suppress(OSError):
                    (group.parent / "cgroup.procs").write_text(str(os.getpid()))
        if self._acct is not None:
            with contextlib.suppress(OSError):
                self._acct.rmdir()
        super().__exit__(*exc)
