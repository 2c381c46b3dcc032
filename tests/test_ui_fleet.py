"""``offload ui``'s Overview with two servers found on the LAN: site, distance and the map.

Everything runs in a network namespace whose only interface is loopback
(mDNS works there): two edge servers that advertise their name, site and
coordinates, ``offload ui --servers auto`` with this device's location, and
the headless Chromium itself (started through ``ip netns exec``; Playwright
talks to it over a pipe, so the namespace does not get in the way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import offload
from offload.geo import distance_km, parse_location
from tests.uikit import CHROMIUM, chromium, running_ui

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("starlette", reason="starlette is not installed (the ui extra)")
pytest.importorskip("zeroconf", reason="discovery needs offload[fleet] (zeroconf)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("a network namespace needs root and iproute2", allow_module_level=True)

AALBORG, BERLIN, COPENHAGEN = "57.0488,9.9217", "52.52,13.405", "55.6761,12.5683"
PLACES = (AALBORG, BERLIN)


@pytest.fixture(scope="module")
def netns() -> Iterator[list[str]]:
    name = f"offload-ui-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=10, check=False)


def _server(launcher: list[str], name: str, site: str, location: str) -> offload.LocalServer:
    extra = ["--advertise", "--log-level", "WARNING", "--name", name, "--location", location]
    return offload.serve_local(
        ["tests.apps"], workers=1, launcher=launcher, extra_args=[*extra, "--site", site]
    )


def test_two_servers_with_sites_distances_and_the_map(netns: list[str], tmp_path: Path) -> None:
    wrapper = tmp_path / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(netns)} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with (
        _server(netns, "aalborg", "Aalborg Hovedbibliotek", AALBORG),
        _server(netns, "berlin", "Berlin Mitte", BERLIN),
    ):
        args = ["--servers", "auto", "--insecure", "--location", COPENHAGEN]
        with (
            running_ui(args, str(tmp_path / "data"), launcher=netns) as ui,
            chromium(playwright_api, str(wrapper)) as browser,
        ):
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.set_default_timeout(15_000)
            page.goto(ui.url)
            deadline = time.monotonic() + 20  # advertising takes ~1.7 s; the list is kept 5 s
            while page.locator("table#servers tr").count() < 3:
                assert time.monotonic() < deadline, page.locator("main").inner_text()
                time.sleep(1)
                page.reload()
            rows = page.locator("table#servers").inner_text()
            assert "Aalborg Hovedbibliotek" in rows and "Berlin Mitte" in rows
            km = [distance_km(parse_location(COPENHAGEN), parse_location(at)) for at in PLACES]
            assert all(f"{d:.1f} km" in rows for d in km), rows
            assert page.locator("svg.map circle.map-server").count() == 2
            assert page.locator("svg.map circle.map-you").count() == 1
            labels = page.locator("svg.map text.map-km").all_text_contents()
            assert sorted(labels) == sorted(f"{d:.0f} km" for d in km)
            shots = os.environ.get("OFFLOAD_UI_SCREENSHOTS")
            if shots:
                page.screenshot(path=str(Path(shots) / "overview-servers.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 760})  # a phone
                page.screenshot(path=str(Path(shots) / "overview-phone.png"), full_page=True)
