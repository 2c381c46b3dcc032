"""The replicated code the test servers serve (``--app tests.apps``)."""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import offload as offload_api
from offload import offload


@dataclass
class Point:
    """An application class: admitted by the server's allowlist because it is defined here."""

    x: float
    y: float


class AppError(Exception):
    """An application exception, rebuilt as its own type on the client."""


@offload
def add(a: Any, b: Any) -> Any:
    return a + b


@offload
def echo(value: Any) -> Any:
    return value


@offload
def where() -> int:
    """The pid of the process that ran the call."""
    return os.getpid()


@offload
def norm(p: Point) -> float:
    return float(np.hypot(p.x, p.y))


@offload
def scaled(array: np.ndarray, factor: float) -> np.ndarray:
    return array * factor


@offload
def fail(message: str) -> None:
    raise ValueError(message)


@offload
def fail_app(code: int) -> None:
    raise AppError("application failure", code)


@offload
def crash() -> None:
    os._exit(3)


@offload
def segfault() -> None:
    ctypes.string_at(0)


@offload(timeout=0.5)
def hang() -> None:
    time.sleep(60)


@offload
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@offload
def path(text: str) -> Any:
    """Returns a pathlib.Path: a type the client's allowlist does not admit."""
    import pathlib

    return pathlib.Path(text)


@offload
def slow_where(seconds: float) -> int:
    """The process that ran the call, after ``seconds``."""
    time.sleep(seconds)
    return os.getpid()


@offload(checkpoint_every=0.05)
def count_up(n: int, step: float, log: str) -> int:
    """Sum of i*i for i < n, a step at a time; each step is logged as ``pid i`` to ``log``."""
    i, total = offload_api.restore((0, 0))
    while i < n:
        time.sleep(step)
        total += i * i
        i += 1
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {i}\n")
        offload_api.checkpoint((i, total), done=i, total=n)
    return total


@offload(checkpoint_every=0)
def big_checkpoint(megabytes: int) -> int:
    """Offers a checkpoint of ``megabytes`` MB (random: compression cannot shrink it)."""
    offload_api.checkpoint(os.urandom(megabytes * 2**20))
    return megabytes


@offload(retries=1)
def slow_square(x: int, seconds: float) -> int:
    """x * x after ``seconds`` (idempotent: safe to run again)."""
    time.sleep(seconds)
    return x * x


@offload
def hold(data: bytes, seconds: float) -> int:
    """Keeps ``data`` (staged in shared memory when large) for ``seconds``; returns its size."""
    time.sleep(seconds)
    return len(data)


@offload
def allocate(megabytes: int) -> int:
    """Holds ``megabytes`` MB for a moment; returns how many it got."""
    block = bytearray(megabytes * 2**20)
    return len(block) // 2**20


@offload
def spin(seconds: float) -> float:
    """Burns CPU for ``seconds`` of wall-clock time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


@offload
def open_files(count: int) -> int:
    """Opens ``count`` files at once (and closes them)."""
    handles = [open(os.devnull) for _ in range(count)]  # noqa: SIM115
    for handle in handles:
        handle.close()
    return count


@offload
def fork_bomb(children: int) -> int:
    """Forks up to ``children`` sleeping processes (bounded, so a test cannot hurt the machine)."""
    started = 0
    for _ in range(children):
        pid = os.fork()
        if pid == 0:  # the child: sleep, then leave without cleanup
            time.sleep(30)
            os._exit(0)
        started += 1
    return started


@offload
def leave_behind() -> int:
    """Starts a process that outlives the call; returns its pid."""
    import subprocess

    return subprocess.Popen(["sleep", "60"]).pid


@offload
def thread_bomb(threads: int) -> int:
    """Starts up to ``threads`` sleeping threads and leaves them running; returns how many."""
    import threading

    for _ in range(threads):
        threading.Thread(target=time.sleep, args=(30,)).start()
    return threads


@offload
def threads_running() -> int:
    """How many threads the worker that runs the call has."""
    import threading

    return threading.active_count()


_kept: list[Any] = []


@offload
def keep_open() -> bool:
    """Opens a file and keeps it open after the call (in a module global)."""
    _kept.append(open(os.devnull))  # noqa: SIM115
    return True


@offload
def fill(path: str, megabytes: int, files: int = 1) -> int:
    """Writes ``files`` files of ``megabytes`` MB (``path``, ``path.1``, ...) and leaves them."""
    chunk = b"x" * 2**20
    for i in range(files):
        with open(f"{path}.{i}" if i else path, "wb") as out:
            for _ in range(megabytes):
                out.write(chunk)
    return megabytes * files


@offload
def listdir(path: str) -> list[str]:
    """The names in directory ``path`` (of the worker that runs the call)."""
    return sorted(os.listdir(path))


@offload
def touch_shared(megabytes: int) -> int:
    """Maps ``megabytes`` MB of shared anonymous memory (not RLIMIT_DATA's) and touches it all."""
    import mmap

    block = mmap.mmap(-1, megabytes * 2**20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return megabytes


@offload
def blob(megabytes: float) -> bytes:
    """``megabytes`` MB of random bytes (incompressible: a large result from a small call)."""
    return np.random.default_rng().bytes(int(megabytes * 2**20))


@offload
def mark(log: str, item: int, seconds: float) -> int:
    """Append ``item`` to ``log`` after ``seconds`` (a run killed before leaves no line).

    Returns the pid of the server whose worker ran it (workers are its children).
    """
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"{item}\n")
    return os.getppid()


@offload
def power(
    base: int,
    exponent: int = 2,
    scale: float = 1.0,
    label: str = "",
    negate: bool = False,
    extra: Any = None,
) -> dict[str, Any]:
    """Simple typed parameters, for the ui's per-field form."""
    value = scale * base**exponent
    return {"label": label, "value": -value if negate else value, "extra": extra}


@offload(checkpoint_every=0.05)
def paced(n: int, step: float, log: str, slow: str) -> int:
    """Like :func:`count_up`, logging ``server-pid i``; a step is 5x slower on a server
    whose pid names a file in ``slow`` (a server made slow while the job runs)."""
    i, total = offload_api.restore((0, 0))
    while i < n:
        time.sleep(step * (5 if os.path.exists(os.path.join(slow, str(os.getppid()))) else 1))
        total += i * i
        i += 1
        with open(log, "a") as out:
            out.write(f"{os.getppid()} {i}\n")
        offload_api.checkpoint((i, total), done=i, total=n)
    return total


@offload
def mark_begun(log: str, began: str, item: int, seconds: float) -> int:
    """:func:`mark`, also appending ``item`` to ``began`` as the run begins."""
    with open(began, "a") as f:
        f.write(f"{item}\n")
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"{item}\n")
    return os.getppid()


# -- inline (isolation="thread"): run by a thread of the server process --


@offload(isolation="thread")
def inline_where() -> int:
    """The pid of the process that ran the call: the server's own when run inline."""
    return os.getpid()


@offload(isolation="thread")
def inline_add(a: Any, b: Any) -> Any:
    return a + b


@offload(isolation="thread")
def inline_fail(message: str) -> None:
    raise AppError(message)


@offload(isolation="thread")
def inline_exit(code: int) -> None:
    """``sys.exit`` inline: the call fails, the server does not exit."""
    raise SystemExit(code)


@offload(isolation="thread", timeout=1.0)
def inline_hang(seconds: float) -> float:
    """Sleeps past its 1 s timeout: a thread that cannot be stopped."""
    time.sleep(seconds)
    return seconds
