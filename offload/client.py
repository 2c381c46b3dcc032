"""The client: a :class:`concurrent.futures.Executor` that runs each call here or on the server.

Per call: the mode (the function's, else the client's) and, for ``auto``,
the :class:`~offload.profiler.Decider` choose the side. Remote calls go over
one shared :class:`~offload.runtime.transport.Connection`; local ones run in
the calling thread (``f(x)``) or a thread pool (``submit``). In ``auto`` mode
a call the server cannot take (unreachable, busy, unknown function, other
code version, too large) runs locally instead, with one warning per function
and reason, so the app keeps working offline. Failures of the function itself
are never retried: they are raised as the function's own exception type.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import zmq

from . import _exceptions as errors
from .api import OffloadedFunction, as_offloaded
from .config import Config
from .profiler import LOCAL, REMOTE, AdaptiveDecider, Decider, Explanation, Profiler
from .profiler.sizes import call_size
from .runtime import errors as errors_wire
from .runtime import protocol, serialize
from .runtime.compression import maybe_compress
from .runtime.functions import pickle_by_value
from .runtime.transport import Connection

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
            prior_bps=config.assumed_mbit_s * 1e6 / 8,
            interval=config.profile_interval,
            address=config.server or "",
        )
        #: Chooses the side of ``auto`` calls and learns from finished ones.
        self.decider: Decider = decider or AdaptiveDecider(self.profiler, config.policy())
        self._lock = threading.Lock()
        self._local_pool: ThreadPoolExecutor | None = None
        self._warned: set[tuple[str, str]] = set()
        self._shutdown = False
        self._context: zmq.Context | None = None
        self._conn: Connection | None = None
        self._probe: Future[dict[str, Any]] | None = None
        self._probed_at = 0.0
        self.server_info: dict[str, Any] = {}
        if config.server:
            self._context = zmq.Context()
            self._conn = Connection(
                self._context,
                config.server,
                heartbeat_interval=config.heartbeat_interval,
                heartbeat_timeout=config.heartbeat_timeout,
            )
            self._conn.on_rtt = self.profiler.link.on_rtt
            self._probe = self._start_ping(timed=False)  # its time includes connecting
            if config.probe_bytes and self.profiler.link.up_bps.mean is None:
                self._probe.add_done_callback(lambda f: f.exception() or self.probe())
        self.profiler.start(self._tick if self._conn is not None else None)

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

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; with ``wait``, let calls in flight finish first."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        if self._local_pool is not None:
            self._local_pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self.profiler.stop()
        if self._conn is not None:
            if wait:
                self._conn.drain(self.config.heartbeat_timeout + 1)
            self._conn.close()
        if self._context is not None:
            self._context.term()

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
            if side != REMOTE:
                return self._run_local(fn, size, args, kwargs)
        else:
            size = call_size(fn, args, kwargs)
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
        for up, down in ((nbytes, 0), (0, nbytes)):
            start = time.perf_counter()
            self._start_ping(up=up, down=down).result(timeout)
            link.on_probe(up, down, time.perf_counter() - start)
        return link.snapshot()

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the server to answer; return its self-description or raise ServerUnavailable."""
        if self._conn is None:
            raise errors.ServerUnavailable("no server configured")
        try:
            return self._start_ping().result(timeout or self.config.connect_timeout)
        except TimeoutError as exc:
            raise errors.ServerUnavailable(f"{self._conn.address} did not answer") from exc

    def server_up(self) -> bool:
        """Whether the server currently answers; probes again every ``retry_interval``."""
        conn = self._conn
        if conn is None:
            return False
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
            self._probe = self._start_ping()
        return False

    def _side(
        self, fn: OffloadedFunction[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> tuple[str, int]:
        if (fn.wire_name, "local") in self._warned:
            return LOCAL, call_size(fn, args, kwargs)
        return self.decider.decide(fn, args, kwargs, self.server_up())

    def _tick(self) -> None:
        """From the profiler's thread: an idle PING now and then (RTT, liveness)."""
        if time.monotonic() - self._probed_at > self.config.retry_interval and not self._shutdown:
            self._probed_at = time.monotonic()
            self._probe = self._start_ping()

    def _run_local(
        self,
        fn: OffloadedFunction[..., Any],
        size: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        start = time.perf_counter()
        result = fn.__wrapped__(*args, **kwargs)
        self.decider.observe_local(fn, size, time.perf_counter() - start)
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
        if mode == "auto" and not wait:
            side, size = self._side(fn, args, kwargs)
            if side == REMOTE:
                return self._with_fallback(fn, args, kwargs, size)
            mode = "local"
        if mode == "local":
            if size is None:
                return self._pool().submit(fn.__wrapped__, *args, **kwargs)
            return self._pool().submit(self._run_local, fn, size, args, kwargs)
        future = _running_future()
        try:
            self._send_call(fn, args, kwargs, future, wait=wait, size=size)
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
        outer = _running_future()

        def done(inner: Future[Any]) -> None:
            exc = inner.exception()
            if exc is not None and _falls_back(exc):
                self._note_fallback(fn, exc)
                local = self._pool().submit(self._run_local, fn, size, args, kwargs)
                local.add_done_callback(functools.partial(_chain, outer))
            else:
                _chain(outer, inner)

        self._start(fn, args, kwargs, "remote", wait=False, size=size).add_done_callback(done)
        return outer

    def _send_call(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: Future[Any],
        *,
        wait: bool,
        by_value: bool | None = None,
        size: int | None = None,
    ) -> None:
        start = time.perf_counter()
        conn = self._conn
        if conn is None:
            raise errors.ServerUnavailable("no server configured (offload.configure(server=...))")
        if by_value is None:
            by_value = fn.ship_code == "always"
        compress = self.config.compression == "auto"
        codecs, frames = serialize.dumps((args, kwargs), compress=compress)
        flags = 0
        if by_value:
            flags = protocol.BY_VALUE
            code: Any = pickle_by_value(fn.__wrapped__)
            codec = protocol.RAW
            if compress:
                codec, code = maybe_compress(memoryview(code))
            codecs, frames = bytes([codec]) + codecs, [code, *frames]
        nbytes = sum(memoryview(f).nbytes for f in frames)
        # The server's own limit (from its PONG) too: ZeroMQ would drop the connection.
        limit = min(self.config.max_message_size, self.server_info.get("max_message_size", nbytes))
        if nbytes > limit:
            raise errors.PayloadTooLarge(
                f"call of {fn.wire_name} is {nbytes} bytes, over the max_message_size {limit} "
                f"(this client's {self.config.max_message_size}, the server's "
                f"{self.server_info.get('max_message_size', 'unknown')})"
            )
        timeout = fn.timeout or self.config.timeout
        request_id = conn.next_id()
        header = protocol.encode_header(
            protocol.CALL,
            request_id,
            flags=flags,
            aux=int(timeout * 1e6) if timeout else 0,
            fingerprint=protocol.NO_FINGERPRINT if by_value else fn.fingerprint,
            name=fn.wire_name.encode(),
            codecs=codecs,
        )
        decode = functools.partial(self._decode, fn, size, start, nbytes)
        if fn.ship_code == "missing" and not by_value and self.server_info.get("code_shipping"):
            # The server may lack the function: on UnknownFunction, ship it by value.
            retry = functools.partial(self._retry_by_value, fn, args, kwargs, future, size)
            inner = _running_future()
            inner.add_done_callback(retry)
            conn.request(request_id, [header, *frames], inner, decode, wait=wait)
            return
        conn.request(request_id, [header, *frames], future, decode, wait=wait)

    def _retry_by_value(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: Future[Any],
        size: int | None,
        inner: Future[Any],
    ) -> None:
        exc = inner.exception()
        if type(exc) is errors.UnknownFunction and self.server_info.get("code_shipping"):
            try:
                self._send_call(fn, args, kwargs, future, wait=False, by_value=True, size=size)
            except Exception as err:
                future.set_exception(err)
        else:
            _chain(future, inner)

    def _decode(
        self,
        fn: OffloadedFunction[..., Any],
        size: int | None,
        start: float,
        sent: int,
        header: protocol.Header,
        frames: Sequence[Any],
    ) -> Any:
        """A reply's value (or exception); a result also teaches the profiler (when sized)."""
        if header.kind == protocol.RESULT:
            buffers = [f.buffer for f in frames]
            try:
                received = sum(b.nbytes for b in buffers)
                if received > self.config.max_message_size:
                    raise errors.PayloadTooLarge(f"{received} bytes, over max_message_size")
                value = serialize.loads(
                    header.codecs, buffers, fn.allowlist, self.config.max_message_size
                )
            except errors.OffloadError as exc:  # the call ran: never rerun it for this
                raise errors.UnloadableResult(f"result of {fn.wire_name}: {exc}") from exc
            if size is not None:
                turnaround = time.perf_counter() - start
                self.decider.observe_remote(fn, size, turnaround, header.aux / 1e9, sent, received)
            return value
        if header.kind == protocol.ERROR and frames:
            raise errors_wire.rebuild(protocol.decode_json(frames[0].buffer))
        raise errors.ProtocolError(f"unexpected reply kind {header.kind}")

    def _start_ping(
        self, *, up: int = 0, down: int = 0, timed: bool = True
    ) -> Future[dict[str, Any]]:
        """PING the server (with ``up`` bytes, asking ``down`` back); ``timed`` feeds the RTT."""
        assert self._conn is not None
        future: Future[dict[str, Any]] = _running_future()
        request_id = self._conn.next_id()
        frames: list[Any] = [protocol.encode_header(protocol.PING, request_id, aux=down)]
        if up:
            frames.append(bytes(up))
        start = time.perf_counter() if timed and not (up or down) else 0.0
        self._conn.request(
            request_id, frames, future, functools.partial(self._decode_pong, start), wait=False
        )
        return future

    def _decode_pong(
        self, start: float, header: protocol.Header, frames: Sequence[Any]
    ) -> dict[str, Any]:
        if header.kind != protocol.PONG or not frames:
            raise errors.ProtocolError(f"expected PONG, got kind {header.kind}")
        if start:
            self.profiler.link.on_rtt(time.perf_counter() - start)
        self.server_info = protocol.decode_json(frames[0].buffer)
        if self._conn is not None:
            self._conn.note_instance(self.server_info.get("instance"))
        return self.server_info

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


def _falls_back(exc: BaseException) -> bool:
    """Whether an ``auto`` call that failed remotely with ``exc`` runs locally instead."""
    return isinstance(exc, FALLBACK) and not isinstance(exc, errors.UnloadableResult)


def _running_future() -> Future[Any]:
    """A future already marked running: remote calls cannot be cancelled once sent."""
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    return future


def _chain(outer: Future[Any], inner: Future[Any]) -> None:
    if outer.done():
        return
    exc = inner.exception()
    if exc is not None:
        outer.set_exception(exc)
    else:
        outer.set_result(inner.result())
