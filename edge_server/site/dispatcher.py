"""Site runs: the jobs the Dask engine has out on the cluster, and what comes back of them.

:class:`SiteDispatcher` does for site runs what
:class:`~edge_server.dispatch.Dispatcher` does for local workers: it hands
queued jobs out (as many as the cluster has threads, so the fair queue,
cancel and pause of queued calls stay the server's), routes checkpoints and
results to the clients, and stops jobs (pause, closing, cancel, timeout).
It asks its :class:`Runner` (the :class:`~edge_server.site.engine.SiteEngine`)
to submit, kill and message the tasks.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import zmq

from offload._exceptions import (
    CallTimeout,
    JobCancelled,
    JobStopped,
    ServerBusy,
)
from offload.runtime.states import JobState

from .. import stopsig
from ..admission import Job
from ..config import ServerConfig
from ..dispatch import TRACK_MIN, Dispatcher
from ..fairqueue import FairQueue
from ..ledger import Ledger, outcome

log = logging.getLogger("edge_server.site")


class Runner(Protocol):
    """What the dispatcher asks of the engine: the cluster's size, and the tasks."""

    slots: int

    def submit(self, run: SiteRun) -> None:
        """Start ``run``'s task on the cluster."""
        ...

    def kill(self, run: SiteRun, why: str) -> None:
        """Stop ``run``'s task, whatever it is doing."""
        ...

    def order(self, identity: bytes, frames: list[bytes]) -> None:
        """Send ``frames`` to the task attempt connected as ``identity``."""
        ...


@dataclass(eq=False)
class SiteRun:
    """One job on the site: its task, the attempt connected now, its latest checkpoint."""

    job: Job
    token: bytes
    future: Any = None
    identity: bytes | None = None  # the routing id of the attempt running it now
    worker: str = ""
    attempts: int = 0
    checkpoint: list[bytes] | None = None  # the latest CHECKPOINT message's frames
    deadline: float | None = None
    stop: int | None = None  # a stop asked for before the task said HELLO
    history: list[str] = field(default_factory=list)  # the workers it ran on


class SiteDispatcher(Dispatcher):
    """Queued jobs to the site's workers, and what the tasks send back to the clients."""

    def __init__(
        self,
        config: ServerConfig,
        engine: Runner,
        queue: FairQueue,
        ledger: Ledger,
        send: Any,
    ) -> None:
        # Not Dispatcher.__init__: there is no pool; the routing of replies is shared.
        self.config = config
        self.engine = engine
        self.queue = queue
        self.ledger = ledger
        self._send = send
        self.runs: dict[int, SiteRun] = {}
        self.dispatched_at = 0.0
        self.tracker_wait = 1
        self.stopping = False
        self.unsent: dict[bytes, tuple[zmq.MessageTracker, bytes, int]] = {}
        self._sent = 0
        ledger.budget.settle = self.settle

    @property
    def idle(self) -> range:  # type: ignore[override]
        """Free job slots on the site (its workers' threads less the runs), as a sequence:
        the loop reads its length and truth, as of a local server's deque of idle workers."""
        return range(max(0, self.engine.slots - len(self.runs)))

    def running(self) -> list[SiteRun]:  # type: ignore[override]
        return list(self.runs.values())

    def worker_of(self, job_id: int) -> SiteRun | None:  # type: ignore[override]
        return self.runs.get(job_id)

    def stop_job(self, worker: SiteRun, why: str) -> Job:  # type: ignore[override]
        """Kill the run (its task kills the job's process and reports what it used)."""
        run = self.runs.pop(worker.job.id, worker)
        if run.future is not None:  # a run held for its GO has no task yet
            self.engine.kill(run, why)
        return run.job

    def signal(self, worker: SiteRun, kind: int) -> None:  # type: ignore[override]
        """Ask a checkpointed run to stop at its next checkpoint (pause, closing)."""
        if not worker.job.checkpointed:
            return
        if worker.identity is None:
            worker.stop = kind
        else:
            self.engine.order(worker.identity, [b"S", bytes([kind])])

    def pause(self, client: bytes, request_id: int) -> None:
        for job in self.queue:
            if job.client == client and job.request_id == request_id:
                self.queue.remove(job)
                self.fail(job, JobStopped("paused before it started"), JobState.PAUSED)
                return
        for run in self.running():
            if run.job.client == client and run.job.request_id == request_id:
                self.signal(run, stopsig.PAUSE)
                return

    def cancel(self, job_id: int) -> bool:
        for job in self.queue:
            if job.id == job_id:
                self.queue.remove(job)
                self.fail(job, JobCancelled("cancelled by its owner"), JobState.CANCELLED)
                return True
        run = self.runs.get(job_id)
        if run is None:
            return False
        self.fail(
            self.stop_job(run, "cancelled"),
            JobCancelled("cancelled by its owner"),
            JobState.CANCELLED,
        )
        return True

    def dispatch(self) -> None:
        """Hand queued jobs to the site while it has free slots (round-robin between clients)."""
        if self.stopping:
            return
        picked: list[Job] = []
        while self.queue and self.idle:
            job = self.queue.pop(self._at_running_limit)
            if job is None:
                break
            self.runs[job.id] = SiteRun(job, secrets.token_bytes(16))
            picked.append(job)
        if not picked:
            return
        stored = False
        for job in picked:
            stored = stored or job.stored
            self.ledger.started(job)
        if stored:
            self.ledger.commit()
        for job in picked:  # an AWAITS_GO call waits for its client's GO (..starts)
            run = self.runs[job.id]
            if job.awaits_go:
                self.ledger.held.hold(job, partial(self._submit, run), partial(self._unhold, run))
            else:
                self._submit(run)

    def _submit(self, run: SiteRun) -> None:
        """Start ``run``'s task; a scheduler that is gone puts its job back in the queue."""
        job = run.job
        try:
            self.engine.submit(run)
        except Exception as exc:
            log.error("cannot submit job %d to the site: %s", job.id, exc)
            self.runs.pop(job.id, None)
            self.ledger.requeued(job)
            self.queue.push_back(job)
            return
        run.deadline = time.monotonic() + job.timeout if job.timeout else None
        self.dispatched_at = time.perf_counter()

    def _unhold(self, run: SiteRun) -> None:
        """Free the slot of a run whose client went before its GO (it was never submitted)."""
        if self.runs.get(run.job.id) is run:
            del self.runs[run.job.id]

    def _at_running_limit(self, client: bytes) -> bool:
        limit = self.config.max_running_per_client
        return sum(run.job.client == client for run in self.runs.values()) >= limit

    def check_deadlines(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.deadline is not None and now >= run.deadline:
                job = self.stop_job(run, "timeout")
                self.fail(job, CallTimeout(f"call ran past its timeout of {job.timeout:g} s"))

    def release_arenas(self) -> None:
        self.settle()

    # -- from the tasks ---------------------------------------------------------------------

    def finish(self, run: SiteRun, frames: list[bytes]) -> None:
        """A run's DONE: the reply to its client, as a local worker's is."""
        self.runs.pop(run.job.id, None)
        job = run.job
        header, payload = memoryview(frames[0]), frames[1:]
        state, error = outcome(header, payload)
        self.ledger.release(job)
        size = sum(len(p) for p in payload)
        if size >= TRACK_MIN and (why := self.ledger.budget.over(job.client, size)) is not None:
            self.fail(job, ServerBusy(f"result of {size} bytes dropped, {why}"))
            return
        self.ledger.ended(job, state, error, [header, *payload])
        if size < TRACK_MIN:
            self._send(job.client, [header, *payload])
        else:
            self._send_tracked(job.client, header, payload, size)

    def checkpoint(self, run: SiteRun, frames: list[bytes]) -> None:
        """Keep a run's latest checkpoint (the next attempt resumes from it) and forward it."""
        run.checkpoint = frames
        self._checkpoint(run.job, frames[0], frames[1:])
