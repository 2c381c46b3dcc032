"""Bad input gets a clear error, loses nothing, and the server keeps serving everyone."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest
import zmq

import offload
from offload.api import OffloadedFunction
from offload.runtime import protocol, serialize
from tests import apps


def still_serving(client: offload.Client) -> None:
    assert client.call(apps.add, (20, 22), {}, mode="remote") == 42


def _impostor_add(a, b):
    return a - b  # same name as tests.apps:add, different code


_impostor_add.__module__ = "tests.apps"
_impostor_add.__qualname__ = "add"


def test_version_mismatch_is_reported(client):
    impostor = OffloadedFunction(_impostor_add)
    assert impostor.wire_name == apps.add.wire_name
    assert impostor.fingerprint != apps.add.fingerprint
    with pytest.raises(offload.VersionMismatch, match="fingerprint"):
        client.call(impostor, (5, 3), {}, mode="remote")
    still_serving(client)


def test_version_mismatch_in_auto_mode_runs_locally_and_warns_once(client):
    impostor = OffloadedFunction(_impostor_add)
    with pytest.warns(RuntimeWarning, match="VersionMismatch"):
        assert client.call(impostor, (5, 3), {}, mode="auto") == 2
    assert client.call(impostor, (7, 3), {}, mode="auto") == 4  # sticky: no second warning


def local_only(x):
    return x * 2


def test_unknown_function_without_code_shipping(client):
    with pytest.raises(offload.UnknownFunction, match="local_only"):
        client.call(offload.offload(local_only), (4,), {}, mode="remote")
    still_serving(client)


def test_code_shipping_refused_by_default(client):
    shipped = offload.offload(local_only, ship_code="always")
    with pytest.raises(offload.CodeShippingDisabled, match="allow-code-shipping"):
        client.call(shipped, (4,), {}, mode="remote")
    still_serving(client)


def test_code_shipping_when_allowed(shipping_server):
    with offload.Client(shipping_server) as client:
        client.ping(timeout=10)
        # The server lacks the function: "missing" ships it by value on UnknownFunction.
        assert client.call(offload.offload(local_only), (4,), {}, mode="remote") == 8
        assert client.call(offload.offload(local_only, ship_code="always"), (5,), {}) == 10
        pid = client.call(offload.offload(os.getpid, ship_code="always"), (), {}, mode="remote")
        assert pid != os.getpid()


def test_worker_crash_is_reported_and_worker_replaced(client):
    with pytest.raises(offload.WorkerCrashed, match="code 3"):
        client.call(apps.crash, (), {}, mode="remote")
    with pytest.raises(offload.WorkerCrashed, match="SIGSEGV"):
        client.call(apps.segfault, (), {}, mode="remote")
    still_serving(client)
    # both workers are back: two overlapping calls are served by two worker processes
    slow_where = offload.offload(apps.slow_where.__wrapped__, mode="remote")
    futures = [client.submit(slow_where, 0.5) for _ in range(2)]
    pids = {f.result(timeout=20) for f in futures}
    assert len(pids) == 2 and os.getpid() not in pids


def test_hanging_job_times_out_and_others_are_served(client):
    slow = client.submit(apps.nap, 1.0)
    with pytest.raises(offload.CallTimeout, match=r"0\.5 s"):
        client.call(apps.hang, (), {}, mode="remote")
    assert slow.result(timeout=10) == 1.0
    still_serving(client)


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_is_rejected(client, tmp_path):
    target = tmp_path / f"pwned-{uuid.uuid4().hex}"
    with pytest.raises(offload.ForbiddenType, match="system"):
        client.call(apps.echo, (Evil(str(target)),), {}, mode="remote")
    time.sleep(0.2)
    assert not target.exists()
    still_serving(client)


class Unlisted:
    """Not defined in an app module: the server will not load it."""


def test_forbidden_type_in_auto_mode_runs_locally(client):
    value = Unlisted()
    with pytest.warns(RuntimeWarning, match="ForbiddenType"):
        assert client.call(apps.echo, (value,), {}, mode="auto") is value


def _raw(server) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(str(server))
    return sock


def _error(sock: zmq.Socket) -> dict:
    frames = sock.recv_multipart()
    header = protocol.decode_header(frames[0])
    assert header.kind == protocol.ERROR
    return protocol.decode_json(frames[1])


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"garbage"], "protocol"),
        ([b"OFLD" + bytes(60)], "protocol"),  # version 0
        ([protocol.encode_header(protocol.CALL, 7)[:-1] + b"\xff"], "protocol"),
        ([protocol.encode_header(protocol.RESULT, 7, codecs=b"\0"), b"x"], "protocol"),
        (
            [protocol.encode_header(protocol.CALL, 7, name=b"tests.apps:add", codecs=b"\0")],
            "protocol",
        ),
        (
            [protocol.encode_header(protocol.CALL, 7, name=b"tests.apps:add", codecs=b"\0"), b"1"],
            "version_mismatch",
        ),
        (
            [protocol.encode_header(protocol.CALL, 7, name=b"\xff\xfe", codecs=b"\0"), b"1"],
            "protocol",
        ),
    ],
    ids=[
        "garbage",
        "bad-version",
        "bad-codec",
        "reply-kind",
        "no-payload",
        "no-fingerprint",
        "utf8",
    ],
)
def test_malformed_messages_get_errors(server, client, frames, code):
    sock = _raw(server)
    try:
        sock.send_multipart(frames)
        assert _error(sock)["code"] == code
    finally:
        sock.close()
    still_serving(client)


def test_corrupt_pickle_payload(server, client):
    codecs, _ = serialize.dumps(((1, 2), {}))
    header = protocol.encode_header(
        protocol.CALL,
        9,
        fingerprint=apps.add.fingerprint,
        name=apps.add.wire_name.encode(),
        codecs=codecs,
    )
    sock = _raw(server)
    try:
        sock.send_multipart([header, b"\x80\x05not a pickle"])
        assert _error(sock)["code"] == "serialization"
        sock.send_multipart([header, protocol.encode_header(protocol.PING, 0)])
        assert _error(sock)["code"] == "serialization"
    finally:
        sock.close()
    still_serving(client)


def test_lz4_bomb_is_refused(server, client):
    # A frame claiming to inflate to 2 GiB, over the server's limit.
    header = protocol.encode_header(
        protocol.CALL,
        9,
        fingerprint=apps.echo.fingerprint,
        name=apps.echo.wire_name.encode(),
        codecs=bytes([protocol.LZ4]),
    )
    sock = _raw(server)
    try:
        sock.send_multipart([header, (2**31 - 1).to_bytes(4, "little") + b"\x00" * 16])
        assert _error(sock)["code"] == "payload_too_large"
    finally:
        sock.close()
    still_serving(client)


def test_payload_over_the_server_limit(make_server):
    server = make_server("--max-message-size", str(2**20))
    with offload.Client(server) as client:
        client.ping(timeout=10)
        noise = np.random.default_rng(0).random(2**18)  # 2 MiB that lz4 cannot shrink
        with pytest.raises(offload.PayloadTooLarge, match="1048576"):
            client.call(apps.echo, (noise,), {}, mode="remote")
        with pytest.raises(offload.PayloadTooLarge, match="lz4"):  # small on the wire only
            client.call(apps.echo, (np.zeros(2**18),), {}, mode="remote")
        assert client.call(apps.echo, (np.zeros(2**10),), {}, mode="remote").shape == (1024,)


def test_payload_over_the_client_limit(client):
    small = offload.Client(client.config.server, max_message_size=4096)
    try:
        with pytest.raises(offload.PayloadTooLarge, match="max_message_size"):
            small.call(apps.echo, (os.urandom(10_000),), {}, mode="remote")
    finally:
        small.shutdown()


def test_queue_full_gives_server_busy(make_server):
    server = make_server("--queue-size", "1", workers=1)
    nap = offload.offload(apps.nap.__wrapped__, mode="remote")
    with offload.Client(server) as client:
        client.call(apps.nap, (0,), {}, mode="remote")  # the worker is up
        running = client.submit(nap, 0.5)
        time.sleep(0.2)
        queued = client.submit(nap, 0.01)
        time.sleep(0.05)
        with pytest.raises(offload.ServerBusy, match="queue full"):
            client.call(apps.nap, (0.01,), {}, mode="remote")
        assert running.result(timeout=10) == 0.5 and queued.result(timeout=10) == 0.01


def test_call_with_thousands_of_frames(client):
    arrays = [np.full(200, i, dtype=np.float64) for i in range(1100)]  # 1,100 out-of-band frames
    out = client.call(apps.echo, (arrays,), {}, mode="remote")
    assert len(out) == 1100 and all(a[0] == i for i, a in enumerate(out))
    out = client.call(apps.echo, (arrays,), {}, mode="remote")  # the worker is still there
    assert len(out) == 1100
    still_serving(client)


def test_a_client_that_never_reads_does_not_block_a_worker(make_server):
    server = make_server(workers=1)
    stalled = zmq.Context.instance().socket(zmq.DEALER)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.connect(str(server))
    payload = os.urandom(8 * 2**20)
    codecs, frames = serialize.dumps(((payload,), {}))
    header = protocol.encode_header(
        protocol.CALL,
        1,
        fingerprint=apps.echo.fingerprint,
        name=apps.echo.wire_name.encode(),
        codecs=codecs,
    )
    try:
        for _ in range(3):
            stalled.send_multipart([header, *frames], copy=False)
        with offload.Client(server) as client:
            client.ping(timeout=10)
            time.sleep(0.5)
            assert client.call(apps.add, (1, 2), {}, mode="remote") == 3
            big = client.call(apps.echo, (payload,), {}, mode="remote")
            assert big == payload
    finally:
        stalled.close()


def test_server_caps_call_time(make_server):
    server = make_server("--max-call-seconds", "0.5")
    with offload.Client(server) as client:
        with pytest.raises(offload.CallTimeout):
            client.call(apps.nap, (5,), {}, mode="remote")
        assert client.call(apps.nap, (0.01,), {}, mode="remote") == 0.01


def test_unloadable_result_is_not_rerun_locally(server):
    # A cold client offloads an auto call first: once synchronously, once submitted.
    for call in ("call", "submit"):
        with offload.Client(server) as client:
            client.ping(timeout=10)
            if call == "call":
                with pytest.raises(offload.UnloadableResult, match=r"tests\.apps:path"):
                    client.call(apps.path, ("/tmp",), {}, mode="auto")
            else:
                future = client.submit(apps.path, "/tmp")
                assert isinstance(future.exception(timeout=10), offload.UnloadableResult)


_LOCK = __import__("threading").Lock()


def holds_a_lock():
    return _LOCK.locked()


def test_unshippable_function_fails_cleanly(shipping_server):
    with offload.Client(shipping_server) as client:
        client.ping(timeout=10)
        fn = offload.offload(holds_a_lock, mode="remote")
        with pytest.raises(offload.SerializationError, match="cannot ship"):
            client.call(fn, (), {}, mode="remote")
        assert isinstance(client.submit(fn).exception(timeout=10), offload.SerializationError)


def test_calls_from_future_callbacks(client):
    results = []
    done = __import__("threading").Event()

    def callback(_future):
        results.append(client.call(apps.add, (1, 2), {}, mode="remote"))
        done.set()

    client.submit(apps.nap, 0.05).add_done_callback(callback)
    assert done.wait(10)
    assert results == [3]
    still_serving(client)


def test_remote_offload_errors_are_not_mistaken_for_this_calls(client):
    from offload.runtime import errors as wire

    exc = wire.rebuild(
        {"code": "remote", "message": "m", "type": "offload._exceptions:ServerBusy", "args": ["m"]}
    )
    assert isinstance(exc, offload.RemoteError) and not isinstance(exc, offload.ServerBusy)


def test_result_over_the_client_limit_is_unloadable(client):
    small = offload.Client(client.config.server, max_message_size=2**20, compression="off")
    try:
        small.ping(timeout=10)
        with pytest.raises(offload.UnloadableResult):
            small.call(apps.scaled, (np.ones(200_000, np.float32), np.float64(2)), {})
        assert small.call(apps.add, (1, 2), {}, mode="remote") == 3
    finally:
        small.shutdown()


def test_a_dropped_connection_fails_the_call_instead_of_hanging(make_server):
    # Not knowing the server's limit (no PONG yet), the client sends a frame over it:
    # ZeroMQ on the server drops the connection. The call must fail, not wait forever.
    server = make_server("--max-message-size", str(2**20))
    with offload.Client(server, heartbeat_timeout=30) as client:
        client.ping(timeout=10)
        client.servers.require().server_info = {}  # as before the first PONG
        noise = np.random.default_rng(0).random(2**18)
        with pytest.raises(offload.ServerUnavailable, match="lost the connection"):
            client.call(apps.echo, (noise,), {}, mode="remote")
        assert client.call(apps.add, (1, 2), {}, mode="remote") == 3


def test_exceptions_that_resist_description_still_get_reported(client):
    with pytest.raises(apps.AppError) as info:
        client.call(apps.fail_app, (10**5000,), {}, mode="remote")
    assert info.value.args == ("application failure", "<unprintable int: ValueError>")
    still_serving(client)


# -- one error tree at both ends ----------------------------------------------------------------


def _offload_errors() -> list[type[offload.OffloadError]]:
    from offload import _exceptions

    return [
        cls
        for cls in vars(_exceptions).values()
        if isinstance(cls, type) and issubclass(cls, _exceptions.OffloadError)
    ]


def test_the_tree_in_the_docstring_names_every_error_under_its_parent():
    import re

    from offload import _exceptions

    tree = _exceptions.__doc__ or ""
    names = {cls.__name__ for cls in _offload_errors()}
    assert len(names) >= 25
    for cls in _offload_errors():
        line = re.search(rf"^(\s*[│ ]*[├└]── |\s+){cls.__name__}\b.*$", tree, re.MULTILINE)
        assert line is not None, f"{cls.__name__} is missing from the tree in offload._exceptions"
        code = _exceptions.CODE_OF.get(cls)
        assert (f"[{code}]" in line.group(0)) == (code is not None), cls.__name__
    for name in names:
        assert hasattr(offload, name), f"offload.{name} is not exported"


@pytest.mark.parametrize("cls", _offload_errors(), ids=lambda cls: cls.__name__)
def test_every_error_with_a_wire_code_round_trips(cls):
    from offload import _exceptions
    from offload.runtime import errors as wire

    code = _exceptions.CODE_OF.get(cls)
    if code is None:
        # No code of its own: it travels as its nearest base's, or as a protocol error.
        assert wire.code_of(cls) in _exceptions.ERROR_CODES
        return
    assert wire.error_class(code) is cls and wire.code_of(cls) == code
    header, body = wire.error_reply(7, cls("what happened"))
    assert protocol.decode_header(header).kind == protocol.ERROR
    rebuilt = wire.rebuild(protocol.decode_json(body))
    assert type(rebuilt) is cls and str(rebuilt).endswith("what happened")  # RemoteError: "type: "


def test_unknown_and_malformed_codes_rebuild_as_remote_errors():
    from offload.runtime import errors as wire

    for code in ("no_such_code", 3, ["busy"], None):
        exc = wire.rebuild({"code": code, "message": "m"})
        assert type(exc) is offload.RemoteError


def test_the_server_spells_no_wire_code_outside_the_mapping():
    import re
    from pathlib import Path

    import edge_server
    from offload import _exceptions

    codes = [code for code in _exceptions.ERROR_CODES if "_" in code]  # the unmistakable ones
    for path in Path(edge_server.__file__).parent.glob("*.py"):
        text = path.read_text()
        for code in codes:
            assert not re.search(rf"[\"']{code}[\"']", text), f"{path.name} spells {code!r}"
    ledger = Path(edge_server.__file__).parent / "ledger.py"
    assert "sqlite3" not in ledger.read_text()  # the store translates its errors


def test_job_states_are_one_enum_with_the_strings_of_the_wire():
    import json

    from offload.runtime.states import FINISHED, NAMES, JobState

    assert [s.value for s in JobState] == [
        "queued",
        "running",
        "done",
        "failed",
        "cancelled",
        "paused",
        "interrupted",
        "resumed",
        "moved",
    ]
    assert {s.value for s in JobState} == NAMES
    assert JobState.DONE == "done" and str(JobState.DONE) == f"{JobState.DONE}" == "done"
    assert json.dumps([JobState.PAUSED]) == '["paused"]'
    assert not JobState.RUNNING.finished and all(s.finished for s in FINISHED)
