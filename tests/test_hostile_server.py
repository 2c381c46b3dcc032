"""A hostile server: every reply the client cannot use fails its call, none is waited on forever.

The "server" is a plain ROUTER socket in the test thread: it answers PINGs
like an edge server, and a call with whatever the test gives it, while the
call runs in another thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

import offload
from offload.runtime import protocol

from . import apps

_INFO = {"instance": "fake", "max_message_size": 2**30, "functions": [], "code_shipping": False}


def _serve(reply: Callable[[int], list[Any]], **settings: Any) -> BaseException | Any:
    """Run ``apps.add(1, 2)`` remotely against a server whose answer is ``reply(request_id)``."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    outcome: list[Any] = []

    def call() -> None:
        with offload.Client(f"tcp://127.0.0.1:{port}", heartbeat_timeout=30, **settings) as c:
            try:
                outcome.append(c.call(apps.add, (1, 2), {}, mode="remote"))
            except BaseException as exc:
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        deadline = time.monotonic() + 30
        while caller.is_alive() and time.monotonic() < deadline:
            if not sock.poll(100):
                continue
            client, head, *_ = sock.recv_multipart()
            header = protocol.decode_header(head)
            if header.kind == protocol.PING:
                sock.send_multipart(
                    [client, *protocol.json_message(protocol.PONG, header.request_id, _INFO)]
                )
            elif header.kind == protocol.CALL:
                sock.send_multipart([client, *reply(header.request_id)])
        caller.join(30)
        assert not caller.is_alive(), "the call is still waiting"
    finally:
        sock.close()
    return outcome[0]


def _result(request_id: int, codecs: bytes = b"\0") -> bytes:
    return protocol.encode_header(protocol.RESULT, request_id, codecs=codecs)


HOSTILE = {
    "unknown codec": lambda rid: [_result(rid, codecs=b"\x07"), b"x"],
    "other protocol version": lambda rid: [b"OFLD\x09" + _result(rid)[5:], b"x"],
    "checkpoint for a plain call": lambda rid: [
        protocol.encode_header(protocol.CHECKPOINT, rid, aux=1, codecs=b"\0"),
        b"x",
    ],
    "pong for a call": lambda rid: protocol.json_message(protocol.PONG, rid, _INFO),
    "error without a body": lambda rid: [protocol.encode_header(protocol.ERROR, rid)],
    "error with bad json": lambda rid: [protocol.encode_header(protocol.ERROR, rid), b"{["],
}


@pytest.mark.parametrize("reply", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_reply_the_client_cannot_read_fails_its_call(reply):
    outcome = _serve(reply)
    assert isinstance(outcome, offload.ProtocolError), outcome


def test_a_result_over_the_limit_is_refused_as_it_arrives():
    megabyte = bytes(2**20)
    outcome = _serve(
        lambda rid: [_result(rid, codecs=b"\0" * 40), *[megabyte] * 40],
        max_message_size=16 * 2**20,
    )
    assert isinstance(outcome, offload.UnloadableResult), outcome
    assert "over max_message_size" in str(outcome)


def test_a_frame_over_the_limit_is_refused_before_it_is_in_memory_and_the_client_goes_on():
    import psutil

    from offload.runtime import serialize

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    huge = bytes(256 * 2**20)  # one frame, 16 times the client's limit
    me = psutil.Process()
    outcomes: list[Any] = []

    def calls() -> None:
        with offload.Client(
            f"tcp://127.0.0.1:{port}", heartbeat_timeout=30, max_message_size=16 * 2**20
        ) as c:
            for _ in range(2):
                try:
                    outcomes.append(c.call(apps.add, (1, 2), {}, mode="remote"))
                except BaseException as exc:
                    outcomes.append(exc)

    caller = threading.Thread(target=calls)
    before = peak = me.memory_info().rss
    caller.start()
    try:
        answered = 0
        deadline = time.monotonic() + 60
        while caller.is_alive() and time.monotonic() < deadline:
            peak = max(peak, me.memory_info().rss)
            if not sock.poll(10):
                continue
            client, head, *_ = sock.recv_multipart()
            header = protocol.decode_header(head)
            if header.kind == protocol.PING:
                sock.send_multipart(
                    [client, *protocol.json_message(protocol.PONG, header.request_id, _INFO)]
                )
            elif header.kind == protocol.CALL and not answered:
                answered += 1
                sock.send_multipart([client, _result(header.request_id), huge], copy=False)
            elif header.kind == protocol.CALL:  # the second call: a proper answer
                codecs, frames = serialize.dumps(3)
                sock.send_multipart([client, _result(header.request_id, codecs), *frames])
        caller.join(30)
        assert not caller.is_alive(), "the calls are still waiting"
    finally:
        sock.close()
    first, second = outcomes
    assert isinstance(first, offload.ServerUnavailable), first
    assert "frame over" in str(first)
    assert peak - before < 128 * 2**20, (peak - before) / 2**20  # never held whole
    assert second == 3  # the data socket was made again: the client goes on
