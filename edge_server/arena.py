"""Shared-memory arenas: how large frames cross between the server and its workers.

Pushing a 128 MB array through a second socket between the server process and
a worker costs two more kernel copies each way; a memory copy into a mapping
both processes share costs one, and the worker then unpickles numpy arrays
that point straight into that mapping. Each direction has one writer:

* the server writes a job's large frames into the worker's *in* arena;
* the worker writes a result's large frames into its own *out* arena, and the
  server sends them to the client from there with ``copy=False``.

An arena is a file in ``/dev/shm`` (a temp directory elsewhere), mapped once
and reused, because first-touch page faults cost several times the copy
itself; it grows by replacing the file. A message carries the arena's name
and a table of *spans*, one per payload frame: inline (the frame travels in
the message) or ``(offset, length)`` in the arena. A writer must not reuse an
arena while the reader still needs its contents: for the in arena that holds
because a worker gets a job only when idle; a worker's results rotate through
an :class:`ArenaPool`, and the server sends ``FREE name`` once ZeroMQ has
released that arena's frames. A worker never waits for ``FREE``: a client
that reads slowly, or not at all, costs memory until ZeroMQ drops its
messages, not a worker.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Frames of at least this many bytes go through the arena; smaller ones inline.
ARENA_MIN = 256 * 1024
#: An arena larger than this is given back once its worker has been idle a while
#: (``edge_server.pool.ARENA_IDLE_S``): a burst of large calls must not leave
#: workers x arenas x the largest call in RAM.
KEEP_MAX = 32 * 2**20
_ALIGN = 64
_SPAN = struct.Struct("!BQQ")
INLINE, MAPPED = 0, 1


def arena_dir() -> Path:
    """Where arena files live: RAM-backed ``/dev/shm`` where it exists."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class ArenaWriter:
    """The writing side of one arena; files are named ``<prefix>-<generation>``."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self._directory = directory
        self._prefix = prefix
        self._generation = 0
        self._map: mmap.mmap | None = None
        self._path: Path | None = None
        self.name = b""

    @property
    def size(self) -> int:
        """Bytes the arena holds now (0: none)."""
        return len(self._map) if self._map is not None else 0

    def trim(self) -> None:
        """Give the arena back if it is larger than :data:`KEEP_MAX` (its frames are done)."""
        if self.size > KEEP_MAX:
            self.close()

    def pack(
        self, frames: Sequence[Any], release_gil: bool = False
    ) -> tuple[bytes, bytes, list[Any]]:
        """Place large frames in the arena: return ``(arena name, spans, inline frames)``.

        ``release_gil``: copy with numpy, which lets other threads run meanwhile
        (a copy into a mapping holds the GIL), for a caller on a thread of its own.
        """
        views = [memoryview(f) for f in frames]
        large = [v.nbytes for v in views if v.nbytes >= ARENA_MIN]
        if not large:
            return b"", _SPAN.pack(INLINE, 0, 0) * len(views), views
        self._reserve(sum(_aligned(n) for n in large))
        arena = self._map
        assert arena is not None
        spans, inline, offset = [], [], 0
        for view in views:
            n = view.nbytes
            if n < ARENA_MIN:
                spans.append(_SPAN.pack(INLINE, 0, n))
                inline.append(view)
                continue
            if release_gil:
                import numpy as np  # the server has it loaded already

                target = np.frombuffer(arena, np.uint8, n, offset)
                target[:] = np.frombuffer(view.cast("B"), np.uint8)
                del target  # a view of the mapping must not outlive the copy
            else:
                arena[offset : offset + n] = view.cast("B")
            spans.append(_SPAN.pack(MAPPED, offset, n))
            offset += _aligned(n)
        return self.name, b"".join(spans), inline

    def _reserve(self, size: int) -> None:
        if self._map is not None and len(self._map) >= size:
            return
        self.close()
        self._generation += 1
        self._path = self._directory / f"{self._prefix}-{self._generation}"
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, max(size, 2 * ARENA_MIN))
            self._map = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self.name = os.fsencode(self._path.name)

    def close(self) -> None:
        """Remove the file; the mapping is released once no view of it remains."""
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self._map = self._path = None
        self.name = b""


class ArenaPool:
    """A worker's result arenas: one per result still being sent, a couple kept for reuse."""

    KEEP = 2

    def __init__(self, directory: Path, prefix: str) -> None:
        self._directory = directory
        self._prefix = prefix
        self._free: list[ArenaWriter] = []
        self._busy: dict[bytes, ArenaWriter] = {}
        self._made = 0

    def pack(self, frames: Sequence[Any]) -> tuple[bytes, bytes, list[Any]]:
        """Like :meth:`ArenaWriter.pack`, in an arena the server is not still sending from."""
        if self._free:
            writer = self._free.pop()
        else:
            self._made += 1
            writer = ArenaWriter(self._directory, f"{self._prefix}{self._made}")
        name, spans, inline = writer.pack(frames)
        if name:
            self._busy[name] = writer
        else:
            self._free.append(writer)
        return name, spans, inline

    def release(self, name: bytes) -> None:
        """The server is done with arena ``name``."""
        writer = self._busy.pop(name, None)
        if writer is None:
            return
        if len(self._free) < self.KEEP:
            self._free.append(writer)  # large ones too, until trim(): the next call may reuse it
        else:
            writer.close()

    def trim(self) -> None:
        """Give back the kept arenas larger than :data:`KEEP_MAX` (the worker is idle)."""
        for writer in [w for w in self._free if w.size > KEEP_MAX]:
            self._free.remove(writer)
            writer.close()

    def close(self) -> None:
        for writer in [*self._free, *self._busy.values()]:
            writer.close()
        self._free.clear()
        self._busy.clear()


class ArenaReader:
    """The reading side: maps arenas by name, keeping the few most recent mapped."""

    KEEP = 4

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._maps: dict[bytes, memoryview] = {}

    def unpack(self, name: bytes, spans: bytes, inline: Sequence[Any]) -> list[memoryview]:
        """Rebuild the frame list from a message made by :meth:`ArenaWriter.pack`."""
        if len(spans) % _SPAN.size:
            raise ValueError("span table has a partial entry")
        self._forget_removed(name)
        view = self._map(name) if name else None
        frames: list[memoryview] = []
        pos = 0
        for kind, offset, length in _SPAN.iter_unpack(spans):
            if kind == INLINE:
                if pos >= len(inline):
                    raise ValueError("span table names more inline frames than were sent")
                frames.append(memoryview(inline[pos]))
                pos += 1
            elif view is None or offset + length > len(view):
                raise ValueError("span lies outside the arena")
            else:
                frames.append(view[offset : offset + length])
        return frames

    def _forget_removed(self, keep: bytes) -> None:
        """Unmap the arenas their writer has removed (their memory goes with the last view)."""
        for name in [n for n in self._maps if n != keep]:
            if not (self._directory / os.fsdecode(name)).exists():
                del self._maps[name]

    def _map(self, name: bytes) -> memoryview:
        view = self._maps.pop(name, None)
        if view is None:
            if os.sep in os.fsdecode(name):
                raise ValueError("arena name must be a bare file name")
            fd = os.open(self._directory / os.fsdecode(name), os.O_RDWR)
            try:
                view = memoryview(mmap.mmap(fd, 0))
            finally:
                os.close(fd)
            while len(self._maps) >= self.KEEP:  # frames still being sent keep their mapping
                del self._maps[next(iter(self._maps))]
        self._maps[name] = view  # most recently used last
        return view


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def remove_stale_files(directory: Path) -> None:
    """Delete what servers that died without cleaning up left (``offload-<pid>-...``).

    Arenas of the server and of its workers (in ``/dev/shm``), and workers'
    scratch directories (:mod:`edge_server.scratch`, in the temp directory
    without root): all are named after the server's pid.
    """
    for path in directory.glob("offload-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_files(directory: Path, prefix: str) -> None:
    """Delete every arena file whose name starts with ``prefix`` (after a crash, at exit)."""
    for path in directory.glob(f"{prefix}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
