"""Migration (issue 13, item 7): a running checkpointed job moves where it finishes sooner.

Checked on every checkpoint a job's remote run sends home (no timer, no
I/O: arithmetic on what the checkpoints and the server list already hold),
for functions whose ``migrate`` is ``"auto"`` (``@offload(migrate=...)``,
else the client's ``Config.migrate``; default ``"auto"``)::

    checkpoint k of a run on server S, done of total
      |  pace on S = seconds per unit of progress between checkpoints (EWMA)
      v
    stay = (total - done) * pace on S + result bytes / S's bandwidth down
    on T = (total - done) * pace there: as measured when this job ran there,
           else its fastest pace anywhere, scaled by T's speed (server_drift)
           + the wait behind the calls queued on T (Candidate.wait)
           + result bytes / T's bandwidth down
    cost = two round trips to T (stop here, start there) + checkpoint bytes / T's bandwidth
    move to the best T when stay - on T > cost and > MARGIN * stay

The result's bytes are what the profiler predicts for the job's call size
(learned from whole remote runs of its function; 0 before one came back),
over each link's bandwidth as last measured by calls and probes. S's is from
before this run: a probe waits while a call is in flight on its server.

A move is :meth:`~offload.Job.move`: the run on S stops at its next safe
point, its state comes home as a checkpoint, and the job goes on at T from
it (S's record says ``moved``). Every move is warned and logged with its
numbers. A run is judged only after ``MIN_INTERVALS`` checkpoint intervals
on its server, so a move is never decided on the pace of another one, and a
job whose function does not tell ``done`` and ``total`` never moves (how
much is left is unknown), nor does a job on the server its user chose
(``job.resume(address)``, ``job.move(address)``: :attr:`~offload.Job.pinned`).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .jobhost import Movable
from .profiler.choice import Candidate

log = logging.getLogger("offload")

#: Checkpoint intervals measured on a run before it may move.
MIN_INTERVALS = 2
#: A move must save at least this fraction of the time left where the job runs.
MARGIN = 0.25
#: Weight of the latest interval in a run's pace.
ALPHA = 0.5


def _nothing(job: Movable) -> float:
    """A result of unknown size: nothing counted for its way home."""
    return 0.0


@dataclass
class _Pace:
    """How fast one job went: on its current run, and on each server it ran on."""

    where: str = ""
    runs: int = 0
    at: float = 0.0  # time.monotonic() of the run's latest checkpoint
    done: int = 0  # its progress then
    intervals: int = 0  # checkpoint intervals measured on the run
    per_unit: dict[str, float] = field(default_factory=dict)  # address -> s per unit
    base: float = float("inf")  # fastest s per unit anywhere, over that server's drift


@dataclass(frozen=True)
class Move:
    """A move decided: where to, and the estimates that decided it (seconds)."""

    job: str
    source: str
    target: str
    stay: float
    there: float
    cost: float
    nbytes: int


class Migrations:
    """The migration check of one client's jobs; :attr:`moves` lists what it moved."""

    def __init__(self, default: str, result_bytes: Callable[[Movable], float] = _nothing) -> None:
        """``result_bytes``: the size a job's result is predicted to have (0: not known)."""
        self._default = default
        self._result_bytes = result_bytes
        self._lock = threading.Lock()
        self._paces: weakref.WeakKeyDictionary[Movable, _Pace] = weakref.WeakKeyDictionary()
        #: Every move decided, in order.
        self.moves: list[Move] = []

    def enabled(self, job: Movable) -> bool:
        """Whether ``job``'s function may move (``migrate="auto"``, its own or the client's)."""
        return (job.fn.migrate or self._default) == "auto"

    def checkpointed(
        self, job: Movable, nbytes: int, candidates: Sequence[Candidate]
    ) -> Move | None:
        """A checkpoint of ``job`` (``nbytes`` on the wire) arrived: move it if that pays."""
        progress = job.progress
        where = progress.where
        if "://" not in where or where == job.pinned:  # here, paused, or where the user put it
            return None
        now = time.monotonic()
        with self._lock:
            pace = self._paces.get(job)
            if pace is None:
                pace = self._paces[job] = _Pace()
            if (where, progress.runs) != (pace.where, pace.runs):  # a new run: start its clock
                pace.where, pace.runs, pace.intervals = where, progress.runs, 0
                pace.at, pace.done = now, progress.done
                return None
            if progress.done <= pace.done:
                return None
            sample = (now - pace.at) / (progress.done - pace.done)
            pace.at, pace.done = now, progress.done
            pace.intervals += 1
            before = pace.per_unit.get(where)
            if pace.intervals > 1 and before is not None:
                sample = ALPHA * sample + (1 - ALPHA) * before
            rate = pace.per_unit[where] = sample
            servers = {c.address: c for c in candidates}
            source = servers.get(where)
            if source is None:  # lost: failover's business, not migration's
                return None
            pace.base = min(pace.base, rate / source.link.server_drift.value)
            if pace.intervals < MIN_INTERVALS or not progress.total:
                return None
            left, result = progress.total - progress.done, self._result_bytes(job)
            move = self._best(job, pace, rate, left, nbytes, result, servers)
        if move is not None and job.move(move.target, pin=False):
            self._say(job, move)
            return move
        return None

    def _best(
        self,
        job: Movable,
        pace: _Pace,
        rate: float,
        left: int,
        nbytes: int,
        result: float,
        servers: dict[str, Candidate],
    ) -> Move | None:
        """The server where ``job`` would finish soonest, if moving there pays (lock held)."""
        stay = left * rate + result / servers[pace.where].link.down_rate
        name = job.fn.wire_name
        best: Move | None = None
        for address, c in servers.items():
            if address == pace.where or not c.serves(name):
                continue
            per_unit = pace.per_unit.get(address, pace.base * c.link.server_drift.value)
            run = left * per_unit
            there = run + c.wait(run) + result / c.link.down_rate
            trip = c.link.fixed if c.link.rtt.mean is not None else c.rtt_prior
            if c.functions is not None and name not in c.functions:
                trip *= 2  # its code goes first
            cost = 2 * trip + nbytes / c.link.up_rate
            gain = stay - there
            pays = gain > cost and gain > MARGIN * stay
            if pays and (best is None or there + cost < best.there + best.cost):
                key = job.key if job.id is None else str(job.id)
                best = Move(key, pace.where, address, stay, there, cost, nbytes)
        return best

    def _say(self, job: Movable, move: Move) -> None:
        """Warn and log a move: never silent."""
        self.moves.append(move)
        message = (
            f"offload: moving job {move.job} of {job.fn.wire_name} from {move.source} to "
            f"{move.target}: {move.stay:.2f} s predicted left there (its result's way home "
            f"included), {move.there:.2f} s on "
            f"{move.target} plus {move.cost:.3f} s to move its checkpoint ({move.nbytes} bytes)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.warning(message)
