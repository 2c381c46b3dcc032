"""The server's record of its jobs: history in the store, kept results, and control requests.

The event loop tells the ledger what happens to each job (accepted, started,
ended); the ledger writes it to the :class:`~edge_server.store.Store` and
keeps a finished job's reply when its client is gone, always with
``keep_results="all"``, and always for a call queued before a restart (its
client stopped waiting for it when the old server died). It answers the
clients' control requests about their jobs: ``jobs``, ``status``, ``result``,
``wait``, ``cancel``, ``moved`` (the client ran a paused or interrupted job on
elsewhere), ``usage``, ``health``. A client only ever sees its own
jobs: the owner is its CurveZMQ public key (without encryption every client
is the same anonymous owner).

Control requests and replies are JSON (see :mod:`offload.runtime.protocol`),
never pickle; a kept result goes back as the frames the worker produced, for
the client to load with its restricted unpickler.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from offload._exceptions import (
    JobNotFinished,
    JobStopped,
    NotCancellable,
    NotMovable,
    OffloadError,
    ProtocolError,
    ResultNotKept,
    ServerBusy,
    ServerUnavailable,
    StoreError,
    UnknownJob,
)
from offload.runtime import errors, protocol
from offload.runtime.states import FINISHED, NAMES, JobState

from .admission import Job
from .budget import Budget
from .config import ServerConfig
from .starts import NO_GO, Held
from .store import Store
from .visitors import Visitors, operator_keys

log = logging.getLogger("edge_server")

MAX_WAITERS = 10_000  # pending ``wait`` requests over all clients
MAX_WAITERS_PER_OWNER = 100
_EXPIRE_EVERY = 60.0  # seconds between sweeps of expired results and history
_LIMIT_MAX = 1000  # most jobs one ``jobs`` request lists
_ALIVE_EVERY = 1.0  # seconds between the store's notes that the server lives, while jobs run

Send = Callable[[bytes, list[Any]], None]


class Ledger:
    """Job history, kept results and the control requests of one server."""

    def __init__(
        self,
        store: Store,
        config: ServerConfig,
        send: Send,
        connected: Callable[[bytes], bool],
        cancel: Callable[[int], bool],
        health: Callable[[], dict[str, Any]],
        withdraw: Callable[[bytes, set[int]], list[int]] = lambda client, ids: [],
    ) -> None:
        self.store = store
        self._withdraw = withdraw
        self._config = config
        self._send = send
        self._connected = connected
        self._cancel = cancel
        self._health = health
        self._new: list[Job] = []
        self._waiters: dict[int, list[tuple[bytes, int, str]]] = {}
        self._waiting: Counter[str] = Counter()  # pending waits per owner
        self._expired_at = 0.0
        self._running: set[int] = set()  # while any job runs, the store hears that we live
        self._alive_at = 0.0
        self.budget = Budget(config.memory_budget, config.client_budget)
        self.budget.outside = store.held  # kept results until they are written
        #: Control operations an engine adds (a site's quote, credits, lend, resources):
        #: op -> handler(owner, request body) -> reply body.
        self.extra_ops: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {}
        #: STARTS calls told STARTED, waiting for their client's GO (:mod:`.starts`).
        self.held = Held(lambda job: self.ended(job, JobState.CANCELLED, NO_GO))
        #: Who used the server lately, for its operators (the ``clients`` op).
        self.visitors = Visitors(operator_keys(config.operator_keys), config.location)

    # -- what happens to jobs ---------------------------------------------------------------------

    def accepted(self, job: Job) -> None:
        """A call entered the queue."""
        self.visitors.call(job.client, job.owner, job.bytes_in)
        self.store.added(
            job.id,
            job.owner,
            job.function,
            job.request_id,
            job.client,
            job.bytes_in,
            job.timeout,
            job.checkpointed,
        )
        self._new.append(job)
        if job.checkpointed:  # its client names the job by the server's id from now on
            self._send(
                job.client, [protocol.encode_header(protocol.ACCEPTED, job.request_id, aux=job.id)]
            )

    def recover(self) -> list[Job]:
        """The calls the store holds from before a restart, as jobs to queue again.

        Their results are always kept: their clients stopped waiting for them
        when the old server died, and fetch them with ``offload result``.
        """
        jobs = []
        for saved in self.store.recover():
            frames = [zmq.Frame(f) for f in saved.frames]
            header = protocol.decode_header(frames[0].buffer)
            job = Job(
                saved.id,
                saved.client,
                saved.request_id,
                frames,
                saved.timeout,
                checkpointed=saved.checkpointed,
                owner=saved.owner,
                function=header.name,
                bytes_in=sum(len(f) for f in frames[1:]),
                stored=True,
                keep=True,
            )
            job.held = job.bytes_in  # held again, whatever the budget: it was accepted
            self.budget.charge(job.client, job.held)
            jobs.append(job)
        return jobs

    def started(self, job: Job) -> None:
        """A worker takes the call (told to its client first, if it asked: STARTS; with
        AWAITS_GO the call then waits for its client's GO, :mod:`.starts`)."""
        if job.tells_start:  # AWAITS_GO echoed: the call is held for GO
            held = protocol.AWAITS_GO if job.awaits_go else 0
            header = protocol.encode_header(protocol.STARTED, job.request_id, flags=held)
            self._send(job.client, [header])
        job.state = JobState.RUNNING
        self._running.add(job.id)
        self.store.started(job.id, job.stored)
        job.stored = False

    def requeued(self, job: Job) -> None:
        """A started job goes back to the queue (its worker died before taking it)."""
        job.state = JobState.QUEUED
        self._running.discard(job.id)
        self.store.requeued(job.id)
        self.store.waiting(job.id, [f.buffer for f in job.frames])
        job.stored = True

    def ended(
        self,
        job: Job,
        state: JobState,
        error: str | None,
        reply: list[Any] | None = None,
    ) -> None:
        """Job ``job`` finished in ``state``; ``reply`` is kept if its client is not there."""
        job.state = state
        self._running.discard(job.id)
        self.release(job)
        keep = reply is not None and (
            job.keep or self._config.keep_results == "all" or not self._connected(job.client)
        )
        bytes_out = sum(len(f) for f in reply[1:]) if reply is not None else 0
        self.visitors.replied(job.client, job.owner, bytes_out)
        self.store.ended(
            job.id,
            job.owner,
            state,
            job.bytes_in,
            bytes_out,
            job.cpu_s,
            error,
            reply if keep else None,
            job.stored,
            holder=job.client,
        )
        job.stored = False
        waiters = self._waiters.pop(job.id, ())
        if not waiters:
            return
        try:
            body = protocol.json_message(protocol.CONTROL, 0, {"job": self._status(job.id, None)})
        except Exception as exc:  # the store failed: the waits fail, the server serves on
            log.exception("cannot answer the waits on job %d", job.id)
            body = errors.error_reply(0, ServerUnavailable(f"store: {exc}"))
        for client, request_id, owner in waiters:
            self._waiting[owner] -= 1
            self._send(client, [protocol.with_request_id(body[0], request_id), body[1]])

    def release(self, job: Job) -> None:
        """``job``'s payload no longer counts against its client's budget."""
        self.budget.release(job.client, job.held)
        job.held = 0

    def tick(self, now: float) -> None:
        """Once per loop pass: store waiting payloads, write what is due, expire what is old."""
        self.store_waiting()
        if self._running and now - self._alive_at >= _ALIVE_EVERY:
            self._alive_at = now
            self.store.alive()  # a crash then records how long its jobs ran
        due = self.store.due()
        if due is not None and due <= now:
            self.commit()
        try:
            self.store.reclaim(now)  # a slice of the pages freed by deleted payloads
            if now - self._expired_at > _EXPIRE_EVERY:
                self._expired_at = now
                gone = self.store.expire(self._config.result_ttl, self._config.history_ttl)
                if gone:
                    log.info("expired %d old jobs from the history", gone)
        except StoreError:
            log.exception("the job store could not expire old jobs or give back space")

    def store_waiting(self) -> None:
        """Record the payloads of the calls accepted since the last pass that still wait.

        A call a worker took in the same pass never has its payload stored.
        """
        if self._new:
            for job in self._new:
                if job.state is JobState.QUEUED and not job.stored:
                    self.store.waiting(job.id, [f.buffer for f in job.frames])
                    job.stored = True
            self._new.clear()

    def commit(self) -> None:
        """Write everything recorded so far to the store now."""
        try:
            self.store.flush()
        except StoreError:  # e.g. the disk is full: serve on
            log.exception("the job store could not be written; these records are lost")

    def due(self) -> float | None:
        """When :meth:`tick` has writing to do (monotonic clock), or None."""
        return 0.0 if self._new else self.store.due()

    # -- control requests -------------------------------------------------------------------------

    def control(self, client: bytes, owner: str, request_id: int, frame: Any) -> None:
        """Answer one control request (a JSON object with an ``op``) from ``owner``."""
        try:
            body = protocol.decode_json(frame)
        except ProtocolError as exc:
            self._send(client, errors.error_reply(request_id, exc))
            return
        self.answer(client, owner, request_id, body)

    def answer(self, client: bytes, owner: str, request_id: int, body: dict[str, Any]) -> None:
        """Answer one control request already decoded (its ``op`` is not about apps)."""
        self.store_waiting()  # reading flushes the store: not a call's row without its payload
        try:
            op = body.get("op")
            if op == "jobs":
                limit = _int(body, "limit", 50, 1, _LIMIT_MAX)
                states = body.get("states") or []
                if not isinstance(states, list) or not all(s in NAMES for s in states):
                    raise ProtocolError(f"states must be a list of {sorted(NAMES)}")
                before = _int(body, "before", None, 1, 2**63 - 1) if "before" in body else None
                jobs = self.store.jobs(owner, limit, states, before)
                self._answer(client, request_id, {"jobs": jobs})
            elif op == "status":
                self._answer(client, request_id, {"job": self._status(_job_id(body), owner)})
            elif op == "result":
                self._result(client, request_id, _job_id(body), owner)
            elif op == "wait":
                self._wait(client, request_id, _job_id(body), owner)
            elif op == "cancel":
                job = self._status(_job_id(body), owner)
                if job["state"] in FINISHED or not self._cancel(job["id"]):
                    raise NotCancellable(f"job {job['id']} is {job['state']}")
                self._answer(client, request_id, {"job": self._status(job["id"], owner)})
            elif op == "moved":  # {"job": N, "to": "local" | an address | "job M"}
                to = body.get("to")
                if not isinstance(to, str) or not 0 < len(to) <= 300:
                    raise ProtocolError("to must name where the job went on")
                job_id = _job_id(body)
                if not self.store.moved(job_id, owner, to):
                    job = self._status(job_id, owner)
                    raise NotMovable(f"job {job_id} is {job['state']}, not paused or interrupted")
                self._answer(client, request_id, {"job": self._status(job_id, owner)})
            elif op == "withdraw":  # calls of this connection no worker has taken yet
                ids = body.get("requests")
                if not isinstance(ids, list) or not all(type(i) is int for i in ids):
                    raise ProtocolError("requests must be a list of request ids")
                withdrawn = self._withdraw(client, set(ids[:_LIMIT_MAX]))
                self._answer(client, request_id, {"withdrawn": withdrawn})
            elif op == "usage":
                self._answer(client, request_id, {"usage": self.store.usage(owner)})
            elif op == "hello":  # the client says where it is (or just that it is here)
                self.visitors.hello(client, owner, body)
                self._answer(client, request_id, {})
            elif op == "clients":  # operators only
                self._answer(client, request_id, {"clients": self.visitors.listing(owner)})
            elif op == "health":
                self._answer(client, request_id, self._health())
            elif isinstance(op, str) and op in self.extra_ops:
                self._answer(client, request_id, self.extra_ops[op](owner, body))
            elif op in ("quote", "credits", "lend", "resources"):
                raise ProtocolError(
                    f"{op}: this server runs jobs on its own workers; credits and lending "
                    "are for a site (edge-server --engine dask)"
                )
            else:
                raise ProtocolError(f"unknown control operation {str(op)[:100]!r}")
        except StoreError as exc:  # this request fails, the server serves on
            log.exception("control request %r failed", body)
            self._send(client, errors.error_reply(request_id, ServerUnavailable(f"server: {exc}")))
        except OffloadError as exc:  # refused: the client raises it
            self._send(client, errors.error_reply(request_id, exc))
        except Exception as exc:  # a bug: this request fails, the server serves on
            log.exception("control request %r failed", body)
            self._send(client, errors.error_reply(request_id, ServerUnavailable(f"server: {exc}")))

    def _status(self, job_id: int, owner: str | None) -> dict[str, Any]:
        job = self.store.job(job_id, owner)
        if job is None:  # another owner's job is as unknown as one that never was
            raise UnknownJob(f"no job {job_id} of yours on this server")
        return job

    def _result(self, client: bytes, request_id: int, job_id: int, owner: str) -> None:
        job = self._status(job_id, owner)
        if job["state"] not in FINISHED:
            raise JobNotFinished(f"job {job_id} is {job['state']}")
        reply = self.store.frames(job_id, "result") if job["kept"] else []
        if not reply:
            raise ResultNotKept(
                f"job {job_id} is {job['state']} and no reply of it is kept "
                "(it went to its client, expired, or there was none: "
                f"{job['error'] or 'no error recorded'})",
            )
        self._send(client, [*protocol.json_message(protocol.CONTROL, request_id, job), *reply])

    def _wait(self, client: bytes, request_id: int, job_id: int, owner: str) -> None:
        job = self._status(job_id, owner)
        if job["state"] in FINISHED:
            self._answer(client, request_id, {"job": job})
            return
        if self._waiting[owner] >= MAX_WAITERS_PER_OWNER or self._waiting.total() >= MAX_WAITERS:
            raise ServerBusy("too many waits pending; try again later")
        self._waiters.setdefault(job_id, []).append((client, request_id, owner))
        self._waiting[owner] += 1

    def _answer(self, client: bytes, request_id: int, body: dict[str, Any]) -> None:
        self._send(client, protocol.json_message(protocol.CONTROL, request_id, body))


def _job_id(body: dict[str, Any]) -> int:
    return _int(body, "job", None, 1, 2**63 - 1)


def _int(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{key} must be an integer from {low} to {high}")
    return value


def outcome(header: memoryview, payload: list[Any]) -> tuple[JobState, str | None]:
    """A reply's job state and error text: done, paused (stopped at a checkpoint) or failed."""
    if header[5] != protocol.ERROR or not payload:
        return JobState.DONE, None
    try:
        body = protocol.decode_json(payload[0])
    except ProtocolError:
        return JobState.FAILED, "unreadable error"
    code = str(body.get("code"))
    message = f"{code}: {str(body.get('message'))[:500]}"
    stopped = errors.error_class(code) is JobStopped  # at a checkpoint: it can resume
    return (JobState.PAUSED if stopped else JobState.FAILED), message
