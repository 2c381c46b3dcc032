"""Admission: everything the server can judge about a call from its header, without unpickling.

A call that passes becomes a :class:`Job`; one that does not is refused with
the :class:`~offload.OffloadError` the client will raise (the server sends it
as its wire code, see :func:`offload.runtime.errors.error_reply`).
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from offload._exceptions import (
    CodeShippingDisabled,
    InlineRefused,
    PayloadTooLarge,
    ProtocolError,
    UnknownFunction,
    VersionMismatch,
)
from offload.runtime import protocol
from offload.runtime.states import JobState

from .channel import MAX_FRAMES
from .config import ServerConfig
from .registry import Registry

_HELD = protocol.STARTS | protocol.AWAITS_GO  # STARTED, then GO before it runs


@dataclass(eq=False)
class Job:
    """One accepted call waiting for, or running on, a worker."""

    id: int
    client: bytes
    request_id: int
    frames: list[zmq.Frame]  # client header, then payload
    timeout: float
    checkpointed: bool = False  # it takes checkpoints, so it can be asked to stop at one
    tells_start: bool = False  # its client wants STARTED when a worker takes it
    awaits_go: bool = False  # ... and then waits for the client's GO (.starts)
    owner: str = ""  # the client's CurveZMQ public key (Z85); "" on an insecure server
    function: str = ""
    bytes_in: int = 0
    state: JobState = JobState.QUEUED  # then running, and one of the FINISHED states
    stored: bool = False  # its payload is in the store (it waited in the queue)
    keep: bool = False  # keep its result whatever happens (queued before a restart)
    cpu_s: float = 0.0  # CPU seconds its worker spent on it (known once it has ended)
    held: int = 0  # bytes charged to its client's budget until it ends (edge_server.budget)
    inline: bool = False  # run in a thread of the server process (edge_server.inline)


def admit(
    client: bytes,
    owner: str,
    header: protocol.Header,
    frames: list[zmq.Frame],
    registry: Registry,
    config: ServerConfig,
    job_id: int,
) -> Job:
    """Check a client message (``frames``: identity, header, payload) and make it job ``job_id``.

    A call the server will not run raises the offload error its client is to see.
    """
    if header.kind != protocol.CALL:
        raise ProtocolError(f"a client may not send message kind {header.kind}")
    payload = frames[2:]
    if len(payload) > MAX_FRAMES - 8:
        raise ProtocolError(f"{len(payload)} payload frames; at most {MAX_FRAMES - 8}")
    if len(payload) != len(header.codecs) or not payload:
        raise ProtocolError(f"{len(payload)} payload frames, {len(header.codecs)} codecs")
    size = sum(len(f) for f in payload)
    if size > config.max_message_size:
        raise PayloadTooLarge(
            f"call is {size} bytes; this server accepts {config.max_message_size}",
        )
    inline = bool(header.flags & protocol.INLINE)
    if inline and not config.allow_inline:
        raise InlineRefused(
            f"{header.name!r} asks to run inline (isolation='thread'), in the server's process; "
            "this server runs calls in worker processes only (start it with --allow-inline)"
        )
    if inline and header.flags & (protocol.BY_VALUE | protocol.CHECKPOINTED):
        raise InlineRefused(
            f"{header.name!r}: shipped code and checkpointed calls never run inline, "
            "only in worker processes"
        )
    if header.flags & protocol.BY_VALUE:
        if not config.allow_code_shipping:
            raise CodeShippingDisabled(
                f"{header.name!r} was shipped by value but this server does not "
                "accept code (start it with --allow-code-shipping)",
            )
    else:
        expected = registry.fingerprints.get(header.name)
        if expected is None:
            raise UnknownFunction(f"this server holds no function {header.name!r}")
        if expected != header.fingerprint:
            raise VersionMismatch(
                f"the server's {header.name!r} has fingerprint {expected.hex()}, "
                f"the client's {header.fingerprint.hex()}: deploy the same code",
            )
    cap = config.max_call_seconds
    timeout = min(header.aux / 1e6, cap) if header.aux else cap
    return Job(
        job_id,
        client,
        header.request_id,
        frames[1:],
        timeout,
        checkpointed=bool(header.flags & protocol.CHECKPOINTED),
        tells_start=bool(header.flags & protocol.STARTS),
        awaits_go=header.flags & _HELD == _HELD,
        owner=owner,
        function=header.name,
        bytes_in=size,
        inline=inline,
    )
