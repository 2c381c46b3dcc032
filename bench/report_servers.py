"""The README blocks about several servers: ``bench fleet`` (and its migration run) and
``bench decisions_servers``."""

from __future__ import annotations

from typing import Any

from .report_text import (
    UNFORESEEN,
    Results,
    block,
    wrap,
)

# -- fleet --------------------------------------------------------------------------------


def _cpu(server: dict[str, Any]) -> str:
    """A fleet server's CPU quota, if the results say it."""
    return f", {server['cpu']:g} CPU" if "cpu" in server else ""


@block("fleet")
def fleet(r: Results) -> str:
    f = r["fleet"]
    setup, policies = f["setup"], f["policies"]
    servers = ", ".join(
        f"{n} ({s['km']:g} km, {s['mbit']:g} Mbit/s, {s['workers']} worker"
        f"{'s' if s['workers'] > 1 else ''}{_cpu(s)})"
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
            f", at {ours['energy_ratio_to_oracle']:.2f}x its energy{_unforeseen_said(f)}"
            f"; its failover gap is {ours['failover_gap_s']:.2f} s (target: at most two heartbeat "
            f"intervals, {2 * setup['heartbeat_interval_s']:g} s). {_migration(f.get('migration'))}"
        )
    )


def _unforeseen_said(f: dict[str, Any]) -> str:
    """The unforeseen reference of the run, if it says."""
    ref = f.get("unforeseen")
    if ref is None:
        return ""
    return (
        f" (a policy that {UNFORESEEN} pays {ref['time_ratio_to_oracle']:.3f}x the time and "
        f"{ref['energy_ratio_to_oracle']:.3f}x the energy)"
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


SERVER_POLICY_LABELS = {
    "always_local": "always local",
    "nearest": "always the nearest server (up)",
    "random_server": "a random server (up) per call",
    "ours": "ours, objective time",
    "ours_energy": "ours, objective energy",
}


def servers_results(r: Results) -> str | None:
    """The three-server decisions results to report: the full run's, else the quick one's."""
    for name in ("decisions_servers", "decisions_servers_quick"):
        if (r.directory / f"{name}.json").exists():
            return name
    return None


@block("decisions-servers")
def decisions_servers(r: Results) -> str:
    name = servers_results(r)
    if name is None:
        return "Not run yet (`python -m bench decisions_servers`).\n"
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
    size = "Full run" if name == "decisions_servers" else "Quick run (`--quick`)"
    load = ", ".join(f"{x:.1f}" for x in d["loadavg_at_trace_end"])
    return (
        f"{size}, {d['calls']} calls over {len(d['phases'])} phases "
        f"({', '.join(d['phases'])}; `bench/results/{name}.json`), load average {load}:\n\n"
        "| policy | time / oracle | energy / oracle | shuffled within phases, mean (worst of 20) "
        "| orders of 20 better than every fixed policy |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + _unforeseen(r)
    )


def _unforeseen(r: Results) -> str:
    """The unforeseen reference of the full and quick traces, as far as they say."""
    traces = []
    for name, trace in (("decisions_servers", "full"), ("decisions_servers_quick", "quick")):
        if not (r.directory / f"{name}.json").exists():
            continue
        ref = r[name].get("unforeseen")
        if ref is not None:
            traces.append(
                f"{trace} trace: time {ref['time_ratio_to_oracle']:.3f}, energy "
                f"{ref['energy_ratio_to_oracle']:.3f}"
            )
    if not traces:
        return ""
    said = "; ".join(traces)
    return f"\nA decider that {UNFORESEEN} pays (`unforeseen`): {said} of the oracle's.\n"
