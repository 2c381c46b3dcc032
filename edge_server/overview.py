"""A read-only view of the job store for the operator: live jobs, usage, recent failures.

The dashboard reads through it with a SQLite connection of its own, opened
read-only for each look (WAL: it never blocks the server's writes; what the
server has not flushed yet shows a moment later). States are
:class:`~offload.runtime.states.JobState` values, as the store writes them,
and database failures leave as :class:`~offload.StoreError`, as they do from
:class:`~edge_server.store.Store`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offload.runtime.states import JobState

from .schema import translated


@dataclass
class Overview:
    """What the operator sees of the store at one moment (rows as tuples)."""

    live: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # id, owner, function, state, submitted
    usage: list[tuple[Any, ...]] = field(default_factory=list)  # owner, jobs, cpu_s, in, out
    failed: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # id, owner, function, finished, error


class StoreOverview:
    """Reads :class:`Overview` from the job store file at ``path``, never writing to it."""

    def __init__(self, path: Path, limit: int = 100, failures: int = 20) -> None:
        self.path, self.limit, self.failures = path, limit, failures

    @translated()
    def read(self) -> Overview:
        """The live jobs (newest first), the heaviest users, the latest failures."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
        try:
            live = db.execute(
                "SELECT id, owner, function, state, submitted FROM jobs "
                "WHERE state IN (?, ?) ORDER BY id DESC LIMIT ?",
                (JobState.QUEUED.value, JobState.RUNNING.value, self.limit),
            ).fetchall()
            usage = db.execute(
                "SELECT owner, jobs, cpu_s, bytes_in, bytes_out FROM usage "
                "ORDER BY cpu_s DESC LIMIT ?",
                (self.limit,),
            ).fetchall()
            failed = db.execute(
                "SELECT id, owner, function, finished, error FROM jobs WHERE state = ? "
                "ORDER BY id DESC LIMIT ?",
                (JobState.FAILED.value, self.failures),
            ).fetchall()
        finally:
            db.close()
        return Overview(live, usage, failed)
