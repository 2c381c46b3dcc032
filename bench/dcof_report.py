"""The DCOF benchmark's statistics, its comparison with the paper, and its files (JSON, md, PNG).

Per (service, scenario, intensity): the median turnaround and the mean with
its 99% confidence interval (Student's t over the repetitions, the paper's
statistic), and medians of the bytes, CPU seconds and joules. Reductions of
DCOF-style offloading against traditional offloading (the app shipped and set
up before every call), against the function shipped by value, and against
running locally are taken per intensity from the medians, then averaged over the
intensities of a service with a 99% interval over those intensities (as the
paper's "57.8 +/- 2%"); the overall figure is the mean of the three services.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

SCENARIO_ORDER = ("local", "traditional", "by_value", "dcof")
#: What DCOF-style offloading is compared with.
REFERENCES = ("traditional", "by_value", "local")

#: Student's t quantile 0.995 for 1..30 degrees of freedom (two-sided 99%); 2.576 beyond.
T995 = [63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.25, 3.169, 3.106, 3.055]
T995 += [3.012, 2.977, 2.947, 2.921, 2.898, 2.878, 2.861, 2.845, 2.831, 2.819, 2.807, 2.797]
T995 += [2.787, 2.779, 2.771, 2.763, 2.756, 2.75]

#: What Shiraz et al. 2014 report (fractions: 0.91 is 91% less with DCOF).
PAPER: dict[str, Any] = {
    "headline_vs_traditional": {"data": 0.91, "energy": 0.81, "turnaround": 0.835},
    "vs_traditional": {
        "bubble_sort": {"data": 0.748, "turnaround": 0.913, "energy": 0.875},
        "matrix_multiply": {"data": 0.928, "turnaround": 0.72, "energy": 0.616},
        "power": {"data": 0.955, "turnaround": 0.97, "energy": 0.93},
    },
    "vs_local_turnaround": {  # (mean, 99% half-width)
        "bubble_sort": [0.578, 0.02],
        "matrix_multiply": [0.103, 0.005],
        "power": [0.65, 0.108],
    },
    "local_turnaround_ms": {
        "bubble_sort": {"11000": 4876, "25000": 16950, "40000": 31207},
        "matrix_multiply": {"160": 3653, "310": 21185, "450": 99286},
        "power": {"1000000": 51, "60000000": 1767},
    },
    "data_kb": {
        "bubble_sort": {"traditional": {"11000": 752.4, "40000": 2645.4}},
        "matrix_multiply": {"traditional": {"160": 5739.4, "260": 15426.5, "450": 46740}},
        "power": {"traditional": {"any": 44.7}, "dcof": {"any": 2}},
    },
    "migrated_binary_kb": {"bubble_sort": 44.4, "matrix_multiply": 46, "power": 42.7},
}
PAPER["data_kb"]["bubble_sort"]["dcof"] = {"11000": 83, "40000": 692}
PAPER["data_kb"]["matrix_multiply"]["dcof"] = {"160": 463, "350": 1979, "450": 3308}


def ci99(values: list[float]) -> float:
    """Half-width of the 99% confidence interval of the mean of ``values`` (0 for one value)."""
    if len(values) < 2:
        return 0.0
    df = len(values) - 1
    t = T995[df - 1] if df <= len(T995) else 2.576
    return t * statistics.stdev(values) / len(values) ** 0.5


def _mean_ci(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "ci99": ci99(values)}


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numba": numba.__version__,
    }


def describe(m: dict[str, Any]) -> str:
    """One line for a :func:`machine` record."""
    return (
        f"{m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}, "
        f"numba {m['numba']}"
    )


def cells(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service, scenario and intensity: the statistics of its repetitions."""
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for s in samples:
        grouped.setdefault((s["service"], s["scenario"], s["intensity"]), []).append(s)
    out: dict[str, Any] = {}
    for (service, scenario, intensity), rows in grouped.items():
        times = [r["turnaround_s"] for r in rows]

        def median(key: str, rows: list[dict[str, Any]] = rows) -> Any:
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.median(values) if values else None

        out.setdefault(service, {}).setdefault(scenario, {})[str(intensity)] = {
            "turnaround_s": statistics.median(times),
            "turnaround_mean_s": statistics.mean(times),
            "turnaround_ci99_s": ci99(times),
            **{
                key: median(key)
                for key in (
                    "bytes_up",
                    "bytes_down",
                    "wire_up",
                    "wire_down",
                    "client_cpu_s",
                    "energy_j",
                    "setup_s",
                )
            },
            "n": len(rows),
            "correct": all(r["correct"] for r in rows),
        }
    return out


def _data(cell: dict[str, Any]) -> float:
    return float(cell["bytes_up"] + cell["bytes_down"])


METRICS: dict[str, Any] = {
    "turnaround": lambda c: c["turnaround_s"],
    "data": _data,
    "energy": lambda c: c["energy_j"],
    "client_cpu": lambda c: c["client_cpu_s"],
}


def reductions(results: dict[str, Any]) -> dict[str, Any]:
    """DCOF-style against each of :data:`REFERENCES`: per service, overall, and by totals."""
    per_service: dict[str, Any] = {}
    totals: dict[str, dict[str, float]] = {}
    for service, by_scenario in results.items():
        dcof = by_scenario["dcof"]
        per_service[service] = {}
        for ref in REFERENCES:
            row = {}
            for metric, get in METRICS.items():
                if ref == "local" and metric == "data":
                    continue  # nothing crosses the link locally
                pairs = [(get(dcof[i]), get(by_scenario[ref][i])) for i in dcof]
                row[metric] = _mean_ci([1 - d / r for d, r in pairs if r])
                total = totals.setdefault(f"{ref}/{metric}", {"dcof": 0.0, "ref": 0.0})
                total["dcof"] += sum(d for d, _ in pairs)
                total["ref"] += sum(r for _, r in pairs)
            per_service[service][f"dcof_vs_{ref}"] = row
    overall: dict[str, Any] = {}
    for ref in REFERENCES:
        key = f"dcof_vs_{ref}"
        metrics = per_service[next(iter(per_service))][key]
        overall[key] = {
            m: statistics.mean(per_service[s][key][m]["mean"] for s in per_service) for m in metrics
        }
    by_totals = {k: 1 - v["dcof"] / v["ref"] for k, v in totals.items() if v["ref"]}
    return {"per_service": per_service, "overall": overall, "by_totals": by_totals}


def summarise(samples: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The report: ``meta``, per-cell results, the summary, the paper's figures, the samples."""
    results = cells(samples)
    return {
        **meta,
        "results": results,
        "summary": reductions(results),
        "paper": PAPER,
        "samples": samples,
    }


def _pct(reduction: float) -> str:
    """A reduction as a signed change: 0.91 -> "-91.0%", -0.3 -> "+30.0%"."""
    return f"{-reduction:+.1%}"


def _pm(cell: dict[str, float]) -> str:
    return f"{_pct(cell['mean'])} ± {cell['ci99']:.1%}"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: the testbed, a table per service, the summary beside the paper."""
    calls = len(report["samples"])
    lines = [
        f"# DCOF reproduced: {calls} calls ({report.get('size', '?')}), "
        f"{report['reps']} repetitions per intensity, seed {report['seed']}",
        "",
        *(f"- {k}: {v}" for k, v in report["testbed"].items()),
        f"- machine: {describe(report['machine'])}",
        f"- energy: {report['energy']}",
        f"- device CPU share: {report.get('device_share', 0.25)}",
        "- traditional (as the paper built it): before every call the service's app travels "
        "whole, packed as `offload deploy` packs it, and is set up anew on a server of its own "
        "(unpacked, imported in a fresh interpreter, then in a fresh worker that compiles the "
        "kernel); shipped bundle bytes: "
        + ", ".join(f"{k} {v} B" for k, v in report["shipped_bundle_bytes"].items())
        + " (the paper's migrated .apk: "
        + ", ".join(f"{k} {v} KB" for k, v in PAPER["migrated_binary_kb"].items())
        + ")",
        "- by_value: the function shipped by value (cloudpickle) every call, compiled anew "
        "by numba on the server; shipped code bytes: "
        + ", ".join(f"{k} {v} B" for k, v in report["shipped_code_bytes"].items()),
        "- dcof: the app deployed once; a call carries its arguments and result",
        "- bytes: ZeroMQ frames, header frames included (wire: IP bytes the emulated link "
        "carried, TCP and heartbeats included); times: median [mean ± 99% CI half-width]",
        f"- wall time {report['wall_s']:.0f} s",
        "",
    ]
    for service, by_scenario in report["results"].items():
        lines += [
            f"## {service}",
            "",
            "| intensity | local s | traditional s | by_value s | dcof s | trad KB up/down "
            "| by_value KB up/down | dcof KB up/down | trad wire KB | dcof wire KB | local J "
            "| trad J | by_value J | dcof J | same result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in by_scenario["dcof"]:
            loc, tra, val, dco = (by_scenario[s][key] for s in SCENARIO_ORDER)
            same = tra["correct"] and val["correct"] and dco["correct"]
            lines.append(
                f"| {int(key):,} | {_t(loc)} | {_t(tra)} | {_t(val)} | {_t(dco)} | {_kb(tra)} "
                f"| {_kb(val)} | {_kb(dco)} | {_wire(tra)} | {_wire(dco)} "
                f"| {loc['energy_j']:.3f} | {tra['energy_j']:.3f} | {val['energy_j']:.3f} "
                f"| {dco['energy_j']:.3f} | {same} |"
            )
        lines += ["", _paper_points(service), ""]
    lines += _summary_table(report["summary"])
    if report.get("sweep"):
        lines += ["", *_sweep_table(report["sweep"])]
    return "\n".join(lines) + "\n"


def _t(cell: dict[str, Any]) -> str:
    return (
        f"{cell['turnaround_s']:.3f} [{cell['turnaround_mean_s']:.3f} "
        f"± {cell['turnaround_ci99_s']:.3f}]"
    )


def _kb(cell: dict[str, Any]) -> str:
    return f"{cell['bytes_up'] / 1e3:.1f} / {cell['bytes_down'] / 1e3:.1f}"


def _wire(cell: dict[str, Any]) -> str:
    if cell["wire_up"] is None:
        return "-"
    return f"{(cell['wire_up'] + cell['wire_down']) / 1e3:.1f}"


def _paper_points(service: str) -> str:
    """The paper's own figures for ``service`` (a phone running Android, 802.11g)."""
    local = ", ".join(
        f"{int(k):,}: {v:,} ms" for k, v in PAPER["local_turnaround_ms"][service].items()
    )
    data = PAPER["data_kb"][service]
    sent = "; ".join(
        f"{scenario} " + ", ".join(f"{k}: {v:,} KB" for k, v in points.items())
        for scenario, points in data.items()
    )
    return f"Paper (phone): local turnaround {local}; data {sent}."


def _summary_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Summary: DCOF-style against traditional offloading, by value, and local",
        "",
        "Change with DCOF-style offloading (mean over the intensities ± 99% CI half-width).",
        "",
        "| service | metric | ours vs traditional | paper vs traditional | ours vs by_value "
        "| ours vs local | paper vs local |",
        "|---|---|---|---|---|---|---|",
    ]
    for service, row in summary["per_service"].items():
        for metric in ("turnaround", "data", "energy", "client_cpu"):
            paper_trad = PAPER["vs_traditional"][service].get(metric)
            paper_local = PAPER["vs_local_turnaround"][service] if metric == "turnaround" else None
            local = row["dcof_vs_local"].get(metric)
            lines.append(
                f"| {service} | {metric} | {_pm(row['dcof_vs_traditional'][metric])} "
                f"| {_pct(paper_trad) if paper_trad is not None else '-'} "
                f"| {_pm(row['dcof_vs_by_value'][metric])} "
                f"| {_pm(local) if local else '-'} "
                f"| {_pm(dict(zip(('mean', 'ci99'), paper_local))) if paper_local else '-'} |"
            )
    overall, head = summary["overall"], PAPER["headline_vs_traditional"]
    for metric in ("turnaround", "data", "energy"):
        local = overall["dcof_vs_local"].get(metric)
        lines.append(
            f"| **all three** | **{metric}** | **{_pct(overall['dcof_vs_traditional'][metric])}** "
            f"| **{_pct(head[metric])}** | {_pct(overall['dcof_vs_by_value'][metric])} "
            f"| {_pct(local) if local is not None else '-'} | - |"
        )
    lines += [
        "",
        "By totals over every intensity (sum of DCOF's medians against the other's): "
        + ", ".join(f"{k} {_pct(v)}" for k, v in summary["by_totals"].items()),
    ]
    return lines


def sweep_point(report: dict[str, Any]) -> dict[str, Any]:
    """One device share of the sweep: its plan, its summary, the local and link times."""
    results = report["results"]
    matrix = results["matrix_multiply"]
    largest = max(matrix["local"], key=int)
    dcof = matrix["dcof"][largest]
    rate = report.get("mbit", 54.0) * 1e6 / 8
    return {
        "device_share": report["device_share"],
        "plan": report["plan"],
        "reps": report["reps"],
        "summary": report["summary"],
        "local_s": {
            s: {i: c["turnaround_s"] for i, c in results[s]["local"].items()} for s in results
        },
        "traditional_s": {
            s: {i: c["turnaround_s"] for i, c in results[s]["traditional"].items()} for s in results
        },
        "dcof_s": {
            s: {i: c["turnaround_s"] for i, c in results[s]["dcof"].items()} for s in results
        },
        # Computing the largest product here against moving its data at the link's rate.
        "matrix_compute_to_link": matrix["local"][largest]["turnaround_s"]
        / ((dcof["bytes_up"] + dcof["bytes_down"]) / rate),
        "matrix_side": int(largest),
        "wall_s": report["wall_s"],
    }


#: The paper's ratio: 99.3 s for a 450x450 product on the phone against 3,308 KB at 54 Mbit/s.
PAPER_COMPUTE_TO_LINK = 99.286 / (3308e3 * 8 / 54e6)


def _sweep_table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Sweep: the device's CPU share towards the paper's compute-to-link ratio",
        "",
        f"The quick plan at each share ({points[0]['reps']} repetitions). Compute-to-link: "
        "the local time of the largest matrix product over the time its data takes at "
        f"54 Mbit/s (the paper's: {PAPER_COMPUTE_TO_LINK:.0f}). Change with DCOF-style "
        "offloading, mean over the services.",
        "",
        "| device share | compute-to-link | vs traditional: turnaround / data / energy "
        "| vs by_value: turnaround / energy | vs local: turnaround / energy "
        "| sort, matrix, power vs local turnaround |",
        "|---|---|---|---|---|---|",
    ]
    for p in points:
        o = p["summary"]["overall"]
        per = p["summary"]["per_service"]
        t, v, lo = o["dcof_vs_traditional"], o["dcof_vs_by_value"], o["dcof_vs_local"]
        services = ", ".join(_pct(per[s]["dcof_vs_local"]["turnaround"]["mean"]) for s in per)
        lines.append(
            f"| {p['device_share']:g} | {p['matrix_compute_to_link']:.2f} "
            f"| {_pct(t['turnaround'])} / {_pct(t['data'])} / {_pct(t['energy'])} "
            f"| {_pct(v['turnaround'])} / {_pct(v['energy'])} "
            f"| {_pct(lo['turnaround'])} / {_pct(lo['energy'])} | {services} |"
        )
    return lines


def write(report: dict[str, Any], out: Path) -> str:
    """Write ``dcof.json``, ``dcof.md`` and the figures into ``out``; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "dcof.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "dcof.md").write_text(text)
    from .dcof_figures import figures

    figures(report, out)
    return text
