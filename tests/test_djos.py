"""DJOS in the runtime: the single-user batch split and deadline maps on a real server.

The multi-user simulator's tests (the slides' example, random instances) are in
``bench/test_djos.py``.
"""

from __future__ import annotations

import time

import offload
from offload.batch import BatchResult, Failed
from offload.profiler import djos

from . import apps


def check_partition(result: BatchResult, late: str = "drop") -> None:
    """here, there, late and dropped are disjoint, cover every item, and match the results."""
    groups = [result.here, result.there, result.late, result.dropped]
    assert sorted(i for group in groups for i in group) == list(range(len(result)))
    for i, value in enumerate(result):
        assert isinstance(value, offload.Dropped) == (i in result.dropped)
        assert isinstance(value, Failed) == (i in result.failed)
    assert set(result.failed) <= set(result.here + result.there + result.late)
    if late == "drop":
        assert not result.late


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
        check_partition(hard)
        late = client.map_within(apps.nap, [0.2] * 6, deadline=0.3, late="complete")
        assert list(late) == [0.2] * 6 and late.late and not late.dropped
        check_partition(late, "complete")


def test_a_failed_item_does_not_sink_the_batch(server):
    with offload.Client(server) as client:
        client.ping(timeout=10)
        result = client.map_within(
            apps.add, [1, "a", 3], [10, 20, 30], deadline=30.0, objective="time", max_drop=0.0
        )
    check_partition(result)
    assert result[0] == 11 and result[2] == 33
    failed = result[1]
    assert isinstance(failed, Failed) and failed.index == 1 and result.failed == [1]
    assert isinstance(failed.exception, TypeError)


def test_late_items_are_dropped_or_listed_late_never_both_here():
    with offload.Client(None) as client:  # no server: every item runs here, one after another
        dropping = client.map_within(apps.nap, [0.3] * 4, deadline=0.5, objective="time")
        completing = client.map_within(
            apps.nap, [0.3] * 4, deadline=0.5, objective="time", late="complete"
        )
        failing = client.map_within(apps.fail, ["x", "y"], deadline=30.0, objective="time")
    check_partition(dropping)
    assert dropping.dropped and not dropping.met  # 4 x 0.3 s cannot fit in 0.5 s
    assert all(dropping[i] == 0.3 for i in dropping.here)
    check_partition(completing, "complete")
    assert list(completing) == [0.3] * 4 and completing.late and not completing.dropped
    check_partition(failing)
    assert failing.failed == [0, 1] and failing.here == [0, 1]
    assert [str(failing[i].exception) for i in (0, 1)] == ["x", "y"]


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
