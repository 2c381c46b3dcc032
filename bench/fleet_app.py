"""The replicated code of ``python -m bench fleet``: one call with a payload and a service time."""

from __future__ import annotations

import os
import time

from offload import offload

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
