"""A worker process: runs one job at a time, in isolation from the server and other jobs.

Messages with the server (over a :class:`~edge_server.channel.Channel`)::

    worker -> server   READY  [b"R", identity, CPU ns used so far]
    server -> worker   JOB    [b"J", job id, client header, arena name, spans, *inline frames]
    worker -> server   CKPT   [b"C", job id, CHECKPOINT header, *state frames]
    worker -> server   DONE   [b"D", job id, CPU ns used so far, reply header, arena name,
                               spans, *inline]   (the server meters the job's CPU as the
                               difference from the count it had before)
    worker -> server   LAST   [b"E", ...as DONE]   the job passed a resource limit, or left
                                                    threads or open files behind
                                                    (:mod:`.clean`): this worker exits
                                                    after it (to be replaced)
    server -> worker   RESUME [b"K", CHECKPOINT header, *state frames]   the next job resumes
                                                    from this checkpoint, not the one in its
                                                    call (a site job moved to another lender)
    server -> worker   FREE   [b"F", arena name]    that result arena may be written again
    server -> worker   TRIM   [b"T"]                idle a while: give back large arenas
    server -> worker   STOP   [b"S"]

The client's header is forwarded untouched; the reply and checkpoint headers
are built here, so the server only routes. A checkpointed job is asked to
stop at its next checkpoint by a signal that names the job (:mod:`.stopsig`:
the client paused it, or the server is closing); the handler only sets a flag
on that job's session. Arguments are loaded with the restricted unpickler;
numpy arrays among them point into the in arena, which stays valid until the
job ends (a function must not keep a reference to an argument buffer across
calls).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from offload._exceptions import (
    JobStopped,
    LimitExceeded,
    OffloadError,
    PayloadTooLarge,
    ProtocolError,
    SerializationError,
    UnknownFunction,
    UnloadableResult,
    VersionMismatch,
)
from offload.runtime import checkpoint, errors, protocol, serialize
from offload.runtime.compression import decompress

from . import stopsig
from .arena import ArenaPool, ArenaReader
from .channel import Channel
from .clean import Baseline
from .config import ServerConfig
from .limits import CpuTimeExceeded, Limits
from .registry import Registry

log = logging.getLogger("edge_server.worker")


def run_worker(
    identity: bytes,
    backend: str,
    config: ServerConfig,
    arena_directory: str,
    arena_prefix: str,
    deployed: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (),
) -> None:
    """Entry point of a worker process (started with the ``spawn`` method).

    ``deployed``: the apps deployed to the server (:mod:`edge_server.deploy`),
    as (directory, modules served, every module); each directory goes on
    ``sys.path`` after the server's own entries.
    """
    global _slot
    _die_with_parent()
    for ignored in (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(ignored, signal.SIG_IGN)  # the server decides when workers stop
    for number in stopsig.all_signals():
        signal.signal(number, _ask_to_stop)
    registry = Registry.load(config.apps, config.types, deployed)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(backend)  # first: the server's directory may be in what isolate() covers
    channel = Channel(sock)
    limits = Limits(config, arena_prefix)
    directory = limits.isolate(Path(arena_directory))
    reader = ArenaReader(directory)
    results = ArenaPool(directory, arena_prefix)
    limits.install()
    baseline = Baseline()
    jobs_seen = 0  # as the server counts the jobs it hands this worker (stopsig)
    resume_from: list[Any] | None = None  # a RESUME for the next job
    channel.send([b"R", identity, time.process_time_ns().to_bytes(8, "big")])
    try:
        while True:
            try:
                frames = channel.recv()
            except (EOFError, ConnectionResetError):  # the server is gone (SIGKILL: reset)
                return
            kind = bytes(frames[0])
            if kind == b"S":
                return
            if kind == b"F":
                results.release(bytes(frames[1]))
                continue
            if kind == b"T":
                results.trim()
                continue
            if kind == b"K":
                resume_from = [bytes(f) for f in frames[1:]]
                continue
            job_id, header_frame, name, spans = map(bytes, frames[1:5])
            payload = reader.unpack(name, spans, frames[5:])
            _slot, jobs_seen = jobs_seen % stopsig.SLOTS, jobs_seen + 1

            def ship(state_frames: list[Any], job_id: bytes = job_id) -> None:
                channel.send([b"C", job_id, *state_frames])

            try:
                reply = execute(header_frame, payload, registry, config, ship, limits, resume_from)
            except Exception as exc:  # a bug or a hostile value: answer, do not die
                log.exception("job failed outside the function")
                reply = errors.error_reply(
                    protocol.peek_request_id(header_frame) or 0,
                    ProtocolError(f"worker: {exc!r}"[:2000]),
                )
            del payload
            resume_from = None
            arena, reply_spans, inline = results.pack(reply[1:])
            left = baseline.leftovers()  # kills the processes the job left, first
            over = limits.passed or limits.left or left
            cpu_ns = time.process_time_ns().to_bytes(8, "big")
            channel.send(
                [b"E" if over else b"D", job_id, cpu_ns, reply[0], arena, reply_spans, *inline]
            )
            if over:
                # A fresh worker takes this one's place. Leave at once: threads the job
                # left would hold up a normal exit, and the result arena must stay until
                # the server has read it (it removes this worker's arenas when it reaps it).
                log.info("worker leaves after its job: %s", over)
                channel.close()
                os._exit(0)
    finally:
        results.close()
        channel.close()


def execute(
    header_frame: bytes,
    payload: list[memoryview],
    registry: Registry,
    config: ServerConfig,
    ship: Callable[[list[Any]], None] | None = None,
    limits: Limits | None = None,
    resume_from: list[Any] | None = None,
) -> list[Any]:
    """Run the call a CALL message describes; return the reply frames (header first).

    ``ship`` sends a checkpoint's frames (header first) on their way to the client.
    ``resume_from``: a CHECKPOINT message (header, state frames) this run of a
    checkpointed call starts from instead of the state in its call (a site job
    that moved from a lost lender); loaded with the same restricted unpickler.
    """
    header = protocol.decode_header(header_frame)
    request_id = header.request_id
    try:
        fn, codecs, payload = _resolve(header, payload, registry, config)
        args, kwargs, resume = _load_arguments(
            codecs, payload, registry, config, header.flags & protocol.CHECKPOINTED
        )
        if resume is not None and resume_from:
            resume = _resumed(resume_from, resume[2], registry, config)
    except OffloadError as exc:
        return errors.error_reply(request_id, exc)
    session = None
    if resume is not None:
        state, count, every = resume
        session = checkpoint.Session(
            state, every, functools.partial(_ship_state, ship, request_id, config), count
        )
    start = time.perf_counter_ns()
    global _running
    _running = session  # first: a stop for this job from now on reaches the session
    early = _stop_early.pop(_slot, None)
    _stop_early.clear()  # stops for earlier jobs that arrived late: ignored
    if session is not None and early is not None:
        session.stop = early
    if limits is not None:
        limits.start_job()
    try:
        if session is None:
            value = fn(*args, **kwargs)
        else:
            with checkpoint.running(session):
                value = fn(*args, **kwargs)
    except (CpuTimeExceeded, MemoryError, OSError, RuntimeError) as exc:
        passed = limits.exceeded(exc) if limits is not None else None
        if passed is None:
            return errors.exception_message(request_id, exc)
        limits.passed = passed  # type: ignore[union-attr]
        return errors.error_reply(request_id, LimitExceeded(f"{header.name}: {passed}"))
    except checkpoint.Stopped as stop:  # at a safe point, its state already shipped
        return errors.error_reply(request_id, JobStopped(str(stop.args[0])))
    except PayloadTooLarge as exc:  # a checkpoint too large to ship
        return errors.error_reply(request_id, exc)
    except BaseException as exc:  # the function's failure is the caller's to see
        return errors.exception_message(request_id, exc)
    finally:
        if limits is not None:
            limits.end_job()  # first: no SIGXCPU may land in what follows
        _running = None
    elapsed = time.perf_counter_ns() - start
    try:
        codecs, frames = serialize.dumps(value, compress=config.compression == "auto")
    except SerializationError as exc:
        return errors.error_reply(request_id, UnloadableResult(f"result: {exc}"))
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
        if fn.fingerprint != header.fingerprint:  # a lender's copy, or deployed since it queued
            raise VersionMismatch(
                f"this worker's {header.name!r} has fingerprint {fn.fingerprint.hex()}, "
                f"the call's {header.fingerprint.hex()}: deploy the same code"
            )
        return fn.__wrapped__, codecs, payload
    if not payload:
        raise ProtocolError("BY_VALUE call without a function frame")
    code = decompress(codecs[0], payload[0], load_budget(config))
    try:
        # Code shipping runs the client's code by definition; the server only
        # accepts it when started with --allow-code-shipping.
        fn = cloudpickle.loads(code)
    except Exception as exc:
        raise SerializationError(f"cannot load shipped function: {exc!r}") from exc
    if not callable(fn):
        raise SerializationError("shipped object is not callable")
    return fn, codecs[1:], payload[1:]


def _resumed(
    frames: list[Any], every: float, registry: Registry, config: ServerConfig
) -> tuple[Any, int, float]:
    """(state, count, every) from a CHECKPOINT message's frames (restricted loading)."""
    header = protocol.decode_header(frames[0])
    if header.kind != protocol.CHECKPOINT:
        raise ProtocolError("RESUME is not a checkpoint")
    views = [memoryview(f) for f in frames[1:]]
    state = serialize.loads(header.codecs, views, registry.allowlist, load_budget(config))
    return state, int(header.aux), every


def load_budget(config: ServerConfig) -> int:
    """Bytes a call's arguments may take once decompressed, and to unpickle.

    ``max_message_size``, or the job's memory limit if that is smaller: an
    lz4 or pickle bomb is refused before it costs the worker more than the
    job itself could take.
    """
    if config.limit_memory is None:
        return config.max_message_size
    return min(config.max_message_size, config.limit_memory)


def _load_arguments(
    codecs: bytes,
    payload: list[memoryview],
    registry: Registry,
    config: ServerConfig,
    checkpointed: int,
) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, int, float] | None]:
    """(args, kwargs, (state, count, every) or None) from a CALL's payload."""
    loaded = serialize.loads(codecs, payload, registry.allowlist, load_budget(config))
    size = 5 if checkpointed else 2
    if (
        not isinstance(loaded, tuple)
        or len(loaded) != size
        or not isinstance(loaded[0], tuple)
        or not isinstance(loaded[1], dict)
    ):
        raise ProtocolError(f"CALL payload is not a tuple of {size} (args, kwargs, ...)")
    if not checkpointed:
        return loaded[0], loaded[1], None
    _, _, state, count, every = loaded
    if type(count) is not int or not isinstance(every, (int, float)) or every < 0:
        raise ProtocolError("CALL checkpoint count or interval malformed")
    return loaded[0], loaded[1], (state, count, float(every))


#: The session of the checkpointed job running now, for the stop signals.
_running: checkpoint.Session | None = None


#: The stop-signal slot of the job this worker runs now (:mod:`.stopsig`).
_slot = 0

#: Stops asked for before their job's session existed, by slot (the job adopts its own).
_stop_early: dict[int, str] = {}


def _ask_to_stop(signum: int, frame: Any) -> None:
    kind, slot = stopsig.decode(signum)
    why = stopsig.REASONS[kind]
    session = _running
    if session is not None and slot == _slot:
        session.stop = why
    else:  # for a job whose session does not exist yet, or a late one (then ignored)
        _stop_early[slot] = why


def _ship_state(
    ship: Callable[[list[Any]], None] | None,
    request_id: int,
    config: ServerConfig,
    state: Any,
    count: int,
    done: int,
    total: int,
) -> None:
    """Serialize a checkpoint and send it towards the client (a bad state fails the job)."""
    if ship is None:
        return
    codecs, frames = serialize.dumps(state, compress=config.compression == "auto")
    size = sum(memoryview(f).nbytes for f in frames)
    if size > config.max_message_size:
        raise PayloadTooLarge(
            f"checkpoint of {size} bytes is over the max_message_size {config.max_message_size}"
        )
    told = protocol.progress_field(done, total)
    header = protocol.encode_header(
        protocol.CHECKPOINT, request_id, aux=count, fingerprint=told, codecs=codecs
    )
    ship([header, *frames])


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
