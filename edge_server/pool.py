"""Worker processes: start, connect, watch through their sentinels, kill, replace, clean up.

Workers are started with the ``spawn`` method (never ``fork`` a process that
holds ZeroMQ sockets and threads) and connect back to a Unix socket in the
server's private directory; a worker's first message names it. A worker that
dies is noticed from its process sentinel, which the server polls with its
sockets, as loky does; the server then fails the worker's job and asks for a
replacement.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import zmq

from . import pids, scratch
from .arena import ArenaReader, ArenaWriter, remove_files
from .channel import Channel
from .config import ServerConfig
from .worker import run_worker

log = logging.getLogger("edge_server.pool")

#: A deployed app as a worker imports it: (directory for sys.path, modules served, all modules).
Deployed = tuple[str, tuple[str, ...], tuple[str, ...]]


#: Seconds a worker is idle before its arenas over KEEP_MAX are given back: a stream of
#: large calls reuses them (fresh pages cost about half the throughput at 128 MB), a burst
#: leaves none behind for long.
ARENA_IDLE_S = 2.0


@dataclass(eq=False)
class Worker:
    """The server's view of one worker process."""

    identity: bytes
    process: BaseProcess
    prefix: str
    in_arena: ArenaWriter
    out_arena: ArenaReader
    job: Any = None
    deadline: float | None = None
    sending: list[tuple[zmq.MessageTracker, bytes]] = field(default_factory=list)
    killed: str = ""  # why the server killed it, if it did
    channel: Channel | None = None
    cpu_ns: int = 0  # CPU time it had used when it last reported (ready, or a job done)
    oom: bool = False  # the kernel killed it for its memory cgroup's limit
    handed: int = 0  # jobs sent to it (names the job a stop signal is for)
    trim_at: float | None = None  # when its large arenas go back, if it is still idle
    epoch: int = 0  # the generation of apps it imported (Pool.epoch when it started)
    deployed: tuple[Deployed, ...] = ()  # the deployed apps it imported

    @property
    def sentinel(self) -> int:
        return self.process.sentinel


class Pool:
    """``config.workers`` worker processes connected to ``backend``."""

    def trim_idle(self, now: float) -> float | None:
        """Give back the large arenas of workers idle since their ``trim_at``; the next due."""
        due = None
        for worker in self.by_identity.values():
            if worker.trim_at is None or worker.job is not None:
                continue
            if now < worker.trim_at:
                due = worker.trim_at if due is None else min(due, worker.trim_at)
                continue
            worker.trim_at = None
            worker.in_arena.trim()
            if worker.channel is not None and not worker.killed:
                with contextlib.suppress(OSError):
                    worker.channel.send([b"T"])  # and the worker its result arenas
        return due

    def __init__(self, config: ServerConfig, workdir: Path, arena_directory: Path, token: str):
        self._config = config
        self._backend = str(workdir / "workers.sock")
        self._directory = arena_directory
        self._token = token
        self._mp = multiprocessing.get_context("spawn")
        self._generation = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self._backend)
        self.listener.listen(64)
        self.by_identity: dict[bytes, Worker] = {}
        self.by_sentinel: dict[int, Worker] = {}
        self.unnamed: dict[int, Channel] = {}  # connected, first message not read yet
        self.by_fd: dict[int, Worker] = {}
        self.changed = True  # the set of fds to watch changed since the server last looked
        #: The deployed apps new workers import (:mod:`edge_server.deploy`), and their generation.
        self.deployed: tuple[Deployed, ...] = ()
        self.epoch = 0

    def worker_of(self, job_id: int) -> Worker | None:
        """The worker running job ``job_id``, if one is."""
        for worker in self.by_identity.values():
            if worker.job is not None and worker.job.id == job_id:
                return worker
        return None

    def at_running_limit(self, client: bytes) -> bool:
        """Whether ``client`` already has ``max_running_per_client`` calls running."""
        limit = self._config.max_running_per_client
        if limit >= len(self.by_identity):
            return False  # no client can reach it: skip the count (the usual case)
        running = sum(
            w.job is not None and w.job.client == client for w in self.by_identity.values()
        )
        return running >= limit

    def in_use(self) -> set[Path]:
        """The deployed app directories live workers imported (not to be removed)."""
        return {Path(d[0]) for w in self.by_identity.values() for d in w.deployed}

    def renew(self, idle: deque[Worker]) -> None:
        """The apps changed: a new generation; the ``idle`` workers go now, busy ones later."""
        self.epoch += 1
        while idle:
            self.retire(idle.popleft(), "replaced: the apps changed")

    def ready(self, worker: Worker, idle: deque[Worker]) -> None:
        """``worker`` can take a job: ``idle`` it, or retire it if the apps changed since."""
        if worker.epoch == self.epoch:
            idle.append(worker)
        else:
            self.retire(worker, "replaced: the apps changed")

    def retire(self, worker: Worker, why: str) -> None:
        """Ask a worker without a job to stop (its sentinel reports it; another replaces it)."""
        worker.killed = why
        if worker.channel is None:
            self.kill(worker, why)
            return
        try:
            worker.channel.send([b"S"])
        except OSError:
            self.kill(worker, why)

    def accept(self) -> None:
        """Take a worker's new connection; it is named by its first message."""
        sock, _ = self.listener.accept()
        channel = Channel(sock)
        self.unnamed[channel.fileno()] = channel
        self.changed = True

    def drop_unnamed(self, channel: Channel) -> None:
        """Close a connection that never named a worker."""
        self.unnamed.pop(channel.fileno(), None)
        self.changed = True
        channel.close()

    def name(self, channel: Channel, identity: bytes) -> Worker | None:
        """Attach a connection to the worker whose READY message named it."""
        self.unnamed.pop(channel.fileno(), None)
        worker = self.by_identity.get(identity)
        if worker is None or worker.channel is not None:
            channel.close()
            return None
        worker.channel = channel
        self.by_fd[channel.fileno()] = worker
        self.changed = True
        return worker

    def start(self) -> None:
        """Start the configured number of workers (first removing cgroups of dead servers)."""
        pids.sweep()  # whatever this server's limits: a killed one may have had others
        pids.sweep("memory")
        scratch.sweep()  # workers' scratch directories (without root)
        for _ in range(self._config.workers):
            self.spawn()

    def spawn(self) -> Worker:
        """Start one more worker process."""
        self._generation += 1
        name = f"w{self._generation}"
        prefix = f"offload-{os.getpid()}-{self._token}-{name}"
        process = self._mp.Process(
            target=run_worker,
            args=(
                name.encode(),
                self._backend,
                self._config,
                str(self._directory),
                prefix + "-out",
                self.deployed,
            ),
            name=f"edge-worker-{name}",
            daemon=True,
        )
        process.start()
        if self._config.limit_processes is not None:
            pids.adopt(pids.group(os.getpid(), name), process.pid)  # type: ignore[arg-type]
        if self._config.limit_memory is not None:
            memory = pids.group(os.getpid(), name, "memory")
            pids.adopt(memory, process.pid)  # type: ignore[arg-type]
        worker = Worker(
            name.encode(),
            process,
            prefix,
            ArenaWriter(self._directory, prefix + "-in"),
            ArenaReader(self._directory),
            epoch=self.epoch,
            deployed=self.deployed,
        )
        self.by_identity[worker.identity] = worker
        self.by_sentinel[worker.sentinel] = worker
        self.changed = True
        log.debug("started worker %s (pid %s)", name, process.pid)
        return worker

    def kill(self, worker: Worker, reason: str) -> None:
        """Stop a worker now (a hung job); its sentinel reports the death."""
        worker.killed = reason
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(worker.process.pid, signal.SIGKILL)  # type: ignore[arg-type]

    def reap(self, worker: Worker) -> str:
        """Forget a dead worker, remove its arenas, and describe how it ended."""
        worker.process.join(timeout=1)
        self.by_identity.pop(worker.identity, None)
        self.by_sentinel.pop(worker.sentinel, None)
        self.changed = True
        if worker.channel is not None:
            self.by_fd.pop(worker.channel.fileno(), None)
            worker.channel.close()
        worker.in_arena.close()
        remove_files(self._directory, worker.prefix + "-")  # not w1 matching w10
        if self._config.limit_memory is not None:  # first: on cgroup v2 it is the pids group
            memory = pids.group(os.getpid(), worker.identity.decode(), "memory")
            worker.oom = pids.oom_killed(memory)
            pids.release(memory)
        if self._config.limit_processes is not None:
            pids.release(pids.group(os.getpid(), worker.identity.decode()))
        if self._config.limit_disk is not None:
            scratch.remove(worker.prefix + "-out")  # without root, its files are on the disk
        code = worker.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def stop(self, timeout: float = 5.0) -> None:
        """Ask idle workers to stop, kill busy ones and stragglers; remove all arenas."""
        for worker in list(self.by_identity.values()):
            if worker.channel is None or worker.job is not None:
                self.kill(worker, "shutdown")
                continue
            with contextlib.suppress(OSError):
                worker.channel.send([b"S"])
        deadline = time.monotonic() + timeout
        for worker in list(self.by_identity.values()):
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                self.kill(worker, "shutdown")
            self.reap(worker)
        for channel in self.unnamed.values():
            channel.close()
        self.listener.close()
        remove_files(self._directory, f"offload-{os.getpid()}-{self._token}-")
        if self._config.limit_processes is not None:
            pids.release_server(os.getpid())
        if self._config.limit_memory is not None:
            pids.release_server(os.getpid(), "memory")
