"""What ``offload ui`` knows and does: the user's Client, the app's functions, jobs started here.

Everything the pages show goes through the user's configured
:class:`~offload.Client` and the control plane it already speaks
(``client.server``: jobs, status, result, cancel, credits), so the app adds
no port on any server. The web layer (:mod:`offload.ui.app`) calls these
methods from its thread pool; they block on the network with the client's
own timeouts.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import _exceptions as errors
from ..api import OffloadedFunction
from ..client import Client
from ..control import JobInfo, ServerJobs
from ..jobs import Job
from ..runtime.states import JobState
from ..survey import survey

#: Job states a filter may name (the server's).
STATES = tuple(str(state) for state in JobState)


def load_functions(modules: Iterable[str]) -> dict[str, OffloadedFunction[..., Any]]:
    """The ``@offload`` functions the ``modules`` define, by ``module:name``."""
    found: dict[str, OffloadedFunction[..., Any]] = {}
    for name in modules:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, OffloadedFunction) and not attr.startswith("_"):
                found[f"{name}:{attr}"] = value
    return found


#: The argument that stands for the uploaded file.
FILE_ARG = "@file"


def parse_arguments(
    args_text: str, kwargs_text: str, upload: str = ""
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments given as JSON (a list, an object); ConfigError with the reason if not.

    ``upload``: a ``.npy`` file, base64; it replaces every ``"@file"`` among the
    arguments, loaded with ``allow_pickle=False`` (an array of plain numbers,
    never pickled objects: the same rule as any argument from outside).
    """
    try:
        args = json.loads(args_text or "[]")
        kwargs = json.loads(kwargs_text or "{}")
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"arguments are JSON: {exc}") from exc
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise errors.ConfigError("positional arguments are a JSON list, keywords a JSON object")
    if upload:
        array = load_npy(upload)
        args = [array if a == FILE_ARG else a for a in args]
        kwargs = {k: array if v == FILE_ARG else v for k, v in kwargs.items()}
    return tuple(args), kwargs


def load_npy(encoded: str) -> Any:
    """A ``.npy`` file sent as base64, loaded without pickle; ConfigError if it is not one."""
    import numpy as np

    try:
        return np.load(io.BytesIO(base64.b64decode(encoded, validate=True)), allow_pickle=False)
    except (ValueError, OSError, EOFError, binascii.Error) as exc:
        why = f"the uploaded file is not a .npy array of plain values: {exc}"
        raise errors.ConfigError(why) from exc


@dataclass
class Started:
    """A job submitted from this page: its future (a Job or a plain Future) and what it was."""

    key: str
    function: str
    future: Any
    submitted: float

    def describe(self) -> dict[str, Any]:
        """State, progress and where: what the Overview, Jobs and the live updates show."""
        future = self.future
        job = future if isinstance(future, Job) else None
        if future.done():
            state = (
                JobState.CANCELLED
                if future.cancelled()
                else JobState.FAILED
                if future.exception()
                else JobState.DONE
            )
        elif job is not None and job.paused:
            state = JobState.PAUSED
        else:
            state = JobState.RUNNING
        row: dict[str, Any] = {
            "key": self.key,
            "function": self.function,
            "state": state.value,
            "submitted": self.submitted,
            "checkpointed": job is not None and job.fn.checkpoint_every is not None,
            "id": job.id if job is not None else None,
            "server": job.server if job is not None else None,
            "done": 0,
            "total": 0,
            "checkpoints": 0,
            "where": "",  # the server of its latest run, or "here"
        }
        if job is not None:
            progress = job.progress
            row.update(done=progress.done, total=progress.total, checkpoints=progress.checkpoints)
            where = job.server if progress.where == "paused" else progress.where
            row["where"] = "here" if where == "local" else where or ""
        if state is JobState.FAILED:
            exc = future.exception()
            row["error"] = f"{type(exc).__name__}: {exc}"
            if isinstance(exc.__cause__, errors.RemoteTraceback):  # where it failed, there
                row["traceback"] = exc.__cause__.tb
        return row


class UiState:
    """The app's model: one Client, the functions of ``--app`` modules, jobs started here."""

    def __init__(self, client: Client, apps: Iterable[str] = ()) -> None:
        self.client = client
        self.apps = tuple(apps)
        self.functions = load_functions(self.apps)
        self._started: dict[str, Started] = {}
        self._lock = threading.Lock()
        self._servers: list[dict[str, Any]] = []
        self._surveyed = 0.0

    # -- servers --------------------------------------------------------------------------------

    def servers(self, max_age: float = 5.0) -> list[dict[str, Any]]:
        """Configured and discovered servers (``offload servers``' rows), ``max_age`` s old."""
        if time.monotonic() - self._surveyed > max_age:
            self._servers = survey(self.client.config, servers=self.client.servers)
            self._surveyed = time.monotonic()
        return self._servers

    def addresses(self) -> list[str]:
        """The trusted servers' addresses, the configured one first."""
        primary = self.client.config.server
        found = [r["address"] for r in self.servers() if r.get("trusted")]
        return ([primary] if primary else []) + [a for a in found if a != primary]

    def jobs_of(self, address: str) -> ServerJobs:
        """The jobs this key owns on ``address`` (the control plane over the client's link)."""
        if address not in self.addresses():  # never a connection to an address a form made up
            raise errors.ConfigError(f"{address!r} is not a configured or trusted server")
        remote = self.client.servers.get(address)
        if remote is None:
            raise errors.ServerUnavailable(f"no connection to {address}")
        return ServerJobs(remote, max(self.client.config.connect_timeout, 10.0))

    def server_jobs(
        self, address: str, states: Iterable[str] = (), before: int | None = None, limit: int = 20
    ) -> list[JobInfo]:
        """A page of this key's jobs on ``address``, newest first."""
        return self.jobs_of(address).jobs(limit, list(states), before)

    def running(self) -> list[tuple[str, JobInfo]]:
        """This key's queued and running jobs on every answering server, (address, job)."""
        found = []
        for row in self.servers():
            if not row.get("answering"):
                continue
            try:
                jobs = self.server_jobs(row["address"], ("queued", "running"), limit=50)
            except errors.OffloadError:
                continue  # it stopped answering since: the next survey says so
            found += [(row["address"], job) for job in jobs]
        return found

    # -- jobs started here ----------------------------------------------------------------------

    def submit(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Started:
        """Start ``name(*args, **kwargs)`` through the client (a Job if it checkpoints)."""
        fn = self.function(name)
        future = self.client.submit(fn, *args, **kwargs)
        key = future.key if isinstance(future, Job) else f"f{id(future):x}"
        started = Started(key, name, future, time.time())
        with self._lock:
            self._started[key] = started
        return started

    def started(self) -> list[dict[str, Any]]:
        """The jobs started from this page, newest first, described."""
        with self._lock:
            rows = list(self._started.values())
        return [s.describe() for s in sorted(rows, key=lambda s: -s.submitted)]

    def get(self, key: str) -> Started:
        """A job started here; UnknownJob if none has that key."""
        with self._lock:
            found = self._started.get(key)
        if found is None:
            raise errors.UnknownJob(f"no job {key!r} was started from this page")
        return found

    def pause(self, key: str) -> None:
        """Pause a checkpointed job started here (it stops at its next checkpoint)."""
        job = self._job(key)
        threading.Thread(target=job.pause, daemon=True).start()  # waits for the checkpoint

    def resume(self, key: str, where: str = "remote") -> None:
        """Resume a paused job started here: ``local``, ``remote`` or a trusted server's address.

        ConfigError for any other address (a form never makes the app connect elsewhere).
        A server other than the one it ran on is the user's choice: the job is pinned there
        (:attr:`offload.Job.pinned`); the one it ran on is the form's default, not a choice.
        """
        if where not in ("local", "remote") and where not in self.addresses():
            raise errors.ConfigError(f"resume where? here, or a trusted server, not {where!r}")
        job = self._job(key)
        job.resume(where, pin=where != job.server)

    def cancel_started(self, key: str) -> None:
        """Cancel a job started here."""
        self.get(key).future.cancel()

    def _job(self, key: str) -> Job:
        future = self.get(key).future
        if not isinstance(future, Job) or future.fn.checkpoint_every is None:
            raise errors.NotCheckpointable(f"job {key} takes no checkpoints")
        return future

    def function(self, name: str) -> OffloadedFunction[..., Any]:
        """The ``@offload`` function ``module:name`` of the ``--app`` modules."""
        fn = self.functions.get(name)
        if fn is None:
            raise errors.ConfigError(f"no @offload function {name!r} in {', '.join(self.apps)}")
        return fn

    # -- results, estimates, credits ------------------------------------------------------------

    def result_of_started(self, key: str) -> Any:
        """The value of a finished job started here (its exception raised)."""
        future = self.get(key).future
        if not future.done():
            raise errors.JobNotFinished(f"job {key} has not finished")
        return future.result()

    def result(self, address: str, job_id: int) -> Any:
        """A kept result on ``address`` (loaded trusting the ``--app`` modules' classes)."""
        return self.jobs_of(address).result(job_id, self.apps)

    def estimate(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Where the call would run, the profiler's time and energy, and a site's quote."""
        fn = self.function(name)
        explained = self.client.explain(fn, *args, **kwargs)
        answer: dict[str, Any] = {
            "side": explained.side,
            "reasons": list(explained.reasons),
            "size": explained.size,
            "estimates": explained.estimates,
        }
        try:
            answer["quote"] = self.client.quote(fn, *args, **kwargs)
        except errors.OffloadError as exc:  # not a site, or no server
            answer["quote_error"] = str(exc)
        return answer

    def credits(self, address: str) -> dict[str, Any]:
        """Balance, statement and prices on a site; ``not_site`` with the reason otherwise."""
        jobs = self.jobs_of(address)
        try:
            answer = jobs.credits(20)
        except errors.OffloadError as exc:
            return {"not_site": f"{type(exc).__name__}: {exc}"}
        try:
            answer["resources"] = jobs.resources()
        except errors.OffloadError:
            answer["resources"] = []
        return answer


def as_download(value: Any, stem: str) -> tuple[bytes, str, str]:
    """(body, media type, file name) of a result: bytes, text, .npy, JSON, else a repr."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream", f"{stem}.bin"
    if isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8", f"{stem}.txt"
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue(), "application/octet-stream", f"{stem}.npy"
    try:
        return json.dumps(value).encode(), "application/json", f"{stem}.json"
    except (TypeError, ValueError):
        return repr(value).encode(), "text/plain; charset=utf-8", f"{stem}.txt"
