"""Deadline-aware map: a batch split between this device and the edge so it is done in time.

``f.map(items, deadline=2.0)`` (or ``client.map_within(f, items, deadline=2.0)``)
plans the whole batch before running any of it. From the profiler's
estimates for each item (seconds and joules on each side) and two lanes,
this device (items one after another) and the edge (the link and the
server's workers, after the round trip), :func:`offload.profiler.djos.split_batch`
chooses which items run here, which go to the server, and which cannot be
done by the deadline. With ``objective="energy"`` it may also drop items
that would cost much energy, up to a long-run rate of ``max_drop`` that a
virtual queue keeps across batches (the single-user DJOS rule);
``objective="time"`` drops only what there is no time for. ``policy="lfos"``
or ``"efos"`` fill one lane before the other (the slides' baselines).

Items not done in time appear in the results as :class:`Dropped`, or, with
``late="complete"``, are done anyway and listed in :attr:`BatchResult.late`.
A function that raises raises from the call, as ``Executor.map`` would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from ._exceptions import ConfigError
from .profiler.djos import ItemCost, split_batch, update_backlog
from .profiler.sizes import call_size

if TYPE_CHECKING:
    from .api import OffloadedFunction
    from .client import Client

OBJECTIVES = ("energy", "time")
LATE = ("drop", "complete")


@dataclass(frozen=True)
class Dropped:
    """Stands in a deadline map's results for item ``index``, not done; ``reason`` says why."""

    index: int
    reason: str


@dataclass
class BatchResult(Sequence[Any]):
    """The results of a deadline map, in item order, and how the batch went."""

    results: list[Any]
    here: list[int] = field(default_factory=list)  # items run on this device
    there: list[int] = field(default_factory=list)  # items run on the server
    dropped: list[int] = field(default_factory=list)  # items not done (see Dropped)
    late: list[int] = field(default_factory=list)  # items done after the deadline
    deadline_s: float = 0.0
    elapsed_s: float = 0.0
    energy_j: float = 0.0  # the plan's estimate for the items done
    planned: bool = True  # False: nothing was known yet, the split was a guess

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    @property
    def met(self) -> bool:
        """Every item done, by the deadline."""
        return not self.dropped and not self.late and self.elapsed_s <= self.deadline_s


def run_batch(
    client: Client,
    fn: OffloadedFunction[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    deadline: float,
    objective: str = "energy",
    max_drop: float = 0.1,
    policy: str = "djos",
    late: str = "drop",
    weight: float = 1.0,
) -> BatchResult:
    """Plan ``fn(*args)`` for every ``args`` in ``calls`` against ``deadline`` seconds; run it."""
    if deadline <= 0:
        raise ConfigError("deadline must be positive")
    if objective not in OBJECTIVES or late not in LATE or not 0 <= max_drop < 1:
        raise ConfigError(
            f"objective in {OBJECTIVES}, late in {LATE} and 0 <= max_drop < 1, "
            f"not {objective!r}, {late!r}, {max_drop!r}"
        )
    start = time.perf_counter()
    sizes = [call_size(fn, args, {}) for args in calls]
    up = client.server_up()
    here, there, planned_drops, energy, planned = _plan(
        client, fn, sizes, up, deadline, objective, max_drop, policy, weight
    )
    out = BatchResult(
        [None] * len(calls), here=here, there=there, deadline_s=deadline, planned=planned
    )
    futures: dict[int, Future[Any]] = {
        i: client._with_fallback(fn, calls[i], {}, sizes[i]) for i in there
    }
    for i in here:
        if time.perf_counter() - start > deadline and late == "drop":
            _drop(out, i, "the deadline passed before its turn here")
            continue
        out.results[i] = client._run_local(fn, sizes[i], calls[i], {})
        _note_late(out, i, start)
    wait(list(futures.values()), timeout=max(0.0, deadline - (time.perf_counter() - start)))
    for i, future in futures.items():
        if not future.done() and late == "drop":
            _drop(out, i, "not back from the server by the deadline")  # its result is ignored
            continue
        out.results[i] = future.result()  # the function's own exception propagates
        _note_late(out, i, start)
    for i in planned_drops:
        if late == "complete":
            out.results[i] = client._run_local(fn, sizes[i], calls[i], {})
            out.here.append(i)
            _note_late(out, i, start)
        else:
            _drop(out, i, "no time for it by the deadline, or not worth its energy within max_drop")
    prof = _profile(client, fn)
    if prof is not None:
        prof.backlog = update_backlog(prof.backlog, len(out.dropped), len(calls), max_drop)
    out.elapsed_s = time.perf_counter() - start
    out.energy_j = energy
    out.dropped.sort()
    return out


def _plan(
    client: Client,
    fn: OffloadedFunction[..., Any],
    sizes: list[int],
    up: bool,
    deadline: float,
    objective: str,
    max_drop: float,
    policy: str,
    weight: float,
) -> tuple[list[int], list[int], list[int], float, bool]:
    """(here, there, dropped, estimated joules, planned) for the batch."""
    costs_of = getattr(client.decider, "costs", None)
    costs = [costs_of(fn, size) for size in sizes] if up and costs_of is not None else []
    if not costs or any(c is None for c in costs):
        # Not enough known to plan: offload (DCOF's online mode) all but the
        # smallest item, which runs here so that both sides get measured.
        everyone = list(range(len(sizes)))
        if not up:
            return everyone, [], [], 0.0, False
        smallest = min(everyone, key=lambda i: sizes[i])
        return [smallest], [i for i in everyone if i != smallest], [], 0.0, False
    workers = max(1, int(client.server_info.get("workers", 1)))
    items = []
    for t_local, t_exec, t_wire, e_local, e_remote in costs:
        busy_remote = t_wire + t_exec / workers
        if objective == "energy":
            items.append(ItemCost(t_local, busy_remote, e_local, e_remote))
        else:
            items.append(ItemCost(t_local, busy_remote, t_local, busy_remote))
    prof = _profile(client, fn)
    backlog = prof.backlog if prof is not None and objective == "energy" else None
    lane_remote = max(0.0, deadline - client.profiler.link.fixed)
    # Drops by choice in one batch: about the share max_drop allows, plus what is owed.
    skips = int(max_drop * len(items) + (backlog or 0.0))
    here, there, dropped = split_batch(
        items, deadline, lane_remote, policy, backlog, weight, max_skips=skips
    )
    energy = sum(costs[i][3] for i in here) + sum(costs[i][4] for i in there)
    return here, there, dropped, energy, True


def _profile(client: Client, fn: OffloadedFunction[..., Any]) -> Any:
    profile = getattr(client.decider, "profile", None)
    return profile(fn) if profile is not None else None


def _drop(out: BatchResult, i: int, reason: str) -> None:
    out.results[i] = Dropped(i, reason)
    out.dropped.append(i)


def _note_late(out: BatchResult, i: int, start: float) -> None:
    if time.perf_counter() - start > out.deadline_s:
        out.late.append(i)
