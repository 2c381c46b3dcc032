"""How many processes a job may start: a cgroup ``pids`` controller per worker, else RLIMIT_NPROC.

A fork bomb must fail inside its own job, not take the machine's process
table from everyone else. As root with a ``pids`` controller (cgroup v1
``/sys/fs/cgroup/pids``, or v2 with ``pids`` enabled) the server puts each
worker in a cgroup of its own (:func:`adopt`); the worker caps it at what it
runs itself plus ``limit_processes`` (:func:`cap`), so a ``fork`` past that
fails with ``EAGAIN`` and the job gets ``limit_exceeded``. The server removes
the group, and anything still in it, when the worker is reaped
(:func:`release`). Without cgroups (not root) ``RLIMIT_NPROC`` is set to the
user's current task count plus the limit: it counts all of that user's tasks,
so run the server as a user of its own. After each job, processes it left
behind are killed, so the next job (perhaps another client's) runs alone.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from pathlib import Path

import psutil

_V1 = Path("/sys/fs/cgroup/pids")
_V2 = Path("/sys/fs/cgroup")


def _root() -> Path | None:
    """Where per-worker pids cgroups can be made, or None."""
    if os.geteuid() != 0:
        return None
    if (_V1 / "cgroup.procs").exists():
        return _V1
    with contextlib.suppress(OSError):
        if "pids" in (_V2 / "cgroup.subtree_control").read_text().split():
            return _V2
    return None


def group(server_pid: int, name: str) -> Path | None:
    """The cgroup of worker ``name`` of server ``server_pid`` (None without cgroups)."""
    root = _root()
    return None if root is None else root / f"edge-server-{server_pid}" / name


def adopt(path: Path | None, pid: int) -> None:
    """Put process ``pid`` (a worker just started) into the cgroup ``path``."""
    if path is None:
        return
    with contextlib.suppress(OSError):  # no cgroup: the worker falls back to RLIMIT_NPROC
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text(str(pid))


def own_group() -> Path | None:
    """This process's pids cgroup, if the server made one for it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            root = _V1 if "pids" in controllers.split(",") else _V2 if controllers == "" else None
            if root is not None and "/edge-server-" in where:
                return root / where.lstrip("/")
    return None


def cap(limit: int) -> None:
    """Let this process start at most ``limit`` more tasks (processes and threads)."""
    mine = len(os.listdir("/proc/self/task"))
    path = own_group()
    if path is not None:
        with contextlib.suppress(OSError):
            (path / "pids.max").write_text(str(mine + limit))
            return
    with contextlib.suppress(psutil.Error):
        uid = os.getuid()
        tasks = sum(
            p.info["num_threads"] or 1
            for p in psutil.process_iter(["uids", "num_threads"])
            if p.info["uids"] is not None and p.info["uids"].real == uid
        )
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        soft = tasks + limit if hard == resource.RLIM_INFINITY else min(tasks + limit, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))


def kill_leftovers() -> None:
    """Kill every process the last job started that is still running."""
    me = os.getpid()
    path = own_group()
    pids: set[int] = set()
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            pids = {int(p) for p in (path / "cgroup.procs").read_text().split()} - {me}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in psutil.Process(me).children(recursive=True)}
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for _ in pids:  # collect our own children; others are reparented
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)


def release(path: Path | None) -> None:
    """Kill what is left in a dead worker's cgroup, and remove the cgroup."""
    if path is None or not path.exists():
        return
    for _ in range(50):
        try:
            left = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            break
        if not left:
            break
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        path.rmdir()


def release_server(server_pid: int) -> None:
    """Remove the (by now empty) cgroup that held server ``server_pid``'s workers' groups."""
    path = group(server_pid, "")
    if path is not None:
        with contextlib.suppress(OSError):
            path.rmdir()
