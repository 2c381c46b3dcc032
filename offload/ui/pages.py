"""The app's pages as server-rendered HTML: Overview, Jobs, New job, Credits.

Plain functions from data to HTML strings, every value escaped on the way
in (:func:`html.escape`). Forms that change state carry the page's CSRF
token; the token in the cookie never appears in a page. The layout is
``templates/base.html``; ``static/app.js`` patches job rows live.
"""

from __future__ import annotations

import time
from html import escape
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import urlencode

from .. import cli_output as out
from .. import human
from ..control import JobInfo
from ..runtime.states import JobState
from .svgmap import server_map

TABS = (("/", "Overview"), ("/jobs", "Jobs"), ("/new", "New job"), ("/credits", "Credits"))
_BASE = Template(resources.files(__package__).joinpath("templates/base.html").read_text("utf-8"))


def layout(title: str, active: str, body: str, csrf: str) -> str:
    """A whole page: the tabs, ``body`` and the CSRF token for scripts (a meta tag)."""
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{name}</a>'
        for href, name in TABS
    )
    return _BASE.substitute(title=escape(title), nav=nav, body=body, csrf=escape(csrf))


def post_button(action: str, label: str, csrf: str, when: str = "", **fields: str) -> str:
    """A one-button form POSTing to ``action`` with the CSRF token (``when``: states shown in)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    shown = f' data-when="{when}"' if when else ""
    return (
        f'<form class="inline" method="post" action="{escape(action)}"{shown}>'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">{hidden}'
        f"<button>{escape(label)}</button></form>"
    )


def _state(state: str) -> str:
    return f'<span class="state state-{escape(state)}">{escape(state)}</span>'


def resume_form(key: str, csrf: str, back: str, ran_on: str | None, addresses: list[str]) -> str:
    """Resume a paused job here, on the server it ran on, or on any other trusted server."""
    options = ['<option value="local">here</option>'] + [
        f'<option value="{escape(a)}"{" selected" if a == ran_on else ""}>{escape(a)}'
        f"{' (it ran there)' if a == ran_on else ''}</option>"
        for a in addresses
    ]
    if not addresses or ran_on is None:
        options.insert(1, '<option value="remote" selected>the server</option>')
    return (
        f'<form class="inline resume" method="post" action="/started/{escape(key)}/resume"'
        f' data-when="paused"><input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="next" value="{escape(back)}">'
        f'<button class="primary">Resume</button> <select name="where" aria-label="where">'
        f"{''.join(options)}</select></form>"
    )


def started_table(
    rows: list[dict[str, Any]], csrf: str, back: str, addresses: list[str] | None = None
) -> str:
    """Jobs started from this page, live: state, progress, pause/resume/cancel, download."""
    if not rows:
        return '<p class="muted">No jobs started from this page yet.</p>'
    lines = []
    for row in rows:
        key, state = row["key"], row["state"]
        count = f"{row['done']} / {row['total']}" if row["total"] else f"{row['checkpoints']} ckpt"
        buttons = []
        hidden = {"next": back}
        if row["checkpointed"]:
            buttons.append(post_button(f"/started/{key}/pause", "Pause", csrf, "running", **hidden))
            buttons.append(resume_form(key, csrf, back, row["server"], addresses or []))
        buttons.append(post_button(f"/started/{key}/cancel", "Cancel", csrf, "running paused"))
        buttons.append(
            f'<a class="button" data-when="done" href="/started/{key}/result" download>Result</a>'
        )
        lines.append(
            f'<tr data-job="{escape(key)}"><td class="server-id">{row["id"] or "-"}</td>'
            f"<td>{escape(row['function'].split(':')[-1])}</td><td>{_state(state)}</td>"
            f'<td class="wide where">{escape(row["where"] or "-")}</td>'
            f'<td><progress max="{row["total"] or 1}" value="{row["done"]}"></progress> '
            f'<span class="count">{count}</span></td>'
            f'<td class="wrap actions">{"".join(buttons)}<div class="job-error error">'
            f"{escape(row.get('error', ''))}</div>{_traceback(row.get('traceback', ''))}</td></tr>"
        )
    script = (  # hide the buttons of the other states until app.js takes over
        "<script>document.querySelectorAll('tr[data-job]').forEach(function(tr){"
        "var s=tr.querySelector('.state').textContent;tr.querySelectorAll('[data-when]')"
        ".forEach(function(b){b.hidden=b.dataset.when.split(' ').indexOf(s)<0;});});</script>"
    )
    head = (
        "<tr><th>job</th><th>function</th><th>state</th><th class=wide>where</th>"
        "<th>progress</th><th></th></tr>"
    )
    return f'<div class="scroll"><table id="started">{head}{"".join(lines)}</table></div>{script}'


def overview(
    servers: list[dict[str, Any]],
    here: str | None,
    started: list[dict[str, Any]],
    on_servers: list[tuple[str, JobInfo]],
    csrf: str,
    addresses: list[str] | None = None,
) -> str:
    """Servers (site, distance, answering, load), a map, jobs started here, jobs on the servers."""
    rows = []
    for raw in servers:
        row = out.server_row(raw)
        answering = {True: "yes", False: "no", None: "-"}[raw.get("answering")]
        km = f"{row['km']} km" if row["km"] else "-"
        rows.append(
            f"<tr><td>{escape(str(row['name']))}</td><td class=wide>{escape(raw['address'])}</td>"
            f"<td>{escape(raw.get('site') or '-')}</td><td>{km}</td>"
            f"<td>{answering}</td><td class=wide>{escape(row['rtt'] or '-')}</td>"
            f"<td class=wide>{escape(row['load'] or '-')}</td></tr>"
        )
    head = (
        "<tr><th>server</th><th class=wide>address</th><th>site</th><th>distance</th>"
        "<th>answers</th><th class=wide>RTT</th><th class=wide>load</th></tr>"
    )
    table = (
        f'<div class="scroll"><table id="servers">{head}{"".join(rows)}</table></div>'
        if rows
        else '<p class="muted">No server configured or found.</p>'
    )
    points = [
        (str(r.get("name") or r["address"]), r["location"]) for r in servers if r.get("location")
    ]
    drawn = server_map(here, points) if points else ""
    where = drawn or '<p class="muted">No coordinates: servers advertise them with --location.</p>'
    running = [r for r in started if r["state"] in (JobState.RUNNING, JobState.PAUSED)]
    elsewhere = f'<div id="on-servers-box">{on_servers_table(on_servers)}</div>'
    return (
        '<button id="notify" hidden>Notify me when jobs complete</button>'
        f"<h2>Servers</h2>{table}<div class=card>{where}</div>"
        f"<h2>Running jobs started here</h2>{started_table(running, csrf, '/', addresses)}"
        f"<h2>Your jobs on the servers</h2>{elsewhere}"
    )


def on_servers_table(on_servers: list[tuple[str, JobInfo]]) -> str:
    """This key's queued and running jobs on every server (the Overview's, also sent live)."""
    now = time.time()
    others = "".join(
        f"<tr><td>{job.id}</td><td>{escape(job.function)}</td><td>{_state(job.state.value)}</td>"
        f"<td>{escape(out.took(job, now))}</td><td class=wide>{escape(address)}</td></tr>"
        for address, job in on_servers
    )
    return (
        '<div class="scroll"><table id="on-servers"><tr><th>id</th><th>function</th><th>state</th>'
        f"<th>took</th><th class=wide>server</th></tr>{others}</table></div>"
        if others
        else '<p class="muted">None queued or running.</p>'
    )


def job_row(job: JobInfo, address: str, csrf: str, now: float) -> str:
    """One row of a server's list on Jobs (also sent live, for rows new since the page came)."""
    actions = ""
    target = urlencode({"server": address})
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        actions = post_button(f"/jobs/{job.id}/cancel", "Cancel", csrf, server=address)
    elif job.kept:
        actions = f'<a class="button" href="/jobs/{job.id}/result?{target}" download>Result</a>'
    err = f'<div class="error">{escape(job.error)}</div>' if job.error else ""
    shown = out.state(job)
    return (
        f'<tr data-id="{job.id}" data-state="{escape(shown)}"><td>{job.id}</td>'
        f"<td>{escape(job.function)}</td><td>{_state(shown)}</td>"
        f"<td class=wide>{human.ago(job.submitted, now)}</td>"
        f"<td class=wide>{escape(out.took(job, now))}</td>"
        f'<td class="wrap">{actions}{err}</td></tr>'
    )


def jobs_page(
    addresses: list[str],
    address: str,
    state: str,
    jobs: list[JobInfo],
    error: str,
    started: list[dict[str, Any]],
    csrf: str,
    more: str,
    first: bool = True,
) -> str:
    """Jobs started here (live), then a server's jobs: filter, paging, cancel, result, error.

    ``first``: the newest page (no ``before``), where jobs submitted since appear live.
    """
    from .state import STATES

    pick_server = "".join(
        f"<option{' selected' if a == address else ''}>{escape(a)}</option>" for a in addresses
    )
    pick_state = '<option value="">any state</option>' + "".join(
        f"<option{' selected' if s == state else ''}>{s}</option>" for s in STATES
    )
    form = (
        f'<form method="get" action="/jobs" class="card"><label>Server</label>'
        f'<select name="server">{pick_server}</select><label>State</label>'
        f'<select name="state">{pick_state}</select> <p><button>Show</button></p></form>'
    )
    now = time.time()
    rows = [job_row(job, address, csrf, now) for job in jobs]
    head = (
        "<tr><th>id</th><th>function</th><th>state</th><th class=wide>submitted</th>"
        "<th class=wide>took</th><th></th></tr>"
    )
    empty = "" if rows else '<tr class="empty"><td colspan="6" class="muted">No jobs.</td></tr>'
    live = ' data-live="1"' if first else ""  # the newest page: jobs new since come in live
    table = (
        f'<div class="scroll"><table id="jobs" data-server="{escape(address)}"'
        f' data-state="{escape(state)}"{live}>{head}{empty}{"".join(rows)}</table></div>'
    )
    if error:
        table = f'<p class="error">{escape(error)}</p>'
    older = f'<p><a class="button" href="{escape(more)}">Older jobs</a></p>' if more else ""
    return (
        f"<h2>Started from this page</h2>{started_table(started, csrf, '/jobs', addresses)}"
        f"<h2>On the server</h2>{form}{table}{older}"
    )


def new_page(
    functions: list[str], name: str, args: str, kwargs: str, estimate: dict[str, Any] | None,
    error: str, csrf: str, fields: str = "", mode: str = "fields",
) -> str:  # fmt: skip
    """Pick a function, give its arguments (one field each, or JSON), see the estimate, submit.

    ``fields``: every function's fieldset (:func:`offload.ui.argform.fieldset`); ``mode``
    which way of giving arguments counts ("fields" or "json"; typing in one picks it).
    """
    if not functions:
        return '<p class="muted">No functions: start the app with <code>--app MODULE</code>.</p>'
    options = "".join(
        f"<option{' selected' if f == name else ''}>{escape(f)}</option>" for f in functions
    )
    shown = ""
    if estimate is not None:
        shown = f'<div class="card" id="estimate"><h2>Estimate</h2>{_estimate(estimate)}</div>'
    problem = f'<p class="error" id="form-error">{escape(error)}</p>' if error else ""
    return (
        f'<form method="post" action="/new" class="card" id="new-job" novalidate>'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<label for="fn">Function</label><select id="fn" name="fn">{options}</select>'
        f'<label class="mode"><input type="radio" name="mode" value="fields" id="mode-fields"'
        f"{' checked' if mode != 'json' else ''}> Arguments, one field each</label>{fields}"
        f'<label class="mode"><input type="radio" name="mode" value="json" id="mode-json"'
        f"{' checked' if mode == 'json' else ''}> Or as JSON</label>"
        f'<label for="args">Arguments (a JSON list)</label>'
        f'<textarea id="args" name="args">{escape(args)}</textarea>'
        f'<label for="kwargs">Keyword arguments (a JSON object)</label>'
        f'<textarea id="kwargs" name="kwargs">{escape(kwargs)}</textarea>'
        '<label for="file">A .npy file (it stands for "@file" among the arguments)</label>'
        '<input type="file" id="file" accept=".npy"><input type="hidden" name="upload" id="upload">'
        f'<p><button formmethod="get" formaction="/new" id="estimate-button">Estimate</button> '
        f'<button class="primary" id="submit-button">Submit</button></p></form>{problem}{shown}'
    )


def _estimate(estimate: dict[str, Any]) -> str:
    local = estimate["estimates"].get("local", {})
    remote = estimate["estimates"].get("remote", {})
    side = "here" if estimate["side"] == "local" else "on the server"
    lines = [
        f"<p>Would run <strong>{side}</strong>: {escape('; '.join(estimate['reasons']))}</p>",
        f"<p>Call size {human.size(estimate['size'])}</p>",
        f"<p>Here: {human.seconds(local.get('time_s'))}, {human.joules(local.get('energy_j'))}"
        f"<br>On the server: {human.seconds(remote.get('time_s'))}, "
        f"{human.joules(remote.get('energy_j'))} on this device "
        f'(<span id="server-time">{human.seconds(remote.get("server_s"))}</span> computing, '
        f"{human.seconds(remote.get('transfer_s'))} sending)</p>",
    ]
    quote = estimate.get("quote")
    if quote:
        lines.append(
            f'<p>Cost: <strong id="quote">{human.credits(quote["micro_credits"])}</strong> credits'
            f" ({escape(str(quote.get('basis')))} time), balance "
            f"{human.credits(quote['balance'])}</p>"
        )
    else:
        lines.append(f'<p class="muted">No credits: {escape(estimate.get("quote_error", ""))}</p>')
    return "".join(lines)


def credits_page(addresses: list[str], address: str, credits: dict[str, Any]) -> str:
    """Balance, statement, prices and lent machines on a site; else that it is not one."""
    pick = "".join(
        f"<option{' selected' if a == address else ''}>{escape(a)}</option>" for a in addresses
    )
    form = (
        f'<form method="get" action="/credits" class="card"><label>Server</label>'
        f'<select name="server">{pick}</select> <p><button>Show</button></p></form>'
    )
    if "not_site" in credits:
        return (
            f'{form}<p class="card" id="not-site">{escape(address)} is not a site of lent '
            f"machines, so it keeps no credits.<br><span class=muted>"
            f"{escape(credits['not_site'])}</span></p>"
        )
    balance = (
        f'<p class="card">Balance <strong id="balance">{human.credits(credits["balance"])}</strong>'
        " credits</p>"
    )
    prices = credits.get("prices") or {"slots": [], "slot": -1}
    slots = "".join(
        f"<tr{' class=now' if n == prices['slot'] else ''}><td>{n * 6:02d}-{n * 6 + 6:02d} h"
        f"{' (now)' if n == prices['slot'] else ''}</td><td>{human.credits(cpu)}</td>"
        f"<td>{human.credits(memory)}</td></tr>"
        for n, (cpu, memory) in enumerate(prices["slots"])
    )
    price_table = (
        "<h2>Today's prices</h2><div class=scroll><table id=prices><tr><th>slot</th>"
        f"<th>per core-hour</th><th>per GB-hour</th></tr>{slots}</table></div>"
    )
    entries = "".join(
        f"<tr><td>{human.local_time(e['at'])}</td><td>{human.credits(e['amount'])}</td>"
        f"<td>{e['job'] or ''}</td><td class=wrap>{escape(str(e['memo']))}</td></tr>"
        for e in credits.get("statement", [])
    )
    statement = (
        "<h2>Statement</h2><div class=scroll><table id=statement><tr><th>when</th><th>amount</th>"
        f"<th>job</th><th>what</th></tr>{entries}</table></div>"
    )
    machines = "".join(
        f"<tr><td>{escape(str(m['host']))}</td><td>{m['cores']}</td>"
        f"<td>{human.size(m['memory']) if m['memory'] else 'auto'}</td>"
        f"<td>{escape(str(m['hours']))}</td><td>{'yes' if m['online'] else 'no'}</td>"
        f"<td>{human.credits(m['earned'])}</td></tr>"
        for m in credits.get("resources", [])
    )
    lent = (
        "<h2>Machines you lend</h2><div class=scroll><table id=resources><tr><th>host</th>"
        "<th>cores</th><th>memory</th><th>hours</th><th>online</th><th>earned</th></tr>"
        f"{machines}</table></div>"
        if machines
        else '<p class="muted">No machines lent (<code>offload lend --site ...</code>).</p>'
    )
    return form + balance + price_table + statement + lent


def _traceback(text: str) -> str:
    """A failed job's remote traceback, folded (shown when there is one)."""
    hidden = "" if text else " hidden"
    return (
        f'<details class="traceback"{hidden}><summary>remote traceback</summary>'
        f"<pre>{escape(text)}</pre></details>"
    )
