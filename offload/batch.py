"""Deadline-aware map: a batch split between this device and the edge so it is done in time.

``f.map(items, deadline=2.0)`` (or ``client.map_within(f, items, deadline=2.0)``)
plans the whole batch before running any of it (:class:`BatchPlanner`, through
the client's router). From the profiler's
estimates for each item (seconds and joules on each side) and two lanes,
this device (items one after another) and the edge (the link and the
server's workers, after the round trip), :func:`offload.profiler.djos.split_batch`
chooses which items run here, which go to the server, and which cannot be
done by the deadline. With ``objective="energy"`` it may also drop items
that would cost much energy, up to a long-run rate of ``max_drop`` that a
virtual queue keeps across batches (the single-user DJOS rule);
``objective="time"`` drops only what there is no time for. ``policy="lfos"``
or ``"efos"`` fill one lane before the other (the slides' baselines).

Every item is in exactly one of :attr:`BatchResult.here` and
:attr:`~BatchResult.there` (done by the deadline on that side),
:attr:`~BatchResult.late` (done after it: only with ``late="complete"``) and
:attr:`~BatchResult.dropped` (not done: its result is a :class:`Dropped`;
with ``late="drop"``, the default, that includes an item that finished after
the deadline). Each item carries its own outcome: an item whose function
raised holds :class:`Failed` (its index and the exception) in its result slot
and is listed in :attr:`~BatchResult.failed` as well as where it ran, and the
rest of the batch is unaffected; nothing is raised from the map itself but
errors in its arguments (:class:`~offload.ConfigError`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, overload

from ._exceptions import ConfigError
from .api import OffloadedFunction
from .profiler import REMOTE, Decider, Link
from .profiler.choice import ServerChoice
from .profiler.djos import ItemCost, split_batch, update_backlog
from .profiler.sizes import call_size
from .routing import Router
from .servers import Servers
from .spread import spread

OBJECTIVES = ("energy", "time")
LATE = ("drop", "complete")


@dataclass(frozen=True)
class Dropped:
    """Stands in a deadline map's results for item ``index``, not done; ``reason`` says why."""

    index: int
    reason: str


@dataclass(frozen=True)
class Failed:
    """Stands in a deadline map's results for item ``index``, whose function raised ``exception``.

    ``raise failed.exception`` re-raises it (with its traceback, and for a
    server's exception the server's traceback as ``__cause__``).
    """

    index: int
    exception: BaseException


@dataclass
class BatchResult(Sequence[Any]):
    """The results of a deadline map, in item order, and how the batch went.

    ``here``, ``there``, ``late`` and ``dropped`` are disjoint and together are
    every item; ``failed`` are those of the done ones whose result is a :class:`Failed`.
    """

    results: list[Any]
    here: list[int] = field(default_factory=list)  # done on this device, by the deadline
    there: list[int] = field(default_factory=list)  # done on the server, by the deadline
    dropped: list[int] = field(default_factory=list)  # not done: a Dropped in results
    late: list[int] = field(default_factory=list)  # done after the deadline (late="complete")
    failed: list[int] = field(default_factory=list)  # done, but the function raised: a Failed
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
        """Every item done, by the deadline (a failed item counts as done)."""
        return not self.dropped and not self.late and self.elapsed_s <= self.deadline_s


class BatchPlanner:
    """Plans and runs deadline batches through a router; keeps each function's drop backlog.

    The backlog is DJOS's virtual queue: how many drops by choice a function
    owes or has saved against its ``max_drop`` rate, carried from batch to batch.
    """

    def __init__(self, router: Router, decider: Decider, servers: Servers, link: Link) -> None:
        self._router, self._decider, self._servers, self._link = router, decider, servers, link
        self._backlogs: dict[str, float] = {}

    def backlog(self, fn: OffloadedFunction[..., Any]) -> float:
        """The drops ``fn``'s batches owe (positive) against their ``max_drop`` rate."""
        return self._backlogs.get(fn.key, 0.0)

    def run(
        self,
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
        """Plan ``fn(*args)`` for every ``args`` in ``calls`` against ``deadline`` s; run it."""
        if deadline <= 0:
            raise ConfigError("deadline must be positive")
        if objective not in OBJECTIVES or late not in LATE or not 0 <= max_drop < 1:
            raise ConfigError(
                f"objective in {OBJECTIVES}, late in {LATE} and 0 <= max_drop < 1, "
                f"not {objective!r}, {late!r}, {max_drop!r}"
            )
        router = self._router
        start = time.perf_counter()
        sizes = [call_size(fn, args, {}) for args in calls]
        up = self._servers.up()
        backlog = self.backlog(fn) if objective == "energy" else None
        here, there, planned_drops, energy, planned = self._plan(
            fn, sizes, up, deadline, objective, max_drop, policy, weight, backlog
        )
        out = BatchResult([None] * len(calls), deadline_s=deadline, planned=planned)
        outcomes: dict[int, tuple[str, float, Any]] = {}  # index: (side, done at, value)
        dropped: dict[int, str] = {}  # index: why

        def run_here(i: int) -> None:
            try:
                value = router.run_here(fn, sizes[i], calls[i], {})
            except Exception as exc:  # this item's failure, not the batch's
                value = Failed(i, exc)
            outcomes[i] = ("here", time.perf_counter(), value)

        where = self._spread(fn, there, sizes)
        futures: dict[int, Future[Any]] = {
            i: router.start_there(
                fn, calls[i], {}, sizes[i], fallback=True, where=where.get(i, REMOTE)
            )
            for i in there
        }
        finished: dict[int, float] = {}

        def note_done(i: int, _: Future[Any]) -> None:
            finished.setdefault(i, time.perf_counter())

        for i, future in futures.items():
            future.add_done_callback(functools.partial(note_done, i))
        for i in here:
            if time.perf_counter() - start > deadline and late == "drop":
                dropped[i] = "the deadline passed before its turn here"
            else:
                run_here(i)
        wait(list(futures.values()), timeout=max(0.0, deadline - (time.perf_counter() - start)))
        waited = time.perf_counter()
        for i, future in futures.items():
            if not future.done() and late == "drop":
                future.cancel()  # withdrawn if it still waits; a result that comes is ignored
                dropped[i] = "not back from the server by the deadline"
                continue
            try:
                value = future.result()
            except Exception as exc:
                value = Failed(i, exc)
            outcomes[i] = ("there", finished.get(i, waited), value)
        for i in planned_drops:
            if late == "complete":
                run_here(i)
            else:
                dropped[i] = "no time for it by the deadline, or not worth its energy"
        for i, (side, done_at, value) in sorted(outcomes.items()):
            if done_at - start <= deadline:
                (out.here if side == "here" else out.there).append(i)
            elif late == "complete":
                out.late.append(i)
            else:
                dropped[i] = "done after the deadline"
                continue
            out.results[i] = value
            if isinstance(value, Failed):
                out.failed.append(i)
        for i, reason in sorted(dropped.items()):
            out.results[i] = Dropped(i, reason)
            out.dropped.append(i)
        self._backlogs[fn.key] = update_backlog(
            self.backlog(fn), len(out.dropped), len(calls), max_drop
        )
        out.elapsed_s = time.perf_counter() - start
        out.energy_j = energy
        return out

    def _spread(
        self, fn: OffloadedFunction[..., Any], there: list[int], sizes: list[int]
    ) -> dict[int, str]:
        """With several usable servers, the server each edge item goes to (:mod:`.spread`)."""
        choice = getattr(self._decider, "servers", None)
        if not there or not self._servers.fleet or not isinstance(choice, ServerChoice):
            return {}
        candidates = self._servers.candidates()
        items = [(i, sizes[i]) for i in there]
        return spread(choice, self._decider.profile(fn), fn.wire_name, items, candidates)

    def _plan(
        self,
        fn: OffloadedFunction[..., Any],
        sizes: list[int],
        up: bool,
        deadline: float,
        objective: str,
        max_drop: float,
        policy: str,
        weight: float,
        backlog: float | None,
    ) -> tuple[list[int], list[int], list[int], float, bool]:
        """(here, there, dropped, estimated joules, planned) for the batch."""
        costs = [self._decider.costs(fn, size) for size in sizes] if up else []
        if not costs or any(c is None for c in costs):
            # Not enough known to plan: offload (DCOF's online mode) all but the
            # smallest item, which runs here so that both sides get measured.
            everyone = list(range(len(sizes)))
            if not up:
                return everyone, [], [], 0.0, False
            smallest = min(everyone, key=lambda i: sizes[i])
            return [smallest], [i for i in everyone if i != smallest], [], 0.0, False
        if self._servers.fleet:  # the edge lane: every usable server's workers
            workers = max(1, sum(c.workers for c in self._servers.candidates()))
        else:
            workers = max(1, int(self._servers.info.get("workers", 1)))
        items = []
        known = [c for c in costs if c is not None]
        for t_local, t_exec, t_wire, e_local, e_remote in known:
            busy_remote = t_wire + t_exec / workers
            if objective == "energy":
                items.append(ItemCost(t_local, busy_remote, e_local, e_remote))
            else:
                items.append(ItemCost(t_local, busy_remote, t_local, busy_remote))
        lane_remote = max(0.0, deadline - self._link.fixed)
        # Drops by choice in one batch: about the share max_drop allows, plus what is owed.
        skips = int(max_drop * len(items) + (backlog or 0.0))
        here, there, dropped = split_batch(
            items, deadline, lane_remote, policy, backlog, weight, max_skips=skips
        )
        energy = sum(known[i][3] for i in here) + sum(known[i][4] for i in there)
        return here, there, dropped, energy, True
