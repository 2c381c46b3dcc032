"""The job store: every job's history, waiting calls and kept results, in one SQLite file.

What the file holds is in :mod:`edge_server.schema`; this module records and
reads it. The event loop must not wait for the disk on every call, so writes
are collected in memory and :meth:`Store.flush` writes them in one
transaction: at once when calls are waiting in the queue (their payloads must
survive a crash), otherwise at most ``FLUSH_EVERY`` seconds after the first
unwritten change. Payloads of at least ``file_min`` bytes never reach a flush:
a writer thread puts them in files (:mod:`edge_server.payloads`), so a flush
stays small; pages freed in the file go back a slice at a time (:meth:`Store.reclaim`).

SQLite stays inside this module and :mod:`~edge_server.schema`: a failure of
the database (disk full, I/O error, a value it cannot bind) leaves a method
as :class:`~offload.StoreError`; one of opening it as
:class:`~offload.ConfigError`.

States: :class:`~offload.runtime.states.JobState`. Every flush also records
when the server was last alive (``meta.alive``), so a job a crash interrupted
is recorded as having run until then, not until the restart.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offload._exceptions import ConfigError
from offload.runtime.states import MOVABLE, JobState

from .payloads import PayloadFiles
from .schema import COLUMNS, open_store, row_dict, signed, translated
from .unwritten import Unwritten

log = logging.getLogger("edge_server")

FLUSH_EVERY = 0.1  # seconds an unwritten change may wait when no call's payload is at stake


@dataclass
class Waiting:
    """A queued job read back from the store after a restart."""

    id: int
    owner: str
    client: bytes
    request_id: int
    timeout: float
    checkpointed: bool
    frames: list[bytes]


class Store:
    """One SQLite file of jobs, waiting payloads, kept results and usage totals."""

    def __init__(self, path: Path, file_min: int = 256 * 1024) -> None:
        """Open (or create) the store at ``path``; :class:`ConfigError` if it cannot be used.

        One server per store: a lock file next to it keeps a second server,
        which would run the same waiting calls again, out. Payloads of at
        least ``file_min`` bytes are files in ``payloads/`` next to it.
        """
        self.path = path
        self._db, self._lock = open_store(path)
        try:
            self.files = PayloadFiles(path.parent / "payloads")
        except OSError as exc:
            self._db.close()
            self._lock.close()
            raise ConfigError(f"cannot use {path.parent / 'payloads'}: {exc}") from exc
        self._file_min = file_min
        self._in_files: set[int] = set()  # jobs whose waiting call is a payload file
        self._reclaimed = 0.0
        self._unwritten = Unwritten()
        self._small: Counter[bytes] = Counter()  # bytes of small kept results, per holder
        self._oldest = 0.0  # when the oldest unwritten change was made (0: none)

    @property
    def database(self) -> Any:
        """The SQLite connection (the site's credits live in the same file)."""
        return self._db

    @translated()
    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending (payload files: for ``timeout`` s at most), close, unlock."""
        try:
            if not self.files.close(timeout):
                log.warning("payload files still being written after %g s are lost", timeout)
            self.flush()
        finally:
            self._db.close()
            self._lock.close()

    # -- recording (in memory until flush) -----------------------------------------------------

    def added(
        self,
        job_id: int,
        owner: str,
        function: str,
        request_id: int,
        client: bytes,
        bytes_in: int,
        timeout: float,
        checkpointed: bool,
    ) -> None:
        """A call was accepted into the queue."""
        rid = signed(request_id)
        row = (job_id, owner, function, rid, client, JobState.QUEUED, time.time(), bytes_in)
        self._unwritten.added.append((*row, timeout, int(checkpointed)))
        self._touch()

    def waiting(self, job_id: int, frames: Sequence[Any]) -> None:
        """Keep the payload of a call still in the queue, so it survives a crash."""
        if sum(memoryview(f).nbytes for f in frames) >= self._file_min:
            self.files.put(job_id, "call", frames)  # off the event loop
            self._in_files.add(job_id)
        else:
            self._unwritten.payloads.append((job_id, frames))
        self._touch()

    def _drop_call(self, job_id: int) -> None:
        self._unwritten.dropped.append((job_id,))
        if job_id in self._in_files:
            self._in_files.discard(job_id)
            self.files.drop(job_id, "call")

    def started(self, job_id: int, stored_payload: bool) -> None:
        """A worker took the call (its stored payload, if any, is no longer needed)."""
        self._unwritten.started.append((time.time(), job_id))
        if stored_payload:
            self._drop_call(job_id)
        self._touch()

    @translated()
    def requeued(self, job_id: int) -> None:
        """A started job went back to the queue: written at once (it is rare)."""
        self.flush()
        self._db.execute(
            "UPDATE jobs SET state=?, started=NULL WHERE id=?", (JobState.QUEUED, job_id)
        )

    def ended(
        self,
        job_id: int,
        owner: str,
        state: JobState,
        bytes_in: int,
        bytes_out: int,
        cpu_s: float,
        error: str | None,
        reply: Sequence[Any] | None = None,
        stored_payload: bool = False,
        at: float | None = None,
        holder: bytes = b"",
    ) -> None:
        """A job finished in ``state`` (at ``at``, else now); ``reply`` (its frames) is kept.

        The kept copy counts as held by ``holder`` until written (:meth:`held`).
        """
        if error is not None:  # text from a job may hold lone surrogates SQLite cannot store
            error = error.encode("utf-8", "replace").decode()
        self._unwritten.ended.append(
            (state, at or time.time(), bytes_out, cpu_s, error, int(reply is not None), job_id)
        )
        self._unwritten.use(owner, cpu_s, bytes_in, bytes_out)
        if reply is not None:  # copied: the frames may be in an arena a worker reuses
            copied = [bytes(f) for f in reply]
            size = sum(len(f) for f in copied)
            if size >= self._file_min:
                self.files.put(job_id, "result", copied, holder)
            else:
                self._unwritten.results.append((job_id, copied))
                self._small[holder] += size
        if stored_payload:
            self._drop_call(job_id)
        self._touch()

    @translated()
    def moved(self, job_id: int, owner: str, to: str) -> bool:
        """``owner``'s paused or interrupted job went on at ``to``; False if it is not one.

        On this server it was ``resumed`` (``to`` names the new job), elsewhere
        ``moved``. Written at once: it is rare, and its client may ask next.
        """
        self.flush()
        state = JobState.RESUMED if to.startswith("job ") else JobState.MOVED
        changed = self._db.execute(
            "UPDATE jobs SET state=?, moved_to=? WHERE id=? AND owner=? AND state IN (?, ?)",
            (state, to, job_id, owner, *MOVABLE),
        ).rowcount
        return changed == 1

    def alive(self) -> None:
        """Record soon that the server is alive (while jobs run and nothing else is written)."""
        self._touch()

    def _touch(self) -> None:
        if not self._oldest:
            self._oldest = time.monotonic()

    def due(self) -> float | None:
        """When :meth:`flush` should next run (monotonic clock; None: nothing to write)."""
        if not self._oldest:
            return None
        return 0.0 if self._unwritten.payloads else self._oldest + FLUSH_EVERY

    @translated(ValueError)  # ValueError, OverflowError: a value SQLite cannot bind
    def flush(self) -> None:
        """Write every change recorded since the last flush, in one transaction."""
        if not self._oldest:
            return
        db = self._db
        try:
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('alive', ?)", (time.time(),))
            self._unwritten.write(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            self._clear()

    def held(self, holder: bytes | None = None) -> int:
        """Bytes of kept results not yet written, of ``holder`` (None: of all)."""
        small = sum(self._small.values()) if holder is None else self._small.get(holder, 0)
        if holder is None:  # the writer's calls are counted by their jobs, not here
            return small + self.files.held() - self.files.held(b"")
        return small + (self.files.held(holder) if holder else 0)

    def _clear(self) -> None:
        self._small.clear()
        self._unwritten = Unwritten()
        self._oldest = 0.0

    # -- reading --------------------------------------------------------------------------------

    @translated()
    def recover(self) -> list[Waiting]:
        """After a restart: fail what was running, and return the calls still waiting, in order.

        A job the crash interrupted counts in its owner's usage (with the CPU
        time nobody measured as zero), like any other failure.
        """
        self.flush()
        alive = self._db.execute("SELECT value FROM meta WHERE key='alive'").fetchone()
        waiting = []
        rows = self._db.execute(
            "SELECT id, owner, client, request_id, timeout, checkpointed, state, bytes_in, "
            "started FROM jobs WHERE state IN (?, ?) ORDER BY id",
            (JobState.QUEUED, JobState.RUNNING),
        ).fetchall()
        for job_id, owner, client, rid, timeout, checkpointed, state, bytes_in, started in rows:
            frames = self.frames(job_id, "call") if state == JobState.QUEUED else []
            if frames:
                waiting.append(
                    Waiting(job_id, owner, client, rid % 2**64, timeout, bool(checkpointed), frames)
                )
                continue
            if state == JobState.RUNNING:  # it ran until the server was last seen alive
                error = "the server stopped while this job ran"
                at = max(started or 0.0, float(alive[0])) if alive else None
                self.ended(job_id, owner, JobState.INTERRUPTED, bytes_in, 0, 0.0, error, at=at)
            else:  # accepted, but the crash came before its payload was written
                error = "the server stopped before this job's payload was stored"
                self.ended(job_id, owner, JobState.FAILED, bytes_in, 0, 0.0, error)
        self.flush()
        kept = self._db.execute("SELECT id FROM jobs WHERE kept=1").fetchall()
        keep = {(w.id, "call") for w in waiting} | {(row[0], "result") for row in kept}
        self._in_files = {job for job, part in self.files.stored() if (job, part) in keep}
        swept = self.files.sweep(keep)
        self._db.executescript("PRAGMA incremental_vacuum;")  # all of it: not serving yet
        if swept:
            log.info("deleted %d payload files no job needs (left by a crash)", swept)
        return waiting

    @translated()
    def reclaim(self, now: float, pages: int = 256) -> int:
        """Give at most ``pages`` free pages back to the file system; how many were free.

        At most every 0.1 s (256 pages: ~10 ms, 10 MB/s), so the loop pays a few
        milliseconds at a time. (executescript: ``execute`` would step the pragma
        once, which frees one page.)
        """
        if now - self._reclaimed < 0.1:
            return 0
        self._reclaimed = now
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        if free:
            self._db.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        return free

    @translated()
    def last_id(self) -> int:
        """The highest job id ever given (ids are never reused)."""
        row = self._db.execute(
            "SELECT MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key='last_id'), 0),"
            " COALESCE((SELECT MAX(id) FROM jobs), 0))"
        ).fetchone()
        return int(row[0])

    @translated()
    def job(self, job_id: int, owner: str | None) -> dict[str, Any] | None:
        """Job ``job_id`` as a dict, if it exists and (unless ``owner`` is None) is ``owner``'s."""
        self.flush()
        row = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None or (owner is not None and row[COLUMNS.index("owner")] != owner):
            return None
        return row_dict(row)

    @translated()
    def jobs(
        self, owner: str, limit: int = 50, states: Iterable[str] = (), before: int | None = None
    ) -> list[dict[str, Any]]:
        """``owner``'s newest ``limit`` jobs (older than job ``before``), optionally by state."""
        self.flush()
        where: list[str] = ["owner=?"]
        params: list[Any] = [owner]
        if before is not None:
            where.append("id<?")
            params.append(before)
        states = list(states)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [row_dict(row) for row in rows]

    @translated()
    def frames(self, job_id: int, part: str) -> list[bytes]:
        """The stored frames of a job's waiting ``call`` or kept ``result``."""
        self.flush()
        rows = self._db.execute(
            "SELECT data FROM frames WHERE job=? AND part=? ORDER BY seq", (job_id, part)
        )
        return [bytes(row[0]) for row in rows] or self.files.read(job_id, part)

    @translated()
    def usage(self, owner: str) -> dict[str, Any]:
        """``owner``'s metering totals: jobs, CPU seconds, bytes in and out (zeros if none)."""
        self.flush()
        row = self._db.execute(
            "SELECT jobs, cpu_s, bytes_in, bytes_out FROM usage WHERE owner=?", (owner,)
        ).fetchone()
        keys = ("jobs", "cpu_s", "bytes_in", "bytes_out")
        return {"owner": owner, **dict(zip(keys, row or (0, 0.0, 0, 0), strict=True))}

    @translated()
    def expire(self, result_ttl: float, history_ttl: float) -> int:
        """Delete results older than ``result_ttl`` and jobs older than ``history_ttl`` seconds."""
        self.flush()
        now = time.time()
        db = self._db
        old = db.execute("SELECT id FROM jobs WHERE kept=1 AND finished < ?", (now - result_ttl,))
        for (job_id,) in old.fetchall():
            self.files.drop(job_id, "result")
        try:
            db.execute("BEGIN")
            db.execute("UPDATE jobs SET kept=0 WHERE kept=1 AND finished < ?", (now - result_ttl,))
            gone = db.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?",
                (now - history_ttl,),
            ).rowcount
            db.execute(
                "DELETE FROM frames WHERE part='result' AND job NOT IN "
                "(SELECT id FROM jobs WHERE kept=1)"
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(gone)

    @translated()
    def purge(self) -> None:
        """Delete every job, payload and result (closing time with ``purge_on_exit``)."""
        self.flush()
        self._db.execute("DELETE FROM frames")
        self._db.execute("DELETE FROM jobs")
        self._db.execute("VACUUM")
        self.files.close(1.0)
        self.files.sweep(())
