"""The README blocks of the call-level benches: overhead, decisions, DJOS, failures,
load, abuse and peers.
"""

from __future__ import annotations

from typing import Any

from . import peers_md
from .report_text import (
    Results,
    block,
    cell,
    dec,
    num,
    pct,
    span,
    whole,
)

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


# -- djos ---------------------------------------------------------------------------------


def drop_rates(series: dict[str, Any], policy: str) -> list[float]:
    return [d for row in series["by_lambda"] for d in row[policy]["drop_rate"]]


@block("djos")
def djos(r: Results) -> str:
    j = r["djos"]
    ex, slides = j["motivating_example"], j["slides"]
    exact = all(f"{ex[k]:.3f}" == f"{v:.3f}" for k, v in slides.items())
    series = [j["one_slot"], j["three_slot"]]
    savings = [row["djos_saving_vs_lfos"] for s in series for row in s["by_lambda"]]
    djos_drops = [d for s in series for d in drop_rates(s, "djos")]
    lfos_drops = [d for s in series for d in drop_rates(s, "lfos")]
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


# -- peers --------------------------------------------------------------------------------


@block("peers")
def peers(r: Results) -> str:
    return (
        "`python -m bench peers` runs offload beside raw pyzmq (direct, and relayed through a "
        "worker process: the floor of a worker per job), a minimal pickle-5 RPC on the same "
        "sockets, Pyro5, execnet, ProcessPoolExecutor, RPyC, Ray and Dask, each with one "
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
