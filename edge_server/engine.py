"""The engine seam: where the server's jobs run.

The edge server is the front door whatever the engine: the ZeroMQ protocol,
CURVE/ZAP, admission, the fair queue, the job store, metering, control
requests. An engine runs the jobs it is handed and tells the ledger how they
ended. Two engines:

* ``local`` (:class:`LocalEngine`): this machine's worker pool
  (:mod:`edge_server.pool`, :mod:`edge_server.dispatch`), as always.
* ``dask`` (:class:`edge_server.site.engine.SiteEngine`): each job is a task on
  a Dask cluster of lent machines (``edge-server --engine dask --scheduler ...``).

An engine has a dispatcher (``engine.workers``: ``dispatch``, ``fail``,
``pause``, ``cancel``, ``withdraw``, ``running``, ``stop_job``, ``signal``,
``check_deadlines``, ``release_arenas``, ``unsent``; what the ledger, the
orphan policy and the loop call) and feeds the server's poll loop: the file
descriptors it wants watched (:meth:`watched`), what to do when they are
ready (:meth:`handle`), and its timers (:meth:`housekeeping`, :meth:`due`).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Protocol

import zmq

from .arena import arena_dir
from .config import ServerConfig
from .dispatch import Dispatcher
from .fairqueue import FairQueue
from .ledger import Ledger
from .pool import Deployed, Pool
from .registry import Registry
from .staging import Stager
from .store import Store


class Engine(Protocol):
    """What the server's loop needs from an engine."""

    name: str  # "local" or "dask", as --engine names it
    price_s: float  # credits a core-second of a job costs now (0: not a site); PONGs carry it
    workers: Any  # the dispatcher

    def start(self) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def watched(self) -> set[int] | None:
        """The fds to poll, if they changed since the last call (else None)."""

    def handle(self, fds: list[int]) -> None:
        """Read what the ready ``fds`` (among :meth:`watched`) have."""

    def housekeeping(self, now: float) -> None:
        """Once per pass: deadlines, arenas, whatever is due."""

    def due(self) -> float | None:
        """When :meth:`housekeeping` has something to do next (monotonic), or None."""

    def size(self) -> int:
        """Workers (job slots) available now."""

    def ready(self) -> int:
        """Of those, the ones ready for a job (a worker still starting is not; PONGs say it)."""

    def busy(self) -> int:
        """Jobs running now."""

    def health(self) -> dict[str, Any]:
        """Engine-specific numbers for the health check."""

    def use_apps(self, deployed: tuple[Deployed, ...]) -> None:
        """Run jobs with these deployed apps from now on (:mod:`edge_server.deploy`)."""

    def apps_in_use(self) -> set[Path]:
        """The deployed app directories running jobs may still import (not to be removed)."""

    def admit(self, job: Any) -> None:
        """Refuse a job before it is queued (raise the OffloadError its client gets)."""


class LocalEngine:
    """Jobs on this machine's worker processes."""

    name = "local"
    price_s = 0.0  # jobs here are not paid for in credits

    def __init__(
        self,
        config: ServerConfig,
        workdir: Path,
        arena_directory: Path,
        token: str,
        queue: FairQueue,
        ledger: Ledger,
        send: Any,
    ) -> None:
        self.pool = Pool(config, workdir, arena_directory, token)
        self.workers = Dispatcher(config, self.pool, queue, ledger, send)
        self.stager = self.workers.stager = Stager()
        self._trim_due: float | None = None

    def start(self) -> None:
        self.pool.start()

    def use_apps(self, deployed: tuple[Deployed, ...]) -> None:
        # A new generation of workers: idle ones go now, busy ones after their job.
        self.pool.deployed = deployed
        self.pool.renew(self.workers.idle)

    def apps_in_use(self) -> set[Path]:
        return self.pool.in_use()

    def stop(self, timeout: float) -> None:
        self.pool.stop(timeout=timeout)
        self.stager.close()

    def watched(self) -> set[int] | None:
        pool = self.pool
        if not pool.changed:
            return None
        pool.changed = False
        fds = pool.by_sentinel.keys() | pool.by_fd.keys() | pool.unnamed.keys()
        return {*fds, pool.listener.fileno(), self.stager.fd}

    def handle(self, fds: list[int]) -> None:
        # Deaths and new connections are handled after the whole batch: they close
        # and open fds, and a reused fd number must not inherit a stale event.
        pool, workers = self.pool, self.workers
        deaths, incoming = [], False
        for fd in fds:
            if fd in pool.by_fd:
                workers.read_worker(pool.by_fd[fd])
            elif fd in pool.unnamed:
                workers.read_unnamed(pool.unnamed[fd])
            elif fd in pool.by_sentinel:
                deaths.append(pool.by_sentinel[fd])
            elif fd == pool.listener.fileno():
                incoming = True
            elif fd == self.stager.fd:
                workers.staged()
        for worker in deaths:
            workers.on_death(worker)
        if incoming:
            pool.accept()

    def housekeeping(self, now: float) -> None:
        self.workers.check_deadlines()
        self._trim_due = self.pool.trim_idle(time.monotonic())
        self.workers.release_arenas()

    def due(self) -> float | None:
        due = self._trim_due
        for worker in self.pool.by_identity.values():
            if worker.deadline and (due is None or worker.deadline < due):
                due = worker.deadline
        return due

    def size(self) -> int:
        return len(self.pool.by_identity)

    def ready(self) -> int:
        return sum(w.channel is not None for w in self.pool.by_identity.values())

    def busy(self) -> int:
        return sum(w.job is not None for w in self.pool.by_identity.values())

    def health(self) -> dict[str, Any]:
        return {}

    def admit(self, job: Any) -> None:
        """Every job may run here (no credits on one machine)."""


def make_engine(
    config: ServerConfig,
    registry: Registry,
    workdir: Path,
    store: Store,
    context: zmq.Context[Any],
    queue: FairQueue,
    ledger: Ledger,
    send: Any,
) -> Engine:
    """The engine ``config`` names: this machine's worker processes, or a Dask site."""
    if config.engine == "dask":
        from .site.engine import SiteEngine  # imports dask: only for a site

        return SiteEngine(config, registry, store, context, queue, ledger, send)
    return LocalEngine(config, workdir, arena_dir(), secrets.token_hex(4), queue, ledger, send)
