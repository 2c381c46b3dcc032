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
        self.tasks = _count_tasks()
        self.fds = _open_fds()

    def leftovers(self) -> str | None:
        """Kill the processes the last job left; say what else it left, or None if nothing."""
        kill_children()
        threads = _count_tasks() - self.tasks
        if threads > 0:
            return f"{threads} threads still running"
        now = _open_fds()
        files = [fd for fd, target in now.items() if self.fds.get(fd) != target]
        files = [fd for fd in files if not os.path.basename(now[fd]).startswith("offload-")]
        if files:
            return f"{len(files)} files left open"
        return None


def kill_children(rounds: int = 20) -> None:
    """SIGKILL and reap every child of this process, and the orphans that come back to it."""
    for _ in range(rounds):
        children = _children()
        if not children:
            break
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)


def _children() -> set[int]:
    """The pids of this process's children (of any of its threads), zombies included."""
    found: set[int] = set()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/self/task/{tid}/children") as f:
            found.update(int(p) for p in f.read().split())
    return found


def _become_subreaper() -> None:
    """Have orphaned descendants reparented to this process (so they can be killed)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _count_tasks() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _open_fds() -> dict[int, str]:
    """This process's open descriptors and what each refers to (not the listing's own)."""
    found: dict[int, str] = {}
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in fds:
        with contextlib.suppress(OSError, ValueError):  # the listing's own fd is closed by now
            found[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
    return found
