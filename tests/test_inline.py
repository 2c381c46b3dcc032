"""Inline calls (``@offload(isolation="thread")``) on real edge servers (issue 16, item 5).

A server runs them in a thread of its own process only when started with
``--allow-inline``; otherwise it refuses them with InlineRefused and keeps
serving. Whatever runs inline still goes through the job store, and a hung
inline call is failed with CallTimeout while the server serves others.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest

import offload
from edge_server.config import ServerConfig
from edge_server.options import parse_args
from offload.runtime import protocol

from . import apps


@pytest.fixture(scope="module")
def inline_server():
    """A server that allows inline calls, with one worker process."""
    with offload.serve_local(
        ["tests.apps"], workers=1, extra_args=["--log-level", "ERROR", "--allow-inline"]
    ) as srv:
        yield srv


@pytest.fixture
def inline_client(inline_server):
    with offload.Client(inline_server, mode="remote", heartbeat_timeout=10) as c:
        c.ping(timeout=10)
        yield c


def test_an_inline_call_runs_in_the_server_process_when_allowed(inline_server, inline_client):
    assert inline_client.call(apps.inline_add, (2, 3), {}) == 5
    assert inline_client.call(apps.inline_where, (), {}) == inline_server.process.pid
    # the default stays a worker process per job, on the same server
    assert apps.where.isolation == "process"
    assert inline_client.call(apps.where, (), {}) != inline_server.process.pid
    # through the ledger and the store, as a worker's job, CPU metered
    jobs = {j.function: j for j in inline_client.server.jobs(limit=20)}
    ran = jobs["tests.apps:inline_add"]
    assert ran.state == "done" and ran.bytes_in > 0 and ran.bytes_out > 0 and ran.cpu_s >= 0


def test_an_exception_raised_inline_arrives_as_its_type_with_the_traceback(inline_client):
    with pytest.raises(apps.AppError, match="boom") as caught:
        inline_client.call(apps.inline_fail, ("boom",), {})
    assert isinstance(caught.value.__cause__, offload.RemoteTraceback)
    assert "inline_fail" in caught.value.__cause__.tb
    with pytest.raises(offload.RemoteError, match="SystemExit"):  # sys.exit(): the call fails
        inline_client.call(apps.inline_exit, (3,), {})
    assert inline_client.call(apps.inline_add, (1, 1), {}) == 2  # the server serves on


def test_bad_and_unknown_functions_inline_are_refused_and_the_server_serves_on(inline_client):
    @offload.offload(isolation="thread", ship_code="never")
    def not_on_the_server() -> int:
        return 1

    with pytest.raises(offload.UnknownFunction):
        inline_client.call(not_on_the_server, (), {})
    with pytest.raises(offload.ForbiddenType):  # the restricted unpickler, inline too
        inline_client.call(apps.inline_add, (threading.Lock, 1), {})
    with pytest.raises(TypeError):  # the function's own failure on bad arguments
        inline_client.call(apps.inline_add, (1, "x"), {})
    assert inline_client.call(apps.inline_add, (1, 2), {}) == 3


def test_a_hanging_inline_call_times_out_and_does_not_block_other_callers(
    inline_server, inline_client
):
    hung = inline_client.submit(
        apps.inline_hang, 60
    )  # 1 s timeout; its thread runs on in the server
    for _ in range(3):  # others are served meanwhile, inline and in the worker
        assert inline_client.call(apps.inline_add, (1, 2), {}) == 3
        assert inline_client.call(apps.add, (2, 2), {}) == 4
    with pytest.raises(offload.CallTimeout, match="cannot be stopped"):
        hung.result(timeout=30)
    assert inline_client.call(apps.inline_where, (), {}) == inline_server.process.pid
    health = inline_client.server.health()
    assert health["inline_hung"] == 1 and health["ok"]


def test_refused_with_a_clear_error_when_the_server_does_not_allow_it(client, server):
    with pytest.raises(offload.InlineRefused, match="--allow-inline"):
        client.call(apps.inline_add, (1, 2), {}, mode="remote")
    assert client.call(apps.add, (1, 2), {}, mode="remote") == 3  # the server serves on
    # auto: the normal routing of a call the server will not take: here, warned
    with offload.Client(server, mode="auto", heartbeat_timeout=10) as auto:
        auto.ping(timeout=10)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert auto.call(apps.inline_add, (1, 2), {}) == 3
        assert any("InlineRefused" in str(w.message) for w in said)


def test_the_flag_travels_in_the_header_and_only_for_thread_isolation():
    assert protocol.INLINE not in (protocol.BY_VALUE, protocol.CHECKPOINTED, protocol.STARTS)
    assert apps.inline_add.isolation == "thread" and apps.add.isolation == "process"
    with pytest.raises(offload.ConfigError):
        offload.offload(isolation="fork")(len)
    with pytest.raises(offload.ConfigError, match="checkpoint"):
        offload.offload(isolation="thread", checkpoint_every=1)(len)


def test_allow_inline_from_the_command_line_and_toml(tmp_path: Path):
    assert ServerConfig().allow_inline is False
    config, _ = parse_args(["--insecure", "--allow-inline"])
    assert config.allow_inline is True
    toml = tmp_path / "server.toml"
    toml.write_text("[edge-server]\nallow-inline = true\ninsecure = true\n")
    config, _ = parse_args(["--config", str(toml)])
    assert config.allow_inline is True
    with pytest.raises(offload.ConfigError, match="dask"):
        ServerConfig(allow_inline=True, engine="dask", scheduler="tcp://127.0.0.1:8786")


def test_admission_never_runs_shipped_code_or_checkpointed_calls_inline():
    import zmq

    from edge_server.admission import admit
    from edge_server.registry import Registry

    registry = Registry.load(["tests.apps"])
    fn = apps.inline_add
    allowed = ServerConfig(allow_inline=True, allow_code_shipping=True)

    def job(flags: int, config: ServerConfig):
        header = protocol.encode_header(
            protocol.CALL, 1, flags=flags, fingerprint=fn.fingerprint,
            name=fn.wire_name.encode(), codecs=b"\0",
        )  # fmt: skip
        frames = [zmq.Frame(b"client"), zmq.Frame(header), zmq.Frame(b"payload")]
        return admit(b"client", "", protocol.decode_header(header), frames, registry, config, 1)

    assert job(protocol.INLINE, allowed).inline
    assert not job(0, allowed).inline
    for flags in (protocol.BY_VALUE, protocol.CHECKPOINTED):
        with pytest.raises(offload.InlineRefused, match="never run inline"):
            job(protocol.INLINE | flags, allowed)
    with pytest.raises(offload.InlineRefused, match="--allow-inline"):
        job(protocol.INLINE, ServerConfig())
