"""A worker process: runs one job at a time, in isolation from the server and other jobs.

Messages with the server (over a :class:`~edge_server.channel.Channel`)::

    worker -> server   READY  [b"R", identity]
    server -> worker   JOB    [b"J", job id, client header, arena name, spans, *inline frames]
    worker -> server   DONE   [b"D", job id, reply header, arena name, spans, *inline frames]
    server -> worker   FREE   [b"F", arena name]    that result arena may be written again
    server -> worker   STOP   [b"S"]

The client's header is forwarded untouched; the reply header is built here,
so the server only routes. Arguments are loaded with the restricted unpickler;
numpy arrays among them point into the in arena, which stays valid until the
job ends (a function must not keep a reference to an argument buffer across
calls).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle

from offload._exceptions import (
    CODE_OF,
    OffloadError,
    ProtocolError,
    SerializationError,
    UnknownFunction,
)
from offload.runtime import errors, protocol, serialize
from offload.runtime.compression import decompress

from .arena import ArenaPool, ArenaReader
from .channel import Channel
from .config import ServerConfig
from .registry import Registry

log = logging.getLogger("edge_server.worker")


def run_worker(
    identity: bytes, backend: str, config: ServerConfig, arena_directory: str, arena_prefix: str
) -> None:
    """Entry point of a worker process (started with the ``spawn`` method)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    registry = Registry.load(config.apps, config.types)
    directory = Path(arena_directory)
    reader = ArenaReader(directory)
    results = ArenaPool(directory, arena_prefix)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(backend)
    channel = Channel(sock)
    channel.send([b"R", identity])
    try:
        while True:
            try:
                frames = channel.recv()
            except EOFError:
                return
            kind = bytes(frames[0])
            if kind == b"S":
                return
            if kind == b"F":
                results.release(bytes(frames[1]))
                continue
            job_id, header_frame, name, spans = (bytes(f) for f in frames[1:5])
            payload = reader.unpack(name, spans, frames[5:])
            try:
                reply = execute(header_frame, payload, registry, config)
            except Exception as exc:  # a bug or a hostile value: answer, do not die
                log.exception("job failed outside the function")
                reply = protocol.error_message(
                    protocol.peek_request_id(header_frame) or 0,
                    "protocol",
                    f"worker: {exc!r}"[:2000],
                )
            del payload
            arena, reply_spans, inline = results.pack(reply[1:])
            channel.send([b"D", job_id, reply[0], arena, reply_spans, *inline])
    finally:
        results.close()
        channel.close()


def execute(
    header_frame: bytes, payload: list[memoryview], registry: Registry, config: ServerConfig
) -> list[Any]:
    """Run the call a CALL message describes; return the reply frames (header first)."""
    header = protocol.decode_header(header_frame)
    request_id = header.request_id
    try:
        fn, codecs, payload = _resolve(header, payload, registry, config)
        args, kwargs = _load_arguments(codecs, payload, registry, config)
    except OffloadError as exc:
        return protocol.error_message(request_id, CODE_OF.get(type(exc), "protocol"), str(exc))
    start = time.perf_counter_ns()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # the function's failure is the caller's to see
        return errors.exception_message(request_id, exc)
    elapsed = time.perf_counter_ns() - start
    try:
        codecs, frames = serialize.dumps(value, compress=config.compression == "auto")
    except SerializationError as exc:
        return protocol.error_message(request_id, "unloadable_result", f"result: {exc}")
    return [
        protocol.encode_header(protocol.RESULT, request_id, aux=elapsed, codecs=codecs),
        *frames,
    ]


def _resolve(
    header: protocol.Header, payload: list[memoryview], registry: Registry, config: ServerConfig
) -> tuple[Any, bytes, list[memoryview]]:
    codecs = header.codecs
    if not header.flags & protocol.BY_VALUE:
        fn = registry.functions.get(header.name)
        if fn is None:
            raise UnknownFunction(f"this worker does not hold {header.name!r}")
        return fn.__wrapped__, codecs, payload
    if not payload:
        raise ProtocolError("BY_VALUE call without a function frame")
    code = decompress(codecs[0], payload[0], config.max_message_size)
    try:
        # Code shipping runs the client's code by definition; the server only
        # accepts it when started with --allow-code-shipping.
        fn = cloudpickle.loads(code)
    except Exception as exc:
        raise SerializationError(f"cannot load shipped function: {exc!r}") from exc
    if not callable(fn):
        raise SerializationError("shipped object is not callable")
    return fn, codecs[1:], payload[1:]


def _load_arguments(
    codecs: bytes, payload: list[memoryview], registry: Registry, config: ServerConfig
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    loaded = serialize.loads(codecs, payload, registry.allowlist, config.max_message_size)
    if (
        not isinstance(loaded, tuple)
        or len(loaded) != 2
        or not isinstance(loaded[0], tuple)
        or not isinstance(loaded[1], dict)
    ):
        raise ProtocolError("CALL payload is not an (args, kwargs) pair")
    return loaded


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the server dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            log.debug("prctl unavailable; worker will not follow its parent's death")
    if os.getppid() == 1:
        os._exit(0)
