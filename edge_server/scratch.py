"""A job's disk: a private scratch directory (its cwd and ``TMPDIR``) under a per-job quota.

(And, as root with only ``limit_memory``, a private ``/dev/shm`` of that size
emptied after each job, so files there are memory the job's limit bounds and
nothing it leaves there outlives it.)

With ``limit_disk`` set, each worker gives its jobs a scratch directory,
their working directory and ``TMPDIR``, emptied after every job, and:

* as root: the worker enters a mount namespace of its own (``unshare``,
  mounts private) and mounts a tmpfs of ``limit_disk`` bytes over
  ``/dev/shm``; the scratch directory is ``/dev/shm/job`` in it. A job's
  files in the scratch directory and in ``/dev/shm`` (POSIX shared memory)
  share that quota, are deleted when the job ends, and are gone with the
  worker's namespace however it ends. The server's arenas stay in the real
  ``/dev/shm``: the worker opened it before and reaches it through that
  descriptor (``/proc/self/fd/N``). tmpfs is memory: up to ``limit_disk``
  per worker, counted in its memory cgroup when there is one.
* otherwise: the scratch directory is ``<tmp>/offload-<server pid>-...-scratch``,
  emptied after each job and removed with the worker (and by the next
  server's sweep after a crash); only a file's size is bounded there.

Everywhere, while a job runs, ``RLIMIT_FSIZE`` is ``limit_disk``: no file it
writes, wherever it is, grows past the quota (a write past it fails
``EFBIG``; SIGXFSZ is ignored). What that does not bound, without root, is
the total of many files a job writes outside its scratch directory or to
``/dev/shm``, and those files are not deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import shutil
import signal
import tempfile
from pathlib import Path

from .arena import remove_stale_files

log = logging.getLogger("edge_server.worker")

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
SHM = Path("/dev/shm")


def path_for(prefix: str) -> Path:
    """The scratch directory of the worker whose arenas are named ``prefix...`` (not root)."""
    return Path(tempfile.gettempdir()) / f"{prefix}-scratch"


class Scratch:
    """One worker's scratch directory and disk quota, and its private ``/dev/shm`` as root.

    ``disk``: the disk limit (None: no scratch directory, no file size limit).
    ``memory``: the memory limit; as root, with or without ``disk``, it gives
    the worker a private ``/dev/shm`` too (of ``disk`` bytes, else ``memory``),
    so what a job leaves there goes when it ends (the pages count in the
    worker's memory cgroup).
    """

    def __init__(self, disk: int | None, memory: int | None, prefix: str) -> None:
        self.disk = disk
        self.size = disk or memory or 0
        self.memory = memory
        self.private = False  # a tmpfs of our own over /dev/shm (root)
        self.root = self.dir = path_for(prefix)

    def isolate(self, arenas: Path) -> Path:
        """Set up the scratch directory, enter it; return the path to reach ``arenas`` by."""
        if os.geteuid() == 0 and SHM.is_dir() and self.size:
            try:
                arenas = self._mount_tmpfs(arenas)
            except OSError as exc:
                log.warning("no private /dev/shm for jobs (%s): only file sizes are bounded", exc)
        if self.disk is None:
            return arenas
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE: EFBIG
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chdir(self.dir)
        os.environ["TMPDIR"] = str(self.dir)
        tempfile.tempdir = None  # next gettempdir() reads TMPDIR again
        return arenas

    def _mount_tmpfs(self, arenas: Path) -> Path:
        fd = os.open(arenas, os.O_RDONLY | os.O_DIRECTORY)  # stays open: the arenas' way in
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS) != 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        options = f"size={self.size},mode=1777".encode()
        if libc.mount(b"offload-job", bytes(SHM), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
            raise OSError(ctypes.get_errno(), "mount tmpfs on /dev/shm")
        self.private = True
        self.root, self.dir = SHM, SHM / "job"
        return Path(f"/proc/self/fd/{fd}")

    def start_job(self) -> None:
        """No file the job writes may grow past the quota."""
        if self.disk is None:
            return
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        soft = self.disk if hard == resource.RLIM_INFINITY else min(self.disk, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def end_job(self) -> bool:
        """Lift the file size limit, delete the job's files; False if some would not go."""
        if self.disk is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        elif not self.private:
            return True
        clean = True
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.path == str(self.dir) and self.disk is not None:
                    clean = _empty(self.dir) and clean
                else:
                    clean = _remove(Path(entry.path)) and clean
        if self.disk is not None:
            with contextlib.suppress(OSError):
                os.chdir(self.dir)  # the job may have gone elsewhere
        return clean

    def exceeded(self, exc: BaseException) -> str | None:
        """The message naming the limit, if ``exc`` shows the job passed the disk limit or
        filled its private ``/dev/shm``."""
        if not isinstance(exc, OSError):
            return None
        full = exc.errno == errno.ENOSPC and self.private  # our tmpfs is full, not a disk
        if (exc.errno == errno.EFBIG and self.disk is not None) or (full and self.disk):
            return f"disk limit of {self.disk / 2**20:g} MB exceeded"
        if full and self.memory is not None:
            return f"memory limit of {self.memory / 2**20:g} MB exceeded (in /dev/shm)"
        return None


def _empty(directory: Path) -> bool:
    clean = True
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            clean = _remove(Path(entry.path)) and clean
    return clean


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        return False
    return True


def sweep() -> None:
    """Remove the scratch directories of servers that are gone (killed; without root)."""
    remove_stale_files(Path(tempfile.gettempdir()))


def remove(prefix: str) -> None:
    """Remove a dead worker's scratch directory (without root: it lives on the disk)."""
    shutil.rmtree(path_for(prefix), ignore_errors=True)
