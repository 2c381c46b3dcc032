"""The worker side of the event loop: hand queued jobs to idle workers and route what comes back.

A job goes to an idle worker over its Unix-socket channel (large frames through the worker's
in-arena, a large call's copied there by :mod:`~edge_server.staging`'s thread); the worker answers
with checkpoints (sent straight on to the client) and one DONE, whose reply goes to the client
(large frames tracked until ZeroMQ has sent them, then the arena is freed). A job past its deadline
has its worker killed; a worker that dies fails its job with :class:`~offload.WorkerCrashed`;
either way a new worker takes its place. Every outcome is told to the
:class:`~edge_server.ledger.Ledger`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psutil
import zmq

from offload._exceptions import (
    CallTimeout,
    JobCancelled,
    JobStopped,
    LimitExceeded,
    OffloadError,
    ProtocolError,
    ServerBusy,
    ServerUnavailable,
    WorkerCrashed,
)
from offload.runtime import errors
from offload.runtime.states import JobState

from . import starts, stopsig
from .admission import Job
from .channel import Channel
from .config import ServerConfig
from .fairqueue import FairQueue
from .ledger import Ledger, outcome
from .pool import ARENA_IDLE_S, Pool, Worker
from .staging import STAGE_MIN, Staged, Stager

log = logging.getLogger("edge_server")

TRACKER_POLL_MS = (1, 10)  # first and longest wait while results are still being sent
# Replies and checkpoints this large are tracked until sent, and count against their
# client's budget; smaller ones are bounded by the frontend's send high-water mark.
TRACK_MIN = 4096


class Dispatcher:
    """Jobs from the queue to the workers, and their replies back to the clients."""

    def __init__(
        self,
        config: ServerConfig,
        pool: Pool,
        queue: FairQueue,
        ledger: Ledger,
        send: Callable[[bytes, list[Any]], None],
    ) -> None:
        self.config = config
        self.pool = pool
        self.queue = queue
        self.ledger = ledger
        self._send = send
        self.idle: deque[Worker] = deque()
        self.dispatched_at = 0.0
        self.tracker_wait = TRACKER_POLL_MS[0]
        self.stopping = False
        # Replies and checkpoints ZeroMQ is still sending: their result arena's name (or a
        # key of their own) -> tracker, client, size (charged until the tracker is done).
        self.unsent: dict[bytes, tuple[zmq.MessageTracker, bytes, int]] = {}
        self._sent = 0
        self.stager: Stager | None = None  # copies large calls off the loop (set by the engine)
        ledger.budget.settle = self.settle  # a refusal looks at what was sent meanwhile

    def fail(self, job: Job, error: OffloadError, state: JobState = JobState.FAILED) -> None:
        """End ``job`` with ``error`` sent to its client (``state``: failed, cancelled, paused)."""
        self._send(job.client, errors.error_reply(job.request_id, error))
        self.ledger.ended(job, state, errors.describe(error))

    def running(self) -> list[Worker]:
        """The workers running a job now."""
        return [w for w in self.pool.by_identity.values() if w.job is not None]

    def worker_of(self, job_id: int) -> Worker | None:
        """The worker running job ``job_id``, if one is."""
        return self.pool.worker_of(job_id)

    def stop_job(self, worker: Worker, why: str) -> Job:
        """Kill ``worker``, which is running a job (a fresh one replaces it); return the job.

        The CPU time the job had used is read from the process first, so a job
        stopped for running too long is metered like one that finished.
        """
        job, worker.job, worker.deadline = worker.job, None, None
        assert job is not None
        with contextlib.suppress(psutil.Error, TypeError):
            times = psutil.Process(worker.process.pid).cpu_times()
            job.cpu_s = max(0.0, times.user + times.system - worker.cpu_ns / 1e9)
        self.pool.kill(worker, why)
        return job

    def signal(self, worker: Worker, kind: int) -> None:
        """Ask a worker's checkpointed job to stop at its next checkpoint (:mod:`.stopsig`)."""
        if worker.job is not None and worker.job.checkpointed:
            with contextlib.suppress(ProcessLookupError):
                if worker.process.pid:
                    os.kill(worker.process.pid, stopsig.signum(kind, worker.handed - 1))

    def pause(self, client: bytes, request_id: int) -> None:
        """Stop a client's job at its next checkpoint (running) or before it starts (queued)."""
        for job in self.queue:
            if job.client == client and job.request_id == request_id:
                self.queue.remove(job)
                self.fail(job, JobStopped("paused before it started"), JobState.PAUSED)
                return
        for worker in self.running():
            job = worker.job
            if job is not None and job.client == client and job.request_id == request_id:
                self.signal(worker, stopsig.PAUSE)
                return

    def withdraw(self, client: bytes, request_ids: set[int]) -> list[int]:
        """Take a client's queued calls back (its futures were cancelled); return their ids.

        Only calls no worker has taken: a running call is not withdrawn. The
        client stopped waiting for them, so no ERROR is sent.
        """
        taken = [j for j in self.queue if j.client == client and j.request_id in request_ids]
        for job in taken:
            self.queue.remove(job)
            self.ledger.ended(job, JobState.CANCELLED, "cancelled: withdrawn by its client")
        return [job.request_id for job in taken]

    def cancel(self, job_id: int) -> bool:
        """Cancel job ``job_id``, queued or running; False if it is neither."""
        for job in self.queue:
            if job.id == job_id:
                self.queue.remove(job)
                self.fail(job, JobCancelled("cancelled by its owner"), JobState.CANCELLED)
                return True
        worker = self.worker_of(job_id)
        if worker is None:
            return False
        stopped = self.stop_job(worker, "cancelled")
        self.fail(stopped, JobCancelled("cancelled by its owner"), JobState.CANCELLED)
        return True

    # -- to the workers -------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand queued jobs to idle workers, round-robin between clients.

        Jobs whose payload is in the store are marked running there (one commit
        with the calls still waiting) before any is sent: a server killed a
        moment later must not run them again after its restart.
        """
        if self.stopping:
            return  # closing: what is still queued stays in the store for the restart
        if self.queue and self.idle:
            self.release_arenas()  # a FREE ahead of the job lets the worker reuse its arena
        picked: list[tuple[Job, Worker]] = []
        while self.queue and self.idle:
            job = self.queue.pop(self.pool.at_running_limit)
            if job is None:
                break  # every client with calls waiting has its share running
            worker = self.idle.popleft()
            if worker.killed or worker.channel is None:
                self.queue.push_back(job)
                continue
            worker.job = job  # now: the running limit counts it for the next pick
            picked.append((job, worker))
        if not picked:
            return
        stored = any(job.stored for job, _ in picked)  # before started() clears it
        for job, _ in picked:
            self.ledger.started(job)
        if stored:
            self.ledger.store_waiting()
            self.ledger.commit()
        for job, worker in picked:  # an AWAITS_GO call's worker waits for its client's GO
            starts.hold_worker(self, job, worker) if job.awaits_go else self.hand(job, worker)

    def hand(self, job: Job, worker: Worker) -> None:
        """Send ``job`` to ``worker`` (large frames via its arena; a large call via the stager)."""
        frames = [f.buffer for f in job.frames[1:]]
        worker.trim_at = None  # busy: its arenas are in use
        if self.stager is not None and sum(f.nbytes for f in frames) >= STAGE_MIN:
            self.stager.stage(worker, job, worker.in_arena, frames)
            return
        try:
            staged: Staged = worker.in_arena.pack(frames)
        except OSError as exc:
            staged = exc
        self._send_job(job, worker, staged)

    def staged(self) -> None:
        """Send the jobs the stager has put in their workers' arenas (unless ended meanwhile)."""
        assert self.stager is not None
        for worker, job, staged in self.stager.collect():
            if worker.job is job and worker in self.pool.by_identity.values():
                self._send_job(job, worker, staged)

    def _send_job(self, job: Job, worker: Worker, staged: Staged) -> None:
        if isinstance(staged, Exception):  # e.g. /dev/shm is full
            worker.job = None
            self.idle.appendleft(worker)
            log.error("cannot stage job %d for a worker: %s", job.id, staged)
            self.fail(job, ServerUnavailable(f"server: {staged}"))
            return
        name, spans, inline = staged
        header = job.frames[0]
        assert worker.channel is not None
        try:
            worker.channel.send(
                [b"J", job.id.to_bytes(8, "big"), header.buffer, name, spans, *inline]
            )
        except (BrokenPipeError, ConnectionResetError):
            worker.job = None
            self.ledger.requeued(job)
            self.queue.push_back(job)  # the worker died; its sentinel will tell
            return
        except (OSError, ValueError) as exc:
            worker.job = None
            self.idle.appendleft(worker)
            self.fail(job, ProtocolError(f"cannot run: {exc}"))
            return
        worker.handed += 1  # as the worker counts the jobs it receives (stop signals)
        self.dispatched_at = time.perf_counter()
        worker.deadline = time.monotonic() + job.timeout if job.timeout else None

    # -- from the workers -----------------------------------------------------------------------

    def read_unnamed(self, channel: Channel) -> None:
        """A new worker's first message names it; then it is idle."""
        try:
            messages = channel.feed()
        except (EOFError, OSError, ValueError):
            self.pool.drop_unnamed(channel)
            return
        for message in messages:
            if len(message) == 3 and bytes(message[0]) == b"R":
                worker = self.pool.name(channel, bytes(message[1]))
                if worker is not None:
                    worker.cpu_ns = int.from_bytes(message[2], "big")
                    self.pool.ready(worker, self.idle)
                return
        if messages:
            self.pool.drop_unnamed(channel)

    def read_worker(self, worker: Worker) -> None:
        """Everything a worker has sent."""
        assert worker.channel is not None
        try:
            messages = worker.channel.feed()
        except (EOFError, OSError, ValueError):
            return  # the sentinel reports the death
        for message in messages:
            self._on_worker(worker, message)

    def _on_worker(self, worker: Worker, frames: list[memoryview]) -> None:
        kind = bytes(frames[0])
        if kind == b"C" and len(frames) >= 3:  # a checkpoint: straight on to its client
            job = worker.job
            if job is not None and int.from_bytes(frames[1], "big") == job.id:
                self._checkpoint(job, frames[2], list(frames[3:]))
            return
        if kind == b"E":  # done, and the worker leaves (a limit passed, or the job left state)
            worker.killed = worker.killed or "left after its job"
        elif kind != b"D" or len(frames) < 6:
            log.error("unexpected message %r from worker %s", bytes(frames[0]), worker.identity)
            return
        job = worker.job
        worker.job, worker.deadline = None, None
        # Large arenas stay for the next call while calls keep coming; Pool.trim_idle gives
        # them back once the worker has been idle for ARENA_IDLE_S.
        worker.trim_at = time.monotonic() + ARENA_IDLE_S if len(frames) > 4 and frames[4] else None
        if not worker.killed:
            self.pool.ready(worker, self.idle)
        if job is None or int.from_bytes(frames[1], "big") != job.id:
            return  # the job already failed (timeout) and the worker finished anyway
        cpu_ns = int.from_bytes(frames[2], "big")
        job.cpu_s, worker.cpu_ns = max(0, cpu_ns - worker.cpu_ns) / 1e9, cpu_ns
        header, name, spans = frames[3], bytes(frames[4]), bytes(frames[5])
        try:
            payload = worker.out_arena.unpack(name, spans, frames[6:])
        except (ValueError, OSError) as exc:
            log.error("worker %s sent an unreadable reply: %s", worker.identity, exc)
            self.fail(job, WorkerCrashed(f"bad reply: {exc}"))
            return
        state, error = outcome(header, payload)
        self.ledger.release(job)  # the call's bytes go; the reply's may take their place
        size = sum(len(p) for p in payload)
        why = self.ledger.budget.over(job.client, size) if name or size >= TRACK_MIN else None
        if why is not None:  # not held for a client that does not read what it has
            if name and worker.channel is not None:
                with contextlib.suppress(OSError):  # a dead worker: its sentinel will tell
                    worker.channel.send([b"F", name])
            self.fail(job, ServerBusy(f"result of {size} bytes dropped, {why}"))
            return
        self.ledger.ended(job, state, error, [header, *payload])
        if not name and size < TRACK_MIN:
            self._send(job.client, [header, *payload])
            return
        tracker = self._send_tracked(job.client, header, payload, size, name)
        if name:
            worker.sending.append((tracker, name))

    def _send_tracked(
        self, client: bytes, header: Any, payload: list[Any], size: int, name: bytes = b""
    ) -> zmq.MessageTracker:
        """Send a reply or checkpoint; its bytes count against ``client``'s budget until sent.

        ``name``: the result arena it is sent from (else a key of its own).
        """
        tracked = [zmq.Frame(p, track=True, copy=False) for p in payload]
        self._send(client, [header, *tracked])
        tracker = zmq.MessageTracker(*tracked)
        self._sent += 1
        self.unsent[name or b"#%d" % self._sent] = (tracker, client, size)
        self.ledger.budget.charge(client, size)
        self.tracker_wait = TRACKER_POLL_MS[0]
        return tracker

    def _checkpoint(self, job: Job, header: Any, payload: list[Any]) -> None:
        """Forward a checkpoint; one its client has no budget left for is skipped.

        A checkpoint is the job's latest state, superseded by the next: a client
        that does not read them loses some, the server does not keep them all.
        """
        size = sum(len(p) for p in payload)
        if size < TRACK_MIN:
            self._send(job.client, [header, *payload])
        elif self.ledger.budget.over(job.client, size) is None:
            self._send_tracked(job.client, header, payload, size)
        else:
            log.debug("checkpoint of job %d skipped: its client's budget is full", job.id)

    def settle(self) -> None:
        """Let go of the replies and checkpoints ZeroMQ has finished sending."""
        for key, (tracker, client, size) in list(self.unsent.items()):
            if tracker.done:  # also when the worker died meanwhile: the bytes are let go
                del self.unsent[key]
                self.ledger.budget.release(client, size)

    def release_arenas(self) -> None:
        """Tell workers which result arenas ZeroMQ has finished sending from."""
        self.settle()
        for worker in self.pool.by_identity.values():
            if not worker.sending:
                continue
            done: list[tuple[zmq.MessageTracker, bytes]] = []
            still: list[tuple[zmq.MessageTracker, bytes]] = []
            for tracker, name in worker.sending:
                (done if tracker.done else still).append((tracker, name))
            if not done:
                continue
            worker.sending = still
            if worker.channel is not None:
                with contextlib.suppress(OSError):  # a dead worker: its sentinel will tell
                    for _, name in done:
                        worker.channel.send([b"F", name])

    def check_deadlines(self) -> None:
        """Stop the jobs that ran past their timeout."""
        now = time.monotonic()
        for worker in list(self.pool.by_identity.values()):
            if worker.deadline is not None and now >= worker.deadline and worker.job is not None:
                job = self.stop_job(worker, "timeout")
                message = f"call ran past its timeout of {job.timeout:g} s; worker stopped"
                self.fail(job, CallTimeout(message))

    def on_death(self, worker: Worker) -> None:
        """A worker process ended: fail its job, and start another unless closing."""
        how = self.pool.reap(worker)
        if worker in self.idle:
            self.idle.remove(worker)
        job = worker.job
        if job is not None and worker.oom and self.config.limit_memory is not None:
            limit = f"memory limit of {self.config.limit_memory / 2**20:g} MB exceeded"
            log.warning("worker %s killed for its memory limit in job %d", worker.identity, job.id)
            self.fail(job, LimitExceeded(f"{job.function}: {limit} (killed by the kernel)"))
        elif job is not None:
            log.warning("worker %s died running job %d: %s", worker.identity, job.id, how)
            self.fail(job, WorkerCrashed(f"the worker running this call died ({how})"))
        elif worker.killed:
            log.info("worker %s stopped (%s)", worker.identity, worker.killed)
        else:
            log.warning("worker %s died while idle: %s", worker.identity, how)
        if not self.stopping:
            self.pool.spawn()
