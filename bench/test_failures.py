"""Smoke run of the failure benchmark: one case with real worker kills, and its report."""

from __future__ import annotations

import numpy as np

from . import failures
from .workloads import MOD, matrix_rounds


def test_a_case_with_kills_finishes_correctly(tmp_path):
    a = np.random.default_rng(0).integers(0, MOD, (failures.SIZE, failures.SIZE))
    rounds, per_round = failures._rounds_for(1.0, a)
    expected = matrix_rounds.__wrapped__(a, rounds)
    # Seed 3 draws its first failure 0.09 s into the 1 s job: it lands however fast this runs.
    with failures._server() as (_, client):
        record = failures.run_case(
            client, a, rounds, per_round, expected, 0.003, 15, 1.0, seed=3, cap=20
        )
    assert record["finished"] and record["correct"] and record["failures"] >= 1
    assert record["checkpoints_taken"] >= 1 and record["redone_s"] >= 0
    failures.plot([record], 1.0, tmp_path / "f.png")
    assert "| 0.003 | 15 |" in failures.markdown(
        {"job_s": 1.0, "rounds": rounds, "cases": [record]}
    )
