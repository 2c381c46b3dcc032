"""The web app of ``offload ui``: routes, the launch token, CSRF, live updates (Starlette).

Security, all in :class:`Guard`:

* it listens on 127.0.0.1 and refuses a ``Host`` other than 127.0.0.1 or
  localhost (a page elsewhere cannot rebind its name to this port);
* a random token, made at each launch, is in the URL printed at start;
  the first request with it gets it as an HttpOnly, SameSite=Strict cookie
  and is redirected to the same page without it; anything without the
  cookie is refused with 403;
* every POST carries a second random token (``csrf``, in the pages' forms),
  else 403; the launch token is never written into a page and the client's
  secret key never leaves :class:`~offload.Client`.

Starlette was chosen as a small, pure-Python ASGI toolkit (installs on a
Raspberry Pi as is); uvicorn serves it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import _exceptions as errors
from .. import cli_output as out
from . import pages
from .argform import fieldset, parse_fields
from .state import STATES, UiState, as_download, load_npy, parse_arguments

COOKIE = "offload_ui"
FORM = "offload.form"  # the scope key of a POST's parsed form
MAX_FORM = 64 << 20  # bytes of a form this app reads (an uploaded .npy, base64)


def _parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """An urlencoded form (the pages' forms are); {} for any other body or a too large one.

    Parsed here rather than by Starlette, whose form parsing needs python-multipart.
    """
    if not content_type.startswith("application/x-www-form-urlencoded") or len(body) > MAX_FORM:
        return {}
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def form_of(request: Request) -> dict[str, str]:
    """The POST's form, as :class:`Guard` read it."""
    return dict(request.scope.get(FORM, {}))


class Guard:
    """ASGI middleware: the Host check, the launch token then cookie, and CSRF on POST."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        csrf: str,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.app, self.token, self.csrf, self.hosts = app, token, csrf, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        host = (request.headers.get("host") or "").rsplit(":", 1)[0]
        if host not in self.hosts:
            await _refuse(f"this app answers only as {', '.join(self.hosts)}")(scope, receive, send)
            return
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given, self.token):
            rest = urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            )
            answer = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
            answer.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await answer(scope, receive, send)
            return
        if not hmac.compare_digest(request.cookies.get(COOKIE, ""), self.token):
            await _refuse("open the URL `offload ui` printed (it holds the token)")(
                scope, receive, send
            )
            return
        if request.method not in ("GET", "HEAD"):
            form = _parse_form(await request.body(), request.headers.get("content-type", ""))
            sent = request.headers.get("x-csrf-token") or form.get("csrf", "")
            if not hmac.compare_digest(sent, self.csrf):
                await _refuse("missing or wrong CSRF token")(scope, receive, send)
                return
            scope[FORM] = form  # read once here; the routes take it from the scope
        await self.app(scope, receive, send)


def _refuse(why: str) -> Response:
    return HTMLResponse(f"<!doctype html><title>403</title><p>403 Forbidden: {why}</p>", 403)


def build(state: UiState, token: str, csrf: str | None = None, poll: float = 0.5) -> ASGIApp:
    """The ASGI app over ``state``; ``token`` from the printed URL, ``csrf`` for the forms."""
    csrf = csrf or secrets.token_urlsafe(24)

    def page(title: str, active: str, body: str) -> HTMLResponse:
        return HTMLResponse(pages.layout(title, active, body, csrf))

    async def overview(request: Request) -> Response:
        servers = await run_in_threadpool(state.servers)
        running = await run_in_threadpool(state.running)
        here = state.client.config.location
        addresses = await run_in_threadpool(state.addresses)
        body = pages.overview(servers, here, state.started(), running, csrf, addresses)
        return page("Overview", "/", body)

    async def jobs(request: Request) -> Response:
        addresses = await run_in_threadpool(state.addresses)
        address = request.query_params.get("server") or (addresses[0] if addresses else "")
        wanted = request.query_params.get("state", "")
        before = _int(request.query_params.get("before"))
        listed, error, more = [], "", ""
        if wanted and wanted not in STATES:
            error = f"no state {wanted!r}"
        elif address:
            try:
                states = [wanted] if wanted else []
                listed = await run_in_threadpool(state.server_jobs, address, states, before)
            except errors.OffloadError as exc:
                error = f"{address}: {type(exc).__name__}: {exc}"
        if len(listed) == 20:
            more = "/jobs?" + urlencode(
                {"server": address, "state": wanted, "before": listed[-1].id}
            )
        body = pages.jobs_page(
            addresses, address, wanted, listed, error, state.started(), csrf, more, before is None
        )
        return page("Jobs", "/jobs", body)

    async def new(request: Request) -> Response:
        names = sorted(state.functions)
        source = request.query_params if request.method == "GET" else form_of(request)
        name = str(source.get("fn") or (names[0] if names else ""))
        args, kwargs = str(source.get("args", "[]")), str(source.get("kwargs", "{}"))
        mode = str(source.get("mode") or ("json" if "args" in source else "fields"))
        estimate, error = None, ""
        try:
            if request.method == "POST" or "fn" in source:  # a fresh form has nothing wrong yet
                if mode == "fields":
                    upload = str(source.get("upload", ""))
                    parsed = parse_fields(
                        name, state.function(name), source, load_npy(upload) if upload else None
                    )
                else:
                    parsed = parse_arguments(args, kwargs, str(source.get("upload", "")))
                if request.method == "POST":
                    await run_in_threadpool(state.submit, name, *parsed)
                    return RedirectResponse("/jobs", 303)
                estimate = await run_in_threadpool(state.estimate, name, *parsed)
        except (errors.OffloadError, TypeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        fields = "".join(
            fieldset(f, state.functions[f], source if "mode" in source else None, f == name)
            for f in names
        )
        body = pages.new_page(names, name, args, kwargs, estimate, error, csrf, fields, mode)
        return page("New job", "/new", body)

    async def credits(request: Request) -> Response:
        addresses = await run_in_threadpool(state.addresses)
        address = request.query_params.get("server") or (addresses[0] if addresses else "")
        try:
            found = await run_in_threadpool(state.credits, address)
        except errors.OffloadError as exc:
            found = {"not_site": f"{type(exc).__name__}: {exc}"}
        return page("Credits", "/credits", pages.credits_page(addresses, address, found))

    async def started_action(request: Request) -> Response:
        key, action = request.path_params["key"], request.path_params["action"]
        form = form_of(request)
        try:
            if action == "pause":
                state.pause(key)
            elif action == "resume":
                await run_in_threadpool(state.resume, key, form.get("where", "remote"))
            elif action == "cancel":
                await run_in_threadpool(state.cancel_started, key)
            else:
                return Response("no such action", 404)
        except errors.OffloadError as exc:
            return Response(f"{type(exc).__name__}: {exc}", 409)
        back = str(form.get("next", "/jobs"))
        local = back.startswith("/") and not back.startswith("//")  # no open redirect
        return RedirectResponse(back if local else "/jobs", 303)

    async def started_result(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            value = state.result_of_started(key)
        except errors.JobLookupError as exc:
            return Response(f"{type(exc).__name__}: {exc}", 404)
        except Exception as exc:  # the job's own failure
            return Response(f"the job failed: {type(exc).__name__}: {exc}", 409)
        return _download(value, f"job-{key}")

    async def server_result(request: Request) -> Response:
        job_id = request.path_params["job"]
        address = request.query_params.get("server", "")
        try:
            value = await run_in_threadpool(state.result, address, job_id)
        except errors.JobLookupError as exc:
            return Response(f"{type(exc).__name__}: {exc}", 404)
        except Exception as exc:  # the job's own failure, rebuilt
            return Response(f"the job failed: {type(exc).__name__}: {exc}", 409)
        return _download(value, f"job-{job_id}")

    async def server_cancel(request: Request) -> Response:
        form = form_of(request)
        address = str(form.get("server", ""))
        try:
            jobs_there = await run_in_threadpool(state.jobs_of, address)
            await run_in_threadpool(jobs_there.cancel, request.path_params["job"])
        except errors.OffloadError as exc:
            return Response(f"{type(exc).__name__}: {exc}", 409)
        return RedirectResponse("/jobs?" + urlencode({"server": address}), 303)

    async def events(request: Request) -> Response:
        """Server-sent events: the jobs started here, and what the page shows of the servers.

        ``server`` (Jobs): that server's newest jobs (``state``: of that state), each
        with its row's HTML, so rows new since the page came can be added; ``overview``:
        the Overview's table of this key's jobs on every server. Each is asked at most
        once a second.
        """
        query = request.query_params
        address, wanted = query.get("server", ""), query.get("state", "")
        overview = query.get("overview") == "1"
        states = [wanted] if wanted in STATES else []

        async def stream() -> AsyncIterator[str]:
            last, ticks, listed, running = "", 0, [], None
            while not await request.is_disconnected():
                if ticks % 2 == 0:  # a control request a second at most
                    if address:
                        listed = await run_in_threadpool(server_rows, address, states)
                    if overview:
                        found = await run_in_threadpool(state.running)
                        running = pages.on_servers_table(found)
                ticks += 1
                now = json.dumps(
                    {"started": state.started(), "server": listed, "on_servers": running}
                )
                if now != last:
                    yield f"data: {now}\n\n"
                    last = now
                await asyncio.sleep(poll)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    def server_rows(address: str, states: list[str]) -> list[dict[str, Any]]:
        try:
            jobs = state.server_jobs(address, states)
        except errors.OffloadError:
            return []
        now = time.time()
        return [
            {
                "id": j.id,
                "state": j.state.value,
                "function": j.function,
                "shown": out.state(j),
                "html": pages.job_row(j, address, csrf, now),
            }
            for j in jobs
        ]

    routes = [
        Route("/", overview),
        Route("/jobs", jobs),
        Route("/new", new, methods=["GET", "POST"]),
        Route("/credits", credits),
        Route("/events", events),
        Route("/started/{key}/result", started_result),
        Route("/started/{key}/{action}", started_action, methods=["POST"]),
        Route("/jobs/{job:int}/result", server_result),
        Route("/jobs/{job:int}/cancel", server_cancel, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("offload.ui", "static")]), name="static"),
    ]
    return Guard(Starlette(routes=routes), token, csrf)


def _download(value: Any, stem: str) -> Response:
    body, media, name = as_download(value, stem)
    return Response(
        body, media_type=media, headers={"Content-Disposition": f"attachment; filename={name}"}
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
