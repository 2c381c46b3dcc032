"""Policies' ratios to the oracle over replays of a trace shuffled within each phase.

``bench decisions`` (one server) and ``bench decisions_servers`` (three) both
report them: the calls and their measured outcomes stay the same, only their
order within a phase changes, so the figures do not hang on one ordering.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

S = TypeVar("S")


def reshuffled(
    steps: Sequence[S],
    phase_of: Callable[[S], str],
    phases: Sequence[str],
    replay: Callable[[list[S], int], dict[str, dict[str, float]]],
    fixed: Sequence[str],
    runs: int,
    seed: int,
    each: Callable[[Iterable[int]], Iterable[int]] = iter,
) -> dict[str, dict[str, Any]]:
    """Each policy's mean and worst ratios over ``runs`` orders (``replay(order, run)``), and
    on how many of them ``ours``/``ours_energy`` beat every ``fixed`` policy by its objective.
    Results named ``oracle`` or starting with ``_`` are not policies."""
    rng = random.Random(seed)
    ratios: dict[str, dict[str, list[float]]] = {}
    beats = {"ours": 0, "ours_energy": 0}
    for run in each(range(runs)):
        order: list[S] = []
        for phase in phases:
            batch = [s for s in steps if phase_of(s) == phase]
            rng.shuffle(batch)
            order += batch
        results = replay(order, run)
        for name, r in results.items():
            if name.startswith("_") or name == "oracle":
                continue
            for key in ("time_ratio_to_oracle", "energy_ratio_to_oracle"):
                ratios.setdefault(name, {}).setdefault(key, []).append(r[key])
        for name, key in (
            ("ours", "time_ratio_to_oracle"),
            ("ours_energy", "energy_ratio_to_oracle"),
        ):
            beats[name] += all(results[name][key] < results[f][key] for f in fixed)
    return {
        name: {
            f"{key}_{stat}": fn(values)
            for key, values in by_key.items()
            for stat, fn in (("mean", statistics.mean), ("max", max))
        }
        | ({"orders_better_than_every_fixed_policy": beats[name]} if name in beats else {})
        for name, by_key in ratios.items()
    }
