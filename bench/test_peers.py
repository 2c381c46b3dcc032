"""Smoke run of the peers benchmark: raw, raw relayed through a worker process, minimal RPC,
ProcessPoolExecutor, offload (a worker process per job, and inline threads) measured."""

from __future__ import annotations

import importlib.util

from . import peers, peers_md

MEASURED = ["raw", "relay", "rpc", "ppe", "offload", "offload_inline"]


def test_the_four_measured_against_raw_and_a_missing_peer_skipped(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        peers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "rpyc" else real(name, *a),
    )
    report = {"size": "smoke", "machine": {}} | peers.run([*MEASURED, "rpyc"], size="smoke")
    rows = report["peers"]
    assert "not installed" in rows["rpyc"]["skipped"]
    big = report["big_mb"]
    for name in MEASURED:
        row = rows[name]
        assert 0 < row["noop_p50_us"] <= row["noop_p99_us"], name
        assert row["noop_calls"] == peers.COUNTS["smoke"]["noop"]
        assert row["client_cpu_us"] > 0 and row["server_cpu_total_us"] >= 0, name
        assert row["echo_1MB_MBps"] > 0 and row[f"echo_{big}MB_MBps"] > 0, name
        for key in (
            "noop_p50_vs_raw",
            "noop_p99_vs_raw",
            "echo_1MB_vs_raw",
            f"echo_{big}MB_vs_raw",
        ):
            assert row[key] > 0, (name, key)
    assert rows["raw"]["noop_p50_vs_raw"] == 1.0
    # offload's server side is its edge-server front and its worker, apart and summed
    # ... and so is the relayed raw baseline's: the floor of a worker process per job
    for name in ("offload", "offload_inline", "relay"):
        ours = rows[name]
        assert set(ours["server_cpu_us"]) == {"front", "worker"}
        assert ours["server_cpu_total_us"] == sum(ours["server_cpu_us"].values())
    text = peers_md.markdown(report, "-")
    assert "| RPyC | - | rpyc not installed" in text and "| offload (edge server" in text
    assert "Not installed, so not run: RPyC." in peers_md.summary(report)
    # both of offload's figures: a worker process per job (default) and inline threads
    assert 'isolation="thread"' in peers_md.summary(report) and "--allow-inline" in text
    assert "| raw pyzmq relayed through a worker process |" in text
    assert "offload against it: p50" in text and "offload against it: p50" in peers_md.summary(
        report
    )
