"""Where ours loses over three servers, call by call: ``python -m bench.decisions_servers_loss``.

``python -m bench.decisions_servers_loss PATH [time|energy] [PHASE] [--stripped]`` replays
a saved three-server trace (:mod:`bench.decisions_servers`) with our decider and prints,
per call of ``PHASE`` (default every call), where it went, where the oracle would have
sent it and the excess, then for each server up: the measured outcome, our estimate of
its seconds before the call (and of them the wait behind other clients' calls), its
bandwidth estimate against the link's shaped rate, and the load its PONG reported.
The last line is the excess per phase. ``--stripped`` drops the PONG fields a trace
recorded that older servers did not send (``service_s``, ``clients``): the old model's view.

A wrong estimate shows as a gap between ``act`` and ``est`` of the server not taken
(a stale estimate of it: the bandwidth column tells whether its link is the cause), or
of the one taken (a slow call: noise, or a change only that call could show).
"""

from __future__ import annotations

import json
import sys
from math import log
from pathlib import Path
from typing import Any

from .decisions_servers_replay import NAMES, SERVICES, Ours, Step, charge, outcomes


def load(path: Path, stripped: bool = False) -> list[Step]:
    """The trace's steps; ``stripped``: without the load fields older servers did not send."""
    steps = []
    for raw in json.loads(path.read_text())["steps"]:
        if stripped:
            for s in raw["servers"].values():
                if s is not None:
                    s.pop("service_s", None)
                    s.pop("clients", None)
        steps.append(Step(**raw))
    return steps


def rows(steps: list[Step], time_weight: float) -> list[dict[str, Any]]:
    """One row per call: the route, the oracle's place, the excess, each server's figures."""
    ours, k = Ours(time_weight), 0 if time_weight else 1
    d, out = ours.decider, []
    for step in steps:
        fn = SERVICES[step.service]
        prof, x = d.profile(fn), log(step.size) if step.size > 1 else 0.0
        seen: dict[str, dict[str, float]] = {}
        for name, s in step.servers.items():
            if s is None:
                continue
            c = ours.candidates[name]
            _, _, t_exec, _ = d.servers.parts(prof, x, c, fn.wire_name)
            # What the decision will read (Ours feeds the PONG before deciding, as here).
            c.others, c.workers, c.rate = s["others"], s["workers"], s["rate"]
            c.service_s, c.clients = s.get("service_s", 0.0), s.get("clients")
            seen[name] = {
                "est": d.servers.seconds(prof, x, c, fn.wire_name),
                "wait": c.wait(t_exec),
                "mbit_est": c.link.up_rate * 8e-6,
                "mbit": s["mbit"],
                "others": s["others"],
                "service_s": s.get("service_s", 0.0),
            }
        route = ours(step)
        o = outcomes(step)
        best = min(o, key=lambda place: o[place][k])
        for name, figures in seen.items():
            figures["act"] = o[name][k] if name in o else float("nan")
        out.append(
            {
                "phase": step.phase,
                "service": step.service,
                "size": step.size,
                "route": route,
                "best": best,
                "excess": charge(step, route)[k] - o[best][k],
                "local": o["local"][k],
                "servers": seen,
            }
        )
    return out


def line(i: int, r: dict[str, Any]) -> str:
    head = (
        f"{i:3d} {r['phase'][:12]:12} {r['service']:5} {r['size']:7d} -> "
        f"{'/'.join(r['route']):10} best {r['best']:5} excess {r['excess']:6.3f} | "
        f"here {r['local']:.3f}"
    )
    cells = [
        f"{n}: act {s['act']:.3f} est {s['est']:.3f} (wait {s['wait']:.3f}) "
        f"{s['mbit_est']:.1f}/{s['mbit']:g} Mbit, {s['others']} others, run {s['service_s']:.2f}"
        for n in NAMES
        if (s := r["servers"].get(n)) is not None
    ]
    return " | ".join([head, *cells])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    stripped = "--stripped" in argv
    args = [a for a in argv if a != "--stripped"]
    objective = args[1] if len(args) > 1 else "time"
    phase = args[2] if len(args) > 2 else None
    table = rows(load(Path(args[0]), stripped), 1.0 if objective == "time" else 0.0)
    by_phase: dict[str, float] = {}
    for i, r in enumerate(table):
        by_phase[r["phase"]] = by_phase.get(r["phase"], 0.0) + r["excess"]
        if phase is None or r["phase"] == phase:
            print(line(i, r))
    unit = "s" if objective == "time" else "J"
    print(", ".join(f"{p} {v:.2f} {unit}" for p, v in by_phase.items()))


if __name__ == "__main__":
    main()
