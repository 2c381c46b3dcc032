"""Where ours loses against the oracle on a saved trace: ``python -m bench.decision_loss PATH``.

Replays the trace with our decider (time and energy objectives) and splits
the excess over the oracle by phase, by service, by the decision's reason
(cheaper by estimate, kept by hysteresis, cold start, exploration), and by
position: the first calls of each phase, and each function's first calls.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from math import log
from pathlib import Path
from typing import Any

from . import trace
from .decisions import Replay, device_state, outcomes

SHORT = {0: "offline", 1: "cold", 2: "cheaper", 3: "kept", 4: "explore"}


def losses(steps: list[trace.Step], time_weight: float) -> list[dict[str, Any]]:
    """One row per call: the side ours chose, why, and its excess over the oracle."""
    replay = Replay(time_weight)
    d = replay.decider
    rows = []
    seen_fn: dict[str, int] = defaultdict(int)
    in_phase: dict[str, int] = defaultdict(int)
    k = 0 if time_weight else 2  # time or energy
    for step in steps:
        fn = trace.SERVICES[step.service]
        d.profiler.device.state = device_state(step)
        d.profiler.link.on_rtt(step.rtt_s)
        _, reason, est = d._evaluate(d.profile(fn), step.size, step.server_up, energy=True)
        side = replay_step(replay, step)
        o = outcomes(step)
        mine, other = (o[k], o[k + 1]) if side == "local" else (o[k + 1], o[k])
        guess = (est[0], est[2]) if k == 0 else (est[4], est[5])  # local, remote
        rows.append(
            {
                "phase": step.phase,
                "service": step.service,
                "reason": SHORT[reason],
                "side": side,
                "excess": max(mine - other, 0.0),
                "best": min(mine, other),
                "nth_in_phase": in_phase[step.phase],
                "nth_of_fn": seen_fn[step.service],
                "miss": which_estimate(side, guess, (o[k], o[k + 1])),
            }
        )
        in_phase[step.phase] += 1
        seen_fn[step.service] += 1
    return rows


def which_estimate(
    side: str, guess: tuple[float | None, float | None], actual: tuple[float, float]
) -> str:
    """Which estimate a wrong choice hangs on: the side taken came out worse than
    estimated (a slow call: noise, or a change only that call could show), or the side
    not taken would have been better than estimated (a stale estimate of it)."""
    if guess[0] is None or guess[1] is None:
        return "no estimate"
    taken, other = (0, 1) if side == "local" else (1, 0)
    worse = log(max(actual[taken], 1e-6) / max(guess[taken], 1e-6))
    better = log(max(guess[other], 1e-6) / max(actual[other], 1e-6))
    name = "remote" if other else "local"
    return "taken came out worse" if worse > better else f"{name} (not taken) was better"


def replay_step(replay: Replay, step: trace.Step) -> str:
    """The replay's own step, minus the RTT sample already taken."""
    d, fn = replay.decider, trace.SERVICES[step.service]
    side = d.choose(d.profile(fn), step.size, step.server_up)
    if side == "local":
        d.observe_local(fn, step.size, step.local_s)
    else:
        d.observe_remote(fn, step.size, step.remote_s, step.server_s, step.up, step.down)
    return side


def table(rows: list[dict[str, Any]], key: Any, title: str) -> list[str]:
    oracle = sum(r["best"] for r in rows)
    out = [f"{title}: share of the oracle's total lost (calls, wrong calls)"]
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    for name, group in sorted(groups.items(), key=lambda g: -sum(r["excess"] for r in g[1])):
        lost = sum(r["excess"] for r in group)
        wrong = sum(r["excess"] > 0 for r in group)
        out.append(f"  {name!s:24} {lost / oracle:7.3f}  ({len(group)}, {wrong})")
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    _, steps = trace.load(Path(argv[0]))
    for weight, label in ((1.0, "time"), (0.0, "energy")):
        rows = losses(steps, weight)
        oracle = sum(r["best"] for r in rows)
        lost = sum(r["excess"] for r in rows)
        print(f"== ours ({label}): {1 + lost / oracle:.3f} of the oracle")
        for key, title in (
            (lambda r: r["phase"], "by phase"),
            (lambda r: r["service"], "by service"),
            (lambda r: r["reason"], "by reason"),
            (lambda r: "first 6 of phase" if r["nth_in_phase"] < 6 else "later", "by position"),
            (lambda r: "first 10 of fn" if r["nth_of_fn"] < 10 else "later", "new function"),
            (lambda r: r["miss"] if r["excess"] > 0 else "right", "by estimate missed"),
        ):
            print("\n".join(table(rows, key, title)))


if __name__ == "__main__":
    main()
