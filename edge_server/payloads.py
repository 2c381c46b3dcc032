"""Large payloads on disk, written by a thread: the event loop never waits for them.

Writing a 64 MB call into SQLite pages takes the loop hundreds of
milliseconds, and a queue of them minutes, during which nobody is answered.
So the job store keeps the frames of a waiting call (``call``) or a kept
result (``result``) of at least ``payload_file_min`` bytes as files instead:
``<data dir>/payloads/<job>.<part>/<seq>``, written by one writer thread into
a ``.tmp`` directory and renamed into place when complete (a crash leaves a
``.tmp`` directory, which the next start deletes, never a half payload). The
files of a job go when it no longer needs them (deleted by the same thread),
and a start deletes those of jobs that no longer need them (:meth:`sweep`).

Until it is written, a payload is memory: the thread holds only the frames
still to write (a payload dropped before its turn is let go at once), and
counts the bytes it holds for each *holder* (:meth:`held`), so that a kept
result still waiting for the disk counts against its client's budget.

Like SQLite with ``synchronous=NORMAL``, a payload survives the server process
dying (it is in the page cache), not the machine losing power.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("edge_server")

WRITER_NICE = 10  # the writer thread's nice value, relative to the server's

_STOP = None


class PayloadFiles:
    """The payload directory of one job store, and the thread that writes to it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._todo: queue.SimpleQueue[tuple[str, int, str] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # What is still to write: (job, part) -> frames, their holder and size.
        self._queued: dict[tuple[int, str], tuple[Sequence[Any], bytes, int]] = {}
        self._dropped: set[tuple[int, str]] = set()  # dropped while being written
        self._held: Counter[bytes] = Counter()  # bytes queued or being written, per holder
        self.pending = 0  # bytes handed to the thread and not yet written
        self._thread = threading.Thread(target=self._run, name="payload-writer", daemon=True)
        self._thread.start()

    def path(self, job_id: int, part: str) -> Path:
        return self.directory / f"{job_id}.{part}"

    def put(self, job_id: int, part: str, frames: Sequence[Any], holder: bytes = b"") -> None:
        """Write ``frames`` of ``job_id``'s ``part`` (soon, off this thread).

        Until written, their bytes count as held by ``holder`` (b"": counted elsewhere).
        """
        size = sum(memoryview(f).nbytes for f in frames)
        key = (job_id, part)
        with self._lock:
            self._dropped.discard(key)
            self._forget(key)
            self._queued[key] = (frames, holder, size)
            self._count(holder, size)
        self._todo.put(("put", job_id, part))

    def drop(self, job_id: int, part: str) -> None:
        """Delete ``job_id``'s ``part`` (soon; a write still to come is skipped, and let go)."""
        with self._lock:
            self._dropped.add((job_id, part))
            self._forget((job_id, part))
        self._todo.put(("drop", job_id, part))

    def held(self, holder: bytes | None = None) -> int:
        """Bytes queued or being written for ``holder`` (None: for anyone, b"" included)."""
        with self._lock:
            return self.pending if holder is None else self._held.get(holder, 0)

    def _count(self, holder: bytes, size: int) -> None:  # with the lock
        self.pending += size
        self._held[holder] += size
        if self._held[holder] <= 0:
            del self._held[holder]

    def _forget(self, key: tuple[int, str]) -> None:  # with the lock
        gone = self._queued.pop(key, None)
        if gone is not None:
            self._count(gone[1], -gone[2])

    def read(self, job_id: int, part: str) -> list[bytes]:
        """The frames of ``job_id``'s ``part`` ([] if it has none on disk)."""
        folder = self.path(job_id, part)
        if not folder.is_dir():
            return []
        files = sorted(folder.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1)
        return [f.read_bytes() for f in files if f.name.isdigit()]

    def stored(self) -> list[tuple[int, str]]:
        """The ``(job, part)`` pairs complete on disk."""
        found = []
        for entry in self.directory.iterdir():
            job, _, part = entry.name.partition(".")
            if job.isdigit() and part in ("call", "result"):
                found.append((int(job), part))
        return found

    def sweep(self, keep: Collection[tuple[int, str]]) -> int:
        """At a start: delete every payload but those of ``keep``, and every partial write."""
        gone = 0
        for entry in self.directory.iterdir():
            job, _, part = entry.name.partition(".")
            if job.isdigit() and (int(job), part) in keep:
                continue
            _remove(entry)
            gone += 1
        return gone

    def close(self, timeout: float) -> bool:
        """Finish the writes handed over, for at most ``timeout`` seconds; False if cut short.

        What is not written then is lost for a restart (its ``.tmp`` directory,
        if any, goes at the next start); the thread is a daemon, so it never
        keeps the process alive.
        """
        self._todo.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        # Below the event loop: on a small board the writer, the loop and ZeroMQ's I/O thread
        # share few cores, and the loop's answers must not wait behind a disk write.
        with contextlib.suppress(OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        while True:
            task = self._todo.get()
            if task is _STOP:
                return
            action, job_id, part = task
            key, todo = (job_id, part), None
            try:
                if action == "put":
                    with self._lock:
                        todo = self._queued.get(key)
                    if todo is not None:  # else dropped, or written by an earlier task
                        self._write(job_id, part, todo[0])
                else:
                    with self._lock:
                        self._dropped.discard(key)
                    _remove(self.path(job_id, part))
            except OSError as exc:  # e.g. the disk is full: this payload is not kept
                log.error("cannot write the payload of job %d: %s", job_id, exc)
                _remove(self.path(job_id, part).with_suffix(f".{part}.tmp"))
            finally:
                if todo is not None:
                    with self._lock:  # written (or not): its frames are let go
                        if self._queued.get(key) is todo:  # not put again meanwhile
                            self._forget(key)

    def _write(self, job_id: int, part: str, frames: Sequence[Any]) -> None:
        if self._skipped(job_id, part):
            return
        final = self.path(job_id, part)
        scratch = final.with_name(final.name + ".tmp")
        _remove(scratch)
        scratch.mkdir()
        for seq, frame in enumerate(frames):
            if self._skipped(job_id, part):  # taken by a worker meanwhile: stop here
                _remove(scratch)
                return
            with open(scratch / str(seq), "wb") as out:
                out.write(memoryview(frame))
        _remove(final)
        scratch.rename(final)
        if self._skipped(job_id, part):
            _remove(final)

    def _skipped(self, job_id: int, part: str) -> bool:
        with self._lock:
            return (job_id, part) in self._dropped


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
