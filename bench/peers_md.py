"""The markdown of a ``bench peers`` report: ``peers.md`` and the README blocks.

Kept apart from :mod:`bench.peers` so that ``python -m bench report`` formats
the committed results without importing what the measurement needs.
"""

from __future__ import annotations

from typing import Any


def _x(ratio: float | None) -> str:
    return f" ({ratio:.2f}x)" if ratio is not None else ""


def mbps(row: dict[str, Any], mb: int) -> str:
    """Echo throughput and its ratio to raw pyzmq's: ``1,234 (0.87x)``."""
    value = row[f"echo_{mb}MB_MBps"]
    if value is None:
        return "not run (too slow)"
    return f"{value:,.0f}{_x(row.get(f'echo_{mb}MB_vs_raw'))}"


def server_cpu(row: dict[str, Any]) -> str:
    """Server CPU per call: ``front 90 + worker 40 = 130`` when split, else the one figure."""
    parts = row["server_cpu_us"]
    if len(parts) == 1:
        return f"{row['server_cpu_total_us']:.0f}"
    split = " + ".join(f"{k} {v:.0f}" for k, v in parts.items())
    return f"{split} = {row['server_cpu_total_us']:.0f}"


def header(report: dict[str, Any]) -> str:
    """What the run was: size, rounds, what each figure is, the load, whether clusters ran."""
    loads = report["load_average_1min"]
    cpus = report["machine"].get("cpus", "?") if report["machine"] else "?"
    return (
        f"A {report['size']} run, {report['rounds']} rounds in rotation, each system started "
        "alone in each round; no-op: the median over rounds of each round's p50 and p99; CPU "
        "per no-op call over all its "
        "rounds (client: `process_time`; server: psutil, its processes and their children); "
        f"echo: random int64 arrays of 1 and {report['big_mb']} MB, median round trip, MB/s "
        "counting both ways; (Nx): against raw pyzmq in this run. Load average (1 min) during "
        f"the run: {min(loads):.1f}-{max(loads):.1f} on {cpus} CPUs."
        + ("" if report["clusters"] else " Ray and Dask not run (`--no-clusters`).")
    )


def table(report: dict[str, Any]) -> list[str]:
    """Every system's figures, one row each."""
    big = report["big_mb"]
    lines = [
        "| system | version | no-op calls | no-op p50 us | no-op p99 us | client CPU us/call "
        f"| server CPU us/call | echo 1 MB MB/s | echo {big} MB MB/s | startup s "
        "| how arrays travel |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["peers"].values():
        if "skipped" in r:
            lines.append(f"| {r['label']} | - | {r['skipped']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {r['version']} | {r['noop_calls']:,} | {r['noop_p50_us']:,.0f}"
            f"{_x(r.get('noop_p50_vs_raw'))} | {r['noop_p99_us']:,.0f}"
            f"{_x(r.get('noop_p99_vs_raw'))} | {r['client_cpu_us']:.0f} | {server_cpu(r)} "
            f"| {mbps(r, 1)} | {mbps(r, big)} | {r['startup_s']:.1f} | {r['transport']} |"
        )
    return lines


def inline_note(report: dict[str, Any]) -> str:
    """Both of offload's figures side by side: a worker process per job, and inline threads."""
    rows = report["peers"]
    ours, inline = rows.get("offload", {}), rows.get("offload_inline", {})
    if "noop_p50_us" not in ours or "noop_p50_us" not in inline:
        return ""
    return (
        ' offload with `@offload(isolation="thread")` on a server started with '
        "`--allow-inline` (calls run by a thread of the edge server, no worker process: no "
        "crash, memory or CPU isolation, see README) against its default, a worker process per "
        f"job, in this run: no-op p50 {inline['noop_p50_us']:,.0f} us against "
        f"{ours['noop_p50_us']:,.0f} us ({inline['noop_p50_us'] / ours['noop_p50_us']:.2f}x); "
        f"CPU per call client {inline['client_cpu_us']:.0f} against {ours['client_cpu_us']:.0f} "
        f"us, server {server_cpu(inline)} against {server_cpu(ours)} us."
    )


def relay_note(report: dict[str, Any]) -> str:
    """The isolation floor: raw pyzmq relayed through a worker process, and offload against it."""
    rows = report["peers"]
    relay, ours = rows.get("relay", {}), rows.get("offload", {})
    if "noop_p50_us" not in relay:
        return ""
    note = (
        " Raw pyzmq relayed through a worker process (a front that passes each request to a "
        "worker over a Unix socket and the reply back: the three processes of offload's worker "
        "per job, no framework code) is the floor of that isolation: no-op p50 "
        f"{relay['noop_p50_us']:,.0f} us{_x(relay.get('noop_p50_vs_raw'))}, p99 "
        f"{relay['noop_p99_us']:,.0f} us{_x(relay.get('noop_p99_vs_raw'))}, CPU per call client "
        f"{relay['client_cpu_us']:.0f} us, server {server_cpu(relay)} us."
    )
    if "noop_p50_us" not in ours:
        return note
    return note + (
        f" offload against it: p50 {ours['noop_p50_us'] / relay['noop_p50_us']:.2f}x, p99 "
        f"{ours['noop_p99_us'] / relay['noop_p99_us']:.2f}x, client CPU "
        f"{ours['client_cpu_us'] - relay['client_cpu_us']:+.0f} us, server CPU "
        f"{ours['server_cpu_total_us'] - relay['server_cpu_total_us']:+.0f} us per call."
    )


def markdown(report: dict[str, Any], machine: str) -> str:
    """``peers.md``: the header, the machine and the table."""
    lines = [
        "# Peers on loopback, one remote worker process each",
        "",
        f"- machine: {machine}",
        f"- {header(report)}{inline_note(report)}{relay_note(report)}",
        "",
        *table(report),
    ]
    return "\n".join(lines) + "\n"


def summary(report: dict[str, Any]) -> str:
    """README's block: no-op p50 (x raw), p99, CPU per call and the echoes against raw."""
    big = report["big_mb"]
    lines = [
        "| system | no-op p50 us (x raw) | p99 us (x raw) | CPU us/call client / server "
        f"| echo 1 MB vs raw | echo {big} MB vs raw |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["peers"].values():
        if "skipped" in r:
            continue
        ratios = [r.get(f"echo_{mb}MB_vs_raw") for mb in (1, big)]
        lines.append(
            f"| {r['label']} | {r['noop_p50_us']:,.0f}{_x(r.get('noop_p50_vs_raw'))} "
            f"| {r['noop_p99_us']:,.0f}{_x(r.get('noop_p99_vs_raw'))} "
            f"| {r['client_cpu_us']:.0f} / {server_cpu(r)} | "
            + " | ".join("-" if x is None else f"{x:.2f}" for x in ratios)
            + " |"
        )
    skipped = [r["label"] for r in report["peers"].values() if "skipped" in r]
    note = f" Not installed, so not run: {', '.join(skipped)}." if skipped else ""
    notes = note + inline_note(report) + relay_note(report)
    return "\n".join(lines) + "\n\n" + header(report) + notes + "\n"
