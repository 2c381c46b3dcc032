"""Figures like DCOF's Figures 3 to 8, drawn from a :mod:`bench.dcof` report with matplotlib.

* Figures 3-5: turnaround against intensity, one line per scenario (bubble
  sort, matrix product, power compute), with the 99% interval as error bars.
* Figures 6-7: data transmitted, traditional (the app shipped with every
  call), by value and DCOF-style, per intensity (bubble sort, matrix product).
* Figure 8: energy per call in each scenario, per service.
* With a sweep: the change against traditional and against local at each
  device CPU share (``dcof_sweep.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIGURES = {
    "dcof_fig3_sort_turnaround.png": ("bubble_sort", "turnaround"),
    "dcof_fig4_matrix_turnaround.png": ("matrix_multiply", "turnaround"),
    "dcof_fig5_power_turnaround.png": ("power", "turnaround"),
    "dcof_fig6_sort_data.png": ("bubble_sort", "data"),
    "dcof_fig7_matrix_data.png": ("matrix_multiply", "data"),
}
LABELS = {
    "bubble_sort": "bubble sort: list length",
    "matrix_multiply": "matrix product: side n (n x n)",
    "power": "power compute: exponent",
}
STYLE = {"local": "s-", "traditional": "o-", "by_value": "d--", "dcof": "^-"}
SENT = ("traditional", "by_value", "dcof")


def _series(report: dict[str, Any], service: str, scenario: str, key: str) -> tuple[list, list]:
    cells = report["results"][service][scenario]
    xs = sorted(cells, key=int)
    return [int(x) for x in xs], [cells[x][key] for x in xs]


def _turnaround(ax: Any, report: dict[str, Any], service: str) -> None:
    for scenario, style in STYLE.items():
        xs, ys = _series(report, service, scenario, "turnaround_s")
        _, ci = _series(report, service, scenario, "turnaround_ci99_s")
        ax.errorbar(xs, ys, yerr=ci, fmt=style, capsize=3, label=scenario)
    ax.set(xlabel=LABELS[service], ylabel="turnaround s (median; bars: 99% CI of mean)")


def _data(ax: Any, report: dict[str, Any], service: str) -> None:
    width = None
    for k, scenario in enumerate(SENT):
        xs, up = _series(report, service, scenario, "bytes_up")
        _, down = _series(report, service, scenario, "bytes_down")
        if width is None:
            step = (xs[-1] - xs[0]) / max(1, len(xs) - 1) if len(xs) > 1 else xs[0]
            width = step * 0.25
        ax.bar(
            [x + (k - 1) * width for x in xs],
            [(u + d) / 1e3 for u, d in zip(up, down)],
            width=width,
            label=scenario,
        )
    ax.set(xlabel=LABELS[service], ylabel="data transmitted KB (up + down)")


def _energy(axes: Any, report: dict[str, Any]) -> None:
    for ax, service in zip(axes, report["results"]):
        for scenario, style in STYLE.items():
            xs, ys = _series(report, service, scenario, "energy_j")
            ax.plot(xs, ys, style, label=scenario)
        ax.set(xlabel=LABELS[service], ylabel="energy J (modelled)")
        ax.legend(fontsize=8)


def figures(report: dict[str, Any], out: Path) -> list[Path]:
    """Draw the six figures into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, (service, kind) in FIGURES.items():
        if service not in report["results"]:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        (_turnaround if kind == "turnaround" else _data)(ax, report, service)
        ax.set_title(f"{service}: {kind} (link RTT {report['rtt_s'] * 1e3:.2f} ms)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        paths.append(out / name)
    services = list(report["results"])
    fig, axes = plt.subplots(1, len(services), figsize=(4.2 * len(services), 3.8), squeeze=False)
    _energy(axes[0], report)
    fig.suptitle("energy per call: local, traditional, by value and DCOF-style offloading")
    fig.tight_layout()
    fig.savefig(out / "dcof_fig8_energy.png", dpi=90)
    plt.close(fig)
    paths.append(out / "dcof_fig8_energy.png")
    if report.get("sweep"):
        paths.append(_sweep(plt, report["sweep"], out / "dcof_sweep.png"))
    return paths


def _sweep(plt: Any, points: list[dict[str, Any]], path: Path) -> Path:
    """DCOF-style's change against traditional and local, per service, at each device share."""
    shares = [p["device_share"] for p in points]
    services = list(points[0]["summary"]["per_service"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, ref in zip(axes, ("traditional", "local")):
        for service in services:
            ys = [
                -100 * p["summary"]["per_service"][service][f"dcof_vs_{ref}"]["turnaround"]["mean"]
                for p in points
            ]
            ax.plot(shares, ys, "o-", label=service)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set(
            xscale="log",
            xlabel="device CPU share (log)",
            ylabel=f"turnaround change vs {ref} %",
            title=f"DCOF-style against {ref}",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
