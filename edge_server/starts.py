"""Calls told STARTED that wait for their client's GO before they run (issue 13, item 6).

With several servers a plain call sets STARTS: failover sends a call lost
with its server elsewhere only if its client never saw STARTED. Were the
call handed to its worker as STARTED is queued, a server SIGKILLed before
ZeroMQ's I/O thread sent it would leave a call that ran unseen, and it could
run twice. So a STARTS call keeps the worker (or inline thread) it was given
and waits here until its client answers GO: the client has then recorded
that it may have run, and only then does it run.

A GO for a request that waits for none, or from another connection than the
call's (results and jobs are bound to their owner's connection), is ignored.
A call whose client goes (silent for ``--client-timeout``) before its GO ends
cancelled, never run, and gives its worker back, as an unanswered queued call
of a lost client. A client that heartbeats and never says GO keeps its
worker, counted against its limit of running calls like any other. A held
call that ends another way meanwhile (cancelled, its worker died, the server
shut down) is no longer RUNNING: its GO is ignored.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from offload.runtime.states import JobState

from .admission import Job
from .pool import Pool, Worker

log = logging.getLogger("edge_server")

#: Why a held call ended without running (its job's error in the store).
NO_GO = "cancelled: its client went before it answered STARTED with GO; it never ran"


class Held:
    """The STARTS calls that wait for GO, by (client connection, request id)."""

    def __init__(self, end: Callable[[Job], None]) -> None:
        self._end = end  # records a job that never ran as ended (the ledger's)
        self._held: dict[tuple[bytes, int], tuple[Job, Callable[[], object], Callable[[], object]]]
        self._held = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, job: Job, run: Callable[[], object], give_back: Callable[[], object]) -> None:
        """Keep ``job`` until GO, then ``run()`` it; ``give_back()`` frees its slot if never.

        A call held already under the same request id of the same connection
        (a client that sent it twice) never runs: its slot is not left held.
        """
        key = (job.client, job.request_id)
        old = self._held.get(key)
        if old is not None and old[0].state is JobState.RUNNING:
            old[2]()
            self._end(old[0])
        self._held[key] = (job, run, give_back)

    def go(self, client: bytes, request_id: int) -> None:
        """``client`` said GO for ``request_id``: run the call if it waits for that."""
        entry = self._held.pop((client, request_id), None)
        if entry is None or entry[0].state is not JobState.RUNNING:
            log.debug("GO for request %d of %s ignored: no call of it waits", request_id, client)
            return
        entry[1]()

    def expire(self, gone: Iterable[bytes]) -> None:
        """End, never run, the held calls of the clients ``gone``; forget the ended ones."""
        gone = set(gone)
        for key, (job, _, give_back) in list(self._held.items()):
            if job.state is not JobState.RUNNING:  # ended another way: nothing to give back
                del self._held[key]
            elif job.client in gone:
                del self._held[key]
                log.info("job %d never ran: its client went before it said GO", job.id)
                give_back()
                self._end(job)


class _Ledger(Protocol):
    @property
    def held(self) -> Held: ...


class Workers(Protocol):
    """What :func:`hold_worker` needs of the dispatcher (its ledger and worker slots)."""

    @property
    def ledger(self) -> _Ledger: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def idle(self) -> deque[Worker]: ...
    def hand(self, job: Job, worker: Worker) -> None: ...


def hold_worker(workers: Workers, job: Job, worker: Worker) -> None:
    """Keep ``worker`` for ``job`` (told STARTED) until its client's GO hands it over."""

    def give_back() -> None:
        if worker.job is job:
            worker.job = None
            workers.pool.ready(worker, workers.idle)

    workers.ledger.held.hold(job, lambda: workers.hand(job, worker), give_back)
