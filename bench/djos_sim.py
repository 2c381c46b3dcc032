"""DJOS's slotted multi-user model, its baselines and an exact optimum: the bench's simulator.

Qin, Xu and Li, "Optimal Joint Offloading and Wireless Scheduling for Parallel
Computing with Deadlines" (slides; University of Rhode Island). Their slotted model:
time runs in frames of ``T`` slots. At the start of frame ``k`` user ``n``
receives ``A_n`` packets that must be done by the end of the frame (the
deadline), else they are dropped (``D_n``). In each slot a user can process
``mu_n`` packets locally, at energy ``e_L`` per busy slot, and, if it is the
one user scheduled on the wireless link that slot, transmit ``C_n`` packets
to the edge (0 while its channel is OFF; the channel holds for a frame), at
energy ``e_E`` per transmitting slot. A virtual queue ``X_n`` keeps the drop
rate under ``rho_n``: ``X_n <- max(X_n + D_n - rho_n A_n, 0)`` each frame
(:func:`offload.profiler.djos.update_backlog`, which the runtime's deadline
batches use too).

Policies, each giving a :class:`Plan` per frame:

* :func:`lfos` and :func:`efos`, the slides' baselines, slot by slot: local
  first (the rest transmitted) or edge first (the rest local); the link goes
  to the lowest-numbered user with packets left and its channel ON.
* :func:`djos`: the decoupled rule. For each user, the drift-plus-penalty
  weight of a split (packets done weighted by ``X_n``, minus ``M`` times the
  energy) is maximised for each number ``y`` of transmission slots; slots go
  one at a time to the user whose weight gains most (``O(N T)``: the gains
  fall as ``y`` grows, so the greedy choice is the best one). With ``T = 1``
  it is the one-slot rule of slides 17-18: the link goes to the user of
  largest weight gap.
* :func:`jos`: the coupled maximisation, by exhaustive search over every way
  of sharing the ``T`` slots (small ``N`` and ``T`` only).
* :func:`optimum`: the least energy that finishes every packet, by
  exhaustive search (small deterministic cases; ``None`` if impossible).

:func:`simulate` runs a policy over random traffic. The runtime keeps only the
single-user form that ``map(deadline=)`` plans with (:mod:`offload.profiler.djos`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from offload.profiler.djos import update_backlog


@dataclass(frozen=True)
class System:
    """The parameters of the slotted model (per user where a sequence)."""

    slots: int  # T: slots per frame, the deadline
    mu: Sequence[int]  # packets a user processes locally per slot
    e_local: float = 7.0  # energy per slot of local processing
    e_edge: float = 4.0  # energy per slot of transmission
    rho: Sequence[float] = ()  # drop-rate bounds (empty: no virtual queues)
    weight: float = 1.0  # M: the energy weight of the drift-plus-penalty rule

    @property
    def users(self) -> int:
        return len(self.mu)


@dataclass
class Plan:
    """What each user does in one frame."""

    local: list[int]  # packets processed here
    edge: list[int]  # packets transmitted
    energy: list[float]  # energy spent
    dropped: list[int] = field(default_factory=list)


def _split_energy(system: System, n: int, local: int, edge: int, capacity: int) -> float:
    """Energy of processing ``local`` and transmitting ``edge`` packets for user ``n``."""
    slots_local = math.ceil(local / system.mu[n]) if local else 0
    slots_edge = math.ceil(edge / capacity) if edge else 0
    return system.e_local * slots_local + system.e_edge * slots_edge


def best_split(
    system: System, n: int, arrivals: int, capacity: int, tx_slots: int, backlog: float
) -> tuple[float, int, int]:
    """(weight, local, edge) maximising ``X * done - M * energy`` with ``tx_slots`` slots."""
    most_local = min(arrivals, system.slots * system.mu[n])
    most_edge = min(arrivals, capacity * tx_slots)
    best = (0.0, 0, 0)  # doing nothing is always allowed (everything dropped)
    for edge in range(most_edge + 1):
        for local in (min(most_local, arrivals - edge), *range(0, most_local + 1, system.mu[n])):
            local = min(local, arrivals - edge)
            done = local + edge
            value = backlog * done - system.weight * _split_energy(system, n, local, edge, capacity)
            if value > best[0] + 1e-12:
                best = (value, local, edge)
    return best


def djos(
    system: System, arrivals: Sequence[int], capacity: Sequence[int], backlog: Sequence[float]
) -> Plan:
    """One frame of DJOS: greedy sharing of the ``T`` slots by weight gain, then each split."""
    users = system.users
    slots = [0] * users
    value = [best_split(system, n, arrivals[n], capacity[n], 0, backlog[n]) for n in range(users)]
    for _ in range(system.slots):
        gains = []
        for n in range(users):
            if capacity[n] == 0 or capacity[n] * slots[n] >= arrivals[n]:
                gains.append((-1.0, n))
                continue
            more = best_split(system, n, arrivals[n], capacity[n], slots[n] + 1, backlog[n])
            gains.append((more[0] - value[n][0], n))
        gain, n = max(gains, key=lambda g: (g[0], -g[1]))  # ties: the lower-numbered user
        if gain <= 0:
            break
        slots[n] += 1
        value[n] = best_split(system, n, arrivals[n], capacity[n], slots[n], backlog[n])
    return _plan(system, arrivals, capacity, [(v[1], v[2]) for v in value])


def jos(
    system: System, arrivals: Sequence[int], capacity: Sequence[int], backlog: Sequence[float]
) -> Plan:
    """One frame of JOS: every sharing of the ``T`` slots tried, the best total weight kept."""
    best: tuple[float, list[tuple[int, int]]] | None = None
    for shares in _shares(system.slots, system.users):
        splits = [
            best_split(system, n, arrivals[n], capacity[n], shares[n], backlog[n])
            for n in range(system.users)
        ]
        total = sum(s[0] for s in splits)
        if best is None or total > best[0] + 1e-12:
            best = (total, [(s[1], s[2]) for s in splits])
    assert best is not None
    return _plan(system, arrivals, capacity, best[1])


def optimum(system: System, arrivals: Sequence[int], capacity: Sequence[int]) -> Plan | None:
    """The least-energy frame that drops nothing, or ``None`` if no schedule can."""
    best: tuple[float, list[tuple[int, int]]] | None = None
    for shares in _shares(system.slots, system.users):
        splits = []
        for n in range(system.users):
            options = [
                (_split_energy(system, n, arrivals[n] - edge, edge, capacity[n]), edge)
                for edge in range(min(arrivals[n], capacity[n] * shares[n]) + 1)
                if arrivals[n] - edge <= system.slots * system.mu[n]
            ]
            if not options:
                break
            energy, edge = min(options)
            splits.append((energy, arrivals[n] - edge, edge))
        else:
            total = sum(s[0] for s in splits)
            if best is None or total < best[0] - 1e-12:
                best = (total, [(s[1], s[2]) for s in splits])
    return None if best is None else _plan(system, arrivals, capacity, best[1])


def lfos(system: System, arrivals: Sequence[int], capacity: Sequence[int]) -> Plan:
    """Local first: each slot every user computes; the scheduled one transmits what is left."""
    return _slot_by_slot(system, arrivals, capacity, local_first=True)


def efos(system: System, arrivals: Sequence[int], capacity: Sequence[int]) -> Plan:
    """Edge first: each slot the scheduled user transmits; everyone computes what is left."""
    return _slot_by_slot(system, arrivals, capacity, local_first=False)


def _slot_by_slot(
    system: System, arrivals: Sequence[int], capacity: Sequence[int], *, local_first: bool
) -> Plan:
    users = system.users
    left = list(arrivals)
    local, edge, energy = [0] * users, [0] * users, [0.0] * users

    def compute(n: int) -> None:
        done = min(left[n], system.mu[n])
        if done:
            left[n] -= done
            local[n] += done
            energy[n] += system.e_local

    def transmit(n: int) -> None:
        sent = min(left[n], capacity[n])
        if sent:
            left[n] -= sent
            edge[n] += sent
            energy[n] += system.e_edge

    for _ in range(system.slots):
        scheduled = next((n for n in range(users) if left[n] and capacity[n]), None)
        for n in range(users):
            if local_first:
                compute(n)
                if n == scheduled:
                    transmit(n)
            else:
                if n == scheduled:
                    transmit(n)
                compute(n)
    return Plan(local, edge, energy, left)


def _plan(
    system: System,
    arrivals: Sequence[int],
    capacity: Sequence[int],
    splits: Sequence[tuple[int, int]],
) -> Plan:
    local = [s[0] for s in splits]
    edge = [s[1] for s in splits]
    energy = [_split_energy(system, n, local[n], edge[n], capacity[n]) for n in range(system.users)]
    dropped = [arrivals[n] - local[n] - edge[n] for n in range(system.users)]
    return Plan(local, edge, energy, dropped)


def _shares(slots: int, users: int) -> list[tuple[int, ...]]:
    """Every way to give at most ``slots`` transmission slots to ``users`` users."""
    return [
        share for share in itertools.product(range(slots + 1), repeat=users) if sum(share) <= slots
    ]


@dataclass
class Run:
    """The outcome of :func:`simulate`: per-user averages over the run."""

    energy_per_slot: list[float]  # mean energy per slot, per user
    drop_rate: list[float]  # packets dropped over packets arrived, per user
    backlog: list[float]  # mean virtual queue, per user


def simulate(
    system: System,
    policy: str,
    frames: int,
    arrival: tuple[int, float],
    channel: tuple[int, float],
    rng: random.Random,
) -> Run:
    """Run ``policy`` (lfos, efos, djos or jos) for ``frames`` frames of random traffic.

    ``arrival = (packets, probability)``: each user receives that many
    packets at a frame's start with that probability, else none.
    ``channel = (capacity, probability)``: each user's channel is ON (that
    capacity per slot) for the frame with that probability, else OFF.
    """
    users = system.users
    rho = list(system.rho) or [0.0] * users
    backlog = [0.0] * users
    energy = [0.0] * users
    dropped = [0] * users
    arrived = [0] * users
    backlog_sum = [0.0] * users
    for _ in range(frames):
        arrivals = [arrival[0] if rng.random() < arrival[1] else 0 for _ in range(users)]
        capacity = [channel[0] if rng.random() < channel[1] else 0 for _ in range(users)]
        if policy == "lfos":
            plan = lfos(system, arrivals, capacity)
        elif policy == "efos":
            plan = efos(system, arrivals, capacity)
        elif policy in ("djos", "jos"):
            plan = (djos if policy == "djos" else jos)(system, arrivals, capacity, backlog)
        else:
            raise ValueError(f"unknown policy {policy!r}")
        for n in range(users):
            energy[n] += plan.energy[n]
            dropped[n] += plan.dropped[n]
            arrived[n] += arrivals[n]
            backlog[n] = update_backlog(backlog[n], plan.dropped[n], arrivals[n], rho[n])
            backlog_sum[n] += backlog[n]
    return Run(
        energy_per_slot=[e / (frames * system.slots) for e in energy],
        drop_rate=[d / a if a else 0.0 for d, a in zip(dropped, arrived)],
        backlog=[b / frames for b in backlog_sum],
    )
