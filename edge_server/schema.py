"""The job store's file: its SQLite schema, and opening it (one server per file).

Each job is a row of ``jobs`` (owner, function, state, timestamps, bytes in
and out, CPU seconds, error); ``frames`` holds the payload of a call still
waiting for a worker (so a server killed with SIGKILL runs it after its
restart) and the reply of a finished job whose result is kept for later
download; ``usage`` holds each owner's running totals (metering), which
outlive the jobs they count; ``meta`` the schema version and the highest job
id ever given. ``jobs.state`` holds the values of
:class:`~offload.runtime.states.JobState`.

``auto_vacuum=INCREMENTAL``: pages freed by deleted payloads and results
are given back in slices by :meth:`edge_server.store.Store.reclaim`. Payloads
of at least ``payload_file_min`` bytes are files, not rows (see
:mod:`edge_server.payloads`). WAL mode with ``synchronous=NORMAL``: a commit
survives the server process dying (SIGKILL, a crash), and readers never block
the writer. The queries are :class:`edge_server.store.Store`'s.
"""

from __future__ import annotations

import fcntl
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

from offload._exceptions import ConfigError, StoreError
from offload.runtime.states import JobState

SCHEMA_VERSION = 2
COLUMNS = (
    "id",
    "owner",
    "function",
    "request_id",
    "state",
    "submitted",
    "started",
    "finished",
    "bytes_in",
    "bytes_out",
    "cpu_s",
    "error",
    "kept",
    "moved_to",
)
#: How a file of each older schema version becomes the current one, in order.
_MIGRATIONS = {
    1: "ALTER TABLE jobs ADD COLUMN moved_to TEXT",  # v2: where a moved or resumed job went on
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    function TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    client BLOB NOT NULL,
    state TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    cpu_s REAL NOT NULL DEFAULT 0,
    error TEXT,
    kept INTEGER NOT NULL DEFAULT 0,
    timeout REAL NOT NULL,
    checkpointed INTEGER NOT NULL,
    moved_to TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id);
-- no index on state: every transition would write it, and only a restart asks by state
CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs (finished);
CREATE TABLE IF NOT EXISTS frames (
    job INTEGER NOT NULL,
    part TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job, part, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    owner TEXT PRIMARY KEY,
    jobs INTEGER NOT NULL,
    cpu_s REAL NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL
);
"""


def open_store(path: Path) -> tuple[sqlite3.Connection, IO[str]]:
    """The database at ``path`` (created if new) and the lock that makes it this server's.

    :class:`ConfigError` if it cannot be used: the directory cannot be made,
    another server holds the lock (it would run the same waiting calls
    again), the file is not a job store, or it has another schema version.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held until close)
    except OSError as exc:
        raise ConfigError(f"cannot use the data directory {path.parent}: {exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.close()
        raise ConfigError(f"another server uses the job store {path}") from exc
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # Freed pages go back to the file system a slice at a time (Store.reclaim); a file
        # made before that setting is rebuilt once (its live rows only: quick when most of
        # it is free, as after a flood of payloads).
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            db.execute("VACUUM")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        else:
            _migrate(db, path, int(row[0]))
    except (sqlite3.Error, ValueError) as exc:
        lock.close()
        raise ConfigError(f"cannot open the job store {path}: {exc}") from exc
    return db, lock


def _migrate(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring a file of schema ``version`` to :data:`SCHEMA_VERSION` in one transaction."""
    if version == SCHEMA_VERSION:
        return
    if version not in _MIGRATIONS:
        raise ConfigError(f"{path}: schema {version}, this server reads {SCHEMA_VERSION}")
    db.execute("BEGIN")
    for step in range(version, SCHEMA_VERSION):
        db.execute(_MIGRATIONS[step])
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
    db.execute("COMMIT")


def row_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A ``jobs`` row (``COLUMNS``) as the dict control replies carry."""
    job = dict(zip(COLUMNS, row, strict=True))
    job["request_id"] %= 2**64
    job["kept"] = bool(job["kept"])
    job["state"] = JobState(job["state"])
    return job


def signed(request_id: int) -> int:
    """A 64-bit request id as SQLite's signed INTEGER holds it (``% 2**64`` undoes it)."""
    return request_id - 2**64 if request_id >= 2**63 else request_id


def numbered(jobs: list[tuple[int, Sequence[Any]]]) -> Iterator[tuple[int, int, Any]]:
    """``(job, seq, frame)`` rows of each job's frames."""
    for job, frames in jobs:
        for seq, frame in enumerate(frames):
            yield job, seq, frame


_P = ParamSpec("_P")
_R = TypeVar("_R")


def translated(
    *kinds: type[Exception],
) -> Callable[[Callable[Concatenate[Any, _P], _R]], Callable[Concatenate[Any, _P], _R]]:
    """A method whose database failures (``sqlite3.Error`` and ``kinds``) leave as StoreError."""
    caught: tuple[type[Exception], ...] = (sqlite3.Error, OverflowError, *kinds)

    def wrap(method: Callable[Concatenate[Any, _P], _R]) -> Callable[Concatenate[Any, _P], _R]:
        @functools.wraps(method)
        def translating(store: Any, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(store, *args, **kwargs)
            except caught as exc:
                raise StoreError(f"job store {store.path.name}: {exc}") from exc

        return translating

    return wrap
