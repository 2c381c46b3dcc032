"""Smoke run of the DCOF benchmark: small intensities, the real testbed, checks on the report."""

from __future__ import annotations

import json

import pytest

from . import compiled, dcof, dcof_report

PLAN = {"bubble_sort": [3_000], "matrix_multiply": [60], "power": [100_000]}


@pytest.mark.timeout(300)  # two servers, and each traditional call sets its app up anew
def test_four_scenarios_measured_and_reported(tmp_path):
    report = dcof.run(PLAN, reps=2, seed=1, progress=False)
    report["size"] = "smoke"
    results = report["results"]
    assert len(report["samples"]) == 3 * 4 * 2
    for service, (level,) in PLAN.items():
        local, trad, by_value, ours = (results[service][s][str(level)] for s in dcof.SCENARIOS)
        assert all(c["correct"] for c in (local, trad, by_value, ours))
        assert local["bytes_up"] == local["bytes_down"] == 0
        # By value, the function's code travels with every call; traditionally, its whole app
        # (the bundle as deploy packs it, and its manifest); DCOF-style, neither.
        code, bundle = (
            report["shipped_code_bytes"][service],
            report["shipped_bundle_bytes"][service],
        )
        assert code > 500 and bundle > 500
        assert by_value["bytes_up"] - ours["bytes_up"] >= code
        assert trad["bytes_up"] - ours["bytes_up"] >= bundle
        assert abs(by_value["bytes_down"] - ours["bytes_down"]) < 64
        assert trad["setup_s"] > 0 and ours["setup_s"] == 0  # set up anew before each call
        if ours["wire_up"] is not None:  # the emulated link saw at least the frames
            assert ours["wire_up"] >= ours["bytes_up"] and ours["wire_down"] >= ours["bytes_down"]
        for cell in (local, trad, by_value, ours):
            assert cell["turnaround_s"] > 0 and cell["energy_j"] > 0 and cell["n"] == 2
    # A 10^5 power is a millisecond's work: setting up the app (or compiling) dominates.
    power = results["power"]
    assert power["traditional"]["100000"]["turnaround_s"] > power["dcof"]["100000"]["turnaround_s"]
    assert power["by_value"]["100000"]["turnaround_s"] > power["dcof"]["100000"]["turnaround_s"]
    summary = report["summary"]
    assert summary["per_service"]["power"]["dcof_vs_traditional"]["data"]["mean"] > 0.5
    for ref in ("traditional", "by_value", "local"):
        assert set(summary["overall"][f"dcof_vs_{ref}"]) >= {"turnaround", "energy"}
    report["sweep"] = [dcof_report.sweep_point(report)]

    text = dcof_report.write(report, tmp_path)
    assert "-83.5%" in text and "| power | data |" in text and "## Sweep" in text
    saved = json.loads((tmp_path / "dcof.json").read_text())
    assert (
        saved["results"]["power"]["dcof"]["100000"]["bytes_up"]
        == power["dcof"]["100000"]["bytes_up"]
    )
    for name in (
        "dcof_fig3_sort_turnaround.png",
        "dcof_fig7_matrix_data.png",
        "dcof_fig8_energy.png",
        "dcof_sweep.png",
    ):
        assert (tmp_path / name).stat().st_size > 10_000


def test_statistics():
    assert dcof_report.ci99([1.0]) == 0.0
    # Two values 1 and 3: sd sqrt(2), t(0.995, 1) = 63.657, half-width 63.657 * sqrt(2) / sqrt(2)
    assert abs(dcof_report.ci99([1.0, 3.0]) - 63.657) < 1e-9
    cells = {
        "s": {
            "local": {"1": _cell(4.0, 0, 0, 3.6)},
            "traditional": {"1": _cell(2.0, 1500, 100, 1.0)},
            "by_value": {"1": _cell(1.5, 600, 100, 0.8)},
            "dcof": {"1": _cell(1.0, 100, 100, 0.5)},
        }
    }
    summary = dcof_report.reductions(cells)["per_service"]["s"]
    assert summary["dcof_vs_traditional"]["turnaround"]["mean"] == 0.5
    assert summary["dcof_vs_traditional"]["data"]["mean"] == 1 - 200 / 1600
    assert summary["dcof_vs_local"]["turnaround"]["mean"] == 0.75
    assert summary["dcof_vs_by_value"]["data"]["mean"] == 1 - 200 / 700
    assert "data" not in summary["dcof_vs_local"]
    assert compiled.power.__wrapped__(3, 1000) == pow(3, 1000, compiled.MODULUS)


def _cell(seconds: float, up: int, down: int, joules: float) -> dict[str, float]:
    return {
        "turnaround_s": seconds,
        "bytes_up": up,
        "bytes_down": down,
        "energy_j": joules,
        "client_cpu_s": seconds / 2,
    }


def test_the_apps_kernels_are_the_compiled_ones_word_for_word():
    import importlib
    import inspect
    import sys

    sys.path.append(str(dcof.APP_DIR))
    try:
        for service, module in dcof.APPS.items():
            app = importlib.import_module(module)
            kernel = f"{service}_kernel"
            assert inspect.getsource(getattr(app, kernel)) == inspect.getsource(
                getattr(compiled, kernel)
            )
    finally:
        sys.path.remove(str(dcof.APP_DIR))
