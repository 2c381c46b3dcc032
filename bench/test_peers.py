"""Smoke run of the peers benchmark: ours and one peer measured, a missing peer skipped."""

from __future__ import annotations

import importlib.util

import pytest

from . import peers


def test_ours_measured_and_a_missing_peer_skipped(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        peers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "rpyc" else real(name, *a),
    )
    rows = peers.run(["offload", "rpyc"], size="smoke")
    assert "not installed" in rows["rpyc"]["skipped"]
    ours = rows["offload"]
    assert 0 < ours["noop_p50_us"] <= ours["noop_p99_us"]
    assert ours["echo_16MB_MBps"] > 0 and ours["matmul_300_ms"] > 0
    text = peers.markdown({"size": "smoke", "machine": {}, "peers": rows})
    assert "| rpyc | - | rpyc not installed" in text and "| offload | 0.1.0 |" in text


def test_a_peer_through_its_own_server_process():
    pytest.importorskip("Pyro5")
    rows = peers.run(["pyro5"], size="smoke")
    assert rows["pyro5"]["matmul_300_ms"] > 0  # the result was checked against a local run
