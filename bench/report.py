"""``python -m bench report``: the figures of README.md and bench/README.md, from the results.

Every measured figure the two READMEs quote sits between markers::

    <!-- bench:NAME -->
    ...generated text...
    <!-- /bench:NAME -->

and is written here from the results files the benchmarks wrote and the repository
commits (``bench/results/*.json``). ``python -m bench report`` rewrites those blocks
and nothing else; ``--check`` only says whether they are current (exit status 1 if
not). ``bench/test_report.py`` fails when a block and its results disagree.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import peers_md

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent
MARKER = re.compile(r"(<!-- bench:([a-z0-9-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)

# The blocks each file must hold (so a figure cannot leave its block unnoticed).
FILES = {
    "README.md": [
        "overhead",
        "decisions",
        "decisions-servers",
        "djos",
        "failures",
        "load",
        "abuse",
        "fleet",
        "dcof",
        "peers",
    ],
    "bench/README.md": ["dcof-run", "peers-run", "latest"],
}


class Results:
    """The results files of one directory, each read once."""

    def __init__(self, directory: Path = RESULTS) -> None:
        self.directory = directory
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = json.loads((self.directory / f"{name}.json").read_text())
        return self._cache[name]


BLOCKS: dict[str, Callable[[Results], str]] = {}


def block(name: str) -> Callable[[Callable[[Results], str]], Callable[[Results], str]]:
    def register(fn: Callable[[Results], str]) -> Callable[[Results], str]:
        BLOCKS[name] = fn
        return fn

    return register


# -- formatting ---------------------------------------------------------------------------


def cell(text: str) -> str:
    """A table cell's inside: `` text `` or a single space when empty."""
    return f" {text} " if text else " "


def pct(x: float, digits: int = 1, sign: bool = False) -> str:
    """``0.335`` -> ``33.5%`` (``sign``: ``+33.5%`` / ``-33.5%``)."""
    return f"{x * 100:{'+' if sign else ''}.{digits}f}%"


def change(reduction: float, digits: int = 1) -> str:
    """A reduction (0.335: 33.5% less) as a signed change: ``-33.5%``."""
    return pct(-reduction, digits, sign=True)


def num(x: float, digits: int = 0) -> str:
    """Thousands separated: ``2051.3`` -> ``2,051``."""
    return f"{x:,.{digits}f}"


def whole(x: float) -> str:
    """A share as a whole percentage without its sign: ``0.657`` -> ``66``."""
    return f"{x * 100:.0f}"


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    """``lo-hi`` of the values (``lo to hi`` when signed), or one value when they format alike."""
    lo, hi = fmt(min(values)), fmt(max(values))
    if lo == hi:
        return lo
    return f"{lo} to {hi}" if lo[0] in "+-" or hi[0] in "+-" else f"{lo}-{hi}"


def dec(x: float) -> str:
    """At least one decimal, at most two: ``2.0``, ``4.25``."""
    text = f"{x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


# A number and its unit (or ``M = 1``) stay on one line.
GLUE = re.compile(r"(\d|\b[A-Za-z]|=) (?=[\d=]|(?:KB|MB|GB|ms|us|s|J|W)\b)")


def wrap(text: str, width: int = 100) -> str:
    """Paragraphs and list items filled to ``width`` (tables left as they are)."""
    out = []
    for para in text.strip("\n").split("\n\n"):
        if para.startswith("|"):
            out.append(para)
            continue
        items = re.split(r"\n(?=- )", para) if para.startswith("- ") else [para]
        out.append(
            "\n".join(
                textwrap.fill(
                    GLUE.sub("\\1\0", " ".join(item.split())),
                    width,
                    subsequent_indent="  " if item.startswith("- ") else "",
                    break_long_words=False,
                    break_on_hyphens=False,
                ).replace("\0", " ")
                for item in items
            )
        )
    return "\n\n".join(out) + "\n"


# -- overhead -----------------------------------------------------------------------------


@block("overhead")
def overhead(r: Results) -> str:
    o = r["overhead"]
    rows = []
    for key, label in (
        ("noop_blocks", "no-op call p50, each side in its own loop"),
        ("noop", "no-op call p50, alternating call by call"),
    ):
        n = o[key]
        low, high = n["p50_ratio_range"]
        target = "<= 2.5x" if key == "noop_blocks" else ""
        rows.append(
            f"| {label} | {n['offload_p50_us']:.0f} us | {n['raw_p50_us']:.0f} us | "
            f"{n['p50_ratio']:.1f}x (rounds {low:.1f}x-{high:.1f}x) |{cell(target)}|"
        )
    n = o["noop_blocks"]
    rows.append(
        f"| no-op call p99, each side in its own loop | {n['offload_p99_us']:.0f} us | "
        f"{n['raw_p99_us']:.0f} us | {n['p99_ratio']:.1f}x | |"
    )
    echoes = sorted(
        (k for k in o if k.startswith("echo_")), key=lambda k: -int(k[5:].removesuffix("MB"))
    )
    for k in echoes:
        e = o[k]
        mb = k[5:].removesuffix("MB")
        label = f"echo {mb} MB of random int64" if k == echoes[0] else f"echo {mb} MB"
        target = ">= 70% of raw" if mb == "128" else ""
        rows.append(
            f"| {label} | {num(e['offload_MBps'])} MB/s | {num(e['raw_MBps'])} MB/s | "
            f"{pct(e['throughput_ratio'], 0)} of raw |{cell(target)}|"
        )
    noop_met = n["p50_ratio"] <= 2.5
    big = o.get("echo_128MB")
    verdict = f"In this run the no-op target {'is met' if noop_met else 'is not met'}"
    if big is not None:
        verdict += f", the 128 MB one {'is met' if big['throughput_ratio'] >= 0.7 else 'is not'}"
    busy = o.get("load_average_1min")
    if busy:
        verdict += (
            f"; the machine's one-minute load average was {busy['before']:.1f} before the run "
            f"and {busy['after']:.1f} after it (2 CPUs)"
        )
    return (
        "One run on such a VM (`bench/results/overhead.json`; each no-op "
        "figure is the median of three rounds of 2,000 calls, the range over the rounds in "
        "brackets; echoes count both directions):\n\n"
        "| measure | offload | raw pyzmq | ratio | target |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + f"\n\n{verdict}.\n"
    )


# -- decisions ----------------------------------------------------------------------------

POLICY_LABELS = {
    "always_local": "always local",
    "always_remote": "always remote",
    "dcof_rule": "DCOF's rule (offload only in a critical condition)",
    "ours": "ours, objective time",
    "ours_energy": "ours, objective energy",
    "ours_no_link_rate": "ours, objective time, no link rate reported",
    "ours_energy_no_link_rate": "ours, objective energy, no link rate reported",
}


@block("decisions")
def decisions(r: Results) -> str:
    d = r["decisions"]
    policies = {k: v for k, v in d["policies"].items() if k != "oracle"}
    best_time = min(p["time_ratio_to_oracle"] for p in policies.values())
    best_energy = min(p["energy_ratio_to_oracle"] for p in policies.values())

    def cell(x: float, best: float) -> str:
        return f"**{x:.2f}**" if f"{x:.2f}" == f"{best:.2f}" else f"{x:.2f}"

    rows = []
    for name, p in policies.items():
        s = d["reshuffled"][name]
        time_ratio, energy_ratio = p["time_ratio_to_oracle"], p["energy_ratio_to_oracle"]
        same = all(
            f"{a:.2f}" == f"{b:.2f}"
            for a, b in (
                (s["time_ratio_to_oracle_mean"], time_ratio),
                (s["time_ratio_to_oracle_max"], time_ratio),
                (s["energy_ratio_to_oracle_mean"], energy_ratio),
                (s["energy_ratio_to_oracle_max"], energy_ratio),
            )
        )
        if same:
            shuffled = "same"
        else:
            shuffled = (
                f"time {s['time_ratio_to_oracle_mean']:.2f} ({s['time_ratio_to_oracle_max']:.2f}),"
                f" energy {s['energy_ratio_to_oracle_mean']:.2f} "
                f"({s['energy_ratio_to_oracle_max']:.2f})"
            )
        rows.append(
            f"| {POLICY_LABELS.get(name, name)} | {cell(time_ratio, best_time)} | "
            f"{cell(energy_ratio, best_energy)} | {shuffled} |"
        )
    size = "Full run" if d["size"] == "full" else "Quick run (`--quick`)"
    if "trace" in d["testbed"]:  # --replay: the figures come from a committed trace
        trace = (
            "decisions_trace.json" if d["size"] == "full" else f"decisions_trace_{d['size']}.json"
        )
        size += f", replayed from the committed trace `bench/results/{trace}`"
    text = (
        f"{size}, {d['calls']} calls (`bench/results/decisions.json`, `decisions.md`):\n\n"
        # bench/decisions.py replays 20 shuffles (its markdown says so too).
        "| policy | time / oracle | energy / oracle | shuffled within phases, mean (worst of "
        "20) |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
    )
    live = d.get("live")
    if live:
        text += (
            "A live client in `auto` mode, run through the same phases right after, made the "
            f"same choice as the replay for {pct(live['agreement_with_replayed_choices'], 0)} "
            f"of the calls and took {live['time_s']:.1f} s against the trace oracle's "
            f"{live['trace_oracle_time_s']:.1f} s. "
        )
    first = d.get("first_10_calls_of_each_function")
    if first:
        text += (
            "Over only the first 10 calls of each service (a new function, still being "
            f"learned), ours costs {first['ours']['time_ratio_to_oracle']:.2f} of the oracle's "
            f"time (objective time) and {first['ours_energy']['energy_ratio_to_oracle']:.2f} "
            "of its energy (objective energy). "
        )
    cost = d["decision_cost"]
    text += (
        f"The decision itself cost {cost['decide_us']:.1f} us per call in this run, "
        f"{pct(cost['decide_share_of_roundtrip'])} of a raw pyzmq round trip "
        f"({cost['raw_zmq_roundtrip_us']:.0f} us).\n"
    )
    return text


SERVER_POLICY_LABELS = {
    "always_local": "always local",
    "nearest": "always the nearest server (up)",
    "random_server": "a random server (up) per call",
    "ours": "ours, objective time",
    "ours_energy": "ours, objective energy",
}


@block("decisions-servers")
def decisions_servers(r: Results) -> str:
    full = (r.directory / "decisions_servers.json").exists()
    name = "decisions_servers" if full else "decisions_servers_quick"
    d = r[name]
    rows = []
    for key, label in SERVER_POLICY_LABELS.items():
        p, s = d["policies"][key], d["reshuffled"][key]
        beats = s.get("orders_better_than_every_fixed_policy")
        rows.append(
            f"| {label} | {p['time_ratio_to_oracle']:.2f} | {p['energy_ratio_to_oracle']:.2f} | "
            f"time {s['time_ratio_to_oracle_mean']:.2f} ({s['time_ratio_to_oracle_max']:.2f}), "
            f"energy {s['energy_ratio_to_oracle_mean']:.2f} "
            f"({s['energy_ratio_to_oracle_max']:.2f}) | {'' if beats is None else beats} |"
        )
    size = "Full run" if full else "Quick run (`--quick`)"
    load = ", ".join(f"{x:.1f}" for x in d["loadavg_at_trace_end"])
    return (
        f"{size}, {d['calls']} calls over {len(d['phases'])} phases "
        f"({', '.join(d['phases'])}; `bench/results/{name}.json`), load average {load}:\n\n"
        "| policy | time / oracle | energy / oracle | shuffled within phases, mean (worst of 20) "
        "| orders of 20 better than every fixed policy |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


# -- djos ---------------------------------------------------------------------------------


def _djos_drops(series: dict[str, Any], policy: str) -> list[float]:
    return [d for row in series["by_lambda"] for d in row[policy]["drop_rate"]]


@block("djos")
def djos(r: Results) -> str:
    j = r["djos"]
    ex, slides = j["motivating_example"], j["slides"]
    exact = all(f"{ex[k]:.3f}" == f"{v:.3f}" for k, v in slides.items())
    series = [j["one_slot"], j["three_slot"]]
    savings = [row["djos_saving_vs_lfos"] for s in series for row in s["by_lambda"]]
    djos_drops = [d for s in series for d in _djos_drops(s, "djos")]
    lfos_drops = [d for s in series for d in _djos_drops(s, "lfos")]
    rho, m1 = series[0]["rho"], series[0]["M"]
    frames = series[0]["frames"]
    text = (
        f"The slides' motivating example comes out {'exactly' if exact else 'differently'}: "
        f"average energy per user per slot LFOS {dec(ex['LFOS'])}, EFOS {dec(ex['EFOS'])}, DJOS "
        f"{dec(ex['DJOS'])} (JOS {dec(ex['JOS'])} and the exhaustive optimum "
        f"{dec(ex['optimum'])}), a "
        f"{pct(ex['DJOS_saving_vs_LFOS'])} saving. In the simulation of slide 20 (N = 5, "
        f"rho = {rho:g}, e_L = 7, e_E = 4, mu = 1, {num(frames)} frames; the channel's ON "
        f"probability, {series[0]['p_on']:g}, and the lambda axis are ours: the slides give "
        f"neither), with M = {m1:g} DJOS uses {span(savings, whole)}% less "
        "energy than LFOS over both deadlines' lambda series, every user's drop rate "
        f"{span(djos_drops, lambda x: f'{x:.3f}')} against the bound {rho:g}, where LFOS drops "
        f"at most {max(lfos_drops):.3f}."
    )
    for s in series:
        runs = s["by_M"]["runs"]
        base, top = runs[0], runs[-1]
        drops = [x["max_drop_rate"] for x in runs]
        text += (
            f" With a {s['slots']}-slot deadline at lambda {s['by_M']['lambda']:g}, raising M "
            f"from {base['M']:g} to {top['M']:g} takes the energy from "
            f"{base['energy_per_user']:.3f} to {top['energy_per_user']:.3f} and the mean virtual "
            f"queue from {base['mean_virtual_queue']:.0f} to {top['mean_virtual_queue']:.0f}, "
            f"the largest drop rate ranging {span(drops, lambda x: f'{x:.3f}')}."
        )
    live = j.get("live")
    if live:
        d, e, lf = live["djos"], live["efos"], live["lfos"]

        def versus(other: dict[str, Any]) -> str:
            x = 1 - d["energy_per_item_j"] / other["energy_per_item_j"]
            return f"{pct(abs(x), 0)} {'below' if x >= 0 else 'above'}"

        text += (
            f" Live, {live['batches']} batches of {live['items_per_batch']} power computations "
            f"with a {live['deadline_s']:g} s deadline on the emulated device and link "
            f"(max_drop {live['max_drop']:g}): DJOS {d['energy_per_item_j']:.3f} J per item, "
            f"dropping {pct(d['drop_rate'])}, EFOS {e['energy_per_item_j']:.3f} J "
            f"({pct(e['drop_rate'])} dropped), LFOS {lf['energy_per_item_j']:.3f} J "
            f"({pct(lf['drop_rate'])} dropped, {lf['batches_missing_deadline']} of "
            f"{live['batches']} batches not fully done in time): DJOS {versus(lf)} LFOS, "
            f"{versus(e)} EFOS."
        )
    return text + "\n"


# -- failures -----------------------------------------------------------------------------


@block("failures")
def failures(r: Results) -> str:
    f = r["failures"]
    rows = []
    for c in f["cases"]:
        done = f"{c['completion_s']:.1f}" if c["finished"] else f"not done in {f['cap']:g}x the job"
        redone = f"{c['redone_s']:.1f}" if c["finished"] else "-"
        rows.append(f"| {c['mu']:g} | {c['checkpoints']} | {c['failures']} | {done} | {redone} |")
    finished = [c for c in f["cases"] if c["finished"]]
    correct = all(c["correct"] for c in finished)
    return (
        f"{len(f['cases'])} cases, the job taking {f['job_s']:.1f} s uninterrupted, each case on "
        "a fresh server "
        "(`bench/results/failures.json`):\n\n"
        "| mu | checkpoints | failures | completion s | work redone s |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"{'Every' if correct else 'Not every'} finished case returned the uninterrupted run's "
        "exact result.\n"
    )


# -- load ---------------------------------------------------------------------------------


@block("load")
def load(r: Results) -> str:
    s, k = r["load"]["steady"], r["load"]["sigkill"]
    total = s["clients"] * s["calls_per_client"]
    return (
        f"{s['clients']} clients (threads in four processes) x {s['calls_per_client']} calls "
        f"each against a {s['workers']}-worker server on loopback, every call's value naming "
        f"its client and number (`bench/results/load.json`): {num(s['answered'])} of "
        f"{num(total)} answered, {s['lost']} lost, {s['duplicates']} duplicated, "
        f"{s['wrong_values']} wrong, {s['server_busy']} `ServerBusy`; "
        f"{num(s['calls_per_s'])} calls/s, p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms "
        f"({s['clients']} calls always in flight; every call a job in the SQLite store, and "
        "every call that waits in the queue has its payload written there first). Then the "
        f"same load with the server killed by SIGKILL after {pct(k['killed_at'], 0)} of the "
        "calls and restarted on the same port and store: the "
        f"{k['unavailable']} calls in flight failed with `ServerUnavailable` (the clients went "
        f"on once it answered again); {k['recovered']} of them were waiting in the queue, ran "
        "after the restart and their kept results "
        f"{'equalled' if k['recovered_correct'] else 'did NOT equal'} what was sent, "
        f"{k.get('interrupted', k.get('failed_running'))} were running at the kill, "
        f"{k['failed_unstored']} had "
        f"been accepted but not yet written, and {k['reply_lost_or_never_arrived']} had run "
        "with their reply lost in the kill or had not reached the server's loop; "
        f"{k['duplicates'] + k['recovered_also_answered']} ran twice, {k['lost']} were lost, "
        f"{num(k['answered'])} answered.\n"
    )


# -- abuse --------------------------------------------------------------------------------

ABUSE = {
    "uploads": "queued large uploads",
    "unread": "a client that never reads its replies",
    "stop": "SIGTERM, then SIGKILL, under load",
    "floods": "PING and garbage floods",
}


@block("abuse")
def abuse(r: Results) -> str:
    a = r["abuse"]
    b = a["budgets"]
    rows = []
    for sc in a["scenarios"]:
        legit, peak, abuser = sc["legit"], sc["peak"], sc["abuser"]
        notes = []
        if abuser.get("refused"):
            notes.append(f"{abuser['refused']} of {abuser['sent']} calls refused (`ServerBusy`)")
        if "held_after_close_mb" in sc:
            notes.append(
                f"{sc['held_before_close_mb']:.0f} MB held for it, "
                f"{sc['held_after_close_mb']:.0f} MB after it closed"
            )
        if "sigterm_exit_s" in sc:
            notes.append(
                f"SIGTERM exit in {sc['sigterm_exit_s']:.1f} s; after SIGKILL and a restart "
                f"{sc['after_restart']['shm_mb_of_killed_server']:.0f} MB left in /dev/shm"
            )
        if sc["scenario"] == "floods":
            notes.append(f"{num(abuser['sent'])} messages")
        rows.append(
            f"| {ABUSE.get(sc['scenario'], sc['scenario'])} | {legit['p50_ms']:.1f} / "
            f"{legit['p99_ms']:.1f} ms | {legit['errors']} | {peak['server_rss_mb']:.0f} MB "
            f"(idle {sc['baseline']['server_rss_mb']:.0f}) | {peak['shm_mb']:.0f} MB | "
            f"{cell('; '.join(notes))} |"
        )
    mode = "`--quick`: " if a.get("quick") else ""
    return (
        f"`python -m bench abuse` ({mode}{b['size_mb']:.0f} MB payloads, `--memory-budget "
        f"{b['memory']}`, `--client-budget {b['client']}`, {b['seconds']:.0f} s per scenario; "
        "`bench/results/abuse.json`): each abuse runs beside a legitimate client that keeps "
        "calling, and the server's memory is sampled throughout.\n\n"
        "| abuse | legitimate client p50 / p99 | its errors | server RSS, peak | "
        "/dev/shm, peak | what happened |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


# -- fleet --------------------------------------------------------------------------------


@block("fleet")
def fleet(r: Results) -> str:
    f = r["fleet"]
    setup, policies = f["setup"], f["policies"]
    servers = ", ".join(
        f"{n} ({s['km']:g} km, {s['mbit']:g} Mbit/s, {s['workers']} worker"
        f"{'s' if s['workers'] > 1 else ''})"
        for n, s in setup["servers"].items()
    )
    rows = []
    for name, p in sorted(policies.items(), key=lambda kv: kv[1]["time_s"]):
        gap = p.get("failover_gap_s")
        rows.append(
            f"| {name} | {p['time_s']:.2f} s | {p['time_ratio_to_oracle']:.2f}x | "
            f"{p['energy_j']:.1f} J | {p['energy_ratio_to_oracle']:.2f}x | "
            f"{'-' if gap is None else f'{gap:.2f} s'} |"
        )
    ours, others = policies["ours"], [p for n, p in policies.items() if n not in ("ours", "oracle")]
    beats = all(ours["time_s"] < p["time_s"] for p in others)
    within = ours["time_ratio_to_oracle"] <= 1.1
    mode = " (`--quick`)" if f.get("quick") else ""
    return (
        wrap(
            f"`python -m bench fleet`{mode} (as root; `bench/results/fleet.json`, `fleet.md`, "
            f"`fleet.png`): servers {servers}, each in its own network namespace behind a `tc tbf` "
            f"veth; {setup['calls']} sequential calls per phase ({', '.join(setup['phases'])}), "
            f"{setup['payload'] // 1000} KB up and {setup['serve_s'] * 1000:g} ms of service each; "
            f"this device {setup['local_slowdown']:g}x slower. The oracle takes, per call, the "
            "best outcome measured under any policy. Energy is modelled."
        )
        + (
            "\n| policy | time | x oracle | energy | x oracle | failover gap |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        )
        + wrap(
            f"Ours is {ours['time_ratio_to_oracle']:.2f}x the oracle's time (target: within 1.1x: "
            f"{'met' if within else 'not met'}) and "
            f"{'faster than every other policy' if beats else 'not faster than every other policy'}"
            f"; its failover gap is {ours['failover_gap_s']:.2f} s (target: at most two heartbeat "
            f"intervals, {2 * setup['heartbeat_interval_s']:g} s). {_migration(f.get('migration'))}"
        )
    )


def _migration(m: dict[str, Any] | None) -> str:
    """One sentence on bench fleet's migration scenario (:mod:`bench.fleet_migration`)."""
    if not m:
        return "Migration was not measured in this run."
    s, setup = m["seconds"], m["setup"]
    return (
        f"Migration: a checkpointed job whose server becomes {setup['slowed']:g}x slower once "
        f'{setup["slowed_after"]:.0%} is done took {s["auto"]:.2f} s with `migrate="auto"` '
        f'against {s["never"]:.2f} s with `"never"` ({m["gain"]:.2f}x faster; '
        f"{m['auto_to_unslowed']:.2f}x the run without slowdown, {s['unslowed']:.2f} s)."
        + (
            f" With no slowdown `auto` took {m['auto_unslowed_to_unslowed']:.2f}x `never`'s time "
            f"and moved {m['needless_moves']} time(s)."
            if "needless_moves" in m
            else ""
        )
    )


# -- dcof ---------------------------------------------------------------------------------

SERVICES = ("bubble_sort", "matrix_multiply", "power")
SERVICE_LABELS = {
    "bubble_sort": "bubble sort",
    "matrix_multiply": "matrix product",
    "power": "power compute",
}
SORT_POWER = ("bubble_sort", "power")


def _median(
    d: dict[str, Any], service: str, scenario: str, key: str = "turnaround_s"
) -> dict[int, float]:
    return {int(i): row[key] for i, row in d["results"][service][scenario].items()}


def _extra_s(d: dict[str, Any], scenario: str) -> list[float]:
    """``scenario`` minus DCOF-style median turnaround, every (service, intensity)."""
    out = []
    for service in SERVICES:
        other, dcof = _median(d, service, scenario), _median(d, service, "dcof")
        out += [other[i] - dcof[i] for i in other]
    return out


def _dcof_numbers(d: dict[str, Any]) -> dict[str, Any]:
    per = d["summary"]["per_service"]
    matrix_local = _median(d, "matrix_multiply", "local")
    matrix_dcof = _median(d, "matrix_multiply", "dcof")
    largest = max(matrix_local)
    row = d["results"]["matrix_multiply"]["dcof"][str(largest)]
    local_wins = [i for i in matrix_local if matrix_local[i] < matrix_dcof[i]]
    return {
        "per": per,
        "overall": d["summary"]["overall"]["dcof_vs_traditional"],
        "by_value": d["summary"]["overall"]["dcof_vs_by_value"],
        "largest": largest,
        "largest_mb": (row["bytes_up"] + row["bytes_down"]) / 1e6,
        "local_wins": sorted(local_wins),
        "matrix_sizes": sorted(matrix_local),
        "code_kb": [b / 1000 for b in d["shipped_code_bytes"].values()],
        "bundle_kb": [b / 1000 for b in d["shipped_bundle_bytes"].values()],
        "compile_s": _extra_s(d, "by_value"),
        "setup_s": _extra_s(d, "traditional"),
        "intensities": sum(len(v) for v in d["plan"].values()) // len(d["plan"]),
        "share": d.get("device_share", 0.25),
    }


def _local_wins(n: dict[str, Any]) -> str:
    wins = n["local_wins"]
    if not wins:
        return "matrices are faster offloaded at every size here"
    sizes = (
        "every size" if len(wins) == len(n["matrix_sizes"]) else ", ".join(f"{i}x{i}" for i in wins)
    )
    return f"matrices are faster locally here at {sizes}"


def _sweep_sentence(d: dict[str, Any]) -> str:
    """How the headline moves as the device gets slower (``--sweep``), or nothing."""
    points = d.get("sweep") or []
    if len(points) < 2:
        return ""
    first, last = points[0], points[-1]

    def vs(p: dict[str, Any], ref: str) -> str:
        return change(p["summary"]["overall"][f"dcof_vs_{ref}"]["turnaround"], 0)

    matrix = [
        change(
            p["summary"]["per_service"]["matrix_multiply"]["dcof_vs_local"]["turnaround"]["mean"], 0
        )
        for p in (first, last)
    ]
    return (
        f" Lowering the device's CPU share from {first['device_share']:g} to "
        f"{last['device_share']:g} (the short plan, `--sweep`) raises the ratio of computing "
        f"the largest product here to moving its data from {first['matrix_compute_to_link']:.1f} "
        f"to {last['matrix_compute_to_link']:.1f} (the paper's phone: about "
        f"{dcof_paper_ratio():.0f}); DCOF-style turnaround against local goes from "
        f"{vs(first, 'local')} to {vs(last, 'local')} (matrices {matrix[0]} to {matrix[1]}), "
        "and against traditional from "
        f"{vs(first, 'traditional')} to {vs(last, 'traditional')}."
    )


def dcof_paper_ratio() -> float:
    from .dcof_report import PAPER_COMPUTE_TO_LINK

    return PAPER_COMPUTE_TO_LINK


@block("dcof")
def dcof(r: Results) -> str:
    d = r["dcof"]
    n = _dcof_numbers(d)
    per, overall, head, by_value = (
        n["per"],
        n["overall"],
        d["paper"]["headline_vs_traditional"],
        n["by_value"],
    )
    vs_local = {s: per[s]["dcof_vs_local"] for s in SERVICES}
    size = "Full run" if d["size"] == "full" else "Quick run (`--quick`)"
    return (
        f"{size}, {n['intensities']} of the paper's 30 intensities per service over its whole "
        f"range, {d['reps']} repetitions, {d['wall_s']:.0f} s (`bench/results/dcof.json`). "
        "Against traditional offloading as the paper built it (before every call the "
        f"service's app, {span(n['bundle_kb'], lambda x: f'{x:.1f}')} KB packed as "
        "`offload deploy` packs it, travels and is set up anew on the server: unpacked, "
        "imported in a fresh interpreter, compiled by a fresh worker; "
        f"{span(n['setup_s'], lambda x: f'{x:.1f}')} s per call), DCOF-style offloading changes "
        f"turnaround {change(overall['turnaround'])}, data {change(overall['data'])} and energy "
        f"{change(overall['energy'])} (mean of the three services; the paper: "
        f"{change(head['turnaround'])}, {change(head['data'], 0)}, {change(head['energy'], 0)}). "
        "Against the function shipped by value and compiled on arrival "
        f"({span(n['code_kb'], lambda x: f'{x:.1f}')} KB of code, a median "
        f"{statistics.median(n['compile_s']):.2f} s more per call), turnaround "
        f"{change(by_value['turnaround'])}, data {change(by_value['data'])}, energy "
        f"{change(by_value['energy'])}. Against running locally on a device with "
        f"{n['share']:g} of one CPU, sort "
        f"{change(vs_local['bubble_sort']['turnaround']['mean'], 0)} "
        f"and power {change(vs_local['power']['turnaround']['mean'], 0)} turnaround and "
        f"{span([vs_local[s]['energy']['mean'] for s in SORT_POWER], lambda x: change(x, 0))} "
        f"energy (modelled), while {_local_wins(n)} (moving the {n['largest']}x{n['largest']} "
        f"product's {n['largest_mb']:.1f} MB at 54 Mbit/s takes longer than the device needs to "
        f"multiply them).{_sweep_sentence(d)} `bench/README.md` explains where and why the "
        "figures differ from the paper's.\n"
    )


def _dcof_table(d: dict[str, Any]) -> str:
    per, paper = d["summary"]["per_service"], d["paper"]
    rows = []
    for s in SERVICES:
        t, v, lo = (
            per[s]["dcof_vs_traditional"],
            per[s]["dcof_vs_by_value"],
            per[s]["dcof_vs_local"],
        )
        pt = paper["vs_traditional"][s]
        p_local, p_ci = paper["vs_local_turnaround"][s]
        local = lo["turnaround"]
        local_cell = (
            f"**{change(local['mean'])} ± {pct(local['ci99'])}**"
            if local["mean"] > 0
            else f"{change(local['mean'], 0)} (local wins)"
        )
        rows.append(
            f"| {SERVICE_LABELS[s]} | {change(t['turnaround']['mean'])} ± "
            f"{pct(t['turnaround']['ci99'])} / {change(pt['turnaround'])} | "
            f"{change(t['data']['mean'])} / {change(pt['data'])} | "
            f"{change(t['energy']['mean'])} / {change(pt['energy'])} | "
            f"{change(v['turnaround']['mean'])} / {change(v['data']['mean'])} / "
            f"{change(v['energy']['mean'])} | {local_cell} / {change(p_local)} ± {pct(p_ci)} |"
        )
    o, h = d["summary"]["overall"]["dcof_vs_traditional"], paper["headline_vs_traditional"]
    b = d["summary"]["overall"]["dcof_vs_by_value"]
    rows.append(
        f"| all three (mean) | {change(o['turnaround'])} / **{change(h['turnaround'])}** | "
        f"{change(o['data'])} / **{change(h['data'], 0)}** | {change(o['energy'])} / "
        f"**{change(h['energy'], 0)}** | {change(b['turnaround'])} / {change(b['data'])} / "
        f"{change(b['energy'])} | |"
    )
    return (
        "| service | turnaround vs traditional | data vs traditional | energy vs traditional "
        "| vs by value: turnaround / data / energy | turnaround vs local |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _sweep_rows(d: dict[str, Any]) -> str:
    points = d.get("sweep") or []
    if not points:
        return ""
    rows = []
    for p in points:
        per = p["summary"]["per_service"]
        o = p["summary"]["overall"]
        local = ", ".join(
            change(per[s]["dcof_vs_local"]["turnaround"]["mean"], 0) for s in SERVICES
        )
        rows.append(
            f"| {p['device_share']:g} | {p['matrix_compute_to_link']:.1f} | "
            f"{num(p['local_s']['matrix_multiply'][str(p['matrix_side'])], 2)} s | "
            f"{change(o['dcof_vs_traditional']['turnaround'], 0)} / "
            f"{change(o['dcof_vs_traditional']['energy'], 0)} | {local} |"
        )
    return (
        "\nThe sweep (`--sweep`: the quick plan, "
        f"{points[0]['reps']} repetitions, at each device CPU share; the paper's phone's "
        f"compute-to-link ratio is about {dcof_paper_ratio():.0f}):\n\n"
        "| device share | compute-to-link | largest product here | vs traditional: turnaround / "
        "energy | vs local turnaround: sort, matrix, power |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


@block("dcof-run")
def dcof_run(r: Results) -> str:
    d = r["dcof"]
    n = _dcof_numbers(d)
    m = d["machine"]
    calls = len(d["samples"])
    local_t = {s: _median(d, s, "local") for s in SERVICES}
    paper_ms = d["paper"]["local_turnaround_ms"]
    per = n["per"]
    vs_local = {s: per[s]["dcof_vs_local"] for s in SERVICES}
    data = {s: per[s]["dcof_vs_traditional"]["data"]["mean"] for s in SERVICES}
    data_bv = {s: per[s]["dcof_vs_by_value"]["data"]["mean"] for s in SERVICES}
    paper_local = d["paper"]["vs_local_turnaround"]
    correct = all(
        row["correct"] for s in SERVICES for sc in d["results"][s].values() for row in sc.values()
    )
    return (
        f"`bench/results/dcof.json`: {calls} calls ({len(n['per'])} services x "
        f"{n['intensities']} intensities x 4 scenarios x {d['reps']} repetitions) in "
        f"{d['wall_s']:.0f} s, on a {m['cpus']}-vCPU VM ({m['cpu']}, Linux "
        f"{m['kernel'].split('.')[0]}.{m['kernel'].split('.')[1]}, Python {m['python']}, "
        f"numba {m['numba']}), the device at {n['share']:g} of one CPU, the link at 54 Mbit/s "
        f"with a measured RTT of {d['rtt_s'] * 1e3:.2f} ms. "
        + (
            "Every remote result equalled the local one. "
            if correct
            else "NOT every remote result equalled the local one. "
        )
        + "DCOF-style offloading, change against the other scenario (mean over the "
        "intensities ± 99% CI half-width), ours / the paper's:\n\n"
        + _dcof_table(d)
        + _sweep_rows(d)
        + "\nWhere ours differ from the paper's, and why:\n\n"
        "- **Our traditional baseline now does what the paper's did, with a smaller app.** "
        "Before every call the service's app (one module: "
        f"{span(n['bundle_kb'], lambda x: f'{x:.1f}')} KB against the paper's "
        f"{span(list(d['paper']['migrated_binary_kb'].values()), lambda x: f'{x:.0f}')} KB "
        "`.apk`) travels whole with its manifest, and the server sets it up anew: unpacks it, "
        "imports it in a fresh interpreter (the check every deployment gets), and a fresh "
        "worker imports numba and the app and compiles the kernel, "
        f"{span(n['setup_s'], lambda x: f'{x:.1f}')} s per call (traditional minus DCOF-style "
        "medians). That set-up is what turnaround and energy save; data falls by the app's "
        f"share of the call ({pct(data['bubble_sort'])} for sort and "
        f"{pct(data['matrix_multiply'])} for matrices, whose arguments dominate; "
        f"{pct(data['power'])} for power, whose arguments are three integers). The paper's "
        "data saving was larger because its migration also moved the app's data-state files "
        f"({d['paper']['data_kb']['bubble_sort']['traditional']['11000']:g} KB against DCOF's "
        f"{d['paper']['data_kb']['bubble_sort']['dcof']['11000']:g} KB for a sort of 11,000), "
        "where ours carries the same arguments in every scenario.\n"
        "- **By value** (this benchmark's traditional scenario before apps could be deployed) "
        f"ships {span(n['code_kb'], lambda x: f'{x:.1f}')} KB of pickled code and compiles on "
        f"arrival (a median {statistics.median(n['compile_s']):.2f} s more than DCOF-style per "
        f"call): data {span(list(data_bv.values()), change)}.\n"
        "- **The device.** The paper's phone took "
        f"{paper_ms['matrix_multiply']['450'] / 1000:.0f} s for a 450x450 product and "
        f"{paper_ms['bubble_sort']['40000'] / 1000:.0f} s to sort 40,000; our compiled kernels "
        f"take {local_t['matrix_multiply'][max(local_t['matrix_multiply'])]:.2f} s and "
        f"{local_t['bubble_sort'][max(local_t['bubble_sort'])]:.0f} s on the device here. The "
        f"product of {n['largest']}x{n['largest']} int32 matrices moves {n['largest_mb']:.1f} MB "
        "over the 54 Mbit/s link, which can take longer than computing it here, so "
        + _local_wins(n)
        + ", while sort and power, whose work grows faster than their data, gain "
        f"{span([vs_local[s]['turnaround']['mean'] for s in SORT_POWER], whole)}% turnaround "
        "against the paper's "
        f"{span([paper_local[s][0] for s in SORT_POWER], whole)}%.\n"
        f"- The link is a shaped veth with a {d['rtt_s'] * 1e3:.2f} ms RTT, not Wi-Fi; CIs are "
        f"over {d['reps']} repetitions, not 30"
        + (f"; load average {d['testbed']['load']}" if d["testbed"].get("load") else "")
        + ".\n"
    )


# -- peers --------------------------------------------------------------------------------


@block("peers")
def peers(r: Results) -> str:
    return (
        "`python -m bench peers` runs offload beside raw pyzmq, a minimal pickle-5 RPC on the "
        "same sockets, Pyro5, execnet, ProcessPoolExecutor, RPyC, Ray and Dask, each with one "
        "remote worker process on loopback (`pip install -e '.[peers]'`; "
        "`bench/results/peers.json`):\n\n" + peers_md.summary(r["peers"])
    )


@block("peers-run")
def peers_run(r: Results) -> str:
    report = r["peers"]
    return (
        "`bench/results/peers.json`, same VM, each system with its defaults; "
        + peers_md.header(report)
        + "\n\n"
        + "\n".join(peers_md.table(report))
        + "\n"
    )


# -- bench/README.md's summary of the others ------------------------------------------------


def _latest_servers(r: Results) -> list[str]:
    """The three-server decisions line of ``latest`` (none before that bench has run)."""
    full = (r.directory / "decisions_servers.json").exists()
    name = "decisions_servers" if full else "decisions_servers_quick"
    if not (r.directory / f"{name}.json").exists():
        return []
    d, pol = r[name], r[name]["policies"]
    return [
        f"- **decisions over three servers** (`{name}.json`, {d['calls']} calls): time / oracle "
        f"{pol['always_local']['time_ratio_to_oracle']:.2f} always local, "
        f"{pol['nearest']['time_ratio_to_oracle']:.2f} nearest server, "
        f"{pol['random_server']['time_ratio_to_oracle']:.2f} random server, "
        f"{pol['ours']['time_ratio_to_oracle']:.2f} ours (time objective); energy / oracle "
        f"{pol['ours_energy']['energy_ratio_to_oracle']:.2f} for ours with the energy objective."
    ]


@block("latest")
def latest(r: Results) -> str:
    o, d, j, f, ld = r["overhead"], r["decisions"], r["djos"], r["failures"], r["load"]
    n = o["noop_blocks"]
    big = o["echo_128MB"]
    ours_t = d["policies"]["ours"]
    ours_e = d["policies"]["ours_energy"]
    pol = d["policies"]
    ex = j["motivating_example"]
    series = [j["one_slot"], j["three_slot"]]
    savings = [row["djos_saving_vs_lfos"] for s in series for row in s["by_lambda"]]
    drops = [x for s in series for x in _djos_drops(s, "djos")]
    m_drops = [x["max_drop_rate"] for s in series for x in s["by_M"]["runs"]]
    cases = f["cases"]
    hardest = max(c["mu"] for c in cases)
    at_hardest = [c for c in cases if c["mu"] == hardest]
    scratch = next((c for c in at_hardest if c["checkpoints"] == 0), None)
    most = max(at_hardest, key=lambda c: c["checkpoints"])
    s, k = ld["steady"], ld["sigkill"]
    lines = [
        "- **overhead** (`overhead.json`, one run): a no-op call's p50 is "
        f"{n['p50_ratio']:.1f}x a raw pyzmq round trip (offload {n['offload_p50_us']:.0f} us, "
        f"raw {n['raw_p50_us']:.0f} us; rounds {n['p50_ratio_range'][0]:.1f}x-"
        f"{n['p50_ratio_range'][1]:.1f}x): a call crosses three processes (client, server, "
        "worker) where the raw echo crosses two. A 128 MB echo runs at "
        f"{pct(big['throughput_ratio'], 0)} of raw ({big['offload_MBps'] / 1000:.1f} GB/s).",
        f"- **decisions** (`decisions.json`, {d['calls']} calls"
        f"{'' if d['size'] == 'full' else ', `--quick`'}): time / oracle is "
        f"{pol['always_local']['time_ratio_to_oracle']:.2f} always local, "
        f"{pol['always_remote']['time_ratio_to_oracle']:.2f} always remote, "
        f"{pol['dcof_rule']['time_ratio_to_oracle']:.2f} DCOF's rule, "
        f"{ours_t['time_ratio_to_oracle']:.2f} ours (time objective); energy / oracle "
        f"{ours_e['energy_ratio_to_oracle']:.2f} for ours with the energy objective."
        + (
            " A live `auto` client chose as the replay did for "
            f"{pct(d['live']['agreement_with_replayed_choices'], 0)} of the calls."
            if d.get("live")
            else ""
        ),
        *_latest_servers(r),
        f"- **djos** (`djos.json`): the motivating example (LFOS {dec(ex['LFOS'])}, EFOS "
        f"{dec(ex['EFOS'])}, DJOS {dec(ex['DJOS'])} J per user per slot); in simulation DJOS uses "
        f"{span(savings, whole)}% less energy than LFOS with every drop "
        f"rate {span(drops, lambda x: f'{x:.3f}')} at M = {series[0]['M']:g} (bound "
        f"{series[0]['rho']:g}; {span(m_drops, lambda x: f'{x:.3f}')} across the M sweep)"
        + (
            f"; live, DJOS {j['live']['djos']['energy_per_item_j']:.3f} J per item against "
            f"LFOS {j['live']['lfos']['energy_per_item_j']:.3f} J "
            f"({change(j['live']['djos_saving_vs_lfos'], 0)})."
            if j.get("live")
            else "."
        ),
        "- **failures** (`failures.json`): "
        + (
            "every finished case returned the exact result"
            if all(c["correct"] for c in cases if c["finished"])
            else "NOT every finished case returned the exact result"
        )
        + f"; at mu {hardest:g} retrying from scratch "
        + (
            "was not run"
            if scratch is None
            else f"finished in {scratch['completion_s']:.1f} s"
            if scratch["finished"]
            else f"never finished within {f['cap']:g}x the job"
        )
        + f", {most['checkpoints']} checkpoints "
        + (
            f"finished in {most['completion_s']:.1f} s with {most['redone_s']:.1f} s of work "
            "redone."
            if most["finished"]
            else "did not finish."
        ),
        f"- **load** (`load.json`): {num(s['answered'])} calls answered, {s['lost']} lost, "
        f"{s['duplicates']} duplicated, {s['wrong_values']} wrong; {num(s['calls_per_s'])} "
        f"calls/s, p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms with {s['clients']} calls "
        f"in flight. Killed with SIGKILL after {pct(k['killed_at'], 0)} of the calls and "
        f"restarted on the same job store: of the {k['unavailable']} calls in flight, "
        f"{k['recovered']} waiting calls ran after the restart with "
        f"{'correct' if k['recovered_correct'] else 'WRONG'} kept results, "
        f"{k.get('interrupted', k.get('failed_running'))} were running at the kill, "
        f"{k['failed_unstored']} "
        f"{'was' if k['failed_unstored'] == 1 else 'were'} not yet written, "
        f"{k['reply_lost_or_never_arrived']} had their reply lost or never arrived; "
        + (
            "none ran twice."
            if k["duplicates"] + k["recovered_also_answered"] == 0
            else f"{k['duplicates'] + k['recovered_also_answered']} ran twice."
        ),
    ]
    return "\n".join(lines) + "\n"


# -- the files ----------------------------------------------------------------------------


def render(text: str, results: Results) -> str:
    """``text`` with every block regenerated from ``results``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown block bench:{name}")
        return match.group(1) + wrap(BLOCKS[name](results)) + match.group(4)

    return MARKER.sub(replace, text)


def blocks_in(text: str) -> list[str]:
    return [m.group(2) for m in MARKER.finditer(text)]


def outside_blocks(text: str) -> str:
    """``text`` with the blocks' contents removed (what is left is hand-written)."""
    return MARKER.sub(lambda m: m.group(1) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Rewrite the generated figure blocks (<!-- bench:NAME --> ... "
        "<!-- /bench:NAME -->) of README.md and bench/README.md from bench/results/*.json.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a block is out of date"
    )
    opts = parser.parse_args(argv)
    results = Results()
    stale = 0
    for name, expected in FILES.items():
        path = ROOT / name
        text = path.read_text()
        missing = [b for b in expected if b not in blocks_in(text)]
        if missing:
            print(f"{name}: no block for {', '.join(missing)}", file=sys.stderr)
            stale += 1
        new = render(text, results)
        if new == text:
            continue
        if opts.check:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), name, f"{name} (generated)"
                )
            )
        else:
            path.write_text(new)
            print(f"{name}: rewritten")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
