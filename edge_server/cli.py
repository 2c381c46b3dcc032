"""``edge-server`` / ``python -m edge_server``: run an edge server in the foreground.

``edge-server stop --pid-file FILE`` asks a server started with that
``--pid-file`` to close (SIGTERM: running checkpointed jobs hand their state
home first) and waits until it has exited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import psutil

from offload._exceptions import ConfigError

from . import advertise, dashboard
from .logs import setup_logging
from .options import parse_args
from .server import EdgeServer
from .service import main as service_main
from .stopping import stop


def _stop_at_eof(server: EdgeServer) -> None:
    # os.read on the raw fd: a daemon thread inside sys.stdin's buffer lock would
    # abort the interpreter at exit.
    with contextlib.suppress(OSError):
        while os.read(0, 65536):
            pass
    server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT (or stop another server: ``stop``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stop"]:
        return stop(argv[1:])
    if argv[:1] == ["service"]:
        return service_main(argv[1:])
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

    advertised: list[advertise.Advertiser | None] = []
    dashboards: list[dashboard.Dashboard | None] = []

    def ready(address: str) -> None:
        advertised.append(advertise.start(config, args, address))  # in a thread: ~1.7 s
        dashboards.append(dashboard.start(args, server, config.data_dir))
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
        for board in dashboards:
            if board is not None:
                board.stop()
        for advertiser in advertised:
            if advertiser is not None:
                advertiser.stop()
        if args.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(args.pid_file)
    return 0
