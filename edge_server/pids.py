"""How many processes a job may start: a ``pids`` cgroup per worker, else RLIMIT_NPROC.

A fork bomb must fail inside its own job, not take the machine's process
table from everyone else. As root with the cgroup v1 ``pids`` controller the
server makes a cgroup for each worker under its own (:func:`adopt`), so the
limits of the server's own unit or container still hold; the worker caps
it at the tasks it runs itself plus ``limit_processes`` (:func:`cap`), so a
``fork`` or thread start past that fails (``EAGAIN``) and the job gets
``limit_exceeded``. The server kills whatever is left in the group and
removes it when the worker is reaped (:func:`release`), and removes groups a
killed server left behind when it starts (:func:`sweep`).

Elsewhere (not root; cgroup v2, where a process's cgroup cannot both hold
processes and give its children controllers without delegation),
``RLIMIT_NPROC`` is set to the user's current task count plus the limit: it
counts all of that user's tasks, so run the server as a user of its own.
After each job the processes it left are killed (with the cgroup: all of
them; without: the worker's descendants), so the next job runs alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
from pathlib import Path

import psutil

_V1 = Path("/sys/fs/cgroup/pids")
_PREFIX = "edge-server-"


def _base() -> Path | None:
    """This process's own v1 pids cgroup, as root; else None."""
    if os.geteuid() != 0 or not (_V1 / "cgroup.procs").exists():
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if "pids" in controllers.split(","):
                path = _V1 / where.lstrip("/")
                if path.is_dir():  # else another mount namespace: its path is not ours
                    return path
    return None


def group(server_pid: int, name: str) -> Path | None:
    """The cgroup of worker ``name`` of server ``server_pid`` (None without cgroups)."""
    base = _base()
    return None if base is None else base / f"{_PREFIX}{server_pid}" / name


def sweep() -> None:
    """Remove the worker groups of servers that are gone (killed with SIGKILL)."""
    base = _base()
    if base is None:
        return
    for stale in base.glob(f"{_PREFIX}*"):
        pid = stale.name[len(_PREFIX) :]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            for worker in stale.iterdir():
                if worker.is_dir():
                    release(worker)
            with contextlib.suppress(OSError):
                stale.rmdir()


def adopt(path: Path | None, pid: int) -> None:
    """Put process ``pid`` (a worker just started) into the cgroup ``path``."""
    if path is None:
        return
    with contextlib.suppress(OSError):  # no cgroup: the worker falls back to RLIMIT_NPROC
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text(str(pid))


@functools.cache
def own_group() -> Path | None:
    """This worker's pids cgroup, if the server made one for it.

    Read once: the server adopts a worker right after starting it, long
    before the worker, having imported the apps, first asks.
    """
    base = _base()
    return base if base is not None and base.parent.name.startswith(_PREFIX) else None


def cap(limit: int) -> None:
    """Let this process start at most ``limit`` more tasks (processes and threads)."""
    mine = len(os.listdir("/proc/self/task"))
    path = own_group()
    if path is not None:
        with contextlib.suppress(OSError):
            (path / "pids.max").write_text(str(mine + limit))
            return
    with contextlib.suppress(psutil.Error, OSError, ValueError):
        uid = os.getuid()
        tasks = sum(
            p.info["num_threads"] or 1
            for p in psutil.process_iter(["uids", "num_threads"])
            if p.info["uids"] is not None and p.info["uids"].real == uid
        )
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        soft = tasks + limit if hard == resource.RLIM_INFINITY else min(tasks + limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))


def refusals() -> int:
    """How often this worker's cgroup has refused a task (-1 if it cannot say)."""
    path = own_group()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if path is not None:
            return int((path / "pids.events").read_text().split()[1])
    return -1


def kill_leftovers() -> None:
    """Kill every process the last job started that is still running, and reap them."""
    me = os.getpid()
    path = own_group()
    pids: set[int] = set()
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            pids = {int(p) for p in (path / "cgroup.procs").read_text().split()} - {me}
    else:
        with contextlib.suppress(psutil.Error):
            pids = {p.pid for p in psutil.Process(me).children(recursive=True)}
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:  # our own children would stay zombies, counted against the limit
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def release(path: Path | None) -> None:
    """Kill what is left in a dead worker's cgroup, and remove the cgroup."""
    if path is None or not path.exists():
        return
    for _ in range(20):
        try:
            left = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            break
        if not left:
            break
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.wait_procs([psutil.Process(p) for p in left], timeout=0.005)
    with contextlib.suppress(OSError):
        path.rmdir()


def release_server(server_pid: int) -> None:
    """Remove the (by now empty) cgroup that held server ``server_pid``'s workers' groups."""
    path = group(server_pid, "")
    if path is not None:
        with contextlib.suppress(OSError):
            path.rmdir()
