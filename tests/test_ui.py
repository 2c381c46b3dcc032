"""``offload ui`` in a real headless Chromium, against a live app process and a live edge server.

One browser for the module (Debian's ``/usr/bin/chromium`` driven by
Playwright's Python API; Playwright's own browser download is not
reachable). The tests submit a job from the form, watch its progress, pause
and resume it, download its result, see the completion toast, and check that
the app refuses requests without its token, POSTs without the CSRF token and
other Host names. With ``OFFLOAD_UI_SCREENSHOTS=DIR`` the pages' screenshots
are written there (``docs/ui`` in the repository), else to a temporary
directory.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import offload
from tests import apps
from tests.uikit import CHROMIUM, Ui, chromium, open_new_job, running_ui

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytest.importorskip("starlette", reason="starlette is not installed (the ui extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def form_says(page: Any, text: str) -> None:
    """The form's error says ``text``, once the page that answers the submit is shown.

    Retried (``expect``) rather than read once: a submit's page comes after the click
    returns, and the page before it may show an error of its own.
    """
    playwright_api.expect(page.locator("#form-error")).to_contain_text(text, timeout=15_000)


@pytest.fixture(scope="module")
def edge() -> Iterator[offload.LocalServer]:
    with offload.serve_local(["tests.apps"], workers=2, extra_args=["--log-level", "WARNING"]) as s:
        yield s


@pytest.fixture(scope="module")
def ui(edge: offload.LocalServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    args = ["--server", edge.address, "--app", "tests.apps", "--location", "52.52,13.405"]
    with running_ui(args, str(tmp_path_factory.mktemp("ui-data"))) as ui:
        yield ui


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(playwright_api) as launched:
        yield launched


@pytest.fixture
def page(browser: Any, ui: Ui) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 720}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(ui.url)  # the token becomes a cookie; the URL loses it
    yield page
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("OFFLOAD_UI_SCREENSHOTS")
    path = Path(wanted) if wanted else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_overview_lists_the_server_and_draws_the_map(page: Any, edge: Any, shots: Path) -> None:
    assert "token" not in page.url
    servers = page.locator("table#servers")
    assert edge.address in servers.inner_text()
    assert "No coordinates" in page.locator("main").inner_text()  # none advertised here
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 760})  # a phone
    assert page.locator("nav a").count() == 4
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone: wide tables scroll in their box


def test_submit_watch_pause_resume_download(page: Any, tmp_path: Path, shots: Path) -> None:
    log = tmp_path / "steps.log"
    open_new_job(page)
    page.select_option("#fn", "tests.apps:count_up")
    page.fill("#args", json.dumps([40, 0.1, str(log)]))
    page.click("#estimate-button")
    assert "Would run" in page.locator("#estimate").inner_text()
    page.click("#submit-button")
    page.wait_for_url("**/jobs")
    row = page.locator("#started tr[data-job]").first
    count = row.locator(".count")
    page.wait_for_function(
        "el => parseInt(el.textContent) >= 3", arg=count.element_handle()
    )  # progress from checkpoints, live over SSE
    row.locator("[data-when=running] button").click()  # Pause
    row = page.locator("#started tr[data-job]").first
    row.locator(".state", has_text="paused").wait_for()
    stopped = int(row.locator(".count").inner_text().split("/")[0])
    assert 3 <= stopped < 40
    page.screenshot(path=str(shots / "jobs-paused.png"), full_page=True)
    row.locator("[data-when=paused] button").first.click()  # Resume (on the server)
    row = page.locator("#started tr[data-job]").first
    toast = page.locator(".toast", has_text="is complete")
    toast.wait_for(timeout=20_000)  # the completion notification, as a toast
    assert row.locator(".state").inner_text() == "done"
    assert row.locator(".count").inner_text().startswith("40 /")
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    with page.expect_download() as download:
        row.locator("a[data-when=done]").click()
    body = Path(download.value.path()).read_text()
    assert json.loads(body) == sum(i * i for i in range(40))
    page.reload()  # the server's list: the paused run says where it went on
    runs = page.locator("table#jobs").inner_text()
    assert "resumed (job" in runs and "done" in runs


def test_a_plain_job_then_its_estimate(page: Any, shots: Path) -> None:
    open_new_job(page)
    page.select_option("#fn", "tests.apps:add")
    page.fill("#args", "[2, 3]")
    page.click("#submit-button")
    page.wait_for_url("**/jobs")
    row = page.locator("#started tr[data-job]").first
    row.locator(".state", has_text="done").wait_for()
    with page.expect_download() as download:
        row.locator("a[data-when=done]").click()
    assert json.loads(Path(download.value.path()).read_text()) == 5
    open_new_job(page)  # the profiler now knows add: the estimate has figures
    page.select_option("#fn", "tests.apps:add")
    page.fill("#args", "[2, 3]")
    page.click("#estimate-button")
    shown = page.locator("#estimate").inner_text()
    assert "Would run on the server" in shown
    assert page.locator("#server-time").inner_text() != "unknown"  # measured by the first run
    page.screenshot(path=str(shots / "new-job.png"), full_page=True)


def test_an_uploaded_npy_file_as_an_argument(page: Any, tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "in.npy", array)
    open_new_job(page)
    page.select_option("#fn", "tests.apps:scaled")
    page.fill("#args", '["@file", 2.5]')
    page.set_input_files("#file", str(tmp_path / "in.npy"))
    page.click("#submit-button")
    page.wait_for_url("**/jobs")
    row = page.locator("#started tr[data-job]").first
    row.locator(".state", has_text="done").wait_for()
    with page.expect_download() as download:
        row.locator("a[data-when=done]").click()
    assert np.array_equal(np.load(download.value.path(), allow_pickle=False), array * 2.5)


def test_an_uploaded_pickle_is_refused(page: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    open_new_job(page)
    assert page.locator("#form-error").count() == 0  # nothing given yet: nothing wrong yet
    page.select_option("#fn", "tests.apps:echo")
    page.fill("#args", '["@file"]')
    page.set_input_files("#file", str(tmp_path / "objects.npy"))
    page.click("#submit-button")
    form_says(page, "not a .npy array")


def test_failed_job_shows_its_error_and_state_filter(page: Any) -> None:
    open_new_job(page)
    page.select_option("#fn", "tests.apps:fail")
    page.fill("#args", '["boom from the browser"]')
    page.click("#submit-button")
    page.wait_for_url("**/jobs")
    row = page.locator("#started tr[data-job]").first
    row.locator(".state", has_text="failed").wait_for()
    assert "boom from the browser" in row.locator(".job-error").inner_text()
    row.locator("details.traceback summary").click()  # the server's traceback, unfolded
    trace = row.locator("details.traceback pre").inner_text()
    assert "Traceback" in trace and "apps.py" in trace and "boom from the browser" in trace
    page.select_option("select[name=state]", "failed")
    page.click("form[action='/jobs'] button")
    assert "boom from the browser" in page.locator("table#jobs").inner_text()
    states = page.locator("table#jobs .state").all_inner_texts()
    assert states and set(states) == {"failed"}


def test_bad_arguments_are_a_clear_error(page: Any) -> None:
    open_new_job(page)
    page.fill("#args", "[1, 2")
    page.click("#submit-button")
    form_says(page, "arguments are JSON")


def test_overview_shows_jobs_on_the_server_started_elsewhere_live(page: Any, edge: Any) -> None:
    box = page.locator("#on-servers-box")  # the Overview is open; no reload from here on
    with offload.Client(edge.address, mode="remote") as client:  # the same (anonymous) owner
        slow = client.submit(apps.slow_where, 2.0)
        box.locator("table#on-servers", has_text="slow_where").wait_for()
        slow.result(timeout=30)
    box.locator("text=None queued or running").wait_for()  # and gone once it finished


def test_a_job_started_elsewhere_appears_and_finishes_live_in_the_servers_list(
    page: Any, edge: Any
) -> None:
    page.click("text=Jobs")
    table = page.locator("table#jobs")
    table.wait_for()
    with offload.Client(edge.address, mode="remote") as client:
        slow = client.submit(apps.slow_where, 1.5)
        row = table.locator("tr[data-id]", has_text="slow_where").first
        row.wait_for()  # a new row, over the event stream
        if row.locator(".state").inner_text() in ("queued", "running"):
            assert row.locator("button", has_text="Cancel").count() == 1
        newest = table.locator("tr[data-id]").first
        assert newest.get_attribute("data-id") == row.get_attribute("data-id")  # newest first
        row.locator(".state", has_text="done").wait_for()  # no reload: over the event stream
        assert row.locator("button", has_text="Cancel").count() == 0  # redrawn, its buttons too
        page.locator(".toast", has_text="(slow_where) is complete").wait_for()
        slow.result(timeout=30)


def test_the_form_for_simple_types(page: Any, shots: Path) -> None:
    open_new_job(page)
    page.select_option("#fn", "tests.apps:power")
    fields = page.locator("fieldset[data-fn='tests.apps:power']")
    assert fields.is_visible() and page.locator("fieldset.fields:visible").count() == 1
    assert fields.locator("#p-power-base").get_attribute("type") == "number"
    assert fields.locator("#p-power-label").get_attribute("type") == "text"
    assert fields.locator("#p-power-negate").get_attribute("type") == "checkbox"
    assert fields.locator("#p-power-exponent").input_value() == "2"  # the default
    assert "extra (JSON)" in fields.inner_text()
    page.fill("#p-power-base", "2.5")  # not a whole number: the app says so (no 500)
    assert page.locator("#mode-fields").is_checked()
    page.click("#submit-button")
    form_says(page, "base: '2.5' is not a whole number")
    assert page.locator("#p-power-base").input_value() == "2.5"  # kept to correct
    page.fill("#p-power-base", "")
    page.click("#submit-button")
    form_says(page, "base: a value is needed")
    page.fill("#p-power-base", "3")
    page.fill("#p-power-exponent", "4")
    page.fill("#p-power-scale", "0.5")
    page.fill("#p-power-label", "three")
    page.check("#p-power-negate")
    page.fill("#p-power-extra", '{"k": [1, 2]}')
    page.click("#estimate-button")
    assert "Would run" in page.locator("#estimate").inner_text()
    assert page.locator("#p-power-label").input_value() == "three"  # the estimate keeps them
    assert page.locator("#p-power-negate").is_checked()
    page.screenshot(path=str(shots / "new-job-fields.png"), full_page=True)
    page.click("#submit-button")
    page.wait_for_url("**/jobs")
    row = page.locator("#started tr[data-job]", has_text="power").first
    row.locator(".state", has_text="done").wait_for()
    with page.expect_download() as download:
        row.locator("a[data-when=done]").click()
    answer = json.loads(Path(download.value.path()).read_text())
    assert answer == {"label": "three", "value": -40.5, "extra": {"k": [1, 2]}}


def test_a_bad_json_field_is_a_clear_error(page: Any) -> None:
    open_new_job(page)
    page.select_option("#fn", "tests.apps:power")
    page.fill("#p-power-base", "3")
    page.fill("#p-power-extra", "{nope")
    page.click("#submit-button")
    form_says(page, "extra: not JSON")


def test_hostile_requests_get_clear_errors_and_the_app_keeps_serving(page: Any) -> None:
    answer = page.evaluate(
        """async () => {
            const csrf = document.querySelector('meta[name=csrf-token]').content;
            const body = new URLSearchParams({fn: 'os:system', args: '["true"]', kwargs: '{}'});
            const r = await fetch('/new', {method: 'POST', body, headers: {'X-CSRF-Token': csrf}});
            return [r.status, await r.text()];
        }"""
    )
    assert answer[0] == 200 and "no @offload function &#x27;os:system&#x27;" in answer[1]
    elsewhere = page.evaluate(
        """async () => {
            const csrf = document.querySelector('meta[name=csrf-token]').content;
            const body = new URLSearchParams({where: 'tcp://10.9.9.9:5555', csrf});
            const r = await fetch('/started/nope/resume', {method: 'POST', body});
            return [r.status, await r.text()];
        }"""
    )  # a form never makes the app connect to a server it does not trust
    assert elsewhere[0] == 409 and "not a configured or trusted" not in elsewhere[1]
    assert "resume where?" in elsewhere[1]
    for path in ("/started/nope/resume", "/started/nope/pause", "/jobs/999999/cancel"):
        status = page.evaluate(
            """async (path) => {
                const csrf = document.querySelector('meta[name=csrf-token]').content;
                const r = await fetch(path, {method: 'POST', headers: {'X-CSRF-Token': csrf},
                                             redirect: 'manual'});
                return r.status;
            }""",
            path,
        )
        assert status in (404, 409), (path, status)
    assert page.goto(page.url).status == 200  # still serving


def test_credits_says_not_a_site(page: Any, shots: Path) -> None:
    page.click("text=Credits")
    assert "not a site" in page.locator("#not-site").inner_text()
    page.screenshot(path=str(shots / "credits.png"), full_page=True)


def _opener() -> urllib.request.OpenerDirector:
    jar = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    return urllib.request.build_opener(jar)


def _status(opener: urllib.request.OpenerDirector, request: urllib.request.Request | str) -> int:
    try:
        with opener.open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_no_token_is_refused(ui: Ui) -> None:
    opener = _opener()
    assert _status(opener, ui.base + "/") == 403
    assert _status(opener, ui.base + "/jobs") == 403
    assert _status(opener, ui.base + "/?token=wrong") == 403
    forged = urllib.request.Request(ui.base + "/", headers={"Cookie": "offload_ui=wrong"})
    assert _status(opener, forged) == 403
    assert _status(opener, ui.url) == 200  # the printed URL works, and sets the cookie
    assert _status(opener, ui.base + "/jobs") == 200


def test_post_without_csrf_token_is_refused(ui: Ui) -> None:
    opener = _opener()
    assert _status(opener, ui.url) == 200
    form = urllib.parse.urlencode({"fn": "tests.apps:add", "args": "[1, 2]"}).encode()
    assert _status(opener, urllib.request.Request(ui.base + "/new", data=form)) == 403
    wrong = urllib.parse.urlencode({"fn": "tests.apps:add", "args": "[1,2]", "csrf": "x"})
    assert _status(opener, urllib.request.Request(ui.base + "/new", data=wrong.encode())) == 403
    pause = urllib.request.Request(ui.base + "/started/abc/pause", data=b"")
    assert _status(opener, pause) == 403


def test_other_host_names_are_refused(ui: Ui) -> None:
    opener = _opener()
    assert _status(opener, ui.url) == 200
    rebound = urllib.request.Request(ui.base + "/", headers={"Host": "evil.example"})
    assert _status(opener, rebound) == 403


def test_the_launch_token_never_reaches_a_page(ui: Ui) -> None:
    opener = _opener()
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(ui.url).query)["token"][0]
    with opener.open(ui.url, timeout=10) as answer:
        assert token not in answer.read().decode()
    for path in ("/jobs", "/new", "/credits", "/static/app.js"):
        with opener.open(ui.base + path, timeout=10) as answer:
            assert token not in answer.read().decode()


def test_it_stops_on_sigterm_with_an_event_stream_open(
    edge: offload.LocalServer, tmp_path: Path
) -> None:
    with running_ui(["--server", edge.address], str(tmp_path)) as other:
        opener = _opener()
        assert _status(opener, other.url) == 200
        stream = opener.open(other.base + "/events", timeout=10)
        assert stream.readline().startswith(b"data: ")  # the first state, then it stays open
        other.process.terminate()
        other.process.wait(10)  # not held by the open stream (TimeoutExpired if it were)
        stream.close()


def test_resume_a_paused_job_on_another_server(
    browser: Any, edge: offload.LocalServer, tmp_path: Path, shots: Path
) -> None:
    with (
        offload.serve_local(["tests.apps"], workers=1, extra_args=["--log-level", "WARNING"]) as b,
        running_ui(
            ["--server", edge.address, "--servers", b.address, "--app", "tests.apps"],
            str(tmp_path / "data"),
        ) as two,
    ):
        context = browser.new_context(
            viewport={"width": 1000, "height": 720}, accept_downloads=True
        )
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(two.url)
            page.goto(two.base + "/new")
            page.select_option("#fn", "tests.apps:count_up")
            page.fill("#args", json.dumps([24, 0.1, str(tmp_path / "steps.log")]))
            page.click("#submit-button")
            page.wait_for_url("**/jobs")
            row = page.locator("#started tr[data-job]").first
            page.wait_for_function(
                "el => parseInt(el.textContent) >= 3", arg=row.locator(".count").element_handle()
            )
            row.locator("[data-when=running] button").click()  # Pause
            row = page.locator("#started tr[data-job]").first
            row.locator(".state", has_text="paused").wait_for()
            where = row.locator("select[name=where]")
            ran_on = where.input_value()  # the server it ran on, chosen until the user chooses
            assert ran_on in (edge.address, b.address)
            offered = [o for o in where.locator("option").all() if o.get_attribute("value")]
            values = {o.get_attribute("value") for o in offered}
            assert {"local", edge.address, b.address} <= values  # here, there, elsewhere
            other = b.address if ran_on == edge.address else edge.address
            where.select_option(other)
            page.screenshot(path=str(shots / "jobs-resume-elsewhere.png"), full_page=True)
            row.locator("form.resume button").click()
            row = page.locator("#started tr[data-job]").first
            row.locator(".state", has_text="done").wait_for(timeout=20_000)
            assert row.locator(".where").inner_text() == other  # the resumed run went there
            with page.expect_download() as download:
                row.locator("a[data-when=done]").click()
            assert json.loads(Path(download.value.path()).read_text()) == sum(
                i * i for i in range(24)
            )
            job_id = row.locator(".server-id").inner_text()  # the resumed run's id, there
            page.goto(two.base + "/jobs?" + urllib.parse.urlencode({"server": other}))
            finished = page.locator(f"table#jobs tr[data-id='{job_id}']")
            assert "count_up" in finished.inner_text()
            assert finished.locator(".state").inner_text() == "done"
        finally:
            context.close()


def test_fields_map_onto_the_signature() -> None:
    from offload.ui.argform import parse_fields

    def f(a: int, /, b: float = 1.0, *rest: Any, c: str, flag: bool = False, **more: Any) -> None:
        """Every kind of parameter."""

    name = "m:f"
    form = {"f:m:f:a": "1", "f:m:f:b": "2.5", "f:m:f:rest": "[3, 4]", "f:m:f:c": " x "}
    form["f:m:f:more"] = '{"d": null}'
    assert parse_fields(name, f, form) == ((1, 2.5, 3, 4), {"c": " x ", "flag": False, "d": None})
    given = {"f:m:f:a": "1", "f:m:f:c": "", "f:m:f:flag": "on"}  # b left to its default
    assert parse_fields(name, f, given) == ((1,), {"c": "", "flag": True})
    with pytest.raises(offload.OffloadError, match="a: a value is needed"):
        parse_fields(name, f, {"f:m:f:c": "x"})
    with pytest.raises(offload.OffloadError, match="b: 'inf' is not a finite number"):
        parse_fields(name, f, {"f:m:f:a": "1", "f:m:f:b": "inf", "f:m:f:c": "x"})
    with pytest.raises(offload.OffloadError, match=r"\*rest: give every parameter before it"):
        parse_fields(name, f, {"f:m:f:a": "1", "f:m:f:rest": "[3]", "f:m:f:c": "x"})
    with pytest.raises(offload.OffloadError, match="@file"):
        parse_fields(name, f, {"f:m:f:a": "1", "f:m:f:c": "x", "f:m:f:more": '"@file"'})
