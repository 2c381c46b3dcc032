"""Fixtures for the pytest-benchmark files: an edge server and a raw pyzmq echo, side by side."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import offload

from .rawzmq import RawEcho


@pytest.fixture(autouse=True)
def _no_profile_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Benchmarks start cold and leave the user's profile cache alone."""
    monkeypatch.setenv("OFFLOAD_PROFILE_CACHE", "")


@pytest.fixture(scope="module")
def bench_client() -> Iterator[offload.Client]:
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "WARNING"]
        ) as srv,
        offload.Client(srv, compression="off", profile_cache="") as client,
    ):
        client.ping(timeout=30)
        yield client


@pytest.fixture(scope="module")
def raw_echo() -> Iterator[RawEcho]:
    with RawEcho() as raw:
        yield raw
