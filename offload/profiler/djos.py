"""Deadline-aware batch planning for ``map(deadline=)``: the single-user form of DJOS.

DJOS is from Qin, Xu and Li, "Optimal Joint Offloading and Wireless
Scheduling for Parallel Computing with Deadlines" (slides; University of
Rhode Island). :func:`split_batch` plans one user's batch into a local and a
remote lane, with the slides' baselines LFOS (local first) and EFOS (edge
first); :func:`update_backlog` is DJOS's virtual queue, which keeps the
long-run drop rate under its bound across batches. The multi-user slotted
model, its simulator, JOS and the exact optimum are research code and live
in the benchmarks (``bench/djos_sim.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def update_backlog(backlog: float, dropped: int, arrivals: int, rho: float) -> float:
    """The virtual queue after a frame: ``max(X + D - rho * A, 0)``."""
    return max(backlog + dropped - rho * arrivals, 0.0)


@dataclass(frozen=True)
class ItemCost:
    """Estimated cost of one batch item on each side (``busy_*``: seconds of that lane)."""

    busy_local: float
    busy_remote: float
    cost_local: float  # energy (or time) spent doing it here
    cost_remote: float  # ... or at the edge


def split_batch(
    items: Sequence[ItemCost],
    lane_local: float,
    lane_remote: float,
    policy: str = "djos",
    backlog: float | None = None,
    weight: float = 1.0,
    max_skips: int | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """(here, there, dropped) item indices for one user's batch due in the lanes' time.

    Each side is a lane: items done here run one after another within
    ``lane_local`` seconds; items sent share ``lane_remote`` seconds of the
    link and the server. ``lfos`` fills the local lane first, ``efos`` the
    remote one. ``djos`` is the single-user form of the rule: an item is
    worth ``backlog - weight * cost / typical cost`` on a side; items go to
    the side where they are worth most while it has room, those worth
    nothing anywhere or that fit nowhere are dropped. ``backlog=None`` means
    no item may be dropped by choice (only for want of time); ``max_skips``
    caps the items dropped by choice in this batch (spreading the drops the
    virtual queue allows over batches instead of losing one batch whole).
    """
    here: list[int] = []
    there: list[int] = []
    dropped: list[int] = []
    free = {"here": lane_local, "there": lane_remote}

    def place(i: int, side: str) -> bool:
        busy = items[i].busy_local if side == "here" else items[i].busy_remote
        if busy > free[side]:
            return False
        free[side] -= busy
        (here if side == "here" else there).append(i)
        return True

    if policy in ("lfos", "efos"):
        order = ("here", "there") if policy == "lfos" else ("there", "here")
        for i in range(len(items)):
            if not any(place(i, side) for side in order):
                dropped.append(i)
        return here, there, dropped
    if policy != "djos":
        raise ValueError(f"policy must be 'djos', 'lfos' or 'efos', not {policy!r}")
    typical = sum(min(c.cost_local, c.cost_remote) for c in items) / max(len(items), 1) or 1.0

    def cost(i: int, side: str) -> float:
        return items[i].cost_local if side == "here" else items[i].cost_remote

    skipped = 0

    def worth(i: int, side: str) -> bool:
        if backlog is None or (max_skips is not None and skipped >= max_skips):
            return True
        return backlog - weight * cost(i, side) / typical > 0

    # The items whose sides differ most choose first: they have the most to lose.
    for i in sorted(
        range(len(items)), key=lambda i: -abs(items[i].cost_local - items[i].cost_remote)
    ):
        sides = sorted(("here", "there"), key=lambda side: cost(i, side))
        wanted = [side for side in sides if worth(i, side)]
        if not any(place(i, side) for side in wanted):
            dropped.append(i)
            if len(wanted) < 2 and any(
                (items[i].busy_local if s == "here" else items[i].busy_remote) <= free[s]
                for s in sides
                if s not in wanted
            ):
                skipped += 1  # it would have fitted: dropped by choice
    return sorted(here), sorted(there), sorted(dropped)
