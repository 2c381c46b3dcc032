"""``edge-server --dashboard``: the operator's view, behind its token, on a live server.

A real edge server with the dashboard on a free loopback port and a token
file; a client's running job and failed job show on the page; no token, a
wrong token or a wrong cookie get 403.
"""

from __future__ import annotations

import http.cookiejar
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import offload
from tests import apps

pytest.importorskip("starlette", reason="the dashboard needs offload[ui] (Starlette, uvicorn)")
TOKEN = "operator-token-for-the-dashboard-test"


class Board:
    def __init__(self, server: offload.LocalServer, base: str) -> None:
        self.server, self.base = server, base


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    token = tmp_path_factory.mktemp("dash") / "token"
    token.write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--log-level", "WARNING", "--dashboard", f"127.0.0.1:{port}"]
    extra += ["--dashboard-token-file", str(token)]
    with offload.serve_local(["tests.apps"], workers=2, extra_args=extra) as server:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.05)
        yield Board(server, base)


def _get(
    url: str, opener: urllib.request.OpenerDirector | None = None, **headers: str
) -> tuple[int, str]:
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, ""


def test_the_dashboard_refuses_anyone_without_the_token(board: Board) -> None:
    assert _get(board.base + "/")[0] == 403
    assert _get(board.base + "/?token=wrong")[0] == 403
    assert _get(board.base + "/", Cookie="offload_ui=wrong")[0] == 403
    assert _get(board.base + f"/?token={TOKEN}", Host="evil.example")[0] == 403


def test_it_shows_health_running_jobs_and_failures(board: Board, tmp_path: Path) -> None:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    status, page = _get(board.base + f"/?token={TOKEN}", opener)
    assert status == 200 and 'id="health"' in page and TOKEN not in page
    with offload.Client(board.server.address, mode="remote") as client:
        slow = client.submit(apps.slow_where, 3.0)
        with pytest.raises(ValueError):
            client.submit(apps.fail, "a failure the operator sees").result(timeout=30)
        deadline = time.monotonic() + 15
        while True:
            status, page = _get(board.base + "/", opener)
            if "slow_where" in page and "a failure the operator sees" in page:
                break
            assert time.monotonic() < deadline, page
            time.sleep(0.3)
        assert status == 200
        assert "<td id=h-workers>2</td>" in page
        assert 'id="clients"' in page and "(anonymous)" in page  # the client seen, calls counted
        shots = os.environ.get("OFFLOAD_UI_SCREENSHOTS")
        if shots:
            _screenshot(board.base + f"/?token={TOKEN}", Path(shots) / "dashboard.png")
        slow.result(timeout=30)


def _screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.uikit import ARGS, CHROMIUM

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1000, "height": 720})
        page.goto(url)
        page.screenshot(path=str(path), full_page=True)
        browser.close()
