"""DJOS: the slides' motivating example, its guarantees on random instances, and deadline maps."""

from __future__ import annotations

import random
import time

import pytest

import offload
from offload.profiler import djos

from . import apps


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


def cost(here: float, there: float, e_here: float, e_there: float) -> djos.ItemCost:
    return djos.ItemCost(busy_local=here, busy_remote=there, cost_local=e_here, cost_remote=e_there)


def test_split_fills_lanes_by_policy_and_drops_what_cannot_fit():
    items = [cost(1.0, 0.5, 0.9, 0.2) for _ in range(6)]
    here, there, dropped = djos.split_batch(items, 2.0, 1.0, "lfos")
    assert (here, there, dropped) == ([0, 1], [2, 3], [4, 5])
    here, there, dropped = djos.split_batch(items, 2.0, 1.0, "efos")
    assert (here, there, dropped) == ([2, 3], [0, 1], [4, 5])
    here, there, dropped = djos.split_batch(items, 10.0, 10.0, "djos", backlog=None)
    assert there == list(range(6)) and not here and not dropped  # all fit where it is cheap


def test_split_with_a_small_backlog_drops_the_expensive_items_first():
    items = [cost(1.0, 1.0, 0.5, 0.4)] * 2 + [cost(1.0, 1.0, 5.0, 4.0)]
    here, there, dropped = djos.split_batch(items, 10, 10, "djos", backlog=1.5)
    assert dropped == [2] and sorted(here + there) == [0, 1]
    assert djos.split_batch(items, 10, 10, "djos", backlog=20.0)[2] == []


def test_map_within_a_deadline_on_a_real_server(server):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        easy = client.map_within(apps.nap, [0.01] * 6, deadline=10.0)
        assert easy.met and list(easy) == [0.01] * 6
        for _ in range(2):  # a few more: both sides get measured
            client.map_within(apps.nap, [0.05] * 4, deadline=10.0, objective="time")
        start = time.perf_counter()
        hard = client.map_within(apps.nap, [0.4] * 10, deadline=0.5, objective="time")
        took = time.perf_counter() - start
        assert not hard.met and hard.dropped
        assert all(isinstance(hard[i], offload.Dropped) for i in hard.dropped)
        assert all(hard[i] == 0.4 for i in range(10) if i not in hard.dropped)
        assert took < 2.0  # it did not wait for what it dropped
        late = client.map_within(apps.nap, [0.2] * 6, deadline=0.3, late="complete")
        assert list(late) == [0.2] * 6 and late.late and not late.dropped


def test_offloaded_function_map_takes_a_deadline(server):
    offload.configure(server=server)
    try:
        offload.default_client().ping(timeout=10)
        result = apps.add.map([1, 2, 3], [10, 20, 30], deadline=5.0)
        assert isinstance(result, offload.BatchResult) and list(result) == [11, 22, 33]
        assert list(apps.add.map([1], [2])) == [3]  # without one: an ordinary map
    finally:
        offload.configure(server=None)


def test_equal_items_with_time_to_spare_are_dropped_only_within_the_budget(server):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        for _ in range(3):  # both sides measured; no drops, so the virtual queue drains
            client.map_within(apps.nap, [0.01] * 4, deadline=10.0, objective="time")
        result = client.map_within(apps.nap, [0.01] * 10, deadline=10.0)  # energy, by default
        assert result.planned and len(result.dropped) <= 1  # max_drop 0.1 of 10, not all 10
        strict = client.map_within(apps.nap, [0.01] * 10, deadline=10.0, max_drop=0.0)
        assert strict.met and not strict.dropped
