"""DJOS's simulator (the slides' example, its guarantees on random instances) and its report."""

from __future__ import annotations

import random

import pytest

from . import djos as report
from . import djos_sim as djos


def example() -> tuple[djos.System, list[int], list[int]]:
    return djos.System(slots=6, mu=(1, 1), e_local=7, e_edge=4), [6, 6], [2, 2]


def per_user_slot(plan: djos.Plan | None, system: djos.System) -> float:
    assert plan is not None and not any(plan.dropped)
    return sum(plan.energy) / (system.users * system.slots)


def test_the_motivating_example_exactly():
    system, arrivals, capacity = example()
    lfos = per_user_slot(djos.lfos(system, arrivals, capacity), system)
    assert lfos == 4.5
    assert per_user_slot(djos.efos(system, arrivals, capacity), system) == 4.25
    best = per_user_slot(djos.djos(system, arrivals, capacity, [100, 100]), system)
    assert best == 2.0
    assert per_user_slot(djos.jos(system, arrivals, capacity, [100, 100]), system) == 2.0
    assert per_user_slot(djos.optimum(system, arrivals, capacity), system) == 2.0
    assert round(1 - best / lfos, 3) == 0.556  # the slides' 55.6%


def value(plan: djos.Plan, backlog: list[float], system: djos.System) -> float:
    """The drift-plus-penalty weight of a frame's plan: backlog x done - M x energy."""
    return sum(
        backlog[n] * (plan.local[n] + plan.edge[n]) - system.weight * plan.energy[n]
        for n in range(system.users)
    )


@pytest.mark.parametrize("seed", range(40))
def test_djos_is_never_worse_than_lfos_or_efos_and_matches_jos(seed):
    rng = random.Random(seed)
    users, slots = rng.randint(1, 3), rng.randint(1, 3)
    system = djos.System(
        slots=slots, mu=tuple(rng.randint(1, 2) for _ in range(users)), weight=rng.choice([1, 5])
    )
    arrivals = [rng.randint(0, 7) for _ in range(users)]
    capacity = [rng.choice([0, 2, 4]) for _ in range(users)]
    backlog = [rng.choice([0.0, 3.0, 50.0]) for _ in range(users)]
    best = djos.djos(system, arrivals, capacity, backlog)
    for baseline in (djos.lfos, djos.efos):
        plan = baseline(system, arrivals, capacity)
        assert value(best, backlog, system) >= value(plan, backlog, system) - 1e-9
    exhaustive = djos.jos(system, arrivals, capacity, backlog)
    assert value(best, backlog, system) == pytest.approx(value(exhaustive, backlog, system))
    assert all(d >= 0 for d in best.dropped)


def test_the_virtual_queue_keeps_the_drop_rate_under_its_bound():
    system = djos.System(slots=3, mu=(1,) * 5, rho=(0.1,) * 5, weight=10.0)
    run = djos.simulate(system, "djos", 20_000, (7, 0.6 / 7), (4, 1.0), random.Random(7))
    lfos = djos.simulate(system, "lfos", 20_000, (7, 0.6 / 7), (4, 1.0), random.Random(7))
    assert max(run.drop_rate) <= 0.1 + 0.01  # the bound, up to the queue's O(1/frames) excess
    assert sum(run.energy_per_slot) < 0.5 * sum(lfos.energy_per_slot)  # it spends the budget


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
