"""Wire protocol: the header frame every message starts with, and its payload frames.

A message is a ZeroMQ multipart message. The first frame is the header, a
fixed binary layout (network byte order, never pickle, so a server can route
and reject a message without deserializing anything); the frames after it are
the payload, whose meaning depends on the kind.

Header layout (``HEADER_PREFIX`` plus variable tail)::

    offset  size  field
    0       4     magic        b"OFLD"
    4       1     version      protocol version, currently 1; others are refused
    5       1     kind         CALL=1 RESULT=2 ERROR=3 PING=4 PONG=5
                               CHECKPOINT=6 PAUSE=7 CONTROL=8 ACCEPTED=9 STARTED=10
                               GO=11
    6       2     flags        bit 0 BY_VALUE: payload frame 0 is the function
                               itself (cloudpickle), shipped because the server
                               may not hold it (the "traditional offloading" path);
                               bit 1 CHECKPOINTED: the call takes checkpoints;
                               bit 2 ALIVE (PING): payload frame 0 is the routing
                               id of the sender's data socket, which is alive (a
                               heartbeat from a second socket, so that it never
                               waits behind a large upload);
                               bit 3 STARTS (CALL): say STARTED when a worker is about
                               to take it;
                               bit 4 INLINE (CALL): run it in a thread of the server
                               process, not a worker process
                               (``@offload(isolation="thread")``); a server that does
                               not allow it (``--allow-inline``) answers ERROR
                               ``inline_refused`` and never runs it otherwise;
                               bit 5 AWAITS_GO (CALL, with STARTS): after STARTED, hold
                               the call until the client says GO (a server that
                               ignores the bit runs it at once, as before); (STARTED):
                               the call is held: answer GO
    8       8     request id   chosen by the client, echoed in the reply
    16      8     aux          CALL: timeout in microseconds (0 = none);
                               RESULT: server-side execution time in nanoseconds;
                               CHECKPOINT: the checkpoint's sequence number;
                               ACCEPTED: the server's job id
                               PING: bytes of padding asked for in the PONG
                               (a bandwidth probe; at most PROBE_MAX)
    24      16    fingerprint  CALL: hash of the function's code; CHECKPOINT: how
                               far the run has come, ``done`` and ``total`` (8
                               bytes each; zeros: not told); zeros otherwise
    40      2     name length  n, the length of the UTF-8 function name
    42      n     name         CALL: "module:qualname"; empty otherwise
    42+n    k     codecs       one byte per payload frame: 0 raw, 1 lz4 block

Payload by kind:

* CALL: ``[function (BY_VALUE only)] + [pickle stream, *out-of-band buffers]``
  of the tuple ``(args, kwargs)``, or with CHECKPOINTED ``(args, kwargs,
  state, count, every)``: the state to resume from (``None`` to start), the
  checkpoints taken so far, and seconds between checkpoints. Buffers are
  pickle protocol 5 ``PickleBuffer`` contents, one frame each, never copied
  into the stream.
* CHECKPOINT (server to client, any number before the RESULT or ERROR of
  the same request id, in order): the pickle stream and buffers of a state.
* ACCEPTED (server to client, for a CHECKPOINTED call only, before any
  CHECKPOINT of it): no payload; the call is queued as the server's job
  ``aux``, the id its job records and control requests use.
* STARTED (server to client, for a CALL with STARTS, when a worker (or an
  inline thread) is about to take it): no payload. The call does not run yet:
  it holds its worker until the client answers GO. A call whose server is lost
  after STARTED may have run, so it is not sent elsewhere unless it may run
  twice (issue 13: failover never runs a function twice without ``retries``);
  before it, it certainly did not. With AWAITS_GO on both (the server echoes
  the bit when it holds the call) the call runs only after GO, so a STARTED
  lost in a SIGKILLed server's queue cannot hide a run; without it (an older
  client or server, or a Dask site, which runs it at once) that window stays.
* GO (client to server, same request id, answering a STARTED with AWAITS_GO):
  no payload.
  The client has recorded that the call may run; now the server hands it to
  its worker. A GO for a request that is unknown, finished, not waiting, or
  of another client's connection is ignored. A call whose client goes silent
  for ``--client-timeout`` without GO ends cancelled, never run. Sequence::

      client                        server
      CALL (STARTS|AWAITS_GO) ──▶   queued; a worker is free for it
                         ◀───────   STARTED (AWAITS_GO): the worker is held
      marks "may have run"
      GO                 ───────▶   handed to the worker
                         ◀───────   RESULT or ERROR

* PAUSE (client to server): stop the call of this request id at its next
  checkpoint; it ends with ERROR ``stopped`` after its last CHECKPOINT.
* RESULT: ``[pickle stream, *out-of-band buffers]`` of the return value.
* ERROR: one UTF-8 JSON frame ``{"code", "message", "type", "args", "traceback"}``;
  ``code`` is a key of :data:`offload._exceptions.ERROR_CODES`.
* CONTROL (client to server): one JSON frame ``{"op": ..., ...}`` asking
  about the client's jobs (``jobs``, ``status``, ``result``, ``wait``,
  ``cancel``, ``usage``, ``health``; see :mod:`edge_server.ledger`). The
  answer is a CONTROL with one JSON frame (for ``result``: the job, then the
  job's kept reply, header frame and payload, as the worker produced it), or
  an ERROR.
* PING: no payload, or one frame of padding (a probe of the upload).
  PONG: one JSON frame describing the server, then the padding the PING's
  ``aux`` asked for, if any (a probe of the download).
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

from .._exceptions import ProtocolError

MAGIC = b"OFLD"
VERSION = 1

(CALL, RESULT, ERROR, PING, PONG, CHECKPOINT, PAUSE, CONTROL, ACCEPTED, STARTED, GO) = range(1, 12)
KINDS = frozenset(range(1, 12))
#: Kinds that answer a request without ending it (its final reply follows).
INTERIM = frozenset((CHECKPOINT, ACCEPTED, STARTED))

BY_VALUE = 0x1
CHECKPOINTED = 0x2
ALIVE = 0x4
STARTS = 0x8
INLINE = 0x10
AWAITS_GO = 0x20

PROBE_MAX = 8 * 2**20  # the most padding a PONG carries

RAW, LZ4 = 0, 1

HEADER_PREFIX = struct.Struct("!4sBBHQQ16sH")
NO_FINGERPRINT = bytes(16)


class Header(NamedTuple):
    """A decoded header frame."""

    kind: int
    flags: int
    request_id: int
    aux: int
    fingerprint: bytes
    name: str
    codecs: bytes


def encode_header(
    kind: int,
    request_id: int,
    *,
    flags: int = 0,
    aux: int = 0,
    fingerprint: bytes = NO_FINGERPRINT,
    name: bytes = b"",
    codecs: bytes = b"",
) -> bytes:
    """Pack a header frame; ``name`` is already UTF-8 encoded."""
    return (
        HEADER_PREFIX.pack(MAGIC, VERSION, kind, flags, request_id, aux, fingerprint, len(name))
        + name
        + codecs
    )


_PROGRESS = struct.Struct("!QQ")


def progress_field(done: int, total: int) -> bytes:
    """A CHECKPOINT header's fingerprint field telling ``done`` of ``total``."""
    return _PROGRESS.pack(done, total)


def progress_of(header: Header) -> tuple[int, int]:
    """``(done, total)`` from a CHECKPOINT header ((0, 0): not told)."""
    done, total = _PROGRESS.unpack(header.fingerprint)
    return (done, total) if done <= total else (0, 0)


_PREFIX_SIZE = HEADER_PREFIX.size
_unpack_prefix = HEADER_PREFIX.unpack_from
_new_header = tuple.__new__  # Header(...) without its Python-level __new__: every reply's
_CODECS = bytes((RAW, LZ4))


def decode_header(frame: bytes | memoryview) -> Header:
    """Unpack and validate a header frame, raising :class:`ProtocolError` if malformed."""
    size = _PREFIX_SIZE
    if len(frame) < size:
        raise ProtocolError(f"header frame of {len(frame)} bytes is shorter than {size}")
    magic, version, kind, flags, request_id, aux, fingerprint, name_len = _unpack_prefix(frame)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}, this side speaks {VERSION}")
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind}")
    end = size + name_len
    if len(frame) < end:
        raise ProtocolError("header frame truncated inside the function name")
    try:
        name = bytes(frame[size:end]).decode() if name_len else ""  # replies carry none
    except UnicodeDecodeError as exc:
        raise ProtocolError("function name is not valid UTF-8") from exc
    codecs = bytes(frame[end:])
    if codecs.translate(None, _CODECS):  # what is left is no codec
        raise ProtocolError("unknown payload codec")
    return _new_header(Header, (kind, flags, request_id, aux, fingerprint, name, codecs))


def with_request_id(header: bytes, request_id: int) -> bytes:
    """The same header frame for another request id (one answer sent to several waiters)."""
    return header[:8] + request_id.to_bytes(8, "big") + header[16:]


def peek_request_id(frame: bytes | memoryview) -> int | None:
    """Best-effort request id of a possibly malformed header, so an error can still be routed."""
    if len(frame) >= 16 and bytes(frame[:4]) == MAGIC:
        return int.from_bytes(frame[8:16], "big")
    return None


def error_message(request_id: int, code: str, message: str, **detail: Any) -> list[bytes]:
    """An ERROR reply: header plus one JSON frame."""
    body = json.dumps({"code": code, "message": message, **detail}).encode()
    return [encode_header(ERROR, request_id, codecs=bytes([RAW])), body]


def json_message(kind: int, request_id: int, body: dict[str, Any]) -> list[bytes]:
    """A control message (PONG, CONTROL) carrying one JSON frame."""
    return [encode_header(kind, request_id, codecs=bytes([RAW])), json.dumps(body).encode()]


def decode_json(frame: bytes | memoryview) -> dict[str, Any]:
    """Parse a JSON payload frame, raising :class:`ProtocolError` if it is not a JSON object."""
    try:
        body = json.loads(bytes(frame))
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise ProtocolError(f"malformed JSON payload: {str(exc)[:200]}") from exc
    if not isinstance(body, dict):
        raise ProtocolError("JSON payload is not an object")
    return body
