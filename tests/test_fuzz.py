"""Protocol fuzzing: random and mutated messages get a clear error or are dropped, never more.

Each example sends a burst of frames built by hypothesis (garbage, valid calls
with bytes flipped, truncated, frames added or removed, other kinds and
versions, huge declared sizes) from a raw ZeroMQ socket. Every reply must be a
well-formed offload message, and afterwards the server still answers a good
call, for this client and for another.
"""

from __future__ import annotations

import struct

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import offload
from offload.runtime import protocol, serialize

from . import apps


def valid_call(request_id: int) -> list[bytes]:
    codecs, frames = serialize.dumps(((1, 2), {}))
    header = protocol.encode_header(
        protocol.CALL,
        request_id,
        fingerprint=apps.add.fingerprint,
        name=apps.add.wire_name.encode(),
        codecs=codecs,
    )
    return [header, *[bytes(memoryview(f)) for f in frames]]


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    frames = valid_call(draw(st.integers(0, 2**64 - 1)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "add", "drop", "kind", "huge"]))
        i = draw(st.integers(0, len(frames) - 1))
        frame = bytearray(frames[i])
        if action == "flip" and frame:
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            frame = frame[: draw(st.integers(0, len(frame)))]
        elif action == "add":
            frames.append(draw(st.binary(max_size=64)))
        elif action == "drop" and len(frames) > 1:
            frames.pop(i)
            continue
        elif action == "kind" and len(frame) > 6:
            frame[5] = draw(st.integers(0, 255))  # any kind, including CHECKPOINT and PAUSE
        elif action == "huge" and i > 0:
            frame = bytearray(struct.pack("<I", 2**31 - 1)) + frame  # an lz4 size claim
        frames[i] = bytes(frame)
    return frames


garbage = st.lists(st.binary(max_size=200), min_size=1, max_size=6)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(burst=st.lists(st.one_of(mutated(), garbage), min_size=1, max_size=5))
def test_any_message_gets_a_clear_error_or_is_dropped(server, client, burst):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(str(server))
    try:
        for frames in burst:
            sock.send_multipart(frames)
        # A good call last: its answer (after any others) shows the server took the burst.
        sock.send_multipart(valid_call(2**63))
        while sock.poll(5000):
            reply = sock.recv_multipart()
            header = protocol.decode_header(reply[0])  # well-formed, whatever it says
            assert header.kind in (protocol.ERROR, protocol.RESULT, protocol.PONG)
            if header.kind == protocol.ERROR:
                assert protocol.decode_json(reply[1])["code"]
            # A mutated message of the burst may carry the good call's id too; only the
            # good call's RESULT ends the wait.
            if header.request_id == 2**63 and header.kind == protocol.RESULT:
                break
        else:
            raise AssertionError("the server did not answer the good call after the burst")
    finally:
        sock.close()
    assert client.call(apps.add, (20, 22), {}, mode="remote") == 42


def test_fuzzing_leaves_a_usable_server_for_everyone(server):
    with offload.Client(server) as other:
        assert other.call(apps.add, (1, 1), {}, mode="remote") == 2
