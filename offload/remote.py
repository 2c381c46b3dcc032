"""Calls over the connection to an edge server: encoding, limits, code shipping, replies, pings.

The router decides whether a call goes to the server; :class:`Remote` takes
it there. It serializes the arguments (out-of-band buffers, lz4 where it
pays), checks the size against this client's and the server's limits, ships
the function by value when asked or when the server lacks it and allows
that, and turns the reply into an :class:`Outcome` (the value, the server's
execution time, bytes each way) or the exception. Learning from the outcome
is the router's business, not this module's; each PING's round-trip time
goes to the :class:`~offload.profiler.Link` it is given.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import zmq

from . import _exceptions as errors
from .api import OffloadedFunction
from .config import Config
from .deploy import Deployed, Provisioner
from .fleet import curve_keys
from .futures import chain, running_future, settle
from .outcome import Outcome, RunWatcher
from .profiler import Link
from .runtime import errors as errors_wire
from .runtime import protocol, serialize
from .runtime.compression import maybe_compress
from .runtime.functions import pickle_by_value
from .runtime.transport import Connection

log = logging.getLogger("offload")


class Remote:
    """One connection to ``config.server`` and the calls and pings made over it."""

    def __init__(self, config: Config, link: Link) -> None:
        self.config = config
        self._link = link
        #: The server's self-description, from its latest PONG.
        self.server_info: dict[str, Any] = {}
        #: This client's requests in flight there when that PONG came (its load counts them).
        self.calls_at_pong = 0
        #: ``offload.pongs.server_load``'s answer and the PONG it read it from.
        self.load_memo: tuple[dict[str, Any], int, Any] | None = None
        #: Deploys the apps of functions that provision on first use (``provision``).
        self.provisioner = Provisioner(self)
        #: Plain PINGs in flight (no probe bytes): they share no link time with a call.
        self._pings = 0
        self._pings_lock = threading.Lock()
        assert config.server is not None
        self._context = zmq.Context()
        self.conn = Connection(
            self._context,
            config.server,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            curve=curve_keys(config),
            # A reply: its payload, a header, and at most a PONG's probe padding.
            max_reply=max(config.max_message_size, protocol.PROBE_MAX) + 65536,
        )

    @property
    def link(self) -> Link:
        """What is known about the path to this server (RTT, bandwidth, its speed)."""
        return self._link

    @property
    def address(self) -> str:
        """The server's address."""
        return self.conn.address

    def close(self) -> None:
        """Close the connection (calls still in flight fail with ServerUnavailable)."""
        self.conn.close()
        self._context.term()

    def send(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: Future[Any],
        *,
        wait: bool,
        by_value: bool | None = None,
        resume: tuple[Any, int, float] | None = None,
        watcher: RunWatcher | None = None,
        request_id: int | None = None,
        provisioned: Deployed | None = None,
    ) -> int:
        """Send one call; its reply resolves ``future`` to an :class:`Outcome`; return its id.

        ``wait``: the calling thread will wait for the reply, and may lead the
        socket meanwhile. ``resume``: the call checkpoints, ``(state to resume
        from, checkpoints so far, interval)``; the server's job id (ACCEPTED) and
        each CHECKPOINT that streams back go to ``watcher``. A function that
        provisions on first use (:mod:`offload.deploy`) whose server lacks it has
        its app deployed first (``provisioned``: that deployment, done).
        """
        start = time.perf_counter()
        conn = self.conn
        if by_value is None:
            by_value = fn.ship_code == "always"
        provisioner = self.provisioner
        provisions = not by_value and provisioned is None and provisioner.wanted(fn)
        if provisions:  # the call is sent again, with the same id, once its app is deployed
            request_id = conn.next_id() if request_id is None else request_id
            again = functools.partial(
                self.send, fn, args, kwargs, future, wait=False, resume=resume,
                watcher=watcher, request_id=request_id,
            )  # fmt: skip
            if provisioner.lacks(fn):
                provisioner.then(fn, future, again)
                return request_id
        compress = self.config.compression == "auto"
        payload = (args, kwargs) if resume is None else (args, kwargs, *resume)
        codecs, frames = serialize.dumps(payload, compress=compress)
        # A plain call's (several servers): STARTED, and run only after our GO.
        flags = protocol.STARTS | protocol.AWAITS_GO if watcher is not None else 0
        if resume is not None:
            flags = protocol.CHECKPOINTED
        if fn.isolation == "thread":  # run in the server's process (refused unless allowed)
            flags |= protocol.INLINE
        if by_value:
            flags |= protocol.BY_VALUE
            code: Any = pickle_by_value(fn.__wrapped__)
            codec = protocol.RAW
            if compress:
                codec, code = maybe_compress(memoryview(code))
            codecs, frames = bytes([codec]) + codecs, [code, *frames]
        nbytes = sum([memoryview(f).nbytes for f in frames])
        # The server's own limit (from its PONG) too: ZeroMQ would drop the connection.
        limit = min(self.config.max_message_size, self.server_info.get("max_message_size", nbytes))
        if nbytes > limit:
            raise errors.PayloadTooLarge(
                f"call of {fn.wire_name} is {nbytes} bytes, over the max_message_size {limit} "
                f"(this client's {self.config.max_message_size}, the server's "
                f"{self.server_info.get('max_message_size', 'unknown')})"
            )
        timeout = fn.timeout or self.config.timeout
        if request_id is None:  # a retry keeps its call's id (a PAUSE names it)
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
        alone = conn.in_flight() <= self._pings  # a call learns its link only alone on it
        decode = functools.partial(self._decode, fn, start, nbytes, alone, watcher, provisioned)
        if provisions:  # it may lack the function: on UnknownFunction, deploy its app and retry
            inner = running_future()
            inner.add_done_callback(provisioner.on_unknown(fn, future, again))
            conn.request(request_id, [header, *frames], inner, decode, wait=wait)
            return request_id
        if fn.ship_code == "missing" and not by_value and self.server_info.get("code_shipping"):
            # The server may lack the function: on UnknownFunction, ship it by value.
            retry = functools.partial(
                self._retry_by_value,
                fn,
                args,
                kwargs,
                future,
                resume,
                watcher,
                request_id,
            )
            inner = running_future()
            inner.add_done_callback(retry)
            conn.request(request_id, [header, *frames], inner, decode, wait=wait)
            return request_id
        conn.request(request_id, [header, *frames], future, decode, wait=wait)
        return request_id

    def pause(self, request_id: int) -> None:
        """Ask the server to stop call ``request_id`` at its next checkpoint."""
        with contextlib.suppress(errors.ServerUnavailable):  # then it is stopped anyway
            self.conn.post([protocol.encode_header(protocol.PAUSE, request_id)])

    def withdraw(self, request_ids: Iterable[int], timeout: float) -> set[int]:
        """Take calls still queued on the server back; return the ids it withdrew.

        A call a worker has taken is not withdrawn (as a pool cannot cancel a
        running call); neither is any when the server does not answer in time.
        """
        ids = list(request_ids)
        if not ids:
            return set()
        request_id, answer = self.control({"op": "withdraw", "requests": ids})
        try:
            body, _ = answer.result(timeout)
        except Exception as exc:  # no answer, an old server: nothing was withdrawn
            self.conn.forget(request_id)
            log.debug("withdrawing %d calls from %s failed: %r", len(ids), self.address, exc)
            return set()
        withdrawn = body.get("withdrawn") if isinstance(body, dict) else None
        if not isinstance(withdrawn, list):
            return set()
        taken = {i for i in withdrawn if isinstance(i, int) and i in ids}
        for i in taken:
            self.conn.forget(i)
        return taken

    def control(self, body: dict[str, Any], extra: Sequence[Any] = ()) -> tuple[int, Future[Any]]:
        """Send a control request; its future resolves to ``(answer, extra frames)``.

        ``extra``: frames after the JSON one (a deployment's files).
        """
        future: Future[Any] = running_future()
        request_id = self.conn.next_id()
        frames = [*protocol.json_message(protocol.CONTROL, request_id, body), *extra]
        self.conn.request(request_id, frames, future, _decode_control, wait=False)
        return request_id, future

    def _retry_by_value(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: Future[Any],
        resume: tuple[Any, int, float] | None,
        watcher: RunWatcher | None,
        request_id: int,
        inner: Future[Any],
    ) -> None:
        exc = inner.exception()
        if type(exc) is errors.UnknownFunction and self.server_info.get("code_shipping"):
            try:
                self.send(
                    fn,
                    args,
                    kwargs,
                    future,
                    wait=False,
                    by_value=True,
                    resume=resume,
                    watcher=watcher,
                    request_id=request_id,
                )
            except Exception as err:
                settle(future, exc=err)
        else:
            chain(future, inner)

    def _decode(
        self,
        fn: OffloadedFunction[..., Any],
        start: float,
        sent: int,
        alone: bool,
        watcher: RunWatcher | None,
        provisioned: Deployed | None,
        header: protocol.Header,
        frames: Sequence[Any],
    ) -> Any:
        """A reply's :class:`Outcome` (or exception); ACCEPTED and CHECKPOINT go to ``watcher``."""
        kind = header.kind
        if kind == protocol.RESULT:
            buffers = [f.buffer for f in frames]
            limit = self.config.max_message_size
            try:
                received = sum([b.nbytes for b in buffers])
                if received > limit:
                    raise errors.PayloadTooLarge(f"{received} bytes, over max_message_size")
                value = serialize.loads(header.codecs, buffers, fn.allowlist, limit)
            except errors.OffloadError as exc:  # the call ran: never rerun it for this
                raise errors.UnloadableResult(f"result of {fn.wire_name}: {exc}") from exc
            return Outcome(
                value,
                time.perf_counter() - start,
                header.aux / 1e9,
                sent,
                received,
                alone and self.conn.in_flight() <= self._pings,
                provisioned,
            )
        if kind in protocol.INTERIM:
            if watcher is None:
                raise errors.ProtocolError(f"a checkpoint answered a call of {fn.wire_name}")
            if kind == protocol.ACCEPTED:
                watcher.accepted(header.aux)
                return None
            if kind == protocol.STARTED:  # marked "may have run" first, then it may run
                watcher.started()
                if header.flags & protocol.AWAITS_GO:  # held for our GO (older servers: run)
                    with contextlib.suppress(errors.ServerUnavailable):  # then it never runs
                        self.conn.post([protocol.encode_header(protocol.GO, header.request_id)])
                return None
            buffers = [f.buffer for f in frames]
            state = serialize.loads(
                header.codecs, buffers, fn.allowlist, self.config.max_message_size
            )
            nbytes = sum(b.nbytes for b in buffers)
            watcher.checkpointed(state, header.aux, *protocol.progress_of(header), nbytes)
            return None
        if kind == protocol.ERROR and frames:
            raise errors_wire.rebuild(protocol.decode_json(frames[0].buffer))
        raise errors.ProtocolError(f"unexpected reply kind {kind}")

    def ping(self, *, up: int = 0, down: int = 0, timed: bool = True) -> Future[dict[str, Any]]:
        """PING the server (with ``up`` bytes, asking ``down`` back); ``timed`` feeds the RTT.

        Never raises: a PING that cannot even be sent fails its future.
        """
        future: Future[dict[str, Any]] = running_future()
        request_id = self.conn.next_id()
        frames: list[Any] = [protocol.encode_header(protocol.PING, request_id, aux=down)]
        if up:
            frames.append(bytes(up))
        # Timed only on an idle connection that answers: behind a large transfer, a
        # PING measures the queue, not the round trip; sent while the server is lost
        # or not yet answering, it measures how long the server was away (a restart:
        # seconds in the RTT, which then keeps a returning server looking far away).
        idle = self.conn.in_flight() == 0 and self.conn.up is True
        start = time.perf_counter() if timed and idle and not (up or down) else 0.0
        if not (up or down):  # the fleet watcher's, during a call: the call is still alone
            with self._pings_lock:
                self._pings += 1
            future.add_done_callback(self._ping_done)
        try:
            self.conn.request(
                request_id, frames, future, functools.partial(self._decode_pong, start), wait=False
            )
        except errors.ServerUnavailable as exc:  # nothing to send to: the answer is no
            future.set_exception(exc)
        return future

    def _ping_done(self, _: Future[Any]) -> None:
        with self._pings_lock:
            self._pings -= 1

    def _decode_pong(
        self, start: float, header: protocol.Header, frames: Sequence[Any]
    ) -> dict[str, Any]:
        if header.kind != protocol.PONG or not frames:
            raise errors.ProtocolError(f"expected PONG, got kind {header.kind}")
        if start:
            self._link.on_rtt(time.perf_counter() - start)
        self.server_info = protocol.decode_json(frames[0].buffer)
        self._link.price_s = _price_of(self.server_info)
        self.calls_at_pong = self.conn.in_flight()  # this PING's entry is gone already
        self.conn.note_instance(self.server_info.get("instance"))
        return self.server_info


def _price_of(info: Any) -> float:
    """A site's price of a second of its time, from a PONG (0 when absent or malformed)."""
    load = info.get("load") if isinstance(info, dict) else None
    price = load.get("price_s") if isinstance(load, dict) else None
    if isinstance(price, (int, float)) and 0 < price < 1e6:
        return float(price)
    return 0.0


def _decode_control(header: protocol.Header, frames: Sequence[Any]) -> tuple[Any, list[Any]]:
    if header.kind == protocol.ERROR and frames:
        raise errors_wire.rebuild(protocol.decode_json(frames[0].buffer))
    if header.kind != protocol.CONTROL or not frames:
        raise errors.ProtocolError(f"expected CONTROL, got kind {header.kind}")
    return protocol.decode_json(frames[0].buffer), [f.buffer for f in frames[1:]]
