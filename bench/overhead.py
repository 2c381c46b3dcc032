"""Framework overhead against raw pyzmq, measured in one run on one machine.

(a) A no-op offloaded call against a raw DEALER/ROUTER echo of the same
    bytes: p50 and p99 latency, and their ratio (target: p50 at most 2.5x).
(b) Echo of 1, 16 and 128 MB numpy arrays (random, so lz4 does not help)
    against a raw zero-copy echo of the same buffer: throughput ratio
    (target: at least 70% of raw at 128 MB).

Both sides are servers in their own processes on loopback, and the two are
called alternately, call by call, so a noisy shared machine slows both alike.

Run with ``python -m bench overhead``; writes ``bench/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

import offload
from offload.runtime import protocol, serialize

from .progress import steps
from .rawzmq import RawEcho, interleaved
from .workloads import echo, noop

RESULTS = Path(__file__).parent / "results"


def _pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def call_frames(fn: offload.OffloadedFunction[..., Any], *args: Any) -> list[Any]:
    """The frames a call of ``fn(*args)`` puts on the wire (for a same-bytes raw baseline)."""
    codecs, frames = serialize.dumps((args, {}), compress=False)
    header = protocol.encode_header(
        protocol.CALL, 1, fingerprint=fn.fingerprint, name=fn.wire_name.encode(), codecs=codecs
    )
    return [header, *frames]


def _latency(raw_t: list[float], off_t: list[float]) -> dict[str, float]:
    row = {
        "raw_p50_us": _pct(raw_t, 0.5) * 1e6,
        "raw_p99_us": _pct(raw_t, 0.99) * 1e6,
        "offload_p50_us": _pct(off_t, 0.5) * 1e6,
        "offload_p99_us": _pct(off_t, 0.99) * 1e6,
    }
    row["p50_ratio"] = row["offload_p50_us"] / row["raw_p50_us"]
    row["p99_ratio"] = row["offload_p99_us"] / row["raw_p99_us"]
    return row


def measure(
    small_n: int = 2000, rounds: int = 3, sizes_mb: tuple[int, ...] = (1, 16, 128)
) -> dict[str, Any]:
    """Run both comparisons and return the figures.

    The no-op comparison runs ``rounds`` times in two arrangements, alternating
    (raw, offload, raw, ... call by call) and back to back (each in its own
    loop), and reports the median round of each: single rounds on a shared
    machine vary by tens of percent.
    """
    out: dict[str, Any] = {}
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "WARNING"]
        ) as server,
        RawEcho() as raw,
        offload.Client(server, compression="off") as client,
    ):
        client.ping(timeout=30)
        raw_call = functools.partial(raw.roundtrip, call_frames(noop))
        off_call = functools.partial(client.call, noop, (), {})
        alternating, back_to_back = [], []
        for _ in steps(range(rounds), "no-op rounds", unit="round"):
            alternating.append(_latency(*interleaved([raw_call, off_call], small_n, warmup=300)))
            (raw_block,) = interleaved([raw_call], small_n, warmup=300)
            (off_block,) = interleaved([off_call], small_n, warmup=300)
            back_to_back.append(_latency(raw_block, off_block))
        for key, rows in (("noop", alternating), ("noop_blocks", back_to_back)):
            ordered = sorted(rows, key=lambda r: r["p50_ratio"])
            out[key] = {
                **ordered[len(ordered) // 2],
                "p50_ratio_range": [ordered[0]["p50_ratio"], ordered[-1]["p50_ratio"]],
            }
        rng = np.random.default_rng(0)
        for mb in steps(sizes_mb, "array echoes", unit="size"):
            array = rng.integers(0, 2**63, size=mb * 2**20 // 8, dtype=np.int64)
            raw_s, off_s = (
                statistics.median(t)
                for t in interleaved(
                    [
                        functools.partial(raw.roundtrip, call_frames(echo, array)),
                        functools.partial(client.call, echo, (array,), {}),
                    ],
                    5 if mb >= 128 else 20,
                    warmup=2,
                )
            )
            out[f"echo_{mb}MB"] = {
                "raw_MBps": 2 * mb / raw_s,
                "offload_MBps": 2 * mb / off_s,
                "throughput_ratio": raw_s / off_s,
            }
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the ratios and save them."""
    parser = argparse.ArgumentParser(
        prog="python -m bench overhead",
        description="A no-op call and 1, 16 and 128 MB echoes, offload against raw pyzmq; "
        "writes bench/results/overhead.json.",
    )
    parser.parse_args(argv)  # no options: --help prints this and measures nothing
    load_before = os.getloadavg()[0]
    figures = measure()
    # A shared machine's other work shows in every figure: say how busy it was.
    figures["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(figures, indent=2))
    for key, label in (("noop_blocks", "back to back"), ("noop", "alternating")):
        n = figures[key]
        low, high = n["p50_ratio_range"]
        print(
            f"no-op, {label:12s} p50 {n['offload_p50_us']:7.1f} us vs raw {n['raw_p50_us']:7.1f} us"
            f" = {n['p50_ratio']:.2f}x (rounds {low:.2f}-{high:.2f}; target <= 2.5x);"
            f" p99 {n['p99_ratio']:.2f}x"
        )
    for key, row in figures.items():
        if key.startswith("echo_"):
            print(
                f"{key:12s} {row['offload_MBps']:8.1f} MB/s vs raw {row['raw_MBps']:8.1f} MB/s"
                f" = {row['throughput_ratio']:.0%} of raw (target >= 70% at 128 MB)"
            )


if __name__ == "__main__":
    main()
