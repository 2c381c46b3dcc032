"""A job's disk: a private scratch directory (its cwd and ``TMPDIR``) under a per-job quota.

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

log = logging.getLogger("edge_server.worker")

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
SHM = Path("/dev/shm")


def path_for(prefix: str) -> Path:
    """The scratch directory of the worker whose arenas are named ``prefix...`` (not root)."""
    return Path(tempfile.gettempdir()) / f"{prefix}-scratch"


class Scratch:
    """One worker's scratch directory and disk quota."""

    def __init__(self, limit: int, prefix: str) -> None:
        self.limit = limit
        self.private = False  # a tmpfs of our own (root), or a plain directory
        self.root = path_for(prefix)
        self.dir = self.root

    def isolate(self, arenas: Path) -> Path:
        """Set up the scratch directory, enter it; return the path to reach ``arenas`` by."""
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE: EFBIG
        if os.geteuid() == 0 and SHM.is_dir():
            try:
                arenas = self._mount_tmpfs(arenas)
            except OSError as exc:
                log.warning("no private tmpfs for jobs (%s): only file sizes are bounded", exc)
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
        options = f"size={self.limit},mode=1777".encode()
        if libc.mount(b"offload-job", bytes(SHM), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
            raise OSError(ctypes.get_errno(), "mount tmpfs on /dev/shm")
        self.private = True
        self.root, self.dir = SHM, SHM / "job"
        return Path(f"/proc/self/fd/{fd}")

    def start_job(self) -> None:
        """No file the job writes may grow past the quota."""
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        soft = self.limit if hard == resource.RLIM_INFINITY else min(self.limit, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def end_job(self) -> bool:
        """Lift the file size limit, delete the job's files; False if some would not go."""
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        clean = True
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.path == str(self.dir):
                    clean = _empty(self.dir) and clean
                else:
                    clean = _remove(Path(entry.path)) and clean
        with contextlib.suppress(OSError):
            os.chdir(self.dir)  # the job may have gone elsewhere
        return clean

    def exceeded(self, exc: BaseException) -> str | None:
        """The message naming the disk limit, if ``exc`` shows the job passed it."""
        if not isinstance(exc, OSError):
            return None
        full = exc.errno == errno.ENOSPC and self.private  # our tmpfs is full, not a disk
        if exc.errno == errno.EFBIG or full:
            return f"disk limit of {self.limit / 2**20:g} MB exceeded"
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


def remove(prefix: str) -> None:
    """Remove a dead worker's scratch directory (without root: it lives on the disk)."""
    shutil.rmtree(path_for(prefix), ignore_errors=True)
