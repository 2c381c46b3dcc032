"""DJOS reproduced: the slides' motivating example, their simulation, and a live check.

1. The motivating example (slides 6-13): T = 6 slots, 2 users with 6 packets
   each, 1 packet per slot locally at 7 W, 2 per slot transmitted at 4 W,
   one transmitter per slot. The slides give the average energy per user
   per slot: LFOS 4.5, EFOS 4.25, the better schedule 2 (55.6% below LFOS).
2. The simulation of slide 20: N = 5, rho = 0.1, e_L = 7, e_E = 4, mu = 1,
   i.i.d. ON-OFF channels; a one-slot deadline (rate 5, arrivals of 5 packets
   with probability lambda/5) and a three-slot deadline (rate 4, arrivals of
   7 with probability lambda/7). The slides do not give the channel's ON
   probability nor the lambda axis: ``P_ON`` and ``LAMBDAS`` below are ours.
   Series: each user's drop rate against its bound, energy of DJOS, LFOS and
   EFOS across lambda, and the effect of M.
3. ``--live``: batches with deadlines from a client on the emulated slow
   device and link (:mod:`bench.trace`) to a real edge server, through
   ``f.map(..., deadline=...)`` with each policy (:mod:`bench.djos_live`).

``python -m bench djos [--quick] [--live]`` writes ``bench/results/djos.json``,
``djos.md`` and ``djos_T1.png`` / ``djos_T3.png``. Every random run records its seed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from . import djos_sim as sim
from .progress import steps

RESULTS = Path(__file__).parent / "results"
SLIDES = {"LFOS": 4.5, "EFOS": 4.25, "DJOS": 2.0}
P_ON = 0.95
LAMBDAS = {1: [0.02, 0.04, 0.06, 0.08, 0.1], 3: [0.2, 0.4, 0.6, 0.8, 1.0]}
M_DEFAULT = 1.0
SETUPS = {1: {"arrival": 5, "rate": 5}, 3: {"arrival": 7, "rate": 4}}
WEIGHTS = [1.0, 5.0, 10.0, 50.0, 100.0]  # M
POLICIES = ("lfos", "efos", "djos")


def motivating_example() -> dict[str, float]:
    """Average energy per user per slot of each policy on slides 6-13's frame."""
    system = sim.System(slots=6, mu=(1, 1), e_local=7.0, e_edge=4.0, weight=1.0)
    arrivals, capacity = [6, 6], [2, 2]
    backlog = [100.0, 100.0]  # users that may not drop: completion outweighs energy
    plans = {
        "LFOS": sim.lfos(system, arrivals, capacity),
        "EFOS": sim.efos(system, arrivals, capacity),
        "DJOS": sim.djos(system, arrivals, capacity, backlog),
        "JOS": sim.jos(system, arrivals, capacity, backlog),
        "optimum": sim.optimum(system, arrivals, capacity),
    }
    out = {}
    for name, plan in plans.items():
        assert plan is not None and not any(plan.dropped), name
        out[name] = sum(plan.energy) / (system.users * system.slots)
    out["DJOS_saving_vs_LFOS"] = 1 - out["DJOS"] / out["LFOS"]
    return out


def series(slots: int, frames: int, seed: int) -> dict[str, Any]:
    """Energy and drop rates across lambda for each policy, and DJOS across M."""
    setup = SETUPS[slots]
    system = sim.System(slots=slots, mu=(1,) * 5, rho=(0.1,) * 5, weight=M_DEFAULT)
    rows = []
    for i, lam in enumerate(steps(LAMBDAS[slots], f"T={slots} lambdas", unit="lambda")):
        row: dict[str, Any] = {"lambda": lam, "seed": seed + i}
        for policy in POLICIES:
            run = sim.simulate(
                system,
                policy,
                frames,
                (setup["arrival"], lam / setup["arrival"]),
                (setup["rate"], P_ON),
                random.Random(seed + i),  # the same traffic for every policy
            )
            row[policy] = {
                "energy_per_user": sum(run.energy_per_slot) / system.users,
                "drop_rate": run.drop_rate,
            }
        row["djos_saving_vs_lfos"] = 1 - (
            row["djos"]["energy_per_user"] / row["lfos"]["energy_per_user"]
            if row["lfos"]["energy_per_user"]
            else 0.0
        )
        rows.append(row)
    lam = LAMBDAS[slots][len(LAMBDAS[slots]) // 2]
    by_weight = []
    for j, weight in enumerate(WEIGHTS):
        system_m = sim.System(slots=slots, mu=(1,) * 5, rho=(0.1,) * 5, weight=weight)
        run = sim.simulate(
            system_m,
            "djos",
            frames,
            (setup["arrival"], lam / setup["arrival"]),
            (setup["rate"], P_ON),
            random.Random(seed + 100 + j),
        )
        by_weight.append(
            {
                "M": weight,
                "seed": seed + 100 + j,
                "energy_per_user": sum(run.energy_per_slot) / system.users,
                "max_drop_rate": max(run.drop_rate),
                "mean_virtual_queue": sum(run.backlog) / system.users,
            }
        )
    return {
        "slots": slots,
        "arrival_packets": setup["arrival"],
        "rate": setup["rate"],
        "p_on": P_ON,
        "rho": 0.1,
        "M": system.weight,
        "frames": frames,
        "by_lambda": rows,
        "by_M": {"lambda": lam, "runs": by_weight},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Three panels like the slides' figures: drop rates, energy across lambda, effect of M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["by_lambda"]
    lams = [r["lambda"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for user in range(5):
        axes[0].plot(
            lams, [r["djos"]["drop_rate"][user] for r in rows], "o-", label=f"user {user + 1}"
        )
    axes[0].axhline(result["rho"], color="k", linestyle="--", label="bound rho")
    axes[0].set(xlabel="lambda", ylabel="drop rate (DJOS)", title="(a) drop rate per user")
    axes[0].legend(fontsize=7)
    for policy in POLICIES:
        axes[1].plot(lams, [r[policy]["energy_per_user"] for r in rows], "o-", label=policy.upper())
    axes[1].set(xlabel="lambda", ylabel="energy per user per slot", title="(b) energy")
    axes[1].legend()
    runs = result["by_M"]["runs"]
    weights = [r["M"] for r in runs]
    axes[2].plot(weights, [r["energy_per_user"] for r in runs], "o-", label="energy")
    twin = axes[2].twinx()
    twin.plot(weights, [r["max_drop_rate"] for r in runs], "s--", color="C1", label="max drop")
    axes[2].set(
        xscale="log", xlabel="M", ylabel="energy per user per slot", title="(c) effect of M"
    )
    twin.set_ylabel("max drop rate")
    fig.suptitle(f"DJOS, {result['slots']}-slot deadline (p_on {result['p_on']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    ex = report["motivating_example"]
    lines = [
        "# DJOS",
        "",
        "Motivating example (average energy per user per slot):",
        "",
        "| policy | slides | ours |",
        "|---|---|---|",
        *(f"| {k} | {SLIDES[k]} | {ex[k]:.3f} |" for k in SLIDES),
        f"| JOS (exhaustive) | - | {ex['JOS']:.3f} |",
        f"| optimum | - | {ex['optimum']:.3f} |",
        "",
        f"DJOS saves {ex['DJOS_saving_vs_LFOS']:.1%} against LFOS (slides: 55.6%).",
    ]
    for key in ("one_slot", "three_slot"):
        result = report[key]
        lines += [
            "",
            f"Simulation, {result['slots']}-slot deadline, {result['frames']} frames, "
            f"p_on {result['p_on']}, M {result['M']}:",
            "",
            "| lambda | LFOS energy | EFOS energy | DJOS energy | DJOS saving | "
            "LFOS max drop | DJOS max drop | seed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["by_lambda"]:
            lines.append(
                f"| {r['lambda']} | {r['lfos']['energy_per_user']:.3f} | "
                f"{r['efos']['energy_per_user']:.3f} | {r['djos']['energy_per_user']:.3f} | "
                f"{r['djos_saving_vs_lfos']:.1%} | {max(r['lfos']['drop_rate']):.3f} | "
                f"{max(r['djos']['drop_rate']):.3f} | {r['seed']} |"
            )
        lines += [
            "",
            f"Effect of M at lambda {result['by_M']['lambda']}:",
            "",
            "| M | energy | max drop | mean virtual queue | seed |",
            "|---|---|---|---|---|",
        ]
        for r in result["by_M"]["runs"]:
            lines.append(
                f"| {r['M']} | {r['energy_per_user']:.3f} | {r['max_drop_rate']:.3f} | "
                f"{r['mean_virtual_queue']:.1f} | {r['seed']} |"
            )
    if "live" in report:
        lines += ["", "Live (emulated device and link, real server):", ""]
        lines += report["live_table"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench djos")
    parser.add_argument("--quick", action="store_true", help="fewer frames (seconds)")
    parser.add_argument("--live", action="store_true", help="also batches on a real server")
    parser.add_argument("--seed", type=int, default=20261122)
    opts = parser.parse_args(argv)
    began = time.time()
    frames = 5_000 if opts.quick else 50_000
    report: dict[str, Any] = {
        "motivating_example": motivating_example(),
        "slides": SLIDES,
        "one_slot": series(1, frames, opts.seed),
        "three_slot": series(3, frames, opts.seed + 1000),
    }
    if opts.live:
        from . import djos_live

        report["live"] = djos_live.run(quick=opts.quick, seed=opts.seed)
        report["live_table"] = djos_live.table(report["live"])
    report["wall_s"] = time.time() - began
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "djos.json").write_text(json.dumps(report, indent=1))
    for key, name in (("one_slot", "djos_T1.png"), ("three_slot", "djos_T3.png")):
        plot(report[key], RESULTS / name)
    table = markdown(report)
    (RESULTS / "djos.md").write_text(table)
    print(table)
    return report
