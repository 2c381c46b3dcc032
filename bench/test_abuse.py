"""Smoke run of the abuse bench: every scenario with tiny payloads, budgets and durations."""

from __future__ import annotations

from . import abuse


def test_the_quick_abuse_bench_runs_and_reports(tmp_path, monkeypatch):
    tiny = {"seconds": 1.0, "size": 2 * abuse.MB, "rate": 8.0, "memory": "32M", "client": "8M"}
    monkeypatch.setattr(abuse, "QUICK", tiny)
    report = abuse.main(["--quick"], out=tmp_path)
    by_name = {r["scenario"]: r for r in report["scenarios"]}
    assert set(by_name) == {"uploads", "unread", "stop", "floods"}
    for record in by_name.values():
        assert record["legit"]["calls"] > 0 and record["samples"]
    assert by_name["uploads"]["abuser"]["refused"] > 0  # the client budget turned calls away
    # The abuser's unread replies are let go with its connection; what is left is
    # the legit client's own call in flight (a few bytes), never a 2 MB payload.
    assert by_name["unread"]["held_before_close_mb"] >= 2
    assert by_name["unread"]["held_after_close_mb"] < 0.5
    assert by_name["stop"]["sigterm_exit_s"] < 2 + 5  # --close-grace 2, plus a few
    assert by_name["stop"]["after_restart"]["shm_mb_of_killed_server"] == 0
    assert (tmp_path / "abuse.json").exists()
    assert "| floods |" in (tmp_path / "abuse.md").read_text()
