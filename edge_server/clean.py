"""Every job starts in a clean worker: what a job leaves running or open goes with it.

A job may start threads, processes and open files and leave them behind
(by mistake, or a thread bomb that hit ``--limit-processes``). Threads cannot
be stopped from outside in Python and an open descriptor may belong to an
object the job keeps, so the worker does not try to tidy them: it notes what
it runs and holds once started (:class:`Baseline`), and after each job
:meth:`Baseline.leftovers` kills the processes the job left (the worker is a
child subreaper, so their orphaned descendants come back to it and die too)
and says whether threads or descriptors beyond the baseline remain; if so,
the worker answers the job and leaves, and a fresh one takes its place.
Descriptors of the shared-memory arenas (``offload-*`` files, which come and
go with the calls) do not count.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36


class Baseline:
    """The threads and descriptors a worker has of its own, taken after its setup."""

    def __init__(self) -> None:
        _become_subreaper()
        self.tasks = len(_tasks())
        self.fds = {fd for fd in _fd_numbers() if _target(fd) is not None}

    def leftovers(self) -> str | None:
        """Kill the processes the last job left; say what else it left, or None if nothing.

        Cheap when the job left nothing (a few system calls): only the main
        thread's children are looked at unless more threads are running.
        """
        tasks = _tasks()
        kill_children(tasks if len(tasks) > self.tasks else [str(os.getpid())])
        threads = len(tasks) - self.tasks  # killing processes starts or stops no thread
        if threads > 0:
            return f"{threads} threads still running"
        files = 0
        for fd in _fd_numbers() - self.fds:
            target = _target(fd)  # None: closed by now (the listing's own descriptor)
            if target is not None and not os.path.basename(target).startswith("offload-"):
                files += 1
        return f"{files} files left open" if files else None


def kill_children(tasks: list[str] | None = None, rounds: int = 20) -> None:
    """SIGKILL and reap every child of this process, and the orphans that come back to it.

    ``tasks``: the threads whose children to look at (default: all).
    """
    for _ in range(rounds):
        children = _children(_tasks() if tasks is None else tasks)
        if not children:
            break
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)


def _children(tasks: list[str]) -> set[int]:
    """The pids of the children of these threads of this process, zombies included."""
    found: set[int] = set()
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/self/task/{tid}/children") as f:
            found.update(int(p) for p in f.read().split())
    return found


def _become_subreaper() -> None:
    """Have orphaned descendants reparented to this process (so they can be killed)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _tasks() -> list[str]:
    try:
        return os.listdir("/proc/self/task")
    except OSError:
        return [str(os.getpid())]


def _fd_numbers() -> set[int]:
    try:
        return {int(fd) for fd in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def _target(fd: int) -> str | None:
    """What descriptor ``fd`` refers to, or None if it is not open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
