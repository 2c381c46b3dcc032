"""The job store's changes recorded in memory since its last flush, and writing them.

:class:`~edge_server.store.Store` records each change (a call accepted, its
payload waiting, started, ended, usage, a kept result, a payload no longer
needed) as a row here, so the event loop never waits for the disk per call;
:meth:`Unwritten.write` puts them all in the database inside the store's
one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from offload.runtime.states import JobState

from .schema import numbered


@dataclass
class Unwritten:
    """Rows waiting for the next flush, one list per kind of change."""

    added: list[tuple[Any, ...]] = field(default_factory=list)
    payloads: list[tuple[int, Sequence[Any]]] = field(default_factory=list)
    started: list[tuple[float, int]] = field(default_factory=list)
    ended: list[tuple[Any, ...]] = field(default_factory=list)
    usage: dict[str, list[Any]] = field(default_factory=dict)  # owner -> jobs, cpu, in, out
    results: list[tuple[int, Sequence[Any]]] = field(default_factory=list)
    dropped: list[tuple[int]] = field(default_factory=list)

    def use(self, owner: str, cpu_s: float, bytes_in: int, bytes_out: int) -> None:
        """One more job of ``owner`` ended: its usage, summed per owner until the flush."""
        row = self.usage.get(owner)
        if row is None:
            self.usage[owner] = [1, cpu_s, bytes_in, bytes_out]
        else:
            row[0] += 1
            row[1] += cpu_s
            row[2] += bytes_in
            row[3] += bytes_out

    def write(self, db: sqlite3.Connection) -> None:
        """Write every row (inside the caller's transaction).

        A kind with no rows costs no statement: under load a flush runs once
        per loop pass, and most passes change only a few kinds.
        """
        if self.added:  # ids are never given twice, even after the jobs expire
            last = max(row[0] for row in self.added)
            db.execute(
                "INSERT INTO meta VALUES ('last_id', ?) ON CONFLICT (key) DO UPDATE SET "
                "value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (last,),
            )
            db.executemany(
                "INSERT OR REPLACE INTO jobs (id, owner, function, request_id, client, state, "
                "submitted, bytes_in, timeout, checkpointed) VALUES (?,?,?,?,?,?,?,?,?,?)",
                self.added,
            )
        if self.payloads:
            db.executemany(
                "INSERT OR REPLACE INTO frames VALUES (?, 'call', ?, ?)", numbered(self.payloads)
            )
        if self.started:
            db.executemany(
                "UPDATE jobs SET state=?, started=? WHERE id=? AND state=?",
                [(JobState.RUNNING, at, job, JobState.QUEUED) for at, job in self.started],
            )
        if self.ended:
            db.executemany(
                "UPDATE jobs SET state=?, finished=?, bytes_out=?, cpu_s=?, error=?, kept=? "
                "WHERE id=?",
                self.ended,
            )
        if self.usage:
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
                "jobs=jobs+excluded.jobs, cpu_s=cpu_s+excluded.cpu_s, "
                "bytes_in=bytes_in+excluded.bytes_in, bytes_out=bytes_out+excluded.bytes_out",
                [(owner, *row) for owner, row in self.usage.items()],
            )
        if self.results:
            db.executemany(
                "INSERT OR REPLACE INTO frames VALUES (?, 'result', ?, ?)", numbered(self.results)
            )
        if self.dropped:
            db.executemany("DELETE FROM frames WHERE job=? AND part='call'", self.dropped)
