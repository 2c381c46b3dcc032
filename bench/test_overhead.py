"""pytest-benchmark view of the overhead benchmark (``python -m bench overhead`` prints ratios).

Compare groups with ``pytest bench --benchmark-enable --benchmark-group-by=group``; in the
ordinary test run benchmarks are disabled and each body runs once, as a smoke test.
"""

from __future__ import annotations

import numpy as np
import pytest

from .overhead import call_frames
from .workloads import echo, noop

MB = np.random.default_rng(0).integers(0, 2**63, size=2**20 // 8, dtype=np.int64)


@pytest.mark.benchmark(group="noop")
def test_raw_zmq_echo_noop(benchmark, raw_echo):
    frames = call_frames(noop)
    out = benchmark(raw_echo.roundtrip, frames)
    assert len(out) == len(frames)


@pytest.mark.benchmark(group="noop")
def test_offload_noop(benchmark, bench_client):
    assert benchmark(bench_client.call, noop, (), {}) is None


@pytest.mark.benchmark(group="echo-1MB")
def test_raw_zmq_echo_1mb(benchmark, raw_echo):
    frames = call_frames(echo, MB)
    out = benchmark(raw_echo.roundtrip, frames)
    assert sum(len(f) for f in out) >= MB.nbytes


@pytest.mark.benchmark(group="echo-1MB")
def test_offload_echo_1mb(benchmark, bench_client):
    out = benchmark(bench_client.call, echo, (MB,), {})
    assert np.array_equal(out, MB)
