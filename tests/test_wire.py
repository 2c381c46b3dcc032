"""Wire format units: header layout, serialization, compression, fingerprints, config."""

from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import offload
from offload.runtime import compression, protocol, serialize
from offload.runtime.functions import fingerprint, function_name

names = st.text(max_size=64).map(str.encode)


@given(
    kind=st.sampled_from(sorted(protocol.KINDS)),
    request_id=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 2**16 - 1),
    aux=st.integers(0, 2**64 - 1),
    fp=st.binary(min_size=16, max_size=16),
    name=names,
    codecs=st.lists(st.sampled_from([protocol.RAW, protocol.LZ4]), max_size=8).map(bytes),
)
def test_header_round_trip(kind, request_id, flags, aux, fp, name, codecs):
    frame = protocol.encode_header(
        kind, request_id, flags=flags, aux=aux, fingerprint=fp, name=name, codecs=codecs
    )
    header = protocol.decode_header(frame)
    assert header == (kind, flags, request_id, aux, fp, name.decode(), codecs)
    assert protocol.peek_request_id(frame) == request_id


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    with contextlib.suppress(offload.ProtocolError):
        protocol.decode_header(data)


def test_header_layout_is_as_documented():
    frame = protocol.encode_header(protocol.CALL, 5, aux=7, name=b"m:f", codecs=b"\x00\x01")
    assert frame[:4] == b"OFLD" and frame[4] == 1 and frame[5] == protocol.CALL
    assert int.from_bytes(frame[8:16], "big") == 5
    assert int.from_bytes(frame[16:24], "big") == 7
    assert int.from_bytes(frame[40:42], "big") == 3
    assert frame[42:45] == b"m:f" and frame[45:] == b"\x00\x01"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_serialize_round_trip(value):
    codecs, frames = serialize.dumps(value)
    assert serialize.loads(codecs, frames, serialize.Allowlist(), 2**30) == value


def test_large_buffers_travel_out_of_band_without_copy():
    array = np.random.default_rng(0).random(100_000)
    codecs, frames = serialize.dumps(array, compress=False)
    assert len(frames) == 2
    assert np.shares_memory(np.frombuffer(frames[1], dtype=array.dtype), array)
    out = serialize.loads(codecs, frames, serialize.Allowlist(), 2**30)
    assert np.shares_memory(out, np.frombuffer(frames[1], dtype=array.dtype))


class Gadget:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize(
    "value", [Gadget(), print, pickle.loads, np.load], ids=["eval", "print", "loads", "np.load"]
)
def test_allowlist_rejects_callables_and_unknown_globals(value):
    codecs, frames = serialize.dumps(value)
    with pytest.raises(offload.ForbiddenType):
        serialize.loads(codecs, frames, serialize.Allowlist(), 2**30)


def test_allowlist_admits_only_classes_defined_in_trusted_modules():
    from tests import apps

    allow = serialize.Allowlist(frozenset({"tests.apps"}))
    codecs, frames = serialize.dumps(apps.Point(1, 2))
    assert serialize.loads(codecs, frames, allow, 2**30) == apps.Point(1, 2)
    # A class the module merely imports, a function it defines, a module it imports:
    for name in (b"Any", b"add", b"np", b"os"):
        stream = b"ctests.apps\n" + name + b"\n."
        with pytest.raises(offload.ForbiddenType, match=r"tests\.apps"):
            serialize.loads(b"\x00", [stream], allow, 2**30)


def test_compression_only_where_it_pays():
    zeros = memoryview(bytes(1_000_000))
    codec, packed = compression.maybe_compress(zeros)
    assert codec == protocol.LZ4 and len(packed) < 10_000
    assert bytes(compression.decompress(codec, memoryview(packed), 2**30)) == bytes(zeros)
    noise = memoryview(np.random.default_rng(0).bytes(1_000_000))
    assert compression.maybe_compress(noise) == (protocol.RAW, noise)
    small = memoryview(bytes(100))
    assert compression.maybe_compress(small)[0] == protocol.RAW


def test_compressed_frames_round_trip_through_serialize():
    value = {"zeros": np.zeros(200_000), "text": "a" * 50_000}
    codecs, frames = serialize.dumps(value)
    assert protocol.LZ4 in codecs
    out = serialize.loads(codecs, frames, serialize.Allowlist(), 2**30)
    assert np.array_equal(out["zeros"], value["zeros"]) and out["text"] == value["text"]


def _same_source_as_f():
    """A function whose source text is ``f``'s below, elsewhere in the file."""

    def f(x):
        return x + 1

    return f


def test_fingerprint_follows_the_code():
    def f(x):
        return x + 1

    def g(x):
        return x + 1

    def h(x):
        return x + 2

    # With source: the same text gives the same fingerprint wherever it is; any change, another.
    assert len(fingerprint(f)) == 16
    twin = _same_source_as_f()
    assert twin.__code__.co_firstlineno != f.__code__.co_firstlineno
    assert fingerprint(twin) == fingerprint(f)
    assert fingerprint(h) != fingerprint(f)  # the code changed
    assert fingerprint(g) != fingerprint(f)  # source differs in its name line
    # Without source, the code object: same code, same fingerprint, whatever the name or line.
    namespace: dict = {}
    exec("def k(x):\n    return [i for i in range(x)]", namespace)  # no source available
    exec("\n\ndef k2(x):\n    return [i for i in range(x)]", namespace)
    exec("def k3(x):\n    return [i * 2 for i in range(x)]", namespace)
    k, k2, k3 = namespace["k"], namespace["k2"], namespace["k3"]
    assert k.__code__.co_firstlineno != k2.__code__.co_firstlineno
    assert fingerprint(k2) == fingerprint(k)
    assert fingerprint(k3) != fingerprint(k)  # the code changed
    assert function_name(f).endswith(":test_fingerprint_follows_the_code.<locals>.f")


def test_config_sources(tmp_path):
    toml = tmp_path / "offload.toml"
    toml.write_text('[offload]\nserver = "tcp://127.0.0.1:1"\ntimeout = 3\nmode = "local"\n')
    cfg = offload.Config.load(toml, env={"OFFLOAD_TIMEOUT": "4.5"}, mode="remote")
    assert (cfg.server, cfg.timeout, cfg.mode) == ("tcp://127.0.0.1:1", 4.5, "remote")
    assert offload.Config.load(env={}).server is None
    with pytest.raises(offload.ConfigError, match="mode"):
        offload.Config.load(env={"OFFLOAD_MODE": "sometimes"})
    with pytest.raises(offload.ConfigError, match="unknown"):
        offload.Config.load(env={}, colour="blue")
    with pytest.raises(offload.ConfigError, match="tcp://"):
        offload.Config(server="localhost:5555")
    with pytest.raises(offload.ConfigError, match="not a number"):
        offload.Config.load(env={"OFFLOAD_TIMEOUT": "soon"})
    with pytest.raises(dataclasses_error()):
        cfg.server = "x"  # frozen


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_decorator_validates_its_options():
    with pytest.raises(offload.ConfigError):
        offload.offload(mode="sideways")(len)
    with pytest.raises(offload.ConfigError):
        offload.offload(timeout=-1)(len)
