"""The server's record of its jobs: history in the store, kept results, and control requests.

The event loop tells the ledger what happens to each job (accepted, started,
ended); the ledger writes it to the :class:`~edge_server.store.Store` and
keeps a finished job's reply when its client is gone, always with
``keep_results="all"``, and always for a call queued before a restart (its
client stopped waiting for it when the old server died). It answers the
clients' control requests about their jobs: ``jobs``, ``status``, ``result``,
``wait``, ``cancel``, ``usage``, ``health``. A client only ever sees its own
jobs: the owner is its CurveZMQ public key (without encryption every client
is the same anonymous owner).

Control requests and replies are JSON (see :mod:`offload.runtime.protocol`),
never pickle; a kept result goes back as the frames the worker produced, for
the client to load with its restricted unpickler.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from offload._exceptions import ProtocolError
from offload.runtime import protocol

from .admission import Job
from .config import ServerConfig
from .store import FINISHED, Store

log = logging.getLogger("edge_server")

MAX_WAITERS = 10_000  # pending ``wait`` requests over all clients
_EXPIRE_EVERY = 60.0  # seconds between sweeps of expired results and history
_LIMIT_MAX = 10_000  # most jobs one ``jobs`` request lists

Send = Callable[[bytes, list[Any]], None]


class ControlError(Exception):
    """A control request that cannot be answered: ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


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
    ) -> None:
        self.store = store
        self._config = config
        self._send = send
        self._connected = connected
        self._cancel = cancel
        self._health = health
        self._new: list[Job] = []
        self._waiters: dict[int, list[tuple[bytes, int]]] = {}
        self._waiter_count = 0
        self._expired_at = 0.0

    # -- what happens to jobs ---------------------------------------------------------------------

    def accepted(self, job: Job) -> None:
        """A call entered the queue."""
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

    def started(self, job: Job) -> None:
        """A worker took the call."""
        job.state = "running"
        self.store.started(job.id, job.stored)
        job.stored = False

    def requeued(self, job: Job) -> None:
        """A started job goes back to the queue (its worker died before taking it)."""
        job.state = "queued"
        self.store.requeued(job.id)
        self.store.waiting(job.id, [f.buffer for f in job.frames])
        job.stored = True

    def ended(
        self,
        job: Job,
        state: str,
        error: str | None,
        reply: list[Any] | None = None,
        cpu_s: float = 0.0,
    ) -> None:
        """Job ``job`` finished in ``state``; ``reply`` is kept if its client is not there."""
        job.state = state
        keep = reply is not None and (
            job.keep or self._config.keep_results == "all" or not self._connected(job.client)
        )
        bytes_out = sum(len(f) for f in reply[1:]) if reply is not None else 0
        self.store.ended(
            job.id,
            job.owner,
            state,
            job.bytes_in,
            bytes_out,
            cpu_s,
            error,
            reply if keep else None,
            job.stored,
        )
        job.stored = False
        for client, request_id in self._waiters.pop(job.id, ()):
            self._waiter_count -= 1
            self._answer(client, request_id, {"job": self._status(job.id, None)})

    def tick(self, now: float) -> None:
        """Once per loop pass: store waiting payloads, write what is due, expire what is old."""
        if self._new:
            for job in self._new:
                if job.state == "queued" and not job.stored:
                    self.store.waiting(job.id, [f.buffer for f in job.frames])
                    job.stored = True
            self._new.clear()
        due = self.store.due()
        if due is not None and due <= now:
            self.commit()
        try:
            if now - self._expired_at > _EXPIRE_EVERY:
                self._expired_at = now
                gone = self.store.expire(self._config.result_ttl, self._config.history_ttl)
                if gone:
                    log.info("expired %d old jobs from the history", gone)
        except sqlite3.Error:
            log.exception("the job store could not expire old jobs")

    def commit(self) -> None:
        """Write everything recorded so far to the store now."""
        try:
            self.store.flush()
        except (sqlite3.Error, OverflowError):  # e.g. the disk is full: keep serving calls
            log.exception("the job store could not be written; these records are lost")

    def due(self) -> float | None:
        """When :meth:`tick` has writing to do (monotonic clock), or None."""
        return 0.0 if self._new else self.store.due()

    # -- control requests -------------------------------------------------------------------------

    def control(self, client: bytes, owner: str, request_id: int, frame: Any) -> None:
        """Answer one control request (a JSON object with an ``op``) from ``owner``."""
        try:
            body = protocol.decode_json(frame)
            op = body.get("op")
            if op == "jobs":
                limit = _int(body, "limit", 50, 1, _LIMIT_MAX)
                states = body.get("states") or []
                if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
                    raise ControlError("protocol", "states must be a list of strings")
                self._answer(client, request_id, {"jobs": self.store.jobs(owner, limit, states)})
            elif op == "status":
                self._answer(client, request_id, {"job": self._status(_job_id(body), owner)})
            elif op == "result":
                self._result(client, request_id, _job_id(body), owner)
            elif op == "wait":
                self._wait(client, request_id, _job_id(body), owner)
            elif op == "cancel":
                job = self._status(_job_id(body), owner)
                if job["state"] in FINISHED or not self._cancel(job["id"]):
                    raise ControlError("not_cancellable", f"job {job['id']} is {job['state']}")
                self._answer(client, request_id, {"job": self._status(job["id"], owner)})
            elif op == "usage":
                self._answer(client, request_id, {"usage": self.store.usage(owner)})
            elif op == "health":
                self._answer(client, request_id, self._health())
            else:
                raise ControlError("protocol", f"unknown control operation {op!r}")
        except ControlError as exc:
            self._send(client, protocol.error_message(request_id, exc.code, exc.message))
        except ProtocolError as exc:
            self._send(client, protocol.error_message(request_id, "protocol", str(exc)))
        except sqlite3.Error as exc:
            log.exception("the job store could not be read")
            self._send(client, protocol.error_message(request_id, "unavailable", f"store: {exc}"))

    def _status(self, job_id: int, owner: str | None) -> dict[str, Any]:
        job = self.store.job(job_id, owner)
        if job is None:  # another owner's job is as unknown as one that never was
            raise ControlError("unknown_job", f"no job {job_id} of yours on this server")
        return job

    def _result(self, client: bytes, request_id: int, job_id: int, owner: str) -> None:
        job = self._status(job_id, owner)
        if job["state"] not in FINISHED:
            raise ControlError("not_finished", f"job {job_id} is {job['state']}")
        reply = self.store.frames(job_id, "result") if job["kept"] else []
        if not reply:
            raise ControlError(
                "not_kept",
                f"job {job_id} is {job['state']} but its result was not kept "
                "(delivered to its client, or expired)",
            )
        self._send(client, [*protocol.json_message(protocol.CONTROL, request_id, job), *reply])

    def _wait(self, client: bytes, request_id: int, job_id: int, owner: str) -> None:
        job = self._status(job_id, owner)
        if job["state"] in FINISHED:
            self._answer(client, request_id, {"job": job})
            return
        if self._waiter_count >= MAX_WAITERS:
            raise ControlError("busy", f"{MAX_WAITERS} waits pending; try again later")
        self._waiters.setdefault(job_id, []).append((client, request_id))
        self._waiter_count += 1

    def _answer(self, client: bytes, request_id: int, body: dict[str, Any]) -> None:
        self._send(client, protocol.json_message(protocol.CONTROL, request_id, body))


def _job_id(body: dict[str, Any]) -> int:
    return _int(body, "job", None, 1, 2**63 - 1)


def _int(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ControlError("protocol", f"{key} must be an integer from {low} to {high}")
    return value
