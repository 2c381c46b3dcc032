"""bench fleet: the oracle and the ratios from measured calls (the run itself needs root)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import fleet, fleet_report


def _calls(spec: list[tuple[str, float, str]]) -> dict:
    return {"calls": [{"phase": p, "s": s, "where": w} for p, s, w in spec], "failover_gap_s": 0.1}


def test_the_oracle_takes_each_calls_best_outcome_and_ratios_follow():
    runs = {
        "ours": _calls([("steady", 0.05, "mid"), ("mid dead", 0.2, "near")]),
        "nearest": _calls([("steady", 0.15, "near"), ("mid dead", 0.14, "near")]),
    }
    totals = fleet.summarize(runs, 120_000)
    assert [c["where"] for c in runs["ours"]["calls"]] == ["mid", "near"]  # untouched
    assert totals["oracle"]["time_s"] == 0.05 + 0.14
    assert totals["oracle"]["where"] == {"mid": 1, "near": 1}
    assert totals["ours"]["time_ratio_to_oracle"] == (0.25) / (0.19)
    assert totals["oracle"]["time_ratio_to_oracle"] == 1.0
    assert set(totals["ours"]["per_phase_s"]) == set(fleet.PHASES)
    report = {
        "quick": True,
        "setup": {
            "servers": {
                n: {"km": k, "mbit": m, "workers": w, "cpu": fleet.CPU[n]}
                for n, (k, m, w) in fleet.SERVERS.items()
            },
            "phases": list(fleet.PHASES),
            "local_slowdown": 4.0,
            **fleet.QUICK,
        },
        "policies": totals,
    }
    text = fleet.markdown(report)
    assert "| ours | 0.25 | 1.32 |" in text
    assert "far (25.0 km, 100 Mbit/s, 1 worker, 0.3 CPU)" in text


def test_the_migration_section_reports_the_gain_and_the_moves():
    from bench import fleet_migration

    runs = {
        "unslowed": [{"s": 2.0, "started_on": "near", "moves": [], "runs": 1}],
        "never": [{"s": 6.0, "started_on": "near", "moves": [], "runs": 1}],
        "auto": [{"s": 2.5, "started_on": "near", "moves": [["near", "mid"]], "runs": 2}],
    }
    seconds = {how: r[0]["s"] for how, r in runs.items()}
    m = {
        "setup": {**fleet_migration.QUICK, "slowed": 4.0, "slowed_after": 0.25},
        "seconds": seconds,
        "gain": 6.0 / 2.5,
        "auto_to_unslowed": 2.5 / 2.0,
        "runs": runs,
    }
    m["setup"]["checkpoint_every_s"] = 0.2
    text = fleet_migration.markdown(m)
    assert "| auto | 2.50 |" in text and "2.40x faster than `never`" in text
    assert "Moves: near -> mid." in text
    assert fleet_migration.markdown(None).startswith("Migration: not measured")


def test_the_unforeseen_sends_the_first_call_over_a_changed_link_where_it_was_good():
    def call(phase: str, where: str, s: float) -> dict[str, Any]:
        return {"phase": phase, "where": where, "s": s}

    a = [call("mid busy", "far", 0.03), call("mid busy", "far", 0.03)]
    a += [call("far link weak", "far", 0.5), call("far link weak", "mid", 0.05)]
    b = [call("mid busy", "mid", 0.2), call("mid busy", "mid", 0.2)]
    b += [call("far link weak", "mid", 0.05), call("far link weak", "mid", 0.05)]
    ref = fleet_report.unforeseen({"a": {"calls": a}, "b": {"calls": b}}, 1000)
    # far was good before its link weakened: the first call after goes there, and pays 0.5.
    assert ref["time_ratio_to_oracle"] == pytest.approx((0.03 + 0.03 + 0.5 + 0.05) / 0.16)
    assert ref["energy_ratio_to_oracle"] > 1.0
