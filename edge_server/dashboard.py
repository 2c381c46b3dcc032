"""``edge-server --dashboard HOST:PORT``: the operator's view in a browser (off by default).

One page, refreshed every few seconds: the server's health (workers, running
and queued jobs, connections, engine), the jobs running or waiting for every
owner, usage per owner, the latest failures with their errors, and the
clients seen lately (calls, bytes, distance when they share a location). It reads
:meth:`EdgeServer.health` and the job store through
:class:`~edge_server.overview.StoreOverview` (read-only, never blocking the
server's writes).

Access needs the operator's token: ``--dashboard-token-file FILE`` (its
first line), else a random one made at start and logged with the URL. The
first visit with ``?token=`` turns it into an HttpOnly cookie; anything else
gets 403 (the same guard as ``offload ui``: :class:`offload.ui.app.Guard`).
Starlette and uvicorn (``offload[ui]``) are imported only when it is on.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import threading
import time
from html import escape
from pathlib import Path
from typing import Any

from offload import human
from offload._exceptions import ConfigError, StoreError

from .overview import Overview, StoreOverview

log = logging.getLogger("edge_server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dashboard`` and ``--dashboard-token-file``."""
    parser.add_argument(
        "--dashboard",
        metavar="HOST:PORT",
        help="serve the operator's view in a browser here, e.g. 127.0.0.1:8080 "
        "(needs offload[ui]; off by default)",
    )
    parser.add_argument(
        "--dashboard-token-file",
        metavar="FILE",
        help="the dashboard's access token (first line); default: a random one, logged",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """ConfigError on a malformed ``--dashboard``, an unreadable token file or no Starlette."""
    if not args.dashboard:
        return
    host, _, port = args.dashboard.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--dashboard is HOST:PORT, e.g. 127.0.0.1:8080, not {args.dashboard!r}")
    if args.dashboard_token_file:
        try:
            token = Path(args.dashboard_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--dashboard-token-file: {exc}") from exc
        if len(token) < 16:
            raise ConfigError("--dashboard-token-file: a token of at least 16 characters")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--dashboard needs offload[ui] (Starlette, uvicorn): {exc}") from exc


class Dashboard:
    """The dashboard's web server, in a daemon thread of the edge server's process."""

    def __init__(self, server: Any, data_dir: str, bind: str, token: str) -> None:
        import uvicorn

        from offload.ui.app import Guard

        self._server, self._store = server, StoreOverview(Path(data_dir) / "jobs.sqlite")
        host, _, port = bind.rpartition(":")
        hosts = ("127.0.0.1", "localhost", host)
        app = Guard(self._app(), token, secrets.token_urlsafe(24), hosts=hosts)
        config = uvicorn.Config(
            app, host=host, port=int(port), log_level="warning", timeout_graceful_shutdown=2
        )
        self._web = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._web.run, name="dashboard", daemon=True)
        self._thread.start()
        self.url = f"http://{bind}/?token={token}"

    def stop(self) -> None:
        """Stop serving (within a few seconds)."""
        self._web.should_exit = True
        self._thread.join(5)

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import HTMLResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        async def page(request: Request) -> HTMLResponse:
            return HTMLResponse(await run_in_threadpool(self.render))

        static = StaticFiles(packages=[("offload.ui", "static")])
        return Starlette(routes=[Route("/", page), Mount("/static", static)])

    def render(self) -> str:
        """The page: health, live jobs of all owners, usage, recent failures, clients seen."""
        health = self._server.health()
        cards = "".join(
            f"<tr><th>{escape(k)}</th><td id=h-{escape(k)}>{escape(str(health.get(k)))}</td></tr>"
            for k in ("ok", "workers", "running", "queued", "connections", "engine", "closing")
        )
        uptime = human.seconds(health.get("uptime_s", 0.0))
        store = self._read()
        live, usage, failed = store.live, store.usage, store.failed
        now = time.time()
        seen = [
            (
                _owner(v["client"]),
                human.ago(v["first_seen"], now),
                human.ago(v["last_seen"], now),
                v["calls"],
                human.size(v["bytes_in"]),
                human.size(v["bytes_out"]),
                "-" if v["distance_km"] is None else f"{v['distance_km']:g} km",
            )
            for v in self._server.visitors()[:100]
        ]
        return _PAGE.format(
            clients=_table(
                ("client", "first seen", "last seen", "calls", "in", "out", "distance"),
                seen,
                "clients",
            ),
            health=cards,
            uptime=uptime,
            live=_table(
                ("id", "owner", "function", "state", "submitted"),
                [(j[0], _owner(j[1]), j[2], j[3], human.ago(j[4], now)) for j in live],
                "live",
            ),
            usage=_table(
                ("owner", "jobs", "cpu", "in", "out"),
                [
                    (_owner(u[0]), u[1], human.seconds(u[2]), human.size(u[3]), human.size(u[4]))
                    for u in usage
                ],
                "usage",
            ),
            failed=_table(
                ("id", "owner", "function", "finished", "error"),
                [(f[0], _owner(f[1]), f[2], human.ago(f[3] or now, now), f[4]) for f in failed],
                "failed",
            ),
        )

    def _read(self) -> Overview:
        try:
            return self._store.read()
        except StoreError as exc:
            log.warning("dashboard: cannot read the job store: %s", exc)
            return Overview()


def start(args: argparse.Namespace, server: Any, data_dir: str) -> Dashboard | None:
    """Start the dashboard if ``--dashboard`` asks for it; log its URL with the token."""
    if not args.dashboard:
        return None
    if args.dashboard_token_file:
        token = Path(args.dashboard_token_file).read_text().strip().splitlines()[0]
    else:
        token = secrets.token_urlsafe(24)
    dashboard = Dashboard(server, data_dir, args.dashboard, token)
    shown = dashboard.url if not args.dashboard_token_file else f"http://{args.dashboard}/"
    log.warning("operator dashboard at %s", shown)
    return dashboard


def _owner(owner: str) -> str:
    if not owner:
        return "(anonymous)"  # a server without keys: every client is the same owner
    return owner if len(owner) <= 16 else owner[:12] + "…"


def _table(columns: tuple[str, ...], rows: list[tuple[Any, ...]], name: str) -> str:
    if not rows:
        return f'<p class="muted" id="{name}">none</p>'
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="wrap">{escape(str(v))}</td>' for v in row) + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table id="{name}"><tr>{head}</tr>{body}</table></div>'


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5"><title>edge-server dashboard</title>
<link rel="stylesheet" href="/static/app.css"></head><body>
<header><strong class="brand">edge-server</strong><span class="muted">operator view</span></header>
<main><h1>Health</h1><p class="muted">up {uptime}</p><table id="health">{health}</table>
<h2>Running and waiting (all owners)</h2>{live}<h2>Usage per owner</h2>{usage}
<h2>Recent failures</h2>{failed}<h2>Clients seen lately</h2>{clients}</main></body></html>"""
