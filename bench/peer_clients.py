"""How ``python -m bench peers`` starts each system and makes its calls.

Each entry of :data:`PEERS` starts one system with one remote worker process
on this machine and yields its :class:`Calls`: a no-op, an echo of a numpy
array (returned as an array, checked by the caller), and the server-side
processes whose CPU time the benchmark reads. By default those are all the
processes this one has started (the system's server, its workers and their
children); ``offload`` (its edge-server front and its worker) and the relayed raw
pyzmq baseline (its front and its worker) name them apart, so
their CPU shows separately. Clusters that run their scheduler or driver in
the calling process (Dask's ``LocalCluster``, Ray's driver) count that
work as client CPU.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

import offload

from . import peer_servers
from .overhead import call_frames
from .rawzmq import RawEcho


def descendants() -> dict[str, list[psutil.Process]]:
    """Every process this one has started, alive now: a system's server side."""
    return {"server": psutil.Process().children(recursive=True)}


@dataclass
class Calls:
    """One system's way of making the calls, and where its server side runs."""

    noop: Callable[[], Any]
    echo: Callable[[np.ndarray], Any]
    server: Callable[[], dict[str, list[psutil.Process]]] = field(default=descendants)


@dataclass(frozen=True)
class Peer:
    """A system: the package it needs, how it starts, how arrays travel, a cluster or not."""

    name: str
    label: str
    package: str
    start: Callable[[], contextlib.AbstractContextManager[Calls]]
    transport: str
    cluster: bool = False


@contextlib.contextmanager
def _raw() -> Iterator[Calls]:
    from .workloads import noop

    frames = call_frames(noop)  # the bytes an offload no-op call puts on the wire
    with RawEcho() as raw:

        def echo(array: np.ndarray) -> np.ndarray:
            (back,) = raw.roundtrip([array])
            return np.frombuffer(back, dtype=array.dtype)

        yield Calls(noop=lambda: raw.roundtrip(frames), echo=echo)


@contextlib.contextmanager
def _server_process(kind: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``python -m bench.peer_servers KIND`` in a child process; its address and process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peer_servers", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _server(kind: str) -> Iterator[str]:
    """``python -m bench.peer_servers KIND`` in a child process; its address."""
    with _server_process(kind) as (address, _):
        yield address


@contextlib.contextmanager
def _relay() -> Iterator[Calls]:
    """Raw pyzmq through a front and a worker process (:mod:`bench.rawrelay`): the floor of
    one worker process per job. The front's CPU and the worker's are read apart."""
    import zmq

    from .workloads import noop

    frames = call_frames(noop)  # the bytes an offload no-op call puts on the wire
    with _server_process("relay") as (address, proc), zmq.Context() as context:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        front = psutil.Process(proc.pid)

        def roundtrip(sent: list[Any]) -> list[zmq.Frame]:
            sock.send_multipart(sent, copy=False)
            return sock.recv_multipart(copy=False)

        def echo(array: np.ndarray) -> np.ndarray:
            (back,) = roundtrip([array])
            return np.frombuffer(back, dtype=array.dtype)

        def split() -> dict[str, list[psutil.Process]]:
            return {"front": [front], "worker": front.children(recursive=True)}

        try:
            yield Calls(noop=lambda: roundtrip(frames), echo=echo, server=split)
        finally:
            sock.close()


@contextlib.contextmanager
def _rpc() -> Iterator[Calls]:
    import zmq

    with _server("rpc") as address, zmq.Context() as context:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)

        def call(name: str, *args: Any) -> Any:
            sock.send_multipart(peer_servers.rpc_dumps((name, args)), copy=False)
            return peer_servers.rpc_loads(sock.recv_multipart(copy=False))

        try:
            yield Calls(noop=lambda: call("noop"), echo=lambda a: call("echo", a))
        finally:
            sock.close()


def _pickling(call: Callable[[bytes], bytes]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        return pickle.loads(call(pickle.dumps(args, protocol=5)))

    return wrapped


@contextlib.contextmanager
def _pyro5() -> Iterator[Calls]:
    import Pyro5.api

    with _server("pyro5") as uri, Pyro5.api.Proxy(uri) as proxy:
        proxy._pyroSerializer = "marshal"  # carries bytes as they are (serpent: base64)
        yield Calls(noop=proxy.noop, echo=_pickling(proxy.echo))


#: execnet's remote side: a loop over the channel (its serializer has bytes, not arrays).
_EXECNET_LOOP = """
import pickle
while True:
    item = channel.receive()
    if item is None:
        break
    if item == "noop":
        channel.send(None)
    else:
        channel.send(pickle.dumps(pickle.loads(item), protocol=5))
"""


@contextlib.contextmanager
def _execnet() -> Iterator[Calls]:
    import execnet

    gateway = execnet.makegateway(f"popen//python={sys.executable}")
    try:
        channel = gateway.remote_exec(_EXECNET_LOOP)

        def call(item: Any) -> Any:
            channel.send(item)
            return channel.receive()

        yield Calls(
            noop=lambda: call("noop"),
            echo=lambda a: pickle.loads(call(pickle.dumps(a, protocol=5))),
        )
        channel.send(None)
        channel.waitclose(10)
    finally:
        gateway.exit()


@contextlib.contextmanager
def _ppe() -> Iterator[Calls]:
    # spawn, not fork: this process has run other systems' threads by now
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(os.getpid).result()  # the worker process is up
        yield Calls(
            noop=lambda: pool.submit(peer_servers.noop).result(),
            echo=lambda a: pool.submit(peer_servers.echo, a).result(),
        )


@contextlib.contextmanager
def _ours(inline: bool = False) -> Iterator[Calls]:
    """offload's edge server with one worker; ``inline``: its calls run in threads of the
    server process (``--allow-inline``, ``@offload(isolation="thread")``), not the worker."""
    from .workloads import echo, echo_inline, noop, noop_inline

    call_noop, call_echo = (noop_inline, echo_inline) if inline else (noop, echo)
    allow = ["--allow-inline"] if inline else []
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "WARNING", *allow]
        ) as server,
        offload.Client(server.address, mode="remote", profile_cache="") as client,
    ):
        client.ping(timeout=60)
        if inline:  # the worker starts meanwhile: up before any CPU is read
            client.call(noop, (), {})
        front = psutil.Process(server.process.pid)

        def split() -> dict[str, list[psutil.Process]]:
            return {"front": [front], "worker": front.children(recursive=True)}

        yield Calls(
            noop=lambda: client.call(call_noop, (), {}),
            echo=lambda a: client.call(call_echo, (a,), {}),
            server=split,
        )


@contextlib.contextmanager
def _ray() -> Iterator[Calls]:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        actor: Any = ray.remote(num_cpus=1)(peer_servers.Worker).remote()
        yield Calls(
            noop=lambda: ray.get(actor.noop.remote()),
            echo=lambda a: ray.get(actor.echo.remote(a)),
        )
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _dask() -> Iterator[Calls]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):

        def call(fn: Any, *args: Any) -> Any:
            return client.submit(fn, *args, pure=False).result()

        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        yield Calls(noop=lambda: call(peer_servers.noop), echo=lambda a: call(peer_servers.echo, a))


@contextlib.contextmanager
def _rpyc() -> Iterator[Calls]:
    import rpyc

    with _server("rpyc") as address:
        host, port = address.rsplit(":", 1)
        for attempt in range(100):  # the port is bound before the server listens
            try:
                conn = rpyc.connect(host, int(port), config={"sync_request_timeout": 300})
                break
            except ConnectionRefusedError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        try:
            root = conn.root
            yield Calls(noop=root.noop, echo=_pickling(root.echo))
        finally:
            conn.close()


PEERS = (
    Peer("raw", "raw pyzmq DEALER/ROUTER echo", "zmq", _raw, "ZeroMQ; the array's buffer as is"),
    Peer(
        "relay",
        "raw pyzmq relayed through a worker process",
        "zmq",
        _relay,
        "ZeroMQ to a front, a Unix socket to its worker; the buffers as they are",
    ),
    Peer(
        "rpc",
        "minimal pickle-5 RPC (same sockets)",
        "zmq",
        _rpc,
        "ZeroMQ; pickle 5 of (name, args), arrays as out-of-band frames",
    ),
    Peer("pyro5", "Pyro5", "Pyro5", _pyro5, "TCP; marshal serializer, arrays as pickle-5 bytes"),
    Peer("execnet", "execnet", "execnet", _execnet, "pipes; arrays as pickle-5 bytes"),
    Peer("ppe", "ProcessPoolExecutor (1 worker)", "concurrent", _ppe, "pipe; pickle"),
    Peer("rpyc", "RPyC", "rpyc", _rpyc, "TCP (brine); arrays as pickle-5 bytes"),
    Peer(
        "offload",
        "offload (edge server, 1 worker)",
        "offload",
        _ours,
        "ZeroMQ; pickle 5, arrays out of band, lz4 where it pays",
    ),
    Peer(
        "offload_inline",
        'offload (inline thread: isolation="thread", --allow-inline)',
        "offload",
        functools.partial(_ours, inline=True),
        "as offload; run by a thread of the edge server, not its worker",
    ),
    Peer("ray", "Ray actor", "ray", _ray, "gRPC; arrays over 100 KB via the object store", True),
    Peer("dask", "Dask distributed", "distributed", _dask, "TCP (tornado); pickle 5", True),
)
