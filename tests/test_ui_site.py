"""``offload ui``'s Credits and estimate against a live site: a Dask scheduler and an edge server
with ``--engine dask`` and CurveZMQ keys, in a real headless Chromium.

The page shows the key's balance (the site's grant to a new user), today's
prices per slot, and on New job the price of a call before it is submitted.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import offload
from offload.cli import main as offload_main
from tests.uikit import CHROMIUM, Ui, chromium, open_new_job, running_ui

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("starlette", reason="starlette is not installed (the ui extra)")
pytest.importorskip("distributed", reason="a site needs offload[site] (Dask distributed)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

GRANT = 25  # credits a new user gets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    root = tmp_path_factory.mktemp("ui-site")
    keys, authorized = root / "keys", root / "authorized"
    authorized.mkdir()
    for name in ("server", "alice"):
        assert offload_main(["keys", "generate", name, "--dir", str(keys)]) == 0
    (authorized / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p))
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "the Dask scheduler did not start"
            time.sleep(0.05)
        extra = [
            "--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}",
            "--secret-key", str(keys / "server.key_secret"), "--authorized-keys", str(authorized),
            "--credit-grant", str(GRANT), "--log-level", "WARNING",
        ]  # fmt: skip
        with offload.serve_local(
            ["tests.site_apps"], data_dir=str(root / "data"), extra_args=extra
        ) as site:
            args = ["--server", site.address, "--server-key", str(keys / "server.key")]
            args += ["--client-key", str(keys / "alice.key_secret"), "--app", "tests.site_apps"]
            with running_ui(args, str(root / "ui-data")) as ui:
                yield ui
    finally:
        scheduler.terminate()
        try:
            scheduler.wait(10)
        except subprocess.TimeoutExpired:
            scheduler.kill()
            scheduler.wait()


@pytest.fixture(scope="module")
def page(site_ui: Ui) -> Iterator[Any]:
    with chromium(playwright_api) as browser:
        context = browser.new_context(viewport={"width": 1000, "height": 720})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(site_ui.url)
        yield page
        context.close()


def test_credits_show_the_balance_prices_and_statement(page: Any) -> None:
    page.click("text=Credits")
    assert page.locator("#balance").inner_text() == f"{GRANT}.000000"
    assert page.locator("#prices tr").count() == 5  # a header and four 6-hour slots
    assert "(now)" in page.locator("#prices").inner_text()
    assert "grant" in page.locator("#statement").inner_text().lower()
    shots = os.environ.get("OFFLOAD_UI_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "credits-site.png"), full_page=True)


def test_new_job_shows_the_price_before_submitting(page: Any) -> None:
    open_new_job(page)
    page.select_option("#fn", "tests.site_apps:add")
    page.fill("#args", "[2, 3]")
    page.click("#estimate-button")
    assert "credits" in page.locator("#estimate").inner_text()
    assert re.fullmatch(r"\d+\.\d{6}", page.locator("#quote").inner_text())
