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

Listing ``/proc/self/fd`` after every job costs a no-op call six system calls
and a set of strings; :class:`FdCheck` proves in two (a stat and a poll) that the
descriptors open are exactly the baseline's, and only when it cannot does the
listing run (a job left one open, or an arena is open: the listing judges).

Threads are judged in two kinds. A Python thread left running (``threading``)
always replaces the worker. A native thread a library starts for itself and
keeps asleep (numba's and LLVM's on the first compilation, OpenMP's pool) is
adopted into the baseline, so compiled code and warm pools survive between
jobs; one that is running when the job ends, or more than
``_NATIVE_HEADROOM`` of them, replaces the worker. Native threads count
against ``--limit-processes`` and their CPU against ``--limit-cpu`` either
way, so a job cannot park unbounded work in them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading

_PR_SET_CHILD_SUBREAPER = 36
_NATIVE_HEADROOM = 8  # sleeping native threads a worker may adopt from the libraries it runs


class Baseline:
    """The threads and descriptors a worker has of its own, taken after its setup."""

    def __init__(self) -> None:
        _become_subreaper()
        # Held open (part of the baseline): an fstat of each is a count, with no path walk.
        self._task_dir = ProcDir("/proc/self/task")
        self._fd_dir = ProcDir("/proc/self/fd")
        self.tasks = len(_tasks())
        self.tids = set(_tasks())
        self.python_threads = threading.active_count()
        self.fds = {fd for fd in _fd_numbers() if _target(fd) is not None}
        self.fd_check = FdCheck(self.fds, self._fd_dir)

    def leftovers(self) -> str | None:
        """Kill the processes the last job left; say what else it left, or None if nothing.

        Cheap when the job left nothing (a few system calls, no /proc file
        read): the thread count is a ``stat``, whether any child is left a
        ``waitpid``, the descriptors :class:`FdCheck`; only the main thread's
        children are looked at unless more threads are running.
        """
        more_threads = _task_count(self._task_dir) > self.tasks
        tasks = _tasks() if more_threads else []
        if more_threads or _has_children():
            kill_children(tasks or [str(os.getpid())])  # the pid: only when children are left
        if more_threads:  # killing processes starts or stops no thread
            python = threading.active_count() - self.python_threads
            if python > 0:
                return f"{python} threads still running"
            native = set(tasks) - self.tids
            if len(native) > _NATIVE_HEADROOM or any(_running(t) for t in native):
                return f"{len(native)} native threads still running"
            self.tids |= native  # a library's sleeping helpers: adopted
            self.tasks = len(self.tids)
        if self.fd_check.unchanged():
            return None
        files = 0
        for fd in _fd_numbers() - self.fds:
            target = _target(fd)  # None: closed by now (the listing's own descriptor)
            if target is not None and not os.path.basename(target).startswith("offload-"):
                files += 1
        return f"{files} files left open" if files else None


class FdCheck:
    """Whether the open descriptors are exactly ``fds``, in two system calls.

    The count of open descriptors (``stat("/proc/self/fd").st_size``, Linux
    6.2 and later) is ``len(fds)`` and a ``poll`` of all of ``fds`` finds none
    closed (POLLNVAL): then ``fds`` are open and nothing else is. Any other
    answer proves nothing (a job left a descriptor, closed one of the
    worker's, an arena is open) and the caller lists ``/proc/self/fd`` as
    before. Off (always "cannot tell") where the kernel gives no count.
    """

    def __init__(self, fds: set[int], fd_dir: ProcDir | None = None) -> None:
        """``fd_dir``: ``/proc/self/fd`` held open, to count by (None: by its path)."""
        self.count = len(fds)
        self._fd_dir = fd_dir
        self._poll = select.poll()
        for fd in fds:
            self._poll.register(fd, 0)  # no events asked: only HUP, ERR and NVAL come back
        self.on = bool(fds) and _fd_count(fd_dir) == self.count

    def unchanged(self) -> bool:
        """True only when the open descriptors are provably the baseline's."""
        if not self.on or _fd_count(self._fd_dir) != self.count:
            return False
        return not any(events & select.POLLNVAL for _, events in self._poll.poll(0))


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


def _has_children() -> bool:
    """Whether this process has a child, running or a zombie (one it reaps here is gone).

    One ``waitpid`` that fails with ECHILD when there is none: far cheaper than
    reading ``/proc/self/task/*/children`` after every job.
    """
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def _task_count(task_dir: ProcDir | None = None) -> int:
    """This process's threads: ``/proc/self/task`` has two links more than it has threads."""
    try:
        return (task_dir or ProcDir("/proc/self/task", hold=False)).stat().st_nlink - 2
    except OSError:
        return len(_tasks())


def _tasks() -> list[str]:
    try:
        return os.listdir("/proc/self/task")
    except OSError:
        return [str(os.getpid())]


def _running(tid: str) -> bool:
    """Whether thread ``tid`` of this process is on a CPU now (state R)."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, IndexError):
        return False


def _fd_count(fd_dir: ProcDir | None = None) -> int:
    """How many descriptors are open (0 where the kernel does not say: before Linux 6.2)."""
    try:
        return (fd_dir or ProcDir("/proc/self/fd", hold=False)).stat().st_size
    except OSError:
        return 0


class ProcDir:
    """A directory of ``/proc/self`` held open: its fstat is its stat without the path walk.

    A job may close the descriptor and open something else under its number:
    an fstat that does not find the same file (device and inode) stats the path.
    """

    def __init__(self, path: str, hold: bool = True) -> None:
        self.path = path
        self.fd, self._file = -1, (0, 0)
        if hold:
            with contextlib.suppress(OSError):
                self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                found = os.fstat(self.fd)
                self._file = (found.st_dev, found.st_ino)

    def stat(self) -> os.stat_result:
        """The directory's stat now (its counts are read when asked)."""
        try:
            found = os.fstat(self.fd)
        except OSError:  # not held, or closed by a job
            return os.stat(self.path)
        return found if (found.st_dev, found.st_ino) == self._file else os.stat(self.path)


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
