"""Credits on a site of lent machines: a double-entry ledger and a price generator.

DeepMarket's market, in the job store's SQLite file (the same file as the
metering). Every amount is an exact integer of micro-credits (1 credit =
1,000,000).

**Double entry.** Every movement is a transaction of entries that sum to
zero (:meth:`Credits.post` refuses any other). Accounts: ``user:<key>`` for
each CurveZMQ key (the same account borrows and lends: a lender spends what
its machines earned) and ``site:grants``, the issuer, which goes negative by
every grant. So the sum of all entries is zero at all times, and a balance
is the sum of an account's entries.

* A new owner gets ``credit_grant`` from ``site:grants`` the first time the
  site sees it.
* A run of a job on a lender's machine: the job's owner pays, the lender
  earns, for the resource-seconds the run used (one core for its wall time,
  and its peak memory for as long) at the prices of the slots it ran in (a
  run across a slot boundary is split at it). A run lost with its machine
  reported nothing and costs nothing (at most one checkpoint interval of the
  lender's work goes unpaid); a run that failed through the job's own fault
  is paid like any other.

**Prices.** Four 6-hour slots a day (00-06, 06-12, 12-18, 18-24, the site's
local time), each with a price per core-hour and per GB-hour. A day's
prices are made the first time they are needed, from the day before: each
slot's utilization ``u`` (core-seconds used / core-seconds the lent
machines offered in that slot) moves its price by::

    new = old + old * (u - 1/2)          (so idle: half, half busy: same, full: 1.5x)

rounded down to a micro-credit, and kept within a floor of a quarter and a
ceiling of four times the starting price (``price_cpu``, ``price_memory``).
A slot nothing was offered in counts as idle. The first day, and a day after
one without prices, starts from the day before's prices if any, else the
starting ones.

**Admission.** A job is refused with :class:`~offload.InsufficientCredits`
before it runs if its owner's balance does not cover one core-second at the
current price (jobs already running may take it below zero: at most what
those jobs cost).
"""

from __future__ import annotations

import datetime
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

SLOTS = 4
SLOT_S = 6 * 3600
MICRO = 1_000_000
GRANTS = "site:grants"
HOUSE = "site:house"  # the earnings of the site's own workers (not lent by anyone)
_HOUR_MS = 3_600_000
_GB = 2**30

SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_entries (
    id INTEGER PRIMARY KEY,
    txn INTEGER NOT NULL,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    at REAL NOT NULL,
    job INTEGER,
    memo TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_by_account ON credit_entries (account, id);
CREATE TABLE IF NOT EXISTS prices (
    day TEXT NOT NULL,
    slot INTEGER NOT NULL,
    cpu INTEGER NOT NULL,
    memory INTEGER NOT NULL,
    PRIMARY KEY (day, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS capacity (
    day TEXT NOT NULL,
    slot INTEGER NOT NULL,
    offered_ms INTEGER NOT NULL DEFAULT 0,
    used_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS machines (
    id INTEGER PRIMARY KEY,
    lender TEXT NOT NULL,
    host TEXT NOT NULL,
    cores INTEGER NOT NULL,
    memory INTEGER NOT NULL,
    hours TEXT NOT NULL,
    registered REAL NOT NULL,
    worker TEXT,
    earned INTEGER NOT NULL DEFAULT 0,
    online_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS site_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BLOB NOT NULL
);
"""


def account(owner: str) -> str:
    """The ledger account of a CurveZMQ key (``""``: the anonymous owner of an open server)."""
    return f"user:{owner}"


def slot_of(at: float) -> tuple[str, int]:
    """(local date, slot 0-3) of a time."""
    local = time.localtime(at)
    return time.strftime("%Y-%m-%d", local), local.tm_hour // 6


def _slot_end(at: float) -> float:
    local = time.localtime(at)
    start = time.mktime((*local[:3], (local.tm_hour // 6) * 6, 0, 0, 0, 0, -1))
    end = time.mktime((*local[:3], (local.tm_hour // 6) * 6 + 6, 0, 0, 0, 0, -1))
    return end if end > at else start + SLOT_S


def pieces(start: float, end: float) -> Iterable[tuple[str, int, int]]:
    """``(day, slot, milliseconds)`` of the interval ``[start, end]``, split at slot edges."""
    at = start
    while at < end:
        edge = min(end, _slot_end(at))
        day, slot = slot_of(at)
        yield day, slot, round((edge - at) * 1000)
        at = edge


def cost(cpu_price: int, memory_price: int, ms: int, memory_bytes: int) -> int:
    """Micro-credits of one core and ``memory_bytes`` for ``ms`` at these hourly prices."""
    return cpu_price * ms // _HOUR_MS + memory_price * memory_bytes * ms // (_GB * _HOUR_MS)


def next_price(old: int, utilization_ppm: int, base: int) -> int:
    """Tomorrow's price of a slot from today's: the rule in this module's docstring."""
    moved = old + old * (utilization_ppm - MICRO // 2) // MICRO
    return max(base // 4, min(base * 4, moved))


class Credits:
    """The site's ledger and prices, in the job store's database."""

    def __init__(
        self,
        db: sqlite3.Connection,
        grant: int,
        price_cpu: int,
        price_memory: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self.grant = grant
        self.base = (price_cpu, price_memory)
        self.clock = clock
        db.executescript(SCHEMA)
        # The key lent machines' worker names are signed with (kept across restarts).
        db.execute("INSERT OR IGNORE INTO site_secret VALUES (1, ?)", (secrets.token_bytes(32),))
        self.secret = bytes(db.execute("SELECT value FROM site_secret").fetchone()[0])

    # -- the ledger ---------------------------------------------------------------------------

    def post(self, entries: list[tuple[str, int]], memo: str, job: int | None = None) -> int:
        """Write one transaction (its entries must sum to zero); return its number."""
        if sum(amount for _, amount in entries) != 0:
            raise ValueError(f"unbalanced transaction {entries!r}")
        db, at = self._db, self.clock()
        try:
            db.execute("BEGIN IMMEDIATE")
            txn = db.execute("SELECT COALESCE(MAX(txn), 0) + 1 FROM credit_entries").fetchone()[0]
            db.executemany(
                "INSERT INTO credit_entries (txn, account, amount, at, job, memo) "
                "VALUES (?,?,?,?,?,?)",
                [(txn, acct, amount, at, job, memo) for acct, amount in entries],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(txn)

    def balance(self, owner: str) -> int:
        """``owner``'s balance in micro-credits (granted first if the site has not seen it)."""
        self.open_account(owner)
        return self._sum(account(owner))

    def _sum(self, acct: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM credit_entries WHERE account=?", (acct,)
        ).fetchone()
        return int(row[0])

    def open_account(self, owner: str) -> None:
        """Give a new owner the site's grant (once)."""
        acct = account(owner)
        seen = self._db.execute(
            "SELECT 1 FROM credit_entries WHERE account=? LIMIT 1", (acct,)
        ).fetchone()
        if seen is None:
            self.post([(GRANTS, -self.grant), (acct, self.grant)], "grant to a new user")

    def total(self) -> int:
        """The sum of every entry: zero, always."""
        return int(
            self._db.execute("SELECT COALESCE(SUM(amount), 0) FROM credit_entries").fetchone()[0]
        )

    def statement(self, owner: str, limit: int = 50) -> list[dict[str, Any]]:
        """``owner``'s newest entries."""
        rows = self._db.execute(
            "SELECT txn, amount, at, job, memo FROM credit_entries WHERE account=? "
            "ORDER BY id DESC LIMIT ?",
            (account(owner), limit),
        )
        keys = ("txn", "amount", "at", "job", "memo")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def afford(self, owner: str) -> tuple[bool, int, int]:
        """(whether ``owner`` may start a job now, its balance, the least it needs)."""
        cpu, _ = self.price_now()
        need = max(1, cpu // 3600)  # one core-second
        have = self.balance(owner)
        return have >= need, have, need

    def charge_run(
        self,
        owner: str,
        lender: str | None,
        start: float,
        end: float,
        memory_bytes: int,
        job: int,
        machine: int | None = None,
    ) -> int:
        """The owner pays the lender for a run on one core from ``start`` to ``end``; the amount."""
        total, used = 0, []
        for day, slot, ms in pieces(start, max(start, end)):
            cpu, memory = self.prices(day)[slot]
            total += cost(cpu, memory, ms, memory_bytes)
            used.append((day, slot, ms))
        self._db.executemany(
            "INSERT INTO capacity (day, slot, used_ms) VALUES (?,?,?) ON CONFLICT (day, slot) "
            "DO UPDATE SET used_ms = used_ms + excluded.used_ms",
            used,
        )
        self.open_account(owner)
        if lender is not None:
            self.open_account(lender)
        earner = account(lender) if lender is not None else HOUSE
        memo = f"job {job}: {end - start:.3f} s on machine {machine or 'of the site'}"
        self.post([(account(owner), -total), (earner, total)], memo, job)
        if machine is not None:
            self._db.execute("UPDATE machines SET earned = earned + ? WHERE id=?", (total, machine))
        return total

    # -- prices -------------------------------------------------------------------------------

    def offered(self, cores: int, start: float, end: float) -> None:
        """Lent machines offered ``cores`` cores from ``start`` to ``end`` (utilization's base)."""
        rows = [(day, slot, ms * cores) for day, slot, ms in pieces(start, end)]
        self._db.executemany(
            "INSERT INTO capacity (day, slot, offered_ms) VALUES (?,?,?) ON CONFLICT (day, slot) "
            "DO UPDATE SET offered_ms = offered_ms + excluded.offered_ms",
            rows,
        )

    def utilization(self, day: str) -> list[int]:
        """Each slot's utilization on ``day`` in parts per million (0 where nothing was offered)."""
        found = {
            slot: (offered, used)
            for slot, offered, used in self._db.execute(
                "SELECT slot, offered_ms, used_ms FROM capacity WHERE day=?", (day,)
            )
        }
        result = []
        for slot in range(SLOTS):
            offered, used = found.get(slot, (0, 0))
            result.append(min(MICRO, used * MICRO // offered) if offered else 0)
        return result

    def prices(self, day: str) -> list[tuple[int, int]]:
        """``day``'s (cpu, memory) prices per slot, made from the day before's if new."""
        rows = self._db.execute(
            "SELECT slot, cpu, memory FROM prices WHERE day=? ORDER BY slot", (day,)
        ).fetchall()
        if len(rows) == SLOTS:
            return [(cpu, memory) for _, cpu, memory in rows]
        before = (datetime.date.fromisoformat(day) - datetime.timedelta(days=1)).isoformat()
        old = self._db.execute(
            "SELECT slot, cpu, memory FROM prices WHERE day=? ORDER BY slot", (before,)
        ).fetchall()
        if len(old) == SLOTS:
            usage = self.utilization(before)
            made = [
                (
                    next_price(cpu, usage[slot], self.base[0]),
                    next_price(memory, usage[slot], self.base[1]),
                )
                for slot, cpu, memory in old
            ]
        else:
            made = [self.base] * SLOTS
        self._db.executemany(
            "INSERT OR REPLACE INTO prices VALUES (?,?,?,?)",
            [(day, slot, cpu, memory) for slot, (cpu, memory) in enumerate(made)],
        )
        return made

    def price_now(self) -> tuple[int, int]:
        day, slot = slot_of(self.clock())
        return self.prices(day)[slot]

    def quote(self, seconds: float, memory_bytes: int = 0) -> dict[str, Any]:
        """Micro-credits of a run of ``seconds`` starting now, and the prices behind it."""
        now = self.clock()
        total = 0
        for day, slot, ms in pieces(now, now + max(0.0, seconds)):
            cpu, memory = self.prices(day)[slot]
            total += cost(cpu, memory, ms, memory_bytes)
        day, slot = slot_of(now)
        cpu, memory = self.prices(day)[slot]
        return {
            "micro_credits": total,
            "credits": total / MICRO,
            "seconds": seconds,
            "slot": slot,
            "price_cpu": cpu,
            "price_memory": memory,
        }

    # -- lenders' machines ----------------------------------------------------------------------

    def register(self, lender: str, host: str, cores: int, memory: int, hours: str) -> int:
        """A lender's machine joins the site (again, if the same lender and host): its id."""
        row = self._db.execute(
            "SELECT id FROM machines WHERE lender=? AND host=?", (lender, host)
        ).fetchone()
        if row is not None:
            self._db.execute(
                "UPDATE machines SET cores=?, memory=?, hours=? WHERE id=?",
                (cores, memory, hours, row[0]),
            )
            return int(row[0])
        self.open_account(lender)
        cursor = self._db.execute(
            "INSERT INTO machines (lender, host, cores, memory, hours, registered) "
            "VALUES (?,?,?,?,?,?)",
            (lender, host, cores, memory, hours, self.clock()),
        )
        return int(cursor.lastrowid or 0)

    def machine(self, machine: int) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT id, lender, host, cores, memory, hours, earned, online_s FROM machines "
            "WHERE id=?",
            (machine,),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "lender", "host", "cores", "memory", "hours", "earned", "online_s")
        return dict(zip(keys, row, strict=True))

    def machines(self, lender: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id FROM machines WHERE lender=? ORDER BY id", (lender,))
        return [m for (mid,) in rows.fetchall() if (m := self.machine(mid)) is not None]

    def online(self, machine: int, seconds: float) -> None:
        self._db.execute(
            "UPDATE machines SET online_s = online_s + ? WHERE id=?", (seconds, machine)
        )


def as_credits(micro: int) -> str:
    """Micro-credits as credits for people: ``12.345678``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
