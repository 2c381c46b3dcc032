"""DJOS live: batches with deadlines from an emulated slow device to a real edge server.

A stream of batches of DCOF's power computation (a frame of work with a
deadline, like the frames of a video) goes through ``map_within`` with each
policy, on the testbed of :mod:`bench.trace` (CPU quota, shaped link). Each
policy gets a fresh client, a few warm-up batches to learn both sides, then
the measured stream. Energy is the profiler's model applied to the measured
run of each item (``Client.stats``: CPU power x local time; radio and idle
power x the call's measured turnaround and bytes).
"""

from __future__ import annotations

import random
import statistics
from typing import Any

import offload
from examples.workloads import power

from . import trace

POLICIES = ("lfos", "efos", "djos")


def _batch(rng: random.Random, items: int) -> list[int]:
    return [rng.choice([50_000, 100_000, 200_000, 400_000]) for _ in range(items)]


def run(quick: bool, seed: int) -> dict[str, Any]:
    """Per policy: energy per item done, drop rate, batches that missed their deadline."""
    # More work than the server alone finishes in time: the batch must be split.
    batches, items, deadline = (6, 10, 0.5) if quick else (20, 10, 0.5)
    out: dict[str, Any] = {
        "workload": "power(3, e), e from 50,000 to 400,000",
        "batches": batches,
        "items_per_batch": items,
        "deadline_s": deadline,
        "max_drop": 0.1,
        "seed": seed,
    }
    with trace.Testbed() as bed:
        out["testbed"] = bed.describe()
        bed.set_battery(80)
        for policy in POLICIES:
            rng = random.Random(seed)
            with offload.Client(bed.server, profile_cache="") as client:
                client.ping(timeout=30)
                client.ping(timeout=30)
                for _ in range(3):  # warm-up: both sides measured
                    exps = _batch(rng, items)
                    client.map_within(power, [3] * items, exps, deadline=deadline, policy=policy)
                before = client.stats().get(power.wire_name, {})
                dropped = missed = done = 0
                elapsed = []
                for _ in range(batches):
                    exps = _batch(rng, items)
                    result = client.map_within(
                        power, [3] * items, exps, deadline=deadline, policy=policy, max_drop=0.1
                    )
                    dropped += len(result.dropped)
                    done += items - len(result.dropped)
                    missed += not result.met
                    elapsed.append(result.elapsed_s)
                after = client.stats()[power.wire_name]
            energy = sum(
                after[side]["energy_j"] - before.get(side, {}).get("energy_j", 0.0)
                for side in ("local", "remote")
            )
            out[policy] = {
                "energy_per_item_j": energy / max(done, 1),
                "drop_rate": dropped / (batches * items),
                "batches_missing_deadline": missed,  # an item dropped, or late
                "median_batch_s": statistics.median(elapsed),
            }
    lfos = out["lfos"]["energy_per_item_j"]
    out["djos_saving_vs_lfos"] = 1 - out["djos"]["energy_per_item_j"] / lfos if lfos else 0.0
    return out


def table(live: dict[str, Any]) -> list[str]:
    """Markdown rows for the report."""
    lines = [
        f"{live['batches']} batches of {live['items_per_batch']} x {live['workload']}, "
        f"deadline {live['deadline_s']} s, max_drop {live['max_drop']}, seed {live['seed']}:",
        "",
        "| policy | energy per item J | drop rate | batches not all done in time | median s |",
        "|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        r = live[policy]
        lines.append(
            f"| {policy.upper()} | {r['energy_per_item_j']:.3f} | {r['drop_rate']:.1%} | "
            f"{r['batches_missing_deadline']} | {r['median_batch_s']:.2f} |"
        )
    lines += ["", f"DJOS energy per item vs LFOS: {-live['djos_saving_vs_lfos']:+.1%}."]
    return lines
