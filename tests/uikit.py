"""What the browser tests of ``offload ui`` share: Chromium, and a live ``offload ui`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Ui:
    """A running ``offload ui`` process: its URL with the token, and its base."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process, self.url = process, url
        self.base = url.split("/?")[0]


@contextmanager
def running_ui(args: Sequence[str], data_home: str, launcher: Sequence[str] = ()) -> Iterator[Ui]:
    """``offload ui --port 0 ARGS`` until the block ends (then SIGTERM, SIGKILL after 10 s).

    ``launcher`` prefixes the command (``ip netns exec NS``).
    """
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p),
        OFFLOAD_PROFILE_CACHE="",
        XDG_DATA_HOME=data_home,
    )
    command = [*launcher, sys.executable, "-m", "offload.cli", "ui", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("offload ui: http://127.0.0.1:"), line
        yield Ui(process, line.split(": ", 1)[1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def chromium(api: Any, executable: str = CHROMIUM) -> Iterator[Any]:
    """One headless Chromium (Debian's) driven by Playwright's sync API ``api``.

    ``executable``: the browser, or a script that runs it (in a network namespace, say).
    """
    with api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_new_job(page: Any) -> None:
    """Go to New job and wait until app.js listens to the form.

    ``wait_for_url`` is not enough: when the click has already committed the navigation the
    URL matches at once, and the load state it then waits for may still be the old page's, so
    a fill could come before the listener that switches the form to JSON mode.
    """
    page.click("text=New job")
    page.locator("#new-job[data-ready]").wait_for(state="attached")
