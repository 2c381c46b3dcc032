"""The Dask engine: the edge server's jobs as tasks on a cluster of lent machines.

:class:`SiteEngine` connects a Dask client to the scheduler, sends the apps to every worker
(``UploadDirectory``), binds the *site socket* the tasks call back to, and feeds the server's poll
loop. :class:`~.dispatcher.SiteDispatcher` hands the jobs out and routes what comes back; the
engine charges each run's credits (:mod:`edge_server.credits`; the control requests about them are
:mod:`.accounts`').

Why a ZeroMQ socket of the server's own, not Dask's data path, for calls,
checkpoints and results: payloads then never pass through the scheduler (a
128 MB call would), checkpoints arrive while the task runs and go straight
on to the client from the same loop that reads every other socket, and
with a server key the link is CURVE-encrypted (the task learns the server's
public key from its spec, which Dask's TLS protects). Each job's spec holds
a one-time token: only its own task gets the call.

A run is lost with its worker (a lender switched off): Dask reschedules the
task (up to ``distributed.scheduler.allowed-failures`` times, then
``KilledWorker``, which fails the job ``WorkerCrashed``); the new attempt's
HELLO gets the call and the latest checkpoint this server received, so the
job goes on from there. A lender whose hours end moves its checkpointed
jobs the same way, with a fresh checkpoint (:func:`.task.retire`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import queue as queues
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from offload._exceptions import (
    ConfigError,
    ProtocolError,
    WorkerCrashed,
)
from offload.runtime import protocol

from ..admission import Job
from ..config import ServerConfig
from ..credits import Credits
from ..fairqueue import FairQueue
from ..ledger import Ledger
from ..pool import Deployed
from ..registry import Registry
from ..store import Store
from . import apps
from .accounts import Accounts
from .dispatcher import SiteDispatcher, SiteRun
from .security import security_of

log = logging.getLogger("edge_server.site")

REFRESH_S = 1.0  # how often the cluster's workers are looked at


class SiteEngine:
    """Jobs as tasks on a Dask cluster (``edge-server --engine dask``)."""

    name = "dask"

    def __init__(
        self,
        config: ServerConfig,
        registry: Registry,
        store: Store,
        context: zmq.Context[Any],
        queue: FairQueue,
        ledger: Ledger,
        send: Any,
    ) -> None:
        self.config = config
        self.registry = registry
        self.ledger = ledger
        self.credits = Credits(
            store.database, config.credit_grant, config.price_cpu, config.price_memory
        )
        self.workers = SiteDispatcher(config, self, queue, ledger, send)
        self.slots = 0
        self.price_s = 0.0
        self.cluster: dict[str, dict[str, Any]] = {}  # worker address -> its info
        self._instance = secrets.token_hex(4)
        self._context = zmq.Context()  # of its own: the frontend's ZAP handler is not for tasks
        self._events: queues.SimpleQueue[tuple[int, Any]] = queues.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._refreshed = 0.0
        self._offered_at = time.time()
        self._changed = True
        self._server_key: str | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="offload-site-")
        self._charging: dict[int, SiteRun] = {}  # killed runs whose USAGE may still come
        self.client: Any = None
        self.site_address = ""
        self.accounts = accounts = Accounts(self.credits, config, lambda: self.cluster)
        ledger.extra_ops.update(
            quote=accounts.quote,
            credits=accounts.credits_of,
            lend=accounts.lend,
            resources=accounts.resources,
        )

    # -- the engine seam ----------------------------------------------------------------------

    def start(self) -> None:
        try:
            from distributed import Client
            from distributed.diagnostics.plugin import UploadDirectory
        except ImportError as exc:
            raise ConfigError(
                "the dask engine needs Dask distributed: pip install 'offload[site]'"
            ) from exc
        self.sock = self._context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.config.secret_key is not None:
            public, secret = zmq.auth.load_certificate(self.config.secret_key)
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_server = True
            self._server_key = public.decode()
        try:
            self.sock.bind(self.config.site_bind)
        except zmq.ZMQError as exc:
            raise ConfigError(
                f"cannot bind the site socket {self.config.site_bind}: {exc}"
            ) from exc
        self.site_address = self.config.site_address or self.sock.getsockopt_string(
            zmq.LAST_ENDPOINT
        )
        try:
            self.client = Client(
                self.config.scheduler,
                security=security_of(self.config),
                set_as_default=False,
                timeout=30,
                name="offload-edge-server",
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler {self.config.scheduler}: {exc}"
            ) from exc
        self.apps = (
            apps.bundle(self.config.apps, Path(self._tmp.name)) if self.config.apps else None
        )
        if self.apps is not None:
            self.client.register_plugin(
                UploadDirectory(str(self.apps), skip_words=("__pycache__",)), name=self.apps.name
            )
        self.refresh(force=True)
        log.info(
            "site: scheduler %s, %d workers, %d slots; tasks call back to %s",
            self.config.scheduler,
            len(self.cluster),
            self.slots,
            self.site_address,
        )

    def stop(self, timeout: float) -> None:
        for run in list(self.workers.runs.values()):
            self.kill(run, "server stopped")
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=timeout)
        with contextlib.suppress(AttributeError):
            self.sock.close()
        self._context.term()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._tmp.cleanup()

    def watched(self) -> set[int] | None:
        if not self._changed:
            return None
        self._changed = False
        return {int(self.sock.getsockopt(zmq.FD)), self._wake_r}

    def handle(self, fds: list[int]) -> None:
        # The site socket's fd is edge-triggered (ZeroMQ): read until it has nothing.
        while int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._on_task(self.sock.recv_multipart())
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while True:
            try:
                job_id, future = self._events.get_nowait()
            except queues.Empty:
                break
            self._on_future(job_id, future)

    def use_apps(self, deployed: tuple[Deployed, ...]) -> None:
        if deployed:  # the lenders get the --app packages (UploadDirectory), not these yet
            log.warning("apps deployed with offload deploy are not sent to a site's lenders")

    def apps_in_use(self) -> set[Path]:
        return set()

    def housekeeping(self, now: float) -> None:
        self.workers.check_deadlines()
        self.workers.settle()
        if now - self._refreshed >= REFRESH_S:
            self.refresh()

    def due(self) -> float | None:
        deadlines = [r.deadline for r in self.workers.runs.values() if r.deadline]
        return min([*deadlines, self._refreshed + REFRESH_S])

    def size(self) -> int:
        return self.slots

    ready = size  # a site's slots are its members' workers, all started

    def busy(self) -> int:
        return len(self.workers.runs)

    def admit(self, job: Job) -> None:
        self.accounts.admit(job)

    def health(self) -> dict[str, Any]:
        return {
            "site": {
                "scheduler": self.config.scheduler,
                "address": self.site_address,
                "workers": len(self.cluster),
                "slots": self.slots,
                "running": {str(j): r.worker for j, r in self.workers.runs.items()},
                "attempts": {str(j): r.attempts for j, r in self.workers.runs.items()},
            }
        }

    # -- the cluster ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Look at the cluster's workers: the slots, and the capacity lenders offered."""
        now_m, now = time.monotonic(), time.time()
        if not force and now_m - self._refreshed < REFRESH_S:
            return
        self._refreshed = now_m
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except Exception as exc:
            log.warning("cannot reach the Dask scheduler: %s", exc)
            return
        self.cluster = dict(info.get("workers", {}))
        self.price_s = self.accounts.price_s(self.price_s)  # for every PONG: clients weigh it
        cores = sum(int(w.get("nthreads", 0)) for w in self.cluster.values())
        self.slots = cores
        elapsed = now - self._offered_at
        self._offered_at = now
        if 0 < elapsed < 3600 and cores:
            self.credits.offered(cores, now - elapsed, now)
            for w in self.cluster.values():
                machine = self.accounts.machine_of(str(w.get("name", "")))
                if machine is not None:
                    self.credits.online(machine, elapsed)

    def submit(self, run: SiteRun) -> None:
        from .task import run_site_job

        job = run.job
        spec = {
            "job": job.id,
            "token": run.token.hex(),
            "site": self.site_address,
            "server_key": self._server_key,
            "apps": self.apps.name if self.apps is not None else "",
            "modules": list(self.config.apps),
            "types": list(self.config.types),
            "max_message_size": self.config.max_message_size,
            "compression": self.config.compression,
            "limits": {
                "memory": self.config.limit_memory,
                "cpu": self.config.limit_cpu,
                "files": self.config.limit_files,
                "processes": self.config.limit_processes,
                "disk": self.config.limit_disk,
            },
        }
        future = self.client.submit(
            run_site_job, spec, key=f"offload-{self._instance}-{job.id}", pure=False
        )
        run.future = future

        def done(f: Any, job_id: int = job.id) -> None:
            self._events.put((job_id, f))
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

        future.add_done_callback(done)

    def kill(self, run: SiteRun, why: str) -> None:
        """Stop a run now: its task kills the job's process; the future is let go."""
        if run.identity is not None:
            self.order(run.identity, [b"X", why.encode()])
        if run.future is not None:
            with contextlib.suppress(Exception):
                run.future.cancel()
        self._charging[run.job.id] = run  # its task's USAGE may still come

    def order(self, identity: bytes, frames: list[bytes]) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK)

    # -- what the tasks send ----------------------------------------------------------------

    def _on_task(self, frames: list[bytes]) -> None:
        if len(frames) < 4:
            return
        identity, kind, job_raw, token = frames[0], frames[1], frames[2], frames[3]
        job_id = int.from_bytes(job_raw, "big")
        run = self.workers.runs.get(job_id) or self._charging.get(job_id)
        if run is None or not hmac.compare_digest(run.token, token):
            self.order(identity, [b"X", b"no such job"])
            return
        rest = frames[4:]
        active = self.workers.runs.get(job_id) is run
        if kind == b"H":
            if not active:
                self.order(identity, [b"X", b"the job has ended"])
                return
            if run.identity is not None and run.identity != identity:
                self.order(run.identity, [b"X", b"another attempt took over"])
            run.identity = identity
            run.worker = rest[1].decode(errors="replace") if len(rest) > 1 else "?"
            run.attempts += 1
            run.history.append(run.worker)
            call = [f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in run.job.frames]
            meta = json.dumps({"call": len(call)}).encode()
            self.order(identity, [b"J", meta, *call, *(run.checkpoint or [])])
            if run.attempts > 1:
                log.info(
                    "job %d resumes on %s (attempt %d) from checkpoint %s",
                    job_id,
                    run.worker,
                    run.attempts,
                    "none"
                    if run.checkpoint is None
                    else protocol.decode_header(run.checkpoint[0]).aux,
                )
            if run.stop is not None:
                self.order(identity, [b"S", bytes([run.stop])])
            return
        if identity != run.identity and kind != b"U":
            self.order(identity, [b"X", b"stale attempt"])
            return
        try:
            if kind == b"C" and active and rest:
                protocol.decode_header(rest[0])
                self.workers.checkpoint(run, rest)
            elif kind == b"D" and active and rest:
                self.order(identity, [b"A"])
                self.accounts.charge(run.job, rest[0])
                protocol.decode_header(rest[1])
                self.workers.finish(run, rest[1:])
            elif kind == b"M" and active:
                self.accounts.charge(run.job, rest[0] if rest else b"{}")
                run.identity = None  # Dask reschedules it; the next HELLO resumes it
                log.info("job %d moves off %s (its lender retires)", job_id, run.worker)
            elif kind == b"U":
                self.accounts.charge(run.job, rest[0] if rest else b"{}")
                self._charging.pop(job_id, None)
        except (ProtocolError, ValueError) as exc:
            log.warning("bad message from the task of job %d: %s", job_id, exc)
            if active:
                self.workers.fail(
                    self.workers.stop_job(run, "bad message"),
                    WorkerCrashed(f"the site's task sent a bad message: {exc}"),
                )

    def _on_future(self, job_id: int, future: Any) -> None:
        """A task ended; if its job is still running, it ended without a result."""
        run = self.workers.runs.get(job_id)
        if run is None:
            self._charging.pop(job_id, None)
        if run is None or run.future is not future:
            return
        if future.status == "error":
            exc = future.exception()
            what = type(exc).__name__
            message = f"the site could not run this call ({what}: {exc})"
        elif future.status == "cancelled":
            message = "the site cancelled this call's task"
        else:
            message = "the site's task ended without a result"
            with contextlib.suppress(Exception):
                message += f" ({future.result()['status']})"
        log.warning("job %d: %s", job_id, message)
        self.workers.runs.pop(job_id, None)
        self.workers.fail(run.job, WorkerCrashed(message))
