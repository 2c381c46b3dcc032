"""A client's jobs on its edge server: list them, look one up, fetch its result, wait, cancel.

Every call the server takes is a job with an id, kept in the server's store
(see :mod:`edge_server.ledger`). ``client.server`` is this view of them::

    client.server.jobs()          # this client's newest jobs, as JobInfo
    client.server.status(42)      # one job
    client.server.wait(42)        # block until it has finished
    client.server.result(42)      # its kept result (or its exception, raised)
    client.server.cancel(42)
    client.server.moved(42, "local")  # a paused or interrupted job went on elsewhere
    client.server.usage()         # metering: jobs, CPU seconds, bytes each way
    client.server.health()

A client sees only jobs it owns: on an encrypted server the owner is the
client's CurveZMQ public key, so the same key on another machine (the
``offload`` command line) sees the same jobs. Requests and answers are JSON;
a result is loaded with the restricted unpickler (``trust`` names the
application modules whose classes it may contain).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import _exceptions as errors
from .remote import Remote
from .runtime import errors as errors_wire
from .runtime import protocol, serialize
from .runtime.states import JobState


@dataclass(frozen=True)
class JobInfo:
    """One job as the server's store records it (times are Unix seconds)."""

    id: int
    owner: str
    function: str
    request_id: int
    state: JobState  # a str: queued, running, done, failed, cancelled, paused, interrupted, ...
    submitted: float
    started: float | None
    finished: float | None
    bytes_in: int
    bytes_out: int
    cpu_s: float
    error: str | None
    kept: bool  # its result can be fetched
    moved_to: str | None = (
        None  # where a moved or resumed job went on ("local", an address, "job N")
    )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready: the state as its string)."""
        return {**asdict(self), "state": self.state.value}


class ServerJobs:
    """The jobs this client owns on its edge server."""

    def __init__(self, remote: Remote, timeout: float) -> None:
        self._remote = remote
        self._timeout = timeout

    def jobs(
        self, limit: int = 50, states: Iterable[str | JobState] = (), before: int | None = None
    ) -> list[JobInfo]:
        """The newest ``limit`` jobs (at most 1,000), optionally only those in ``states``.

        ``before``: only jobs older than that id (the next page).
        """
        body: dict[str, Any] = {"op": "jobs", "limit": limit, "states": [str(s) for s in states]}
        if before is not None:
            body["before"] = before
        return [_info(job) for job in self._ask(body)[0]["jobs"]]

    def all_jobs(self, states: Iterable[str | JobState] = ()) -> Iterator[JobInfo]:
        """Every job this client has on the server, newest first, a page at a time."""
        before, states = None, list(states)
        while True:
            page = self.jobs(1000, states, before)
            yield from page
            if len(page) < 1000:
                return
            before = page[-1].id

    def status(self, job_id: int) -> JobInfo:
        """Job ``job_id``; :class:`~offload.UnknownJob` if this client has none by that id."""
        return _info(self._ask({"op": "status", "job": job_id})[0]["job"])

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        """Block until job ``job_id`` has finished (the server says so); return it.

        ``timeout`` (seconds, None for no limit) raises :class:`TimeoutError`.
        """
        request_id, future = self._remote.control({"op": "wait", "job": job_id})
        try:
            answer, _ = future.result(timeout)
        except TimeoutError:
            self._remote.conn.forget(request_id)
            raise
        return _info(answer["job"])

    def result(self, job_id: int, trust: Sequence[str] = ()) -> Any:
        """The kept result of job ``job_id``, or its exception raised.

        :class:`~offload.JobNotFinished` while it runs,
        :class:`~offload.ResultNotKept` if its result went to its client (or
        expired). ``trust``: application modules whose classes it may hold.
        """
        _, reply = self._ask({"op": "result", "job": job_id})
        if not reply:
            raise errors.ProtocolError("a result answer without the result")
        header = protocol.decode_header(reply[0])
        if header.kind == protocol.ERROR and len(reply) > 1:
            raise errors_wire.rebuild(protocol.decode_json(reply[1]))
        if header.kind != protocol.RESULT:
            raise errors.ProtocolError(f"kept reply of kind {header.kind}")
        limit = self._remote.config.max_message_size
        allowlist = serialize.Allowlist(frozenset(trust))
        return serialize.loads(header.codecs, reply[1:], allowlist, limit)

    def cancel(self, job_id: int) -> JobInfo:
        """Cancel job ``job_id`` (queued or running); :class:`~offload.NotCancellable` if done."""
        return _info(self._ask({"op": "cancel", "job": job_id})[0]["job"])

    def moved(self, job_id: int, to: str) -> JobInfo:
        """Record that paused or interrupted job ``job_id`` went on at ``to``.

        ``to``: "local", a server's address, or "job N" (resumed on this
        server as job N). A :class:`~offload.Job` says this by itself when it
        resumes; :class:`~offload.NotMovable` if the job is neither paused nor
        interrupted.
        """
        return _info(self._ask({"op": "moved", "job": job_id, "to": to})[0]["job"])

    def usage(self) -> dict[str, Any]:
        """This client's totals: jobs, CPU seconds, bytes in and out (zeros if none yet)."""
        return dict(self._ask({"op": "usage"})[0]["usage"])

    def clients(self) -> list[dict[str, Any]]:
        """The clients the server saw lately (operator keys only, else NotAllowed).

        Each: ``client`` (public key or anonymous id), ``first_seen`` and
        ``last_seen`` (Unix times), ``calls``, ``bytes_in``, ``bytes_out``,
        ``location`` and ``distance_km`` when the client shares its location.
        """
        return list(self._ask({"op": "clients"})[0]["clients"])

    def health(self) -> dict[str, Any]:
        """The server's health check: ``ok``, workers, running and queued jobs, uptime."""
        return dict(self._ask({"op": "health"})[0])

    # -- a site of lent machines (edge-server --engine dask) --------------------------------------

    def quote(self, seconds: float, memory: int = 0) -> dict[str, Any]:
        """Micro-credits a run of ``seconds`` (a core, ``memory`` bytes) costs, starting now."""
        body = {"op": "quote", "seconds": float(seconds), "memory": int(memory)}
        return dict(self._ask(body)[0]["quote"])

    def credits(self, limit: int = 50) -> dict[str, Any]:
        """This key's balance (micro-credits), newest ``limit`` entries, and today's prices."""
        return dict(self._ask({"op": "credits", "limit": limit})[0]["credits"])

    def lend(self, host: str, cores: int, memory: int, hours: str) -> dict[str, Any]:
        """Register a machine of this key with the site: its id, worker name and scheduler."""
        body = {"op": "lend", "host": host, "cores": cores, "memory": memory, "hours": hours}
        return dict(self._ask(body)[0]["lend"])

    def resources(self) -> list[dict[str, Any]]:
        """This key's lent machines: cores, memory, hours, online, earned (micro-credits)."""
        return list(self._ask({"op": "resources"})[0]["resources"])

    def _ask(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        request_id, future = self._remote.control(body)
        try:
            answer, frames = future.result(self._timeout)
        except TimeoutError as exc:
            self._remote.conn.forget(request_id)
            raise errors.ServerUnavailable(f"{self._remote.conn.address} did not answer") from exc
        return answer, frames


def _info(job: Any) -> JobInfo:
    if not isinstance(job, dict):
        raise errors.ProtocolError("a job record is not an object")
    try:
        return JobInfo(**{**job, "state": JobState(job.get("state"))})
    except (TypeError, ValueError) as exc:
        raise errors.ProtocolError(f"malformed job record: {exc}") from exc
