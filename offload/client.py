"""The client: a :class:`concurrent.futures.Executor` that runs each call here or on the server.

Per call: the mode (the function's, else the client's) and, for ``auto``,
the :class:`~offload.profiler.Decider` choose the side. Remote calls go over
one shared connection (:mod:`offload.remote`); local ones run in
the calling thread (``f(x)``) or a thread pool (``submit``). In ``auto`` mode
a call the server cannot take (unreachable, busy, unknown function, other
code version, too large) runs locally instead, with one warning per function
and reason, so the app keeps working offline. Failures of the function itself
are never retried: they are raised as the function's own exception type.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from . import _exceptions as errors
from .api import OffloadedFunction, as_offloaded
from .batch import BatchResult, run_batch
from .config import Config
from .control import ServerJobs
from .jobs import Job, read_checkpoint, write_checkpoint
from .profiler import LOCAL, REMOTE, AdaptiveDecider, Decider, Explanation, Profiler
from .profiler.network import Link
from .profiler.sizes import call_size
from .remote import Remote, chain, running_future

log = logging.getLogger("offload")

#: Remote failures after which an ``auto`` call runs locally instead: all but
#: UnloadableResult happen before the function runs, or lose its run with the server.
FALLBACK = (
    errors.ServerUnavailable,
    errors.ServerBusy,
    errors.UnknownFunction,
    errors.VersionMismatch,
    errors.PayloadTooLarge,
    errors.SerializationError,
)


class Client(Executor):
    """Runs offloadable calls on ``server`` or locally; thread-safe, many calls in flight.

    ``server`` overrides ``config.server``; ``settings`` override other fields
    of a config loaded by :meth:`Config.load`. ``decider`` and ``profiler``
    replace the default :class:`~offload.profiler.AdaptiveDecider` and the
    :class:`~offload.profiler.Profiler` it reads.
    """

    def __init__(
        self,
        server: str | object | None = None,
        *,
        config: Config | None = None,
        decider: Decider | None = None,
        profiler: Profiler | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = Config.load(**settings)
        elif settings:
            config = config.replace(**settings)
        if server is not None:
            config = config.replace(server=str(server))
        self.config = config
        #: What the decisions are made from (built from ``config`` unless given).
        self.profiler = profiler or Profiler(
            energy_profile=config.energy_profile,
            profile_cache=config.profile_cache,
            prior_bps=config_bps(config),
            interval=config.profile_interval,
            address=config.server or "",
        )
        #: Chooses the side of ``auto`` calls and learns from finished ones.
        self.decider: Decider = decider or AdaptiveDecider(self.profiler, config.policy())
        self._lock = threading.Lock()
        self._local_pool: ThreadPoolExecutor | None = None
        self._warned: set[tuple[str, str]] = set()
        self._shutdown = False
        self._remote: Remote | None = None
        self._others: dict[str, Remote] = {}  # other servers jobs were sent to
        self._probe: Future[dict[str, Any]] | None = None
        self._probed_at = 0.0
        if config.server:
            self._remote = Remote(config, self.decider, self.profiler.link)
            self._probe = self._remote.ping(timed=False)  # its time includes connecting
        # Probed from the profiler's thread once the server answers: never from a
        # callback, which runs on the thread that must read the probe's reply.
        self._probe_link = bool(config.probe_bytes) and self.profiler.link.up_bps.mean is None
        self.profiler.start(self._tick if self._remote is not None else None)

    @property
    def server_info(self) -> dict[str, Any]:
        """The server's self-description (functions, limits, instance), from its latest PONG."""
        return self._remote.server_info if self._remote is not None else {}

    @property
    def server(self) -> ServerJobs:
        """This client's jobs on its server: list, status, result, wait, cancel, usage, health."""
        timeout = max(self.config.connect_timeout, 10.0)
        return ServerJobs(self._require_remote(), timeout)

    # -- Executor API ---------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Start ``fn(*args, **kwargs)`` here or remotely; return its future."""
        return self._start(as_offloaded(fn), args, kwargs, None, wait=False)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like :meth:`Executor.map`; all calls are in flight at once."""
        return super().map(as_offloaded(fn), *iterables, timeout=timeout, chunksize=chunksize)

    def map_within(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        deadline: float,
        **options: Any,
    ) -> BatchResult:
        """Run the batch split between here and the server so it is done by ``deadline`` s.

        ``options`` (see :func:`offload.batch.run_batch`): ``objective``
        ("energy" or "time"), ``max_drop`` (long-run share of items that may
        be dropped to save energy), ``policy`` ("djos", "lfos", "efos"),
        ``late`` ("drop": items not done in time are
        :class:`~offload.batch.Dropped`; "complete": done anyway), ``weight``
        (DJOS's M).
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        return run_batch(
            self, as_offloaded(fn), list(zip(*iterables)), deadline=deadline, **options
        )

    def resume_from(
        self, path: str | os.PathLike[str], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Job:
        """Continue ``fn(*args, **kwargs)`` from a checkpoint file an earlier process wrote.

        The file is one ``checkpoint_dir`` holds (:func:`offload.jobs.checkpoint_path`);
        its state is loaded as the function's results are, with the restricted unpickler.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        fn = as_offloaded(fn)
        if fn.checkpoint_every is None:
            raise errors.NotCheckpointable(f"{fn.wire_name} takes no checkpoints")
        state, count = read_checkpoint(path, fn)
        side, size = self._placed(fn, args, kwargs, fn.mode or self.config.mode)
        return Job(self, fn, args, kwargs, size, state, count).start(side)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; with ``wait``, let calls in flight finish first."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        if self._local_pool is not None:
            self._local_pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.profiler.stop()
        with self._lock:
            others = list(self._others.values())
        for remote in [self._remote, *others]:
            if remote is not None:
                remote.close(wait)

    # -- calls ----------------------------------------------------------------------------------

    def call(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None = None,
    ) -> Any:
        """Run one call synchronously and return its value."""
        mode = mode or fn.mode or self.config.mode
        if mode == "local":
            return fn.__wrapped__(*args, **kwargs)
        if mode == "auto":
            side, size = self._side(fn, args, kwargs)
            if _is_job(fn):
                return Job(self, fn, args, kwargs, size).start(side).result()
            if side != REMOTE:
                return self._run_local(fn, size, args, kwargs)
        else:
            size = call_size(fn, args, kwargs)
            if _is_job(fn):
                return Job(self, fn, args, kwargs, size).start(REMOTE).result()
        try:
            return self._start(fn, args, kwargs, "remote", wait=True, size=size).result()
        except FALLBACK as exc:
            if mode != "auto" or not _falls_back(exc):
                raise
            self._note_fallback(fn, exc)
            return self._run_local(fn, size, args, kwargs)

    def explain(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Explanation:
        """Where ``fn(*args, **kwargs)`` would run now, with estimates and reasons; runs nothing."""
        fn = as_offloaded(fn)
        explain = getattr(self.decider, "explain", None)
        if explain is None:
            raise TypeError(f"{type(self.decider).__name__} cannot explain its decisions")
        up = self.server_up()
        result: Explanation = explain(fn, args, kwargs, up)
        mode = fn.mode or self.config.mode
        if mode != "auto":
            result.side = LOCAL if mode == "local" else REMOTE
            result.reasons.insert(0, f"mode={mode!r} overrides the decision")
        elif (fn.wire_name, "local") in self._warned:
            result.side = LOCAL
            result.reasons.insert(0, "the server cannot run this function (warned before)")
        return result

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function and side: calls, seconds, bytes up and down, joules (estimated)."""
        stats = getattr(self.decider, "stats", None)
        return stats() if stats is not None else {}

    def probe(self, nbytes: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Measure bandwidth actively: ``nbytes`` up in a PING, then down in its PONG."""
        nbytes = nbytes or self.config.probe_bytes or 2**20
        timeout = timeout or max(self.config.connect_timeout, 10.0)
        link = self.profiler.link
        remote = self._require_remote()
        for up, down in ((nbytes, 0), (0, nbytes)):
            start = time.perf_counter()
            try:
                remote.ping(up=up, down=down).result(timeout)
            except TimeoutError as exc:
                raise errors.ServerUnavailable(f"{remote.conn.address} did not answer") from exc
            link.on_probe(up, down, time.perf_counter() - start)
        return link.snapshot()

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the server to answer; return its self-description or raise ServerUnavailable."""
        remote = self._require_remote()
        try:
            return remote.ping().result(timeout or self.config.connect_timeout)
        except TimeoutError as exc:
            raise errors.ServerUnavailable(f"{remote.conn.address} did not answer") from exc

    def _remote_for(self, where: str) -> Remote | None:
        """The connection a job's run goes over: None for "local", else "remote" or an address."""
        if where == LOCAL:
            return None
        if where == REMOTE or (self._remote is not None and where == self._remote.conn.address):
            return self._require_remote()
        with self._lock:
            if self._shutdown:
                raise errors.ServerUnavailable("the client was shut down")
            remote = self._others.get(where)
            if remote is None:
                config = self.config.replace(server=where)
                remote = self._others[where] = Remote(
                    config, self.decider, Link(config_bps(config))
                )
                remote.ping(timed=False)
        return remote

    def _fallback_target(self) -> str:
        """Where a job goes when its server is lost: the backup server if it answers, else here."""
        backup = self.config.backup_server
        if backup and not self._shutdown:
            remote = self._remote_for(backup)
            assert remote is not None
            try:
                remote.ping().result(self.config.connect_timeout)
                return backup
            except Exception:
                log.debug("backup server %s does not answer", backup)
        return LOCAL

    def _store_checkpoint(self, job: Job, state: Any, count: int) -> None:
        """Also keep a job's latest checkpoint in ``checkpoint_dir``, if there is one."""
        if self.config.checkpoint_dir:
            write_checkpoint(self.config.checkpoint_dir, job, state, count)

    def _require_remote(self) -> Remote:
        if self._remote is None:
            raise errors.ServerUnavailable("no server configured (offload.configure(server=...))")
        return self._remote

    def server_up(self) -> bool:
        """Whether the server currently answers; probes again every ``retry_interval``."""
        if self._remote is None:
            return False
        conn = self._remote.conn
        if conn.up:
            return True
        probe = self._probe
        if conn.up is None and probe is not None:
            try:
                probe.result(self.config.connect_timeout)
                return True
            except Exception:
                conn.up = False
        now = time.monotonic()
        if now - self._probed_at > self.config.retry_interval:
            self._probed_at = now
            self._probe = self._remote.ping()
        return False

    def _placed(
        self, fn: OffloadedFunction[..., Any], args: tuple[Any, ...], kwargs: Any, mode: str
    ) -> tuple[str, int]:
        """(side, size) of a call in ``mode``: decided in ``auto``, else the mode's side."""
        if mode == "auto":
            return self._side(fn, args, kwargs)
        return (LOCAL if mode == "local" else REMOTE), call_size(fn, args, kwargs)

    def _side(
        self, fn: OffloadedFunction[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> tuple[str, int]:
        if (fn.wire_name, "local") in self._warned:
            return LOCAL, call_size(fn, args, kwargs)
        return self.decider.decide(fn, args, kwargs, self.server_up())

    def _tick(self) -> None:
        """From the profiler's thread: the first bandwidth probe, and an idle PING now and then."""
        remote, now = self._remote, time.monotonic()
        if remote is None or self._shutdown:
            return
        if self._probe_link and remote.conn.up:
            self._probe_link = False
            try:
                self.probe()
            except errors.OffloadError as exc:
                log.debug("bandwidth probe failed: %r", exc)
        elif now - self._probed_at > self.config.retry_interval:
            self._probed_at = now
            self._probe = remote.ping()

    def _run_local(
        self,
        fn: OffloadedFunction[..., Any],
        size: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        start = time.perf_counter()
        result = fn.__wrapped__(*args, **kwargs)
        try:
            self.decider.observe_local(fn, size, time.perf_counter() - start)
        except Exception:  # the result stands, whatever the profiler thinks
            log.warning("the profiler could not learn from a call", exc_info=True)
        return result

    def _start(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None,
        *,
        wait: bool,
        size: int | None = None,
    ) -> Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        mode = mode or fn.mode or self.config.mode
        if _is_job(fn) and not wait:
            side, size = self._placed(fn, args, kwargs, mode)
            return Job(self, fn, args, kwargs, size).start(side)
        if mode == "auto" and not wait:
            side, size = self._side(fn, args, kwargs)
            if side == REMOTE:
                return self._with_fallback(fn, args, kwargs, size)
            mode = "local"
        if mode == "local":
            if size is None:
                return self._pool().submit(fn.__wrapped__, *args, **kwargs)
            return self._pool().submit(self._run_local, fn, size, args, kwargs)
        future = running_future()
        try:
            self._require_remote().send(fn, args, kwargs, future, wait=wait, size=size)
        except errors.OffloadError as exc:
            future.set_exception(exc)
        return future

    def _with_fallback(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        size: int,
    ) -> Future[Any]:
        """A remote call whose fallback-class failure reruns it in the local pool."""
        outer = running_future()

        def done(inner: Future[Any]) -> None:
            exc = inner.exception()
            if exc is not None and _falls_back(exc):
                self._note_fallback(fn, exc)
                local = self._pool().submit(self._run_local, fn, size, args, kwargs)
                local.add_done_callback(functools.partial(chain, outer))
            else:
                chain(outer, inner)

        self._start(fn, args, kwargs, "remote", wait=False, size=size).add_done_callback(done)
        return outer

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._local_pool is None:
                self._local_pool = ThreadPoolExecutor(
                    self.config.local_workers, thread_name_prefix="offload-local"
                )
            return self._local_pool

    def _note_fallback(self, fn: OffloadedFunction[..., Any], exc: BaseException) -> None:
        reason = type(exc).__name__
        sticky = isinstance(exc, (errors.UnknownFunction, errors.VersionMismatch))
        key = (fn.wire_name, reason)
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
            if sticky:
                self._warned.add((fn.wire_name, "local"))
        if first:
            warnings.warn(
                f"offload: running {fn.wire_name} locally: {reason}: {exc}",
                RuntimeWarning,
                stacklevel=4,
            )
        log.debug("fallback to local for %s: %r", fn.wire_name, exc)


def _is_job(fn: OffloadedFunction[..., Any]) -> bool:
    """Whether calls of ``fn`` are :class:`~offload.jobs.Job` s (checkpoints or retries)."""
    return fn.checkpoint_every is not None or fn.retries > 0


def config_bps(config: Config) -> float:
    """The bandwidth assumed for a link until measured, in bytes per second."""
    return config.assumed_mbit_s * 1e6 / 8


def _falls_back(exc: BaseException) -> bool:
    """Whether an ``auto`` call that failed remotely with ``exc`` runs locally instead."""
    return isinstance(exc, FALLBACK) and not isinstance(exc, errors.UnloadableResult)
