"""``serve_local``: an edge server in a child process, for demos, tests and development."""

from __future__ import annotations

import atexit
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Sequence

from ._exceptions import ServerUnavailable

_running: weakref.WeakSet[LocalServer] = weakref.WeakSet()


class LocalServer:
    """A running local edge server; ``str()`` of it is its address."""

    def __init__(
        self, address: str, process: subprocess.Popen[bytes], scratch: str | None = None
    ) -> None:
        self.address = address
        self.process = process
        self._scratch = scratch  # a data directory of its own, removed with it

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and its workers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        _running.discard(self)

    def __str__(self) -> str:
        return self.address

    def __repr__(self) -> str:
        return f"<LocalServer {self.address} pid={self.process.pid}>"

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_local(
    apps: Sequence[str] = (),
    *,
    workers: int | None = None,
    allow_code_shipping: bool = False,
    bind: str = "tcp://127.0.0.1:*",
    extra_args: Sequence[str] = (),
    start_timeout: float = 60.0,
    launcher: Sequence[str] = (),
    data_dir: str | None = None,
) -> LocalServer:
    """Start an edge server serving ``apps`` (by default on a free loopback port); return it.

    The child gets this process's ``sys.path``, so the app modules it imports
    are the same files this process imports (replicated code by construction).
    ``launcher`` prefixes the command, e.g. ``["ip", "netns", "exec", "edge"]``
    to start the server in a network namespace. ``data_dir`` holds its job
    store; by default a fresh temporary directory, removed when it stops.
    """
    scratch = None
    if data_dir is None and "--data-dir" not in extra_args:
        data_dir = scratch = tempfile.mkdtemp(prefix="offload-edge-")
    cmd = [
        *launcher,
        sys.executable,
        "-m",
        "edge_server",
        "--bind",
        bind,
        "--print-address",
        "--exit-with-stdin",
    ]
    for app in apps:
        cmd += ["--app", app]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if allow_code_shipping:
        cmd.append("--allow-code-shipping")
    if data_dir is not None:
        cmd += ["--data-dir", data_dir]
    cmd += list(extra_args)
    if "--secret-key" not in cmd:
        cmd.append("--insecure")  # a server on this machine for this process: say so
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    # The child stops when its stdin closes: when this process exits, however it dies.
    process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(start_timeout)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("tcp://"):
        code = process.poll()
        process.kill()
        process.wait()
        process.stdout.close()
        if process.stdin is not None:
            process.stdin.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise ServerUnavailable(
            f"local edge server exited with code {code} before it was ready"
            if code
            else f"local edge server did not start within {start_timeout} s"
        )
    server = LocalServer(line, process, scratch)
    _running.add(server)
    return server


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()
