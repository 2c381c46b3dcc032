"""Inline jobs: ``@offload(isolation="thread")`` calls run by threads of the server process.

A call that asks for it (the header's INLINE flag) on a server started with
``--allow-inline`` skips the worker process: no Unix-socket hop, no arena,
no sleep and wake of a third process. Everything else is as for a worker's
job: admission (:mod:`.admission` refuses it unless allowed, and never runs
shipped code or a checkpointed call inline), the byte budgets, the ledger and
the job store (accepted, started, ended, the reply kept for a client that is
gone), the CPU time metered (the thread's own), and the same
:func:`~edge_server.worker.execute` (restricted unpickler, the function's own
exception sent back with its traceback). Only functions of the server's
``--app`` modules run inline; a deployed app's run in worker processes only.

What it gives up, stated plainly:

- no crash isolation: a segfault, ``os._exit`` or ``abort`` in the function
  kills the whole server, every queued and running call with it;
- no limits: ``--limit-memory-mb``, ``--limit-cpu``, ``--limit-files``,
  ``--limit-processes`` and ``--limit-disk-mb`` bound worker processes only,
  and threads or files an inline call leaves behind stay in the server;
- the GIL: a CPU-bound inline call slows the event loop that serves every
  client (and every worker's replies) while it holds it;
- no stopping a hung call: Python cannot kill a thread. A call past its
  timeout is failed with :class:`~offload.CallTimeout` and its thread
  abandoned (it runs on; its result is dropped) and replaced, so other
  callers are served; while ``MAX_HUNG`` abandoned threads are still running,
  further inline calls are refused with :class:`~offload.ServerBusy`. An
  inline call cannot be cancelled, withdrawn or paused either.

:class:`InlineEngine` wraps the server's engine: it adds the threads' wake-up
pipe to the fds the loop polls, their deadlines to its timers and their calls
to its count of running jobs, and leaves the rest to the engine it wraps.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from offload._exceptions import (
    CallTimeout,
    InlineRefused,
    OffloadError,
    ProtocolError,
    ServerBusy,
    ServerUnavailable,
)
from offload.runtime import errors, protocol
from offload.runtime.states import JobState

from .admission import Job
from .config import ServerConfig
from .dispatch import TRACK_MIN
from .engine import Engine
from .ledger import Ledger, outcome
from .pool import Deployed
from .registry import Registry
from .worker import execute

log = logging.getLogger("edge_server")

#: Abandoned (hung) inline calls still running past which new inline calls are refused.
MAX_HUNG = 32


class _Runner:
    """One thread taking inline jobs; ``current``: the job it runs and its deadline (or None)."""

    __slots__ = ("abandoned", "current", "thread")

    def __init__(self) -> None:
        self.current: tuple[Job, float | None] | None = None
        self.abandoned = False
        self.thread: threading.Thread | None = None


class InlineEngine:
    """The server's engine, plus threads that run inline jobs in this process."""

    def __init__(
        self, inner: Engine, config: ServerConfig, registry: Registry, ledger: Ledger, send: Any
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.workers = inner.workers
        self.config = config
        self.registry = registry  # the --app modules' functions, as the server started
        self.ledger = ledger
        self._send = send
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Job, list[Any], float]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._runners: list[_Runner] = []
        self._hung: list[_Runner] = []
        self._running: dict[int, Job] = {}  # accepted inline jobs not yet ended (loop thread)
        self._fds: set[int] | None = None  # the wrapped engine's, as last told

    @property
    def price_s(self) -> float:
        return self.inner.price_s

    @price_s.setter
    def price_s(self, value: float) -> None:
        self.inner.price_s = value

    # -- what the loop calls ----------------------------------------------------------------------

    def admit(self, job: Job) -> None:
        """The wrapped engine's check; an inline job must also be an ``--app`` function."""
        if not job.inline:
            self.inner.admit(job)
            return
        if job.function not in self.registry.functions:
            raise InlineRefused(
                f"{job.function!r} is not a function of this server's --app modules: only "
                "those run inline (a deployed app's functions run in worker processes)"
            )
        self._hung = [r for r in self._hung if r.thread is not None and r.thread.is_alive()]
        if len(self._hung) >= MAX_HUNG:
            raise ServerBusy(f"{len(self._hung)} inline calls hung past their timeouts still run")
        if len(self._running) >= self.config.queue_size:
            raise ServerBusy(f"inline queue full ({len(self._running)} calls)")

    def run_inline(self, job: Job) -> None:
        """Record ``job`` accepted and started, and hand it to the threads."""
        self.ledger.accepted(job)
        self.ledger.started(job)
        self._running[job.id] = job
        if job.awaits_go:  # told STARTED: it waits for its client's GO (.starts)
            give_back = functools.partial(self._running.pop, job.id, None)
            self.ledger.held.hold(job, functools.partial(self._jobs.put, job), give_back)
        else:
            self._jobs.put(job)

    def start(self) -> None:
        self.inner.start()
        for _ in range(self.config.workers):
            self._spawn()

    def stop(self, timeout: float) -> None:
        """Fail the inline calls still running (their threads are daemons: they do not hold up
        the exit), then stop the wrapped engine."""
        for job in list(self._running.values()):
            self._fail(job, ServerUnavailable("server shut down"))
        self._running.clear()
        for _ in self._runners:
            self._jobs.put(None)
        self.inner.stop(timeout)
        threads = [r.thread for r in (*self._runners, *self._hung) if r.thread is not None]
        until = time.monotonic() + 0.5  # idle threads end at once; hung ones do not
        for thread in threads:
            thread.join(max(0.0, until - time.monotonic()))
        if not any(thread.is_alive() for thread in threads):
            # Else left open: a thread still running writes to it when it returns, and
            # must not write into whatever file would take the closed number.
            os.close(self._wake_r)
            os.close(self._wake_w)

    def watched(self) -> set[int] | None:
        fds = self.inner.watched()
        if fds is None and self._fds is not None:
            return None
        self._fds = fds if fds is not None else set()
        return {*self._fds, self._wake_r}

    def handle(self, fds: list[int]) -> None:
        if self._wake_r in fds:
            self._collect()
            fds = [fd for fd in fds if fd != self._wake_r]
        self.inner.handle(fds)

    def housekeeping(self, now: float) -> None:
        self.inner.housekeeping(now)
        self._check_deadlines(time.monotonic())

    def due(self) -> float | None:
        times = [c[1] for r in self._runners if (c := r.current) is not None and c[1] is not None]
        if self._running:  # a thread may take a job (and its deadline) while the loop sleeps
            times.append(time.monotonic() + 1.0)
        inner = self.inner.due()
        if inner is not None:
            times.append(inner)
        return min(times) if times else None

    def size(self) -> int:
        return self.inner.size()

    def ready(self) -> int:
        return self.inner.ready()

    def busy(self) -> int:
        return self.inner.busy() + len(self._running)

    def health(self) -> dict[str, Any]:
        return {
            **self.inner.health(),
            "inline_threads": len(self._runners),
            "inline_running": len(self._running),
            "inline_hung": len(self._hung),
        }

    def use_apps(self, deployed: tuple[Deployed, ...]) -> None:
        self.inner.use_apps(deployed)

    def apps_in_use(self) -> set[Path]:
        return self.inner.apps_in_use()

    # -- the threads --------------------------------------------------------------------------

    def _spawn(self) -> None:
        runner = _Runner()
        runner.thread = threading.Thread(
            target=self._serve, args=(runner,), name="offload-inline", daemon=True
        )
        self._runners.append(runner)
        runner.thread.start()

    def _serve(self, runner: _Runner) -> None:
        """A thread's loop: run inline jobs until told to stop, or abandoned while hung."""
        while not runner.abandoned:
            job = self._jobs.get()
            if job is None:
                return
            deadline = time.monotonic() + job.timeout if job.timeout else None
            runner.current = (job, deadline)  # one store: the loop reads both or neither
            cpu = time.thread_time()
            header, payload = job.frames[0].bytes, [f.buffer for f in job.frames[1:]]
            try:
                reply = execute(header, payload, self.registry, self.config)
            except Exception as exc:  # a bug or a hostile value: answer, do not die
                log.exception("inline job %d failed outside the function", job.id)
                error = ProtocolError(f"inline: {exc!r}"[:2000])
                reply = errors.error_reply(protocol.peek_request_id(header) or 0, error)
            runner.current = None
            self._done.put((job, reply, time.thread_time() - cpu))
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake is pending
                os.write(self._wake_w, b"\0")

    # -- back on the loop's thread ----------------------------------------------------------------

    def _collect(self) -> None:
        """Send the replies the threads have finished, as the dispatcher sends a worker's."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass
        while True:
            try:
                job, reply, cpu_s = self._done.get_nowait()
            except queue.Empty:
                return
            if self._running.pop(job.id, None) is None:
                continue  # it already failed (its timeout passed) and ran on: dropped
            job.cpu_s = cpu_s
            header, payload = reply[0], reply[1:]
            state, error = outcome(memoryview(header), payload)
            self.ledger.release(job)
            size = sum(len(p) for p in payload)
            why = self.ledger.budget.over(job.client, size) if size >= TRACK_MIN else None
            if why is not None:  # as a worker's reply: not held for a client that does not read
                self._fail(job, ServerBusy(f"result of {size} bytes dropped, {why}"))
                continue
            self.ledger.ended(job, state, error, [header, *payload])
            self._send(job.client, [header, *payload])

    def _check_deadlines(self, now: float) -> None:
        """Fail the inline calls past their timeout; their threads are abandoned and replaced."""
        for runner in list(self._runners):
            current = runner.current
            if current is None or current[1] is None or now < current[1]:
                continue
            job = current[0]
            if self._running.pop(job.id, None) is None:
                continue
            runner.abandoned = True
            self._runners.remove(runner)
            self._hung.append(runner)
            log.warning(
                "inline job %d (%s) ran past its timeout; its thread cannot be stopped and is "
                "abandoned (%d hung)",
                job.id,
                job.function,
                len(self._hung),
            )
            self._fail(
                job,
                CallTimeout(
                    f"call ran past its timeout of {job.timeout:g} s; it ran inline "
                    "(isolation='thread'), whose thread cannot be stopped: it runs on in the "
                    "server, its result will be dropped"
                ),
            )
            self._spawn()

    def _fail(self, job: Job, error: OffloadError) -> None:
        """End ``job`` (no longer in ``_running``) with ``error`` sent to its client."""
        self._send(job.client, errors.error_reply(job.request_id, error))
        self.ledger.ended(job, JobState.FAILED, errors.describe(error))


def with_inline(
    engine: Engine, config: ServerConfig, registry: Registry, ledger: Ledger, send: Any
) -> Engine:
    """``engine`` wrapped to run inline jobs too, if ``config`` allows them; else as it is."""
    if not config.allow_inline:
        return engine
    return InlineEngine(engine, config, registry, ledger, send)
