"""A far server: a TCP relay that holds every byte for a one-way delay the bench can change.

The kernel here has no ``netem``, so a link with a high round-trip time but
good bandwidth (a server across a continent, a satellite hop) is emulated in
user space: ``python -m bench.delay LISTEN_HOST TARGET_HOST:PORT CONTROL``
accepts connections, connects each to the target, and forwards every chunk
in both directions once it has waited the one-way delay read from the file
``CONTROL`` (milliseconds; 0 passes bytes through at once). Chunks keep their
order even when the delay shrinks. The relay runs in the server's network
namespace, off the device's CPU, so the bandwidth is still the shaped link's.
:class:`Delay` starts it and sets the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_POLL_S = 0.05  # how often the relay rereads the delay


class Delay:
    """The relay process, in front of ``target``; ``address`` is what clients connect to."""

    def __init__(self, target: str, listen_host: str, launcher: Sequence[str], scratch: Path):
        self.control = scratch / "delay_ms"
        self.control.write_text("0\n")
        host_port = target.removeprefix("tcp://")
        self.proc = subprocess.Popen(
            [*launcher, sys.executable, "-m", "bench.delay", listen_host, host_port, str(self)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # bench, from here
        )
        assert self.proc.stdout is not None
        port = self.proc.stdout.readline().strip()
        if not port:
            self.stop()
            raise RuntimeError("the delay relay did not start")
        self.address = f"tcp://{listen_host}:{port}"

    def __str__(self) -> str:
        return str(self.control)

    def set(self, rtt_ms: float) -> None:
        """Add ``rtt_ms`` to every round trip (half each way) from now on."""
        self.control.write_text(f"{rtt_ms / 2:g}\n")
        time.sleep(2 * _POLL_S)  # the relay has read it

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: list[float]
) -> None:
    """Forward ``reader`` to ``writer``, each chunk ``delay[0]`` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(send())
    last = 0.0
    with contextlib.suppress(OSError):
        while chunk := await reader.read(1 << 16):
            last = max(time.monotonic() + delay[0], last)  # never overtake an earlier chunk
            queue.put_nowait((last, chunk))
    queue.put_nowait((last, b""))
    with contextlib.suppress(OSError):
        await sender


async def _relay(listen_host: str, target: str, control: Path) -> None:
    host, port = target.rsplit(":", 1)
    delay = [0.0]

    async def poll() -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                delay[0] = float(control.read_text()) / 1000
            await asyncio.sleep(_POLL_S)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))

    poller = asyncio.ensure_future(poll())
    server = await asyncio.start_server(serve, listen_host, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
    poller.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_relay(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
