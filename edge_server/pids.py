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

On cgroup v2 (Raspberry Pi OS Bookworm, systemd with ``Delegate=yes``) the
server's own cgroup is a delegated subtree: the server moves itself (and
anything else in it) into a leaf ``server/`` (v2 lets only leaves hold
processes), enables the controller in ``cgroup.subtree_control`` of its group
and of ``edge-server-PID/``, and puts each worker into a group of its own
there (``edge-server-PID/wN``), whose ``pids.max`` and ``memory.max`` the
worker sets. It does so where systemd marked its group delegated (the
``trusted.delegate`` or ``user.delegate`` attribute) or the group already
gives the controller out; a server never rearranges a cgroup it was not
given (a terminal's scope, with the shell in it).

Elsewhere (not root on v1; v2 without delegation), ``RLIMIT_NPROC`` is set
to the user's current task count plus the limit: it counts all of that
user's tasks, so run the server as a user of its own. After each job the
processes it left are killed (with the cgroup: all of them; without: the
worker's descendants), so the next job runs alone.

The memory limit has a group of its own per worker the same way (the
``memory`` controller; on v2 the same group as ``pids``): :func:`cap_memory`
sets it at what the worker holds plus ``limit_memory``, and
:func:`oom_killed` tells the server that the kernel killed the worker for it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import resource
import signal
import time
from pathlib import Path

import psutil

_ROOT = Path("/sys/fs/cgroup")
_PREFIX = "edge-server-"


_PROC_CGROUP = Path("/proc/self/cgroup")
_LEAF = "server"  # on v2, the server's own leaf inside its delegated group


def _base(controller: str = "pids") -> Path | None:
    """This process's own cgroup of ``controller``: v1 as root, else v2 if it has it."""
    return _v1_base(controller) or _v2_base(controller)


def _v1_base(controller: str) -> Path | None:
    if os.geteuid() != 0:
        return None
    v1 = _ROOT / controller
    with contextlib.suppress(OSError, ValueError):
        for line in _PROC_CGROUP.read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if (v1 / "cgroup.procs").exists() and controller in controllers.split(","):
                path = v1 / where.lstrip("/")
                if path.is_dir():  # else another mount namespace: its path is not ours
                    return path
    return None


def _v2_base(controller: str) -> Path | None:
    """This process's cgroup v2 (the server's: the group holding its leaf), if it has
    ``controller`` and this process may write there."""
    unified = next((p for p in (_ROOT, _ROOT / "unified") if (p / "cgroup.controllers").exists()),
                   None)  # fmt: skip
    if unified is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in _PROC_CGROUP.read_text().splitlines():
            number, _, where = line.split(":", 2)
            if number != "0":
                continue
            path = unified / where.lstrip("/")
            if path.name == _LEAF and path.parent != unified:
                path = path.parent
            if (
                path.is_dir()
                and controller in (path / "cgroup.controllers").read_text().split()
                and os.access(path / "cgroup.procs", os.W_OK)
            ):
                return path
    return None


def _delegated(path: Path) -> bool:
    """Whether systemd delegated ``path`` (Delegate=yes); a terminal's scope is not."""
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, name) == b"1":
                return True
    return False


def _give(path: Path, controller: str) -> bool:
    """Let ``path``'s child groups have ``controller`` (v2); False if it cannot."""
    control = path / "cgroup.subtree_control"
    with contextlib.suppress(OSError):
        if controller in control.read_text().split():
            return True
    try:
        control.write_text(f"+{controller}")
    except OSError:
        return False
    return True


def _server_base(controller: str) -> Path | None:
    """The server's group for its workers' groups; on v2, made ready to give ``controller``.

    v2 lets a group give controllers to its children only while it holds no
    processes itself: the server's processes move into the leaf ``server/``.
    """
    base = _base(controller)
    if base is None or not (base / "cgroup.controllers").exists():
        return base  # v1 (or none)
    control = base / "cgroup.subtree_control"
    with contextlib.suppress(OSError):
        if controller in control.read_text().split():
            return base
    if not _delegated(base):
        return None
    with contextlib.suppress(OSError, ValueError):
        leaf = base / _LEAF
        leaf.mkdir(exist_ok=True)
        for pid in (base / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # a process that has just exited
                (leaf / "cgroup.procs").write_text(pid)
    return base if _give(base, controller) else None


def group(server_pid: int, name: str, controller: str = "pids") -> Path | None:
    """The cgroup of worker ``name`` of server ``server_pid`` (None without cgroups)."""
    base = _server_base(controller)
    if base is None:
        return None
    mine = base / f"{_PREFIX}{server_pid}"
    if name and (base / "cgroup.controllers").exists():  # v2: it gives out the controller too
        with contextlib.suppress(OSError):
            mine.mkdir(exist_ok=True)
        if not _give(mine, controller):
            return None
    return mine / name


def sweep(controller: str = "pids") -> None:
    """Remove the worker groups of servers that are gone (killed with SIGKILL)."""
    base = _server_base(controller)
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
def own_group(controller: str = "pids") -> Path | None:
    """This worker's cgroup of ``controller``, if the server made one for it.

    Read once: the server adopts a worker right after starting it, long
    before the worker, having imported the apps, first asks.
    """
    base = _base(controller)
    return base if base is not None and base.parent.name.startswith(_PREFIX) else None


def cap_memory(limit: int) -> bool:
    """Let this worker's memory cgroup hold ``limit`` bytes more than now; False without one.

    Everything the worker's processes touch counts (shared mappings and
    tmpfs files too, unlike RLIMIT_DATA); past it the kernel's OOM killer
    ends the worker, which the server reports as the memory limit
    (:func:`oom_killed`).
    """
    path = own_group("memory")
    if path is None:
        return False
    try:
        if (path / "memory.max").exists():  # v2
            now = int((path / "memory.current").read_text())
            (path / "memory.max").write_text(str(now + limit))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
            return True
        now = int((path / "memory.usage_in_bytes").read_text())
        (path / "memory.limit_in_bytes").write_text(str(now + limit))
        with contextlib.suppress(OSError):  # swap accounting on: swap counts too
            (path / "memory.memsw.limit_in_bytes").write_text(str(now + limit))
        return True
    except (OSError, ValueError):
        return False


def oom_killed(path: Path | None) -> bool:
    """Whether the kernel killed a process of the memory cgroup ``path`` for its limit."""
    if path is None:
        return False
    for name in ("memory.events", "memory.oom_control"):  # v2, v1
        with contextlib.suppress(OSError, ValueError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
    return False


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
    _rmdir(path, patience=0.2)  # bounded: this runs on the server's loop


def release_server(server_pid: int, controller: str = "pids") -> None:
    """Remove the (by now empty) cgroup that held server ``server_pid``'s workers' groups."""
    path = group(server_pid, "", controller)
    if path is not None:
        _rmdir(path)


def _rmdir(path: Path, patience: float = 1.0) -> None:
    """Remove an empty cgroup; a group whose last process is still exiting is busy a moment."""
    deadline = time.monotonic() + patience
    while True:
        try:
            path.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
        time.sleep(0.01)
