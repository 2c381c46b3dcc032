"""Large calls copied into their worker's arena by a thread, not by the event loop.

Copying a 64 MB call into shared memory takes the loop tens of milliseconds,
hundreds when the arena's pages are touched for the first time, and every
client waits meanwhile (``python -m bench abuse``: the legitimate client's
slowest calls were those behind a large call's copy). So a call of at least
:data:`STAGE_MIN` bytes is copied by one stager thread, with numpy, which lets
go of the GIL while it copies; the loop goes on serving, and sends the job to
its worker once the stager says it is in place (a pipe the loop polls).

The worker is taken for the job meanwhile (``worker.job`` is set, so no other
job goes to it and its arena is not trimmed); if the job ends before it is
staged (cancelled, or the worker died), the copy is simply not sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from .arena import ArenaWriter

log = logging.getLogger("edge_server")

STAGE_MIN = 2**20  # bytes of payload from which the stager copies a call

Staged = tuple[bytes, bytes, list[Any]] | Exception  # ArenaWriter.pack's answer, or why not


class Stager:
    """One thread that packs calls into arenas; :attr:`fd` is readable when some are done."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[tuple[Any, Any, ArenaWriter, Sequence[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._done: deque[tuple[Any, Any, Staged]] = deque()
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        self._thread = threading.Thread(target=self._run, name="stager", daemon=True)
        self._thread.start()

    def stage(self, worker: Any, job: Any, arena: ArenaWriter, frames: Sequence[Any]) -> None:
        """Copy ``frames`` of ``job`` into ``arena`` (``worker``'s), soon."""
        self._todo.put((worker, job, arena, frames))

    def collect(self) -> list[tuple[Any, Any, Staged]]:
        """The (worker, job, staged) of the calls copied since the last look."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)
        done = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def close(self) -> None:
        """Stop the thread (a copy under way ends first) and close the pipe."""
        self._todo.put(None)
        self._thread.join(5.0)
        os.close(self.fd)
        os.close(self._wake)

    def _run(self) -> None:
        while True:
            task = self._todo.get()
            if task is None:
                return
            worker, job, arena, frames = task
            staged: Staged
            try:
                staged = arena.pack(frames, release_gil=True)
            except Exception as exc:  # OSError (/dev/shm full), or its worker went meanwhile
                staged = exc
            self._done.append((worker, job, staged))
            with contextlib.suppress(OSError):
                os.write(self._wake, b"\0")
