"""``offload ui [--port 8765] [--open] [--app MODULE]``: start the app and print its URL.

Registered on ``offload``'s parser by :func:`add_command`; Starlette and
uvicorn are imported only when the command runs, so the base install
needs neither (they come with the ``offload[ui]`` extra).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import webbrowser
from collections.abc import Callable
from typing import Any

from .. import _exceptions as errors
from .. import cli_fleet
from ..config import Config


def add_command(command: Callable[..., Any]) -> None:
    """Add ``ui`` with ``command(name, run, help)`` (it adds --server, keys and --json)."""
    ui = command("ui", run, "the app in your browser: servers, jobs, new jobs, credits")
    ui.add_argument("--port", type=int, default=8765, help="on 127.0.0.1 (default: 8765; 0: any)")
    ui.add_argument("--open", action="store_true", help="open it in the web browser")
    ui.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module whose @offload functions the New job page offers; may be repeated",
    )
    cli_fleet.add_arguments(ui)


def run(args: argparse.Namespace) -> int:
    """Serve the app until interrupted (Ctrl-C or SIGTERM)."""
    try:
        import uvicorn

        from .app import build
    except ImportError as exc:
        raise errors.ConfigError(
            f"offload ui needs the ui extra: pip install 'offload[ui]' ({exc})"
        ) from exc
    from ..client import Client
    from .state import UiState

    config = Config.load(
        server=args.server,
        server_key=args.server_key,
        client_key=args.client_key,
        **cli_fleet.settings(args),
        mode="remote",  # a job started from the page runs on a server, where the page sees it
    )
    if not (config.server or config.servers):
        raise errors.ConfigError(
            "no server: give --server, --servers, OFFLOAD_SERVER or offload.toml"
        )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)  # connections wait in the backlog until uvicorn serves them
    port = listener.getsockname()[1]
    token = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}/?token={token}"
    client = Client(config=config)
    try:
        app = build(UiState(client, args.app), token)
        # An open event stream would hold a graceful shutdown forever: give it 2 s.
        settings = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(settings)
        print(json.dumps({"url": url}) if args.json else f"offload ui: {url}", flush=True)
        if args.open:
            webbrowser.open(url)
        server.run(sockets=[listener])
    finally:
        client.shutdown(wait=False)  # jobs on servers go on; `offload jobs` still sees them
    return 0
