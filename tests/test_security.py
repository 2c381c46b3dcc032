"""Streams built to abuse the unpickler or the decompressor are refused; nobody else is hurt."""

from __future__ import annotations

import struct

import lz4.block
import numpy as np
import pytest
import zmq

import offload
from offload.runtime import protocol, serialize
from tests import apps

ALLOW = serialize.Allowlist(frozenset({"tests.apps"}))


def _load(stream: bytes, allow: serialize.Allowlist = ALLOW):
    return serialize.loads(b"\0", [stream], allow, 2**29)


def _call(server, fn, frames, codecs):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(str(server))
    header = protocol.encode_header(
        protocol.CALL, 1, fingerprint=fn.fingerprint, name=fn.wire_name.encode(), codecs=codecs
    )
    try:
        sock.send_multipart([header, *frames])
        reply = sock.recv_multipart()
    finally:
        sock.close()
    head = protocol.decode_header(reply[0])
    return head, reply[1:]


def test_class_attributes_cannot_be_set_by_a_stream(server, client):
    # BUILD on tests.apps.Point itself would make Point.__setstate__ = dict for every client.
    poison = (
        b"\x80\x05ctests.apps\nPoint\nN}X\x0c\x00\x00\x00__setstate__cbuiltins\ndict\ns\x86b0"
        b"K\x03K\x04\x86}\x86."
    )
    with pytest.raises(offload.ForbiddenType):
        _load(poison)
    head, frames = _call(server, apps.add, [poison], b"\0")
    assert head.kind == protocol.ERROR
    assert protocol.decode_json(frames[0])["code"] in ("forbidden_type", "serialization")
    assert client.call(apps.norm, (apps.Point(3, 4),), {}, mode="remote") == 5.0


def test_numpy_dtype_flags_from_a_stream_are_not_trusted(server, client):
    # An object dtype whose pickled flags claim "no objects": raw bytes would become pointers.
    crafted = np.dtype("V8", False, True)
    state = np.dtype([("a", "O")]).__reduce__()[2]
    crafted.__setstate__((*state[:7], 0))
    stream = pickle_with_numpy_reconstructor(crafted)
    with pytest.raises(offload.ForbiddenType):
        _load(stream)
    head, frames = _call(server, apps.echo, [stream], b"\0")
    assert head.kind == protocol.ERROR
    assert protocol.decode_json(frames[0])["code"] == "forbidden_type"
    assert client.call(apps.add, (1, 2), {}, mode="remote") == 3


def pickle_with_numpy_reconstructor(dtype: np.dtype) -> bytes:
    """What plain pickle makes of an array over raw bytes (numpy's own _frombuffer path)."""
    import pickle

    array = np.frombuffer(b"\x41" * 8 * 4, dtype=dtype)
    return pickle.dumps(((array,), {}), protocol=5)


def test_object_arrays_still_travel_safely(client):
    value = np.array([1, "two", None, [3]], dtype=object)
    out = client.call(apps.echo, (value,), {}, mode="remote")
    assert out.dtype == object and list(out) == list(value)
    with pytest.raises(offload.SerializationError, match="object fields"):
        serialize.dumps(np.zeros(2, dtype=[("a", "O"), ("b", "f8")]))


def test_builtins_cannot_be_called_to_allocate():
    n = 30_000_000
    stream = b"\x80\x05cbuiltins\nlist\ncbuiltins\nrange\nJ" + struct.pack("<i", n) + b"\x85R\x85R."
    with pytest.raises(offload.ForbiddenType, match=r"builtins\.list"):
        _load(stream)


@pytest.mark.parametrize("name", [b"Counter", b"OrderedDict.fromkeys"])
def test_only_listed_library_globals(name):
    with pytest.raises(offload.ForbiddenType):
        _load(b"\x80\x05ccollections\n" + name + b"\n.")


def test_lz4_budget_spans_all_frames():
    limit = 16 << 20
    blob = lz4.block.compress(bytes(limit // 2))  # each frame alone fits the limit
    head = serialize.dumps(((), {}), compress=False)[1][0]
    with pytest.raises(offload.PayloadTooLarge):
        serialize.loads(b"\0\1\1\1", [head, blob, blob, blob], serialize.Allowlist(), limit)


def test_short_lz4_frame_is_a_clear_error(server, client):
    with pytest.raises(offload.SerializationError, match="shorter"):
        serialize.loads(b"\1", [b"\1\2"], serialize.Allowlist(), 2**20)
    _head, frames = _call(server, apps.echo, [b"\1\2"], bytes([protocol.LZ4]))
    assert protocol.decode_json(frames[0])["code"] == "serialization"
    assert client.call(apps.add, (2, 2), {}, mode="remote") == 4


def test_classes_arrive_as_handles_not_as_classes():
    codecs, frames = serialize.dumps(apps.Point)
    ref = serialize.loads(codecs, frames, ALLOW, 2**20)
    assert ref(1, 2) == apps.Point(1, 2)
    with pytest.raises(offload.ForbiddenType):
        ref.cls = int
