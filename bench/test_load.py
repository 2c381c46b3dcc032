"""A small load run: many clients at once, every call answered exactly once."""

from __future__ import annotations

from . import load


def test_every_call_is_answered_exactly_once():
    report = load.run(clients=8, calls=10)
    assert report["answered"] == 80
    assert report["duplicates"] == report["lost"] == report["wrong_values"] == 0
    assert report["other_errors"] == [] and report["server_busy"] == 0


def test_queued_calls_survive_a_sigkill_mid_load():
    report = load.run(clients=8, calls=30, kill_at=0.4)
    assert report["unavailable"] >= 1  # the kill came mid-load
    assert report["answered"] + report["unavailable"] == 240
    assert report["recovered_correct"] and report["recovered_also_answered"] == 0
    assert report["duplicates"] == report["lost"] == report["wrong_values"] == 0
    assert report["other_errors"] == []
    assert "| answered |" in load.markdown({"steady": report, "sigkill": report})
