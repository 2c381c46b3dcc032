"""A small load run: many clients at once, every call answered exactly once."""

from __future__ import annotations

from . import load


def test_every_call_is_answered_exactly_once():
    report = load.run(clients=8, calls=10)
    assert report["answered"] == 80
    assert report["duplicates"] == report["lost"] == report["wrong_values"] == 0
    assert report["other_errors"] == [] and report["server_busy"] == 0
