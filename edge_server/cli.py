"""``edge-server`` / ``python -m edge_server``: run an edge server in the foreground.

``edge-server stop --pid-file FILE`` asks a server started with that
``--pid-file`` to close (SIGTERM: running checkpointed jobs hand their state
home first) and waits until it has exited.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from offload._exceptions import ConfigError
from offload.human import parse_duration

from .logs import setup_logging
from .options import parse_args
from .server import EdgeServer


def _stop_at_eof(server: EdgeServer) -> None:
    # os.read on the raw fd: a daemon thread inside sys.stdin's buffer lock would
    # abort the interpreter at exit.
    with contextlib.suppress(OSError):
        while os.read(0, 65536):
            pass
    server.stop()


def stop(argv: Sequence[str]) -> int:
    """``edge-server stop --pid-file FILE [--timeout S]``: close a server, wait for it."""
    parser = argparse.ArgumentParser(prog="edge-server stop", description=stop.__doc__)
    parser.add_argument("--pid-file", required=True, help="the server's --pid-file")
    parser.add_argument(
        "--timeout", type=parse_duration, default=60.0, help="wait this long (default: 1 min)"
    )
    args = parser.parse_args(argv)
    try:
        pid, started, address = _read_pid_file(Path(args.pid_file))
        process = psutil.Process(pid)
        if not _is_edge_server(process, started):
            print(
                f"edge-server stop: process {pid} named in {args.pid_file} is not the edge "
                "server that wrote it (a stale pid file?); nothing was signalled",
                file=sys.stderr,
            )
            return 1
        process.send_signal(signal.SIGTERM)
    except (OSError, ValueError, IndexError, psutil.Error) as exc:
        print(f"edge-server stop: no server to stop ({exc})", file=sys.stderr)
        return 1
    start = time.monotonic()
    print(f"edge-server stop: asked server {pid} ({address or 'address unknown'}) to close")
    while time.monotonic() - start < args.timeout:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                break  # exited; its parent has not collected it yet
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        print(f"edge-server stop: {pid} still running after {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"edge-server stop: server {pid} stopped after {time.monotonic() - start:.1f} s")
    return 0


def _read_pid_file(path: Path) -> tuple[int, float | None, str]:
    """(pid, start time, address) from a --pid-file (older files hold only the pid)."""
    lines = path.read_text().split()
    started = float(lines[1]) if len(lines) > 1 else None
    return int(lines[0]), started, lines[2] if len(lines) > 2 else ""


def _is_edge_server(process: psutil.Process, started: float | None) -> bool:
    """Whether ``process`` is the edge server that wrote the pid file (not a reused pid)."""
    if started is not None and abs(process.create_time() - started) > 0.01:
        return False
    command = " ".join(process.cmdline())
    return "edge_server" in command or "edge-server" in command


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT (or stop another server: ``stop``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stop"]:
        return stop(argv[1:])
    config, args = parse_args(argv)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # --app modules are found here first, as python -m does
    setup_logging(args.log_level, args.log_format)
    try:
        server = EdgeServer(config)
    except ConfigError as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return 2
    if config.allow_code_shipping:
        logging.getLogger("edge_server").warning(
            "code shipping is ON: any client that can connect can run arbitrary code here"
        )
    if args.exit_with_stdin:
        threading.Thread(target=_stop_at_eof, args=(server,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())

    def ready(address: str) -> None:
        if args.pid_file:  # pid, start time, address: edge-server stop checks the first two
            started = psutil.Process().create_time()
            with open(args.pid_file, "w") as out:
                out.write(f"{os.getpid()}\n{started!r}\n{address}\n")
        if args.print_address:
            print(address, flush=True)

    try:
        server.serve(on_ready=ready)
    except ConfigError as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(args.pid_file)
    return 0
