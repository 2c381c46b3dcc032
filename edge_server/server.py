"""The edge server: one event loop that routes calls from clients to worker processes.

Data flow::

    client DEALER ──tcp──▶ frontend ROUTER ─┐            ┌─▶ worker 1 (DEALER)
                                            │  queue     │
                      validate header ──────┤  (FIFO,  ──┼─▶ worker 2
                      (no unpickling here)  │  bounded)  │
    client DEALER ◀──tcp── frontend ROUTER ◀┴── backend ROUTER ◀── DONE + reply
                                     ▲                         ▲
                 large frames sent from the worker's out arena (shared memory)

                      job store (SQLite): history, waiting payloads,
                      kept results, usage  ◀── ledger ◀── every job's fate

The loop polls the frontend, the backend, every worker's process sentinel,
and a wake-up pipe (for :meth:`EdgeServer.stop` and signals). The server never
deserializes a payload: it reads the fixed header, rejects what it can
(malformed, unknown function, other version, code shipping off, too large,
queue full) with an ERROR reply, and queues the rest for a worker
(:mod:`edge_server.dispatch`). Control requests (a client asking about its
jobs) are JSON and answered by the :mod:`~edge_server.ledger`. Calls still
queued when the server dies are in the store and run after its restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

import offload
from offload._exceptions import (
    ConfigError,
    OffloadError,
    ProtocolError,
    ServerBusy,
    ServerUnavailable,
)
from offload.runtime import errors, protocol, sockets

from .admission import admit
from .arena import arena_dir, remove_stale_files
from .clients import Clients
from .config import ServerConfig
from .control import route_control
from .deploy import Deployer
from .dispatch import TRACKER_POLL_MS
from .engine import make_engine
from .fairqueue import FairQueue
from .frontend import open_frontend
from .inline import InlineEngine, with_inline
from .ledger import Ledger
from .load import LoadMeter
from .orphans import begin_closing, stop_orphans
from .registry import Registry
from .security import Throttle
from .store import Store

log = logging.getLogger("edge_server")

_CLIENT_BATCH = 64
_MAX_CLIENTS = 100_000  # clients (routing ids of calls and control requests) tracked at once


class EdgeServer:
    """Serves the ``@offload`` functions of ``config.apps`` on ``config.bind``."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.registry = registry or Registry.load(config.apps, config.types)
        self.address = ""
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._closing_since = 0.0
        self._throttle = Throttle(log)  # counts of hostile input; rate-limited warnings
        self._clients = Clients(self._throttle, self._transmit, _MAX_CLIENTS)
        self._seen = self._clients.seen  # client identity -> when last heard from
        self._clients_checked = 0.0
        self._queue = FairQueue()
        self._cores = len(os.sched_getaffinity(0))  # the CPUs this server may run on
        self._next_job = 0
        self._sends = 0  # messages sent to clients (the loop's EVENTS check looks at it)
        self._started = time.monotonic()
        self._load = LoadMeter()
        self._info = {
            "server": "edge_server",
            "version": offload.__version__,
            "protocol": protocol.VERSION,
            "functions": sorted(self.registry.functions),
            "code_shipping": config.allow_code_shipping,
            "max_message_size": config.max_message_size,
            "workers": config.workers,
            "instance": secrets.token_hex(8),
            "owners": config.secret_key is not None,  # results go to their key's connection
        }

    def stop(self) -> None:
        """Close (thread- and signal-safe): checkpointed jobs stop at a checkpoint, then exit.

        Closing time, as FlexConnect's makerspace at night: queued calls go
        back to their clients at once (those of clients that are gone stay in
        the store for the restart), every running checkpointed job is asked
        for a checkpoint now and stops there (its client resumes it
        elsewhere), the others get ``close_grace`` seconds to finish; then the
        server exits.
        """
        self._stopping = True
        os.write(self._wake_w, b"\0")

    def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, start the workers, and route messages until :meth:`stop`.

        Raises :class:`~offload.ConfigError` if the address cannot be bound.
        """
        with zmq.Context() as context, tempfile.TemporaryDirectory(prefix="offload-") as workdir:
            frontend, authenticator = open_frontend(self.config, context, self._throttle)
            self._secure = authenticator is not None
            try:
                store = Store(
                    Path(self.config.data_dir) / "jobs.sqlite", self.config.payload_file_min
                )
            except ConfigError:
                if authenticator is not None:
                    authenticator.stop()
                frontend.close()
                raise
            self.address = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            remove_stale_files(arena_dir())
            self._clients.watch(frontend if self._secure else None)
            self._frontend = frontend
            self._ledger = Ledger(
                store,
                self.config,
                self._send,
                self._seen.__contains__,
                lambda job_id: self._workers.cancel(job_id),
                self.health,
                lambda client, ids: self._workers.withdraw(client, ids),
            )
            engine = self._engine = with_inline(
                make_engine(self.config, self.registry, Path(workdir), store, context,
                            self._queue, self._ledger, self._send),
                self.config, self.registry, self._ledger, self._send,
            )  # fmt: skip
            self._workers = engine.workers
            self._deployer = Deployer.open(self.config, self.registry, self._send, self._wake_w,
                                           self._switch_apps, engine.apps_in_use)  # fmt: skip
            self._switch_apps()  # the apps deployed before: served from the first worker on
            try:
                self._recover(store)
                engine.start()
                log.info(
                    "serving %d functions on %s with the %s engine (%d workers); jobs in %s",
                    len(self.registry.fingerprints),
                    self.address,
                    engine.name,
                    engine.size(),
                    store.path,
                )
                if on_ready is not None:
                    on_ready(self.address)
                self._loop()
            finally:
                for worker in self._workers.running():
                    job = self._workers.stop_job(worker, "server stopped")
                    self._workers.fail(job, ServerUnavailable("server shut down"))
                self._ledger.tick(time.monotonic())  # what is still queued is kept for the restart
                engine.stop(timeout=2.0)  # removes this server's arenas
                self._deployer.close()
                if authenticator is not None:
                    authenticator.stop()
                if self.config.purge_on_exit:
                    store.purge()
                    remove_stale_files(arena_dir())
                    log.info("purged: no job data of this server is left on disk")
                store.close()
                self._clients.close()
                frontend.close()
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _recover(self, store: Store) -> None:
        """Queue again the calls that were waiting when the server last stopped."""
        waiting = self._ledger.recover()
        self._next_job = store.last_id()
        for job in waiting:
            self._queue.append(job)
            self._clients.bind(job.client, job.owner)  # its routing id stays its owner's
        if waiting:
            log.info("%d calls waiting from before the restart are queued again", len(waiting))

    def health(self) -> dict[str, Any]:
        """What a health check reports: ok, and the numbers behind it."""
        alive = self._engine.size()
        return {
            "ok": alive > 0 and not self._stopping,
            "instance": self._info["instance"],
            "uptime_s": round(time.monotonic() - self._started, 3),
            "workers": alive,
            "running": self._engine.busy(),
            "queued": len(self._queue),
            "queue_size": self.config.queue_size,
            "connections": len(self._seen),
            "closing": self._stopping,
            **self._ledger.budget.snapshot(),
            "owners": self._clients.owners is not None,
            **self._throttle.counts,
            "engine": self._engine.name,
            **self._engine.health(),
        }

    def visitors(self) -> list[dict[str, Any]]:
        """The clients seen lately, most recent first (the operator's dashboard shows them)."""
        return self._ledger.visitors.rows()

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        # Sockets are watched through their fds with select.poll, not zmq.Poller:
        # zmq_poll costs several system calls per socket per call, and on a small
        # board a no-op call's latency is mostly system calls. The frontend's fd
        # only signals "state changed", so EVENTS is checked before sleeping unless
        # it said "nothing" and nothing was sent since (a send may eat the signal).
        frontend, engine, workers = self._frontend, self._engine, self._workers
        fdpoll = select.poll()
        static = (sockets.fd(frontend), self._wake_r)
        for fd in static:
            fdpoll.register(fd, select.POLLIN)
        watched: set[int] = set()
        while not (self._stopping and self._closed()):
            # A bounded batch per pass: a client flooding the server must not keep
            # workers' replies and dispatch waiting.
            drained = -1  # self._sends when EVENTS last said no message waits
            for _ in range(_CLIENT_BATCH):
                if not sockets.readable(frontend):
                    drained = self._sends
                    break
                self._on_client(sockets.recv_frames(frontend))
                if self._queue and len(self._queue) <= len(workers.idle):
                    workers.dispatch()  # start it now, as a pool would
            if self._queue:  # calls that waited behind others: their start and the new
                workers.dispatch()  # calls' payloads go to the store in one commit
            self._ledger.tick(time.monotonic())
            fds = engine.watched()
            if fds is not None:
                for fd in watched - fds:
                    fdpoll.unregister(fd)
                for fd in fds - watched:
                    fdpoll.register(fd, select.POLLIN)
                watched = set(fds)
            more_from_clients = drained != self._sends and sockets.readable(frontend)
            events = fdpoll.poll(0) if more_from_clients else self._wait(fdpoll)
            if any(fd == self._wake_r for fd, _ in events):  # a stop, or a deployment is done
                os.read(self._wake_r, 4096)
                self._deployer.finish()
            engine.handle([fd for fd, _ in events if fd in watched])
            engine.housekeeping(time.monotonic())
            self._check_clients()

    def _closed(self) -> bool:
        """Closing: the first time, stop what can stop; then whether all is done."""
        now = time.monotonic()
        if not self._closing_since:
            self._closing_since = now
            begin_closing(self._queue, self._seen, self._workers)
        return not self._engine.busy() or now - self._closing_since > self.config.close_grace

    def _wait(self, fdpoll: select.poll) -> list[tuple[int, int]]:
        """Wait for events; shortly after handing out a job, poll without sleeping.

        A short job's reply usually comes within ``busy_poll`` of its dispatch;
        for that long the server may poll instead of sleeping, only while a core
        is spare (nothing queued, fewer jobs than cores). Off by default: 500 us
        of it cost ~100 us of CPU per no-op call and no lower p50 (issue 16).
        """
        deadline = self._workers.dispatched_at + self.config.busy_poll
        if self.config.busy_poll and time.perf_counter() < deadline and self._spare_core():
            while time.perf_counter() < deadline:
                events = fdpoll.poll(0)
                if events:
                    return events
        return fdpoll.poll(self._poll_timeout())

    def _spare_core(self) -> bool:
        return not self._queue and 0 < self._engine.busy() < self._cores

    def _poll_timeout(self) -> int | None:
        if self._stopping:
            return 50  # closing: look at the clock for close_grace
        if self._workers.unsent:
            # ZeroMQ says nothing when it has sent a frame: poll for that, backing off
            # so a client that reads slowly (or never) does not keep the server busy.
            wait = self._workers.tracker_wait
            self._workers.tracker_wait = min(2 * wait, TRACKER_POLL_MS[1])
            return wait
        now = time.monotonic()
        dues = [due for due in (self._ledger.due(), self._engine.due()) if due is not None]
        if self._seen:  # look for vanished clients every second
            dues.append(now + 1.0)
        return max(0, int((min(dues) - now) * 1000) + 1) if dues else None

    # -- clients --------------------------------------------------------------------------------

    def _on_client(self, frames: list[zmq.Frame]) -> None:
        client, now = frames[0].bytes, time.monotonic()
        try:
            if len(frames) < 2:
                raise ProtocolError("a message without a header frame")
            header = protocol.decode_header(frames[1].buffer)
        except ProtocolError as exc:
            self._throttle.note("malformed", "malformed message from %s: %s", client.hex(), exc)
            rid = protocol.peek_request_id(frames[1].buffer) if len(frames) > 1 else None
            self._reply_error(client, rid or 0, exc)
            return
        if header.kind == protocol.PING:
            counts = {  # what the load needs, not the whole health check: PINGs are frequent
                "queued": len(self._queue),
                "running": self._engine.busy(),
                "workers": self._engine.size(),
                "ready": self._engine.ready(),
                "queue_size": self.config.queue_size,
                "price_s": self._engine.price_s,
            }
            load = self._load.load(counts, self._next_job, now)
            self._clients.ping(client, header, frames, now, self._info, load)
            return
        who = self._clients.admit(client, header, frames[1], now)
        if who is None:  # too many clients, or a routing id of another key
            return
        if header.kind == protocol.GO:  # a STARTS call told STARTED may run now
            self._ledger.held.go(client, header.request_id)
            return
        if header.kind == protocol.PAUSE:
            self._workers.pause(client, header.request_id)
            return
        if header.kind == protocol.CONTROL:
            route_control(client, who, header.request_id, frames, self._deployer,
                          self._ledger, self._stopping, self._reply_error)  # fmt: skip
            return
        if self._stopping:
            self._reply_error(client, header.request_id, ServerUnavailable("server closing"))
            return
        try:
            job = admit(client, who, header, frames, self.registry, self.config, self._next_job + 1)
            self._engine.admit(job)  # a site: the owner's credits
            if len(self._queue) >= self.config.queue_size:
                raise ServerBusy(f"queue full ({len(self._queue)} calls waiting)")
            job.held = self._ledger.budget.take(client, job.bytes_in)  # before it is stored
        except OffloadError as refusal:
            self._reply_error(client, header.request_id, refusal)
            return
        self._next_job = job.id
        if job.inline and isinstance(self._engine, InlineEngine):  # no worker: a thread here
            self._engine.run_inline(job)
            return
        self._queue.append(job)
        self._ledger.accepted(job)

    def _switch_apps(self) -> None:
        """Serve each deployed app's current version beside ``--app``; new workers take it up."""
        self.registry, deployed = self._deployer.served(self._info)
        self._engine.use_apps(deployed)

    def _check_clients(self) -> None:
        """Once a second: stop the jobs of clients silent for ``client_timeout`` (by policy)."""
        now = time.monotonic()
        if now - self._clients_checked < 1.0:
            return
        self._clients_checked = now
        timeout = self.config.client_timeout
        gone = {c for c, seen in self._seen.items() if now - seen > timeout}
        for client in gone:
            del self._seen[client]
        self._ledger.held.expire(gone)  # told STARTED, no GO came: they never run
        running = [w.job.client for w in self._workers.running() if w.job]
        self._clients.release(lambda: {*running, *(job.client for job in self._queue)})
        if gone and self.config.orphans == "stop":
            for client in gone:
                stop_orphans(client, self._queue, self._workers, self._ledger)

    def _reply_error(self, client: bytes, request_id: int, error: OffloadError) -> None:
        self._transmit(client, errors.error_reply(request_id, error))

    def _send(self, client: bytes, frames: list[Any]) -> None:
        if self._clients.deliverable(client):  # with CurveZMQ: to its owner's connection only
            self._transmit(client, frames)

    def _transmit(self, client: bytes, frames: list[Any]) -> None:
        self._sends += 1
        sockets.send_frames(self._frontend, [client, *frames])
