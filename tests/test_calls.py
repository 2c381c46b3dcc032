"""One behaviour suite, run against the local and the remote path.

Three sides: ``local`` is an ordinary function call (``f.local(x)``: the
function gets the caller's own objects, as any Python call does, so nothing is
copied or serialized: that is its contract); ``local-wire`` runs here too but
passes the arguments and the result through the same serialization the
remote path uses (``offload.runtime.serialize``, restricted loading with the
function's allowlist), so a value that round-trips here and fails remotely
points at the transport, not the encoding; ``remote`` runs on a live server.
An exception raised by the function is not serialized on ``local-wire`` (the
server sends it with its traceback, which ``remote`` checks).
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import offload
from offload.runtime import serialize
from tests import apps


def _through_the_wire(value, allowlist):
    codecs, frames = serialize.dumps(value)
    return serialize.loads(codecs, [memoryview(f) for f in frames], allowlist, 2**31)


@pytest.fixture(params=["local", "local-wire", "remote"])
def run(request, client):
    """Call a function on the side under test, synchronously."""
    mode = request.param

    def call(fn, *args, **kwargs):
        if mode == "local-wire":
            args, kwargs = _through_the_wire((args, kwargs), fn.allowlist)
            return _through_the_wire(client.call(fn, args, kwargs, mode="local"), fn.allowlist)
        return client.call(fn, args, kwargs, mode=mode)

    call.mode = mode
    return call


@pytest.mark.parametrize(
    "value",
    [
        0,
        -(2**70),
        3.5,
        complex(1, -2),
        "naïve ☃",
        b"\x00bytes",
        bytearray(b"ba"),
        None,
        True,
        [1, [2, [3]]],
        (1, "two", 3.0),
        {"a": {"b": [1, 2]}},
        {1, 2, 3},
        frozenset({"x"}),
        range(5),
        slice(1, 9, 2),
        b"x" * 100_000,
    ],
    ids=repr,
)
def test_values_round_trip(run, value):
    assert run(apps.echo, value) == value


@pytest.mark.parametrize(
    "array",
    [
        np.arange(10, dtype=np.int32),
        np.random.default_rng(1).random((300, 200)),  # large enough for out-of-band frames
        np.arange(400.0).reshape(20, 20)[::2, ::3],  # not contiguous
        np.asfortranarray(np.arange(12).reshape(3, 4)),
        np.zeros(5, dtype=[("id", "<i4"), ("pos", "<f8", (3,))]),  # structured
        np.array(7.5),  # 0-d
        np.array([], dtype=np.float32),
        np.array(["a", "bcd"]),
        np.arange(6, dtype=">i2"),  # big-endian
    ],
    ids=["int32", "float64-2d", "strided", "fortran", "structured", "0-d", "empty", "str", "be"],
)
def test_numpy_round_trip(run, array):
    out = run(apps.echo, array)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_numpy_scalars_and_app_classes(run):
    assert run(apps.echo, np.float32(1.5)) == np.float32(1.5)
    assert run(apps.norm, apps.Point(3.0, 4.0)) == 5.0
    assert run(apps.echo, apps.Point(1, 2)) == apps.Point(1, 2)


def test_keyword_arguments_and_computation(run):
    out = run(apps.scaled, array=np.ones(70_000), factor=3.0)
    assert out.sum() == 210_000.0


def test_exception_keeps_its_type_and_remote_traceback(run):
    with pytest.raises(ValueError, match="bad input") as info:
        run(apps.fail, "bad input")
    if run.mode == "remote":
        cause = info.value.__cause__
        assert isinstance(cause, offload.RemoteTraceback)
        assert "in fail" in cause.tb and "raise ValueError(message)" in cause.tb


def test_application_exception_type(run):
    with pytest.raises(apps.AppError) as info:
        run(apps.fail_app, 42)
    assert info.value.args == ("application failure", 42)


def test_side_is_really_different(run):
    import os

    pid = run(apps.where)
    assert (pid == os.getpid()) == (run.mode != "remote")


def test_submit_map_and_wait(client):
    futures = [client.submit(apps.add, i, i) for i in range(20)]
    _done, not_done = offload.wait(futures, timeout=20)
    assert not not_done
    assert sorted(f.result() for f in offload.as_completed(futures)) == [2 * i for i in range(20)]
    assert list(client.map(apps.add, range(5), range(5))) == [0, 2, 4, 6, 8]


def test_fifty_concurrent_calls_from_eight_threads(client):
    def one(i):
        return client.call(apps.add, (i, 1000), {}, mode="remote")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(50)))
    assert results == [i + 1000 for i in range(50)]


def test_concurrent_submits_use_both_workers(client, server):
    remote = offload.offload(apps.slow_where.__wrapped__, mode="remote")
    futures = [client.submit(remote, 0.3) for _ in range(2)]
    pids = [f.result(timeout=10) for f in futures]
    # Two calls in flight on a two-worker server: each ran in a worker of its own.
    assert len(set(pids)) == 2, pids
    assert server.process.pid not in pids


def test_large_array_round_trip(client):
    array = np.random.default_rng(0).integers(0, 255, size=256 * 2**20, dtype=np.uint8)
    out = client.call(apps.echo, (array,), {}, mode="remote")
    assert out.nbytes == 256 * 2**20
    assert np.array_equal(out, array)


def test_decorated_function_is_still_a_function():
    assert apps.add.__name__ == "add"
    assert apps.add.__doc__ is None or isinstance(apps.add.__doc__, str)
    assert apps.add.local(2, 3) == 5
    assert pickle.loads(pickle.dumps(apps.add)) is apps.add
    assert apps.add.wire_name == "tests.apps:add"


@pytest.mark.timeout(60)
def test_mixed_sync_and_async_calls_from_many_threads(client):
    """Leadership of the socket passes between callers and the I/O thread without loss."""

    def worker(t):
        out = []
        for i in range(25):
            if i % 3 == 0:
                out.append(client.submit(apps.add, t, i))
            else:
                out.append(client.call(apps.add, (t, i), {}, mode="remote"))
        return [o.result(timeout=30) if hasattr(o, "result") else o for o in out]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    assert results == [[t + i for i in range(25)] for t in range(8)]
