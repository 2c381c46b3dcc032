"""What the peers' remote side runs: the calls, and the peers' server processes.

The calls are plain module-level functions, so Ray, Dask and
ProcessPoolExecutor pickle them by reference and the worker imports this
module: code already on the server, as with ``offload``'s replicated code.
RPyC and Pyro5 get a service object exposing the same calls; their protocols
do not carry numpy arrays by value (RPyC passes objects by reference, Pyro5's
serializers have no arrays), so arrays travel as pickle protocol 5 bytes,
which both pass by value. ``serve_rpc`` is the smallest RPC one can build on
the raw pyzmq sockets: a ROUTER that unpickles ``(name, args)`` with its
arrays as out-of-band frames, runs the named function and replies the same
way. It is a baseline on loopback for this benchmark only: it unpickles what
its own parent sends, which no real server should do with a network peer.

``relay`` is :mod:`bench.rawrelay`'s front (raw pyzmq through a worker process).

``python -m bench.peer_servers rpyc|pyro5|rpc|relay`` serves on a free loopback
port, prints its address on stdout and runs until stdin closes.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from typing import Any


def noop() -> None:
    """Does nothing: the call's cost is all framework."""


def echo(value: Any) -> Any:
    """Returns its argument: the data path both ways."""
    return value


#: What ``serve_rpc`` and execnet's remote side may call, by name.
FUNCTIONS = {"noop": noop, "echo": echo}


def rpc_dumps(value: Any) -> list[Any]:
    """``value`` as pickle-5 frames: the pickle, then each large buffer out of band."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def rpc_loads(frames: list[Any]) -> Any:
    """The value of ``rpc_dumps`` frames (zmq frames: the buffers are not copied)."""
    return pickle.loads(frames[0].buffer, buffers=frames[1:])


class Worker:
    """The three calls as an actor's methods (Ray: one actor, one worker process)."""

    def noop(self) -> None:
        noop()

    def echo(self, value: Any) -> Any:
        return echo(value)


def pickled(fn: Any) -> Any:
    """``fn`` taking and returning pickled bytes (for protocols without arrays by value)."""

    def call(data: bytes) -> bytes:
        args = pickle.loads(data)
        return pickle.dumps(fn(*args), protocol=5)

    return call


def exit_with_stdin() -> None:
    """Exit this server process as soon as its parent closes our stdin (or dies)."""

    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve_rpyc() -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class Service(rpyc.Service):
        exposed_noop = staticmethod(noop)
        exposed_echo = staticmethod(pickled(echo))

    server = ThreadedServer(
        Service, hostname="127.0.0.1", port=0, protocol_config={"allow_public_attrs": False}
    )
    print(f"127.0.0.1:{server.port}", flush=True)
    exit_with_stdin()
    server.start()


def serve_pyro5() -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Service:
        def noop(self) -> None:
            noop()

        def echo(self, data: bytes) -> bytes:
            return pickled(echo)(data)

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    print(daemon.register(Service, "bench"), flush=True)
    exit_with_stdin()
    daemon.requestLoop()


def serve_rpc() -> None:
    import zmq

    sock = zmq.Context().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"tcp://127.0.0.1:{port}", flush=True)
    exit_with_stdin()
    while True:
        peer, *frames = sock.recv_multipart(copy=False)
        name, args = rpc_loads(frames)
        sock.send_multipart([peer, *rpc_dumps(FUNCTIONS[name](*args))], copy=False)


def serve_relay() -> None:
    from .rawrelay import serve

    serve()


if __name__ == "__main__":
    kinds = {"rpyc": serve_rpyc, "pyro5": serve_pyro5, "rpc": serve_rpc, "relay": serve_relay}
    kinds[sys.argv[1]]()
