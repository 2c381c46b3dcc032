"""``edge-server stop --pid-file FILE``: close a running server and wait until it has exited.

The pid file holds the server's pid, its start time and its address; a pid
whose process started at another time, or is not an edge server, is a stale
file naming a reused pid, and nothing is signalled.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from offload.human import parse_duration


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
