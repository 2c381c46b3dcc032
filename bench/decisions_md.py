"""The markdown of a ``bench decisions`` report (``decisions.md``, ``decisions_quick.md``)."""

from __future__ import annotations

from typing import Any


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table."""
    lines = [
        f"# Decisions: {report['calls']} calls ({report['size']}), seed {report['seed']}",
        "",
        *(f"- {k}: {v}" for k, v in report["testbed"].items()),
        f"- energy: {report['energy_source']}",
        f"- decision cost: {report['decision_cost']['decide_us']:.2f} us of CPU time per call "
        f"on this machine, before emulation "
        f"({report['decision_cost']['decide_share_of_roundtrip']:.1%} of a raw pyzmq round trip)",
        "",
        "| policy | time s | energy J | time / oracle | energy / oracle | remote | agrees |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["policies"].items():
        lines.append(
            f"| {name} | {r['time_s']:.2f} | {r['energy_j']:.2f} | "
            f"{r['time_ratio_to_oracle']:.3f} | {r['energy_ratio_to_oracle']:.3f} | "
            f"{r.get('remote_share', float('nan')):.0%} | "
            f"{r.get('agrees_with_time_oracle', 1.0):.0%} |"
        )
    lines += [
        "",
        "Over 20 replays with the calls reshuffled within each phase (mean / worst):",
        "",
        "| policy | time / oracle | energy / oracle |",
        "|---|---|---|",
    ]
    for name, r in report["reshuffled"].items():
        time_mean, time_max = r["time_ratio_to_oracle_mean"], r["time_ratio_to_oracle_max"]
        energy_mean, energy_max = r["energy_ratio_to_oracle_mean"], r["energy_ratio_to_oracle_max"]
        lines.append(
            f"| {name} | {time_mean:.3f} / {time_max:.3f} | {energy_mean:.3f} / {energy_max:.3f} |"
        )
    beats = {
        n: r["orders_better_than_every_fixed_policy"]
        for n, r in report["reshuffled"].items()
        if "orders_better_than_every_fixed_policy" in r
    }
    if beats:
        lines += [
            "",
            "Orders on which it beat every fixed policy (always local, always remote, DCOF's "
            f"rule): ours by time {beats.get('ours')}, ours_energy by energy "
            f"{beats.get('ours_energy')}, of 20.",
        ]
    first = report.get("first_10_calls_of_each_function")
    if first:
        lines += [
            "",
            "A new function: the first 10 calls of each service only (ours with the time "
            f"objective {first['ours']['time_ratio_to_oracle']:.3f} of the oracle's time, "
            f"with the energy objective {first['ours_energy']['energy_ratio_to_oracle']:.3f} "
            "of its energy).",
        ]
    floor = report.get("noise_floor")
    if floor:
        lines += [
            "",
            "Noise floor: knowing the mean outcome of both sides for each phase, service and "
            "intensity, but not each call's, reaches "
            f"{floor['time_ratio_to_oracle']:.3f} of the oracle's time and "
            f"{floor['energy_ratio_to_oracle']:.3f} of its energy (the rest of the oracle's "
            "lead is single calls' noise, which no estimate made before a call can see; "
            f"{floor['calls_per_group']:.0f} calls per group: with one, it cannot tell).",
        ]
    bat = report.get("battery")
    if bat is not None:
        lines += [
            "",
            f"Battery counter: skipped: {bat['skipped']}."
            if "skipped" in bat
            else f"Battery counter ({bat['counter']}): {bat['measured_j']:.1f} J measured over "
            f"the live run, {bat['modelled_j']:.1f} J modelled for its calls "
            f"({bat['measured_over_modelled']:.2f}x; {bat['note']}).",
        ]
    if "live" in report:
        live = report["live"]
        lines += [
            "",
            f"Live run: {live['agreement_with_replayed_choices']:.0%} of choices match the "
            f"replay; {live['remote_share']:.0%} offloaded; {live['time_s']:.2f} s "
            f"(trace oracle {live['trace_oracle_time_s']:.2f} s).",
        ]
    return "\n".join(lines) + "\n"
