"""Resource limits of a worker's jobs: memory, CPU time, open files (``resource.setrlimit``).

Limits are set in the worker, on itself, so a job that goes past one fails
there with a clear error and nothing else on the server notices:

* memory: ``RLIMIT_DATA`` (private writable memory: the heap and anonymous
  mappings, not the shared-memory arenas arguments arrive in) at what the
  worker holds when it starts plus ``limit_memory``; an allocation past it
  raises ``MemoryError``. RLIMIT_DATA does not count shared mappings
  (``MAP_SHARED|MAP_ANONYMOUS``, memfd, files in ``/dev/shm``), so as root
  each worker also has a memory cgroup (:func:`edge_server.pids.cap_memory`)
  that counts every page its processes touch: past it the kernel kills the
  worker, and the server answers the job ``limit_exceeded`` all the same.
  Without root, shared mappings are not counted (``--limit-disk-mb`` bounds
  what a job can put in files in ``/dev/shm`` and its scratch directory).
* CPU time: before each job the soft ``RLIMIT_CPU`` is set ``limit_cpu``
  seconds above what the worker has used; past it the kernel sends SIGXCPU,
  whose handler raises :class:`CpuTimeExceeded` in the job. (A job stuck
  inside C code for good is left to the wall-clock timeout.)
* open files: ``RLIMIT_NOFILE`` at the worker's own descriptors plus
  ``limit_files``; one more ``open`` raises ``OSError(EMFILE)``.
* processes: ``limit_processes`` more tasks than the worker runs itself
  (:mod:`edge_server.pids`: a pids cgroup, else ``RLIMIT_NPROC``); one more
  ``fork`` raises ``BlockingIOError(EAGAIN)`` and one more thread
  ``RuntimeError``. Processes a job leaves running are killed when it ends.
* disk: ``limit_disk`` bytes in the job's scratch directory (its cwd and
  ``TMPDIR``) and ``/dev/shm`` (as root: a private tmpfs), and for any one
  file it writes (``RLIMIT_FSIZE``); see :mod:`edge_server.scratch`. Its
  files there are deleted when it ends.

A job that went past a limit is answered ``limit_exceeded`` naming it, and
its worker then exits to be replaced: memory fragments, leaked descriptors
and half-done state go with it.
A job that passed no limit but left threads or open files behind has its
worker replaced too (:mod:`edge_server.clean`), so every job starts clean.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import signal
from pathlib import Path
from typing import Any

from . import pids
from .config import ServerConfig
from .scratch import Scratch


class CpuTimeExceeded(BaseException):
    """Raised in a job by SIGXCPU: a BaseException, so the job's ``except Exception`` lets it by."""


class Limits:
    """The limits of one worker process, from the server's configuration."""

    def __init__(self, config: ServerConfig, prefix: str) -> None:
        """``prefix``: the worker's arena name prefix (its scratch directory is named after it)."""
        self.disk = config.limit_disk
        self.scratch = (
            Scratch(config.limit_disk, config.limit_memory, prefix)
            if config.limit_disk or config.limit_memory
            else None
        )
        self.memory = config.limit_memory
        self.cpu = config.limit_cpu
        self.files = config.limit_files
        self.processes = config.limit_processes
        self._refusals = -1  # the worker cgroup's count of refused forks when the job began
        #: Set when a job has passed a limit: the worker leaves after answering it.
        self.passed: str | None = None
        #: Set when a job left files that could not be deleted: the worker leaves too.
        self.left: str | None = None

    def isolate(self, arenas: Path) -> Path:
        """Give jobs their scratch directory (first of all); return the way to the arenas."""
        return arenas if self.scratch is None else self.scratch.isolate(arenas)

    def install(self) -> None:
        """Set the per-process limits; call once the worker has started."""
        if self.files is not None:
            mine = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 16
            _lower(resource.RLIMIT_NOFILE, mine + self.files)
        if self.memory is not None:
            _lower(resource.RLIMIT_DATA, _data_size() + self.memory)
        if self.cpu is not None:
            signal.signal(signal.SIGXCPU, _on_xcpu)
        if self.processes is not None:
            pids.cap(self.processes)
        if self.memory is not None:
            # A private /dev/shm of --limit-disk-mb is memory charged to the group too.
            private = self.scratch is not None and self.scratch.private
            tmpfs = self.disk if private and self.disk is not None else 0
            pids.cap_memory(self.memory + tmpfs)

    def start_job(self) -> None:
        """Give the next job its CPU seconds; note the forks refused so far."""
        if self.processes is not None:
            self._refusals = pids.refusals()
        if self.scratch is not None:
            self.scratch.start_job()
        if self.cpu is not None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = math.ceil(usage.ru_utime + usage.ru_stime + self.cpu)
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            global _armed
            _armed = True

    def end_job(self) -> None:
        global _armed
        _armed = False
        if self.cpu is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_CPU)
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        if self.processes is not None:
            pids.kill_leftovers()
        if self.scratch is not None and not self.scratch.end_job():
            self.left = "files the job left could not be deleted"

    def exceeded(self, exc: BaseException) -> str | None:
        """The message naming the limit ``exc`` shows was passed, or ``None``."""
        if isinstance(exc, CpuTimeExceeded):
            return f"CPU time limit of {self.cpu:g} s exceeded"
        if isinstance(exc, MemoryError) and self.memory is not None:
            return f"memory limit of {self.memory / 2**20:g} MB exceeded"
        if self.scratch is not None and (passed := self.scratch.exceeded(exc)):
            return passed
        if isinstance(exc, OSError) and exc.errno == errno.EMFILE and self.files is not None:
            return f"open files limit of {self.files} exceeded"
        if self.processes is not None and self._refused_a_task(exc):
            return f"process limit of {self.processes} exceeded"
        return None

    def _refused_a_task(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a fork or thread start the process limit refused."""
        if isinstance(exc, OSError):
            refused = exc.errno == errno.EAGAIN
        else:
            refused = isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)
        if not refused:
            return False
        now = pids.refusals()  # with a cgroup, it says; without, EAGAIN is taken as the limit
        return now < 0 or now > self._refusals


#: True only while a job's function runs: SIGXCPU elsewhere (sending a reply) is ignored.
_armed = False


def _on_xcpu(signum: int, frame: Any) -> None:
    if _armed:
        raise CpuTimeExceeded()


def _lower(which: int, value: int) -> None:
    """Set both soft and hard limits to ``value`` (never above the current hard limit)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _data_size() -> int:
    """Bytes of private writable memory this process maps now (VmData)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
