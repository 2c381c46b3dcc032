"""The edge server: one event loop that routes calls from clients to worker processes.

Data flow::

    client DEALER ──tcp──▶ frontend ROUTER ─┐            ┌─▶ worker 1 (DEALER)
                                            │  queue     │
                      validate header ──────┤  (FIFO,  ──┼─▶ worker 2
                      (no unpickling here)  │  bounded)  │
    client DEALER ◀──tcp── frontend ROUTER ◀┴── backend ROUTER ◀── DONE + reply
                                     ▲                         ▲
                 large frames sent from the worker's out arena (shared memory)

The loop polls the frontend, the backend, every worker's process sentinel,
and a wake-up pipe (for :meth:`EdgeServer.stop` and signals). The server never
deserializes a payload: it reads the fixed header, rejects what it can
(malformed, unknown function, other version, code shipping off, too large,
queue full) with an ERROR reply, and hands the rest to an idle worker. A job
that runs past its timeout has its worker killed; a worker that dies fails
its job with :class:`~offload.WorkerCrashed`; either way a new worker is
started and every other client keeps being served.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import secrets
import select
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

import offload
from offload._exceptions import ConfigError, ProtocolError
from offload.runtime import protocol, sockets

from .admission import Refused, admit
from .arena import arena_dir, remove_stale_files
from .channel import Channel
from .config import ServerConfig
from .pool import Pool, Worker
from .queue import FairQueue
from .registry import Registry

log = logging.getLogger("edge_server")

_CLIENT_BATCH = 64
_TRACKER_POLL_MS = (1, 10)  # first and longest wait while results are still being sent
# Zeros for bandwidth probes: an anonymous mapping reads as the shared zero page,
# so it costs no memory however often it is sent.
_PADDING = memoryview(mmap.mmap(-1, protocol.PROBE_MAX))


class EdgeServer:
    """Serves the ``@offload`` functions of ``config.apps`` on ``config.bind``."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.registry = registry or Registry.load(config.apps, config.types)
        self.address = ""
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._closing_since = 0.0
        self._seen: dict[bytes, float] = {}  # client identity -> when last heard from
        self._clients_checked = 0.0
        self._queue = FairQueue()
        self._idle: deque[Worker] = deque()
        self._next_job = 0
        self._dispatched_at = 0.0
        self._tracker_wait = _TRACKER_POLL_MS[0]
        self._info = {
            "server": "edge_server",
            "version": offload.__version__,
            "protocol": protocol.VERSION,
            "functions": sorted(self.registry.functions),
            "code_shipping": config.allow_code_shipping,
            "max_message_size": config.max_message_size,
            "workers": config.workers,
            "instance": secrets.token_hex(8),
        }

    def stop(self) -> None:
        """Close (thread- and signal-safe): checkpointed jobs stop at a checkpoint, then exit.

        Closing time, as FlexConnect's makerspace at night: queued calls are
        refused at once, every running checkpointed job is asked for a
        checkpoint now and stops there (its client resumes it elsewhere), the
        others get ``close_grace`` seconds to finish; then the server exits.
        """
        self._stopping = True
        os.write(self._wake_w, b"\0")

    def serve(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Bind, start the workers, and route messages until :meth:`stop`.

        Raises :class:`~offload.ConfigError` if the address cannot be bound.
        """
        with zmq.Context() as context, tempfile.TemporaryDirectory(prefix="offload-") as workdir:
            frontend = context.socket(zmq.ROUTER)
            frontend.setsockopt(zmq.LINGER, 1000)
            frontend.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size + 65536)
            # TCP keepalive drops a client that vanished (a phone leaving Wi-Fi leaves a
            # half-open connection), and with it the replies queued for it. Not ZeroMQ's
            # heartbeat: its timeout only counts whole messages, so it would cut a slow
            # upload of a large call.
            frontend.setsockopt(zmq.TCP_KEEPALIVE, 1)
            frontend.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
            frontend.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
            frontend.setsockopt(zmq.TCP_KEEPALIVE_CNT, 6)
            frontend.setsockopt(zmq.SNDHWM, 10_000)  # per client; beyond it replies are dropped
            authenticator = self._secure(context, frontend)
            try:
                frontend.bind(self.config.bind)
            except zmq.ZMQError as exc:
                if authenticator is not None:
                    authenticator.stop()
                frontend.close()
                raise ConfigError(f"cannot bind {self.config.bind}: {exc}") from exc
            self.address = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            remove_stale_files(arena_dir())
            pool = Pool(self.config, Path(workdir), arena_dir(), secrets.token_hex(4))
            self._frontend, self._pool = frontend, pool
            try:
                pool.start()
                log.info(
                    "serving %d functions on %s with %d workers",
                    len(self.registry.functions),
                    self.address,
                    self.config.workers,
                )
                if on_ready is not None:
                    on_ready(self.address)
                self._loop()
            finally:
                running = [w.job for w in pool.by_identity.values() if w.job is not None]
                for job in [*running, *self._queue]:
                    self._reply_error(job.client, job.request_id, "unavailable", "shut down")
                pool.stop(timeout=2.0)  # removes this server's arenas
                if authenticator is not None:
                    authenticator.stop()
                if self.config.purge_on_exit:
                    remove_stale_files(arena_dir())
                    log.info("purged: no job data of this server is left on disk")
                frontend.close()
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _secure(self, context: zmq.Context, frontend: zmq.Socket) -> ThreadAuthenticator | None:
        """CurveZMQ on the frontend and a ZAP handler admitting only authorized keys."""
        if self.config.secret_key is None:
            log.warning(
                "INSECURE: no --secret-key; traffic is in the clear and anyone who can "
                "connect to %s may run jobs",
                self.config.bind,
            )
            return None
        try:
            public, secret = zmq.auth.load_certificate(self.config.secret_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.config.secret_key}: {exc}") from exc
        if secret is None:
            raise ConfigError(f"{self.config.secret_key} holds no secret key")
        authenticator = ThreadAuthenticator(context, log=logging.getLogger("edge_server.auth"))
        authenticator.start()
        authenticator.configure_curve(domain="*", location=self.config.authorized_keys or "")
        frontend.curve_publickey, frontend.curve_secretkey = public, secret
        frontend.curve_server = True
        log.info("CurveZMQ on: clients must hold a key in %s", self.config.authorized_keys)
        return authenticator

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        # Sockets are watched through their fds with select.poll, not zmq.Poller:
        # zmq_poll costs several system calls per socket per call, and on a small
        # board a no-op call's latency is mostly system calls. The frontend's fd
        # only signals "state changed", so EVENTS is checked on every iteration.
        frontend, pool = self._frontend, self._pool
        fdpoll = select.poll()
        static = (sockets.fd(frontend), self._wake_r, pool.listener.fileno())
        for fd in static:
            fdpoll.register(fd, select.POLLIN)
        watched: set[int] = set()
        while not (self._stopping and self._closed()):
            # A bounded batch per pass: a client flooding the server must not keep
            # workers' replies and dispatch waiting.
            for _ in range(_CLIENT_BATCH):
                if not sockets.readable(frontend):
                    break
                self._on_client(frontend.recv_multipart(copy=False))
            self._dispatch()
            if pool.changed:
                pool.changed = False
                fds = pool.by_sentinel.keys() | pool.by_fd.keys() | pool.unnamed.keys()
                for fd in watched - fds:
                    fdpoll.unregister(fd)
                for fd in fds - watched:
                    fdpoll.register(fd, select.POLLIN)
                watched = set(fds)
            more_from_clients = sockets.readable(frontend)
            # Deaths and new connections are handled after the whole batch: they close
            # and open fds, and a reused fd number must not inherit a stale event.
            deaths, incoming = [], False
            for fd, _ in fdpoll.poll(0) if more_from_clients else self._wait(fdpoll):
                if fd in pool.by_fd:
                    self._read_worker(pool.by_fd[fd])
                elif fd in pool.unnamed:
                    self._read_unnamed(pool.unnamed[fd])
                elif fd in pool.by_sentinel:
                    deaths.append(pool.by_sentinel[fd])
                elif fd == static[2]:
                    incoming = True
            for worker in deaths:
                self._on_worker_death(worker)
            if incoming:
                pool.accept()
            self._check_deadlines()
            self._check_clients()
            self._release_arenas()

    def _closed(self) -> bool:
        """Closing: the first time, stop what can stop; then whether all is done."""
        now = time.monotonic()
        if not self._closing_since:
            self._closing_since = now
            log.info(
                "closing: %d queued calls refused, running jobs asked to stop", len(self._queue)
            )
            for job in list(self._queue):
                self._queue.remove(job)
                self._reply_error(job.client, job.request_id, "unavailable", "server closing")
            for worker in self._pool.by_identity.values():
                self._signal_stop(worker, signal.SIGUSR2)
        return not self._running() or now - self._closing_since > self.config.close_grace

    def _wait(self, fdpoll: select.poll) -> list[tuple[int, int]]:
        """Wait for events; shortly after handing out a job, poll without sleeping.

        Waking a sleeping process costs tens of microseconds on small boards and
        virtual machines, as much as the rest of a small call; a short job's reply
        usually comes back within ``busy_poll`` of its dispatch, so for that long
        the server polls instead of sleeping. Only then: spinning at other times
        would take CPU from the workers and clients this server exists to serve.
        """
        events = fdpoll.poll(0)
        if events:
            return events
        deadline = self._dispatched_at + self.config.busy_poll
        if time.perf_counter() < deadline and self._running():
            while time.perf_counter() < deadline:
                events = fdpoll.poll(0)
                if events:
                    return events
        return fdpoll.poll(self._poll_timeout())

    def _running(self) -> bool:
        return any(w.job is not None for w in self._pool.by_identity.values())

    def _poll_timeout(self) -> int | None:
        if self._stopping:
            return 50  # closing: look at the clock for close_grace
        if any(w.sending for w in self._pool.by_identity.values()):
            # ZeroMQ says nothing when it has sent a frame: poll for that, backing off
            # so a client that reads slowly (or never) does not keep the server busy.
            wait = self._tracker_wait
            self._tracker_wait = min(2 * wait, _TRACKER_POLL_MS[1])
            return wait
        deadlines = [w.deadline for w in self._pool.by_identity.values() if w.deadline]
        if self._seen:  # look for vanished clients every second
            deadlines.append(time.monotonic() + 1.0)
        if not deadlines:
            return None
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    # -- clients --------------------------------------------------------------------------------

    def _on_client(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            log.warning("dropping a message without a header frame")
            return
        client, header_frame = frames[0].bytes, frames[1].buffer
        now = time.monotonic()
        self._seen[client] = now
        try:
            header = protocol.decode_header(header_frame)
        except ProtocolError as exc:
            log.warning("malformed message from %s: %s", client.hex(), exc)
            rid = protocol.peek_request_id(header_frame)
            self._reply_error(client, rid or 0, "protocol", str(exc))
            return
        if header.kind == protocol.PAUSE:
            self._pause(client, header.request_id)
            return
        if header.kind == protocol.PING:
            if header.flags & protocol.ALIVE and len(frames) == 3 and len(frames[2]) <= 255:
                self._seen[frames[2].bytes] = now  # a heartbeat on behalf of a data socket
            pong: list[Any] = protocol.json_message(protocol.PONG, header.request_id, self._info)
            if header.aux:  # a bandwidth probe: pad the reply, from one shared buffer
                pong.append(_PADDING[: min(header.aux, protocol.PROBE_MAX)])
            self._send(client, pong)
            return
        if self._stopping:
            self._reply_error(client, header.request_id, "unavailable", "server closing")
            return
        try:
            job = admit(client, header, frames, self.registry, self.config, self._next_job + 1)
            if len(self._queue) >= self.config.queue_size:
                raise Refused("busy", f"queue full ({len(self._queue)} calls waiting)")
        except Refused as refusal:
            self._reply_error(client, header.request_id, refusal.code, refusal.message)
            return
        self._next_job = job.id
        self._queue.append(job)

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
        if gone and self.config.orphans == "stop":
            for client in gone:
                self._client_gone(client)

    def _client_gone(self, client: bytes) -> None:
        """A client vanished (no message or heartbeat in ``client_timeout``): stop its jobs."""
        dropped = [job for job in self._queue if job.client == client]
        for job in dropped:
            self._queue.remove(job)
        running = [w for w in self._pool.by_identity.values() if w.job and w.job.client == client]
        for worker in running:
            worker.job, worker.deadline = None, None
            self._pool.kill(worker, "its client is gone")
        if dropped or running:
            log.info(
                "client gone: %d queued and %d running jobs stopped", len(dropped), len(running)
            )

    def _pause(self, client: bytes, request_id: int) -> None:
        """Stop a client's job at its next checkpoint (running) or before it starts (queued)."""
        for job in self._queue:
            if job.client == client and job.request_id == request_id:
                self._queue.remove(job)
                self._reply_error(client, request_id, "stopped", "paused before it started")
                return
        for worker in self._pool.by_identity.values():
            job = worker.job
            if job is not None and job.client == client and job.request_id == request_id:
                self._signal_stop(worker, signal.SIGUSR1)
                return

    def _signal_stop(self, worker: Worker, signum: int) -> None:
        """Ask a worker's checkpointed job to stop at its next checkpoint."""
        if worker.job is not None and worker.job.checkpointed:
            with contextlib.suppress(ProcessLookupError):
                if worker.process.pid:
                    os.kill(worker.process.pid, signum)

    def _reply_error(self, client: bytes, request_id: int, code: str, message: str) -> None:
        self._send(client, protocol.error_message(request_id, code, message))

    def _send(self, client: bytes, frames: list[Any]) -> None:
        sockets.send_frames(self._frontend, [client, *frames])

    # -- workers --------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._queue and self._idle:
            self._release_arenas()  # a FREE ahead of the job lets the worker reuse its arena
        while self._queue and self._idle:
            job = self._queue.pop(self._at_running_limit)
            if job is None:
                return  # every client with calls waiting has its share running
            worker = self._idle.popleft()
            if worker.killed or worker.channel is None:
                self._queue.push_back(job)
                continue
            header, payload = job.frames[0], job.frames[1:]
            try:
                name, spans, inline = worker.in_arena.pack([f.buffer for f in payload])
            except OSError as exc:  # e.g. /dev/shm is full
                self._idle.appendleft(worker)
                log.error("cannot stage job %d for a worker: %s", job.id, exc)
                self._reply_error(job.client, job.request_id, "unavailable", f"server: {exc}")
                continue
            try:
                worker.channel.send(
                    [b"J", job.id.to_bytes(8, "big"), header.buffer, name, spans, *inline]
                )
            except (BrokenPipeError, ConnectionResetError):
                self._queue.push_back(job)  # the worker died; its sentinel will tell
                continue
            except (OSError, ValueError) as exc:
                self._idle.appendleft(worker)
                self._reply_error(job.client, job.request_id, "protocol", f"cannot run: {exc}")
                continue
            worker.job = job
            self._dispatched_at = time.perf_counter()
            worker.deadline = time.monotonic() + job.timeout if job.timeout else None

    def _at_running_limit(self, client: bytes) -> bool:
        """Whether ``client`` already has ``max_running_per_client`` calls running."""
        limit = self.config.max_running_per_client
        if limit >= len(self._pool.by_identity):
            return False  # no client can reach it: skip the count (the usual case)
        running = 0
        for worker in self._pool.by_identity.values():
            if worker.job is not None and worker.job.client == client:
                running += 1
        return running >= limit

    def _read_unnamed(self, channel: Channel) -> None:
        try:
            messages = channel.feed()
        except (EOFError, OSError, ValueError):
            self._pool.drop_unnamed(channel)
            return
        for message in messages:
            if len(message) == 2 and bytes(message[0]) == b"R":
                worker = self._pool.name(channel, bytes(message[1]))
                if worker is not None:
                    self._idle.append(worker)
                return
        if messages:
            self._pool.drop_unnamed(channel)

    def _read_worker(self, worker: Worker) -> None:
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
                self._send(job.client, list(frames[2:]))
            return
        if kind == b"E":  # done, and the worker leaves (it passed a resource limit)
            worker.killed = worker.killed or "passed a resource limit"
        elif kind != b"D" or len(frames) < 5:
            log.error("unexpected message %r from worker %s", bytes(frames[0]), worker.identity)
            return
        job = worker.job
        worker.job, worker.deadline = None, None
        if not worker.killed:
            self._idle.append(worker)
        if job is None or int.from_bytes(frames[1], "big") != job.id:
            return  # the job already failed (timeout) and the worker finished anyway
        name, spans = bytes(frames[3]), bytes(frames[4])
        try:
            payload = worker.out_arena.unpack(name, spans, frames[5:])
        except (ValueError, OSError) as exc:
            log.error("worker %s sent an unreadable reply: %s", worker.identity, exc)
            self._reply_error(job.client, job.request_id, "worker_crashed", f"bad reply: {exc}")
            return
        if not name:
            self._send(job.client, [frames[2], *payload])
            return
        tracked = [zmq.Frame(p, track=True) for p in payload]
        self._send(job.client, [frames[2], *tracked])
        worker.sending.append((zmq.MessageTracker(*tracked), name))
        self._tracker_wait = _TRACKER_POLL_MS[0]

    def _release_arenas(self) -> None:
        """Tell workers which result arenas ZeroMQ has finished sending from."""
        for worker in self._pool.by_identity.values():
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

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._pool.by_identity.values()):
            if worker.deadline is not None and now >= worker.deadline and worker.job is not None:
                job = worker.job
                worker.job, worker.deadline = None, None
                self._pool.kill(worker, "timeout")
                self._reply_error(
                    job.client,
                    job.request_id,
                    "timeout",
                    f"call ran past its timeout of {job.timeout:g} s; worker stopped",
                )

    def _on_worker_death(self, worker: Worker) -> None:
        how = self._pool.reap(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        job = worker.job
        if job is not None:
            log.warning("worker %s died running job %d: %s", worker.identity, job.id, how)
            self._reply_error(
                job.client,
                job.request_id,
                "worker_crashed",
                f"the worker running this call died ({how})",
            )
        elif worker.killed != "timeout":
            log.warning("worker %s died while idle: %s", worker.identity, how)
        if not self._stopping:
            self._pool.spawn()
