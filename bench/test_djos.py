"""Smoke run of the DJOS report: the example's figures, short simulations, the plots."""

from __future__ import annotations

from . import djos as report


def test_report_pieces(tmp_path):
    example = report.motivating_example()
    assert {k: example[k] for k in report.SLIDES} == report.SLIDES
    result = report.series(3, frames=300, seed=1)
    assert len(result["by_lambda"]) == len(report.LAMBDAS[3])
    assert all(
        r["djos"]["energy_per_user"] <= r["lfos"]["energy_per_user"] for r in result["by_lambda"]
    )
    report.plot(result, tmp_path / "djos.png")
    assert (tmp_path / "djos.png").stat().st_size > 10_000
    text = report.markdown(
        {"motivating_example": example, "one_slot": result, "three_slot": result}
    )
    assert "| DJOS | 2.0 | 2.000 |" in text
