"""How much of the oracle's lead no decider could take: the noise of single calls.

The oracle picks the better side of every call, so it profits from each
call's hiccups (a call slowed by another process, a late packet) that no
estimate made before the call can see. :func:`noise_floor` scores a
clairvoyant that knows the mean outcome of both sides of each (phase,
service, intensity) in the trace, but not any single call's: what a
perfect learner could reach at best. A target below it is a target on the
trace's noise, not on the decider.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any


def noise_floor(
    steps: Sequence[Any], outcomes: Callable[[Any], tuple[float, float, float, float]]
) -> dict[str, float]:
    """Ratios to the oracle of the clairvoyant that knows each group's means, by time and energy."""
    groups: dict[tuple[str, str, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    for step in steps:
        groups[(step.phase, step.service, step.intensity)].append(outcomes(step))
    every = [o for outs in groups.values() for o in outs]
    # One call per group (the quick trace) leaves nothing to average: a floor of 1.
    floor = {"calls_per_group": len(every) / max(len(groups), 1)}
    for k, name in ((0, "time_ratio_to_oracle"), (2, "energy_ratio_to_oracle")):
        oracle = sum(min(o[k], o[k + 1]) for o in every)
        best = sum(
            min(sum(o[k] for o in outs), sum(o[k + 1] for o in outs)) for outs in groups.values()
        )
        floor[name] = best / oracle if oracle > 0 else 1.0
    return floor
