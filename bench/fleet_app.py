"""The replicated code of ``python -m bench fleet``: one call with a payload and a service time."""

from __future__ import annotations

import os
import time

from offload import checkpoint, offload, restore

#: How many times slower a call runs in the bench's client (the emulated device) than on a
#: server: the bench sets it in its own process; servers import this module afresh.
SLOWDOWN = 1.0


@offload
def work(data: bytes, seconds: float) -> int:
    """Take ``data`` (the upload), serve for ``seconds``; the pid of the server that ran it.

    A sleep stands for the service time: three servers and a client share two
    CPUs here, so a CPU-bound stand-in would measure the neighbours instead.
    Workers are children of their server, so the parent pid names the server
    (run here, it names the bench's parent: no server).
    """
    time.sleep(seconds * SLOWDOWN)
    return os.getppid()


#: How many times slower a step of :func:`steps` runs on a server made slow.
SLOWED = 4.0


@offload(checkpoint_every=0.2)
def steps(n: int, step_s: float, state_bytes: int, slow: str) -> int:
    """``n`` steps of ``step_s`` each, a checkpoint of ``state_bytes`` offered after each.

    A step is :data:`SLOWED` times slower on a server whose pid names a file in
    the directory ``slow`` (its CPU taken by another tenant, as the bench says
    when); the result is the number of steps, each run once.
    """
    i, _ = restore((0, b""))
    while i < n:
        slowed = os.path.exists(os.path.join(slow, str(os.getppid())))
        time.sleep(step_s * (SLOWED if slowed else 1.0))
        i += 1
        checkpoint((i, os.urandom(state_bytes)), done=i, total=n)
    return i


#: Seconds of service per byte of input of :func:`dense` and :func:`light` (on a server).
DENSE_S_PER_BYTE = 1e-6
LIGHT_S_PER_BYTE = 1e-7


@offload
def dense(data: bytes) -> int:
    """A call whose service grows with its input, 1 us a byte: worth sending to a good server."""
    time.sleep(len(data) * DENSE_S_PER_BYTE * SLOWDOWN)
    return len(data)


@offload
def light(data: bytes) -> int:
    """A call whose service is small against its input, 0.1 us a byte: worth keeping here
    unless the link is fast (``bench.decisions_servers``)."""
    time.sleep(len(data) * LIGHT_S_PER_BYTE * SLOWDOWN)
    return len(data)
