"""bench fleet's report: energy per call (modelled), the oracle, the ratios, table and figure."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from offload.profiler import EnergyModel

from . import fleet_migration
from .fleet_setup import SERVERS, WEAK_MBIT
from .report_text import UNFORESEEN

PHASES = ("steady", "mid busy", "far link weak", "mid dead", "mid back")


def energy(call: dict[str, Any], payload: int, model: EnergyModel) -> float:
    """Joules of one call, modelled: the upload at its link's rate, then waiting; or CPU here."""
    if call["where"] not in SERVERS:
        return model.local(call["s"])
    mbit = SERVERS[call["where"]][1]
    if call["where"] == "far" and call["phase"] in ("far link weak", "mid dead", "mid back"):
        mbit = WEAK_MBIT
    up = min(payload * 8 / (mbit * 1e6), call["s"])
    return model.remote(up, 0.0, call["s"])


def summarize(runs: dict[str, dict[str, Any]], payload: int) -> dict[str, Any]:
    """Totals per policy, the oracle (per call, the best measured outcome), and the ratios."""
    model = EnergyModel("smartphone-wifi")
    names = list(runs)
    n = len(runs[names[0]]["calls"])
    oracle = []
    for i in range(n):
        best = min((runs[p]["calls"][i] for p in names), key=lambda c: c["s"])
        oracle.append(dict(best))
    everything = {**{p: runs[p]["calls"] for p in names}, "oracle": oracle}
    totals = {}
    for name, calls in everything.items():
        where: dict[str, int] = {}
        for c in calls:
            where[c["where"]] = where.get(c["where"], 0) + 1
        totals[name] = {
            "time_s": sum(c["s"] for c in calls),
            "energy_j": sum(energy(c, payload, model) for c in calls),
            "where": where,
            "per_phase_s": {ph: sum(c["s"] for c in calls if c["phase"] == ph) for ph in PHASES},
            "failover_gap_s": runs[name]["failover_gap_s"] if name in runs else None,
        }
    best_t, best_e = totals["oracle"]["time_s"], totals["oracle"]["energy_j"]
    for t in totals.values():
        t["time_ratio_to_oracle"] = t["time_s"] / best_t
        t["energy_ratio_to_oracle"] = t["energy_j"] / best_e
    return totals


#: Phase -> the servers whose link changed as it began: nothing announces that (a PING's round
#: trip does not change behind ``tbf``), while PONGs report load and a death or return is seen.
LINKS_CHANGED = {"far link weak": {"far"}}


def unforeseen(runs: dict[str, dict[str, Any]], payload: int) -> dict[str, float]:
    """What a policy that always picks the best place it can know of pays, as ratios to
    the oracle: it knows everything but what nothing announces, a link's new rate.

    The oracle, except for the first call of a phase in :data:`LINKS_CHANGED`: it
    believes each of those servers costs what calls measured there in the previous
    phase, every other place what it costs now (the same call if a policy sent it there,
    else the phase's mean there), goes to the fastest so believed, and is charged what
    that place cost now; its energy is those choices'. A reference, not a bound on every
    policy: one that happens to avoid that link at that call pays less.
    """
    model = EnergyModel("smartphone-wifi")
    calls = [runs[p]["calls"] for p in runs]
    oracle = [min((c[i] for c in calls), key=lambda c: c["s"]) for i in range(len(calls[0]))]
    paid = list(oracle)
    for i, best in enumerate(oracle):
        moved = LINKS_CHANGED.get(best["phase"], set())
        if not (i and moved and best["phase"] != oracle[i - 1]["phase"]):
            continue
        same = _by_side(c[i] for c in calls)
        phase = _by_side(x for c in calls for x in c if x["phase"] == best["phase"])
        now = {side: _mean(same.get(side) or there) for side, there in phase.items()}
        then = _by_side(x for c in calls for x in c if x["phase"] == oracle[i - 1]["phase"])
        believed = {side: _mean(then[side]) if side in moved and side in then else s
                    for side, s in now.items()}  # fmt: skip
        side = min(believed, key=believed.__getitem__)
        paid[i] = {**best, "where": side, "s": now[side]}
    return {
        "time_ratio_to_oracle": sum(c["s"] for c in paid) / sum(c["s"] for c in oracle),
        "energy_ratio_to_oracle": sum(energy(c, payload, model) for c in paid)
        / sum(energy(c, payload, model) for c in oracle),
    }


def _by_side(calls: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``calls`` by where they ran."""
    sides: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        sides.setdefault(c["where"], []).append(c)
    return sides


def _mean(calls: list[dict[str, Any]]) -> float:
    """Mean seconds of ``calls``."""
    return sum(c["s"] for c in calls) / len(calls)


def markdown(report: dict[str, Any]) -> str:
    setup, policies_ = report["setup"], report["policies"]
    servers = ", ".join(f"{n} ({_server(s)})" for n, s in setup["servers"].items())
    lines = [
        "# Many servers: per-call choice against fixed policies and the oracle",
        "",
        f"Servers: {servers}. {setup['calls']} sequential calls per phase "
        f"({', '.join(setup['phases'])}), each {setup['payload'] // 1000} KB up and "
        f"{setup['serve_s'] * 1000:g} ms of service; here is {setup['local_slowdown']:g}x slower. "
        "Oracle: per call, the best outcome measured under any policy. Energy is modelled."
        + (" Quick run." if report["quick"] else ""),
        "",
        "| policy | time (s) | x oracle | energy (J) | x oracle | failover gap (s) | calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in sorted(policies_.items(), key=lambda kv: kv[1]["time_s"]):
        gap = p.get("failover_gap_s")
        sides = ", ".join(f"{k} {v}" for k, v in sorted(p["where"].items()))
        lines.append(
            f"| {name} | {p['time_s']:.2f} | {p['time_ratio_to_oracle']:.2f} | "
            f"{p['energy_j']:.2f} | {p['energy_ratio_to_oracle']:.2f} | "
            f"{'-' if gap is None else f'{gap:.2f}'} | {sides} |"
        )
    ref = report.get("unforeseen")
    if ref is not None:
        lines += [
            "",
            f"Unforeseen reference: a policy that {UNFORESEEN} pays "
            f"{ref['time_ratio_to_oracle']:.3f}x the oracle's time and "
            f"{ref['energy_ratio_to_oracle']:.3f}x its energy.",
        ]
    lines += [
        "",
        "Time per phase (s):",
        "",
        "| policy | " + " | ".join(setup["phases"]) + " |",
        "|---|" + "---|" * len(setup["phases"]),
    ]
    for name, p in sorted(policies_.items(), key=lambda kv: kv[1]["time_s"]):
        cells = " | ".join(f"{p['per_phase_s'][ph]:.2f}" for ph in setup["phases"])
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n\n" + fleet_migration.markdown(report.get("migration"))


def _server(s: dict[str, Any]) -> str:
    """One server of the setup, for people: distance, link, workers, CPU quota."""
    quota = f", {s['cpu']:g} CPU" if "cpu" in s else ""
    workers = f"{s['workers']} worker{'s' * (s['workers'] > 1)}"
    return f"{s['km']} km, {s['mbit']:g} Mbit/s, {workers}{quota}"


def figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup, policies_ = report["setup"], report["policies"]
    names = sorted(policies_, key=lambda n: policies_[n]["time_s"])
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(names)
    for phase in setup["phases"]:
        values = [policies_[n]["per_phase_s"][phase] for n in names]
        ax.bar(names, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("total call time (s)")
    ax.set_title("Per-call server choice vs fixed policies (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
