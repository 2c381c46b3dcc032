"""FlexConnect's failure test: a matrix job, real worker kills, and checkpoints that save the work.

FlexConnect (Droob, Morratz, Jakobsen, Carstensen, Mathiesen, Bohnstedt,
Albano, Moreschini and Taibi, "FlexConnect: Mobile Computational Offloading",
eSAAM 2023; Table 1) ran a matrix-multiplication job whose worker "failed"
after a time drawn from an exponential distribution of rate mu, with a given
number of checkpoints, in eleven cases. Here the job is
:func:`bench.workloads.matrix_rounds` on a real edge server; each run
reads its failure time from a schedule and kills its own worker process
with SIGKILL when it comes (the same emulated hardware failure, for real);
the client's :class:`offload.Job` resumes from the last checkpoint that
streamed home, on the same server's replacement
worker. With no checkpoints the function is declared idempotent
(``retries``): Ray's and Dask's behaviour, every failure starts it again.

The slides give mu without a unit. Ours: the uninterrupted job is 1,000
time units, so a failure rate mu per unit is ``mu * 1000 / job_s`` per second
of running, and ``checkpoints`` spread evenly over the job set
``checkpoint_every = job_s / (checkpoints + 1)``. A case that has not
finished after ``CAP`` times the job's length is stopped and reported so.

``python -m bench failures [--quick]`` writes ``bench/results/failures.json``
(one record per case: mu, checkpoints, failures, completion_s, redone_s,
correct), ``failures.md`` and ``failures.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import offload

from .progress import steps
from .workloads import MOD, matrix_rounds

RESULTS = Path(__file__).parent / "results"
CASES = [  # (mu, checkpoints): FlexConnect's Table 1
    (0.0001, 0),
    (0.0001, 15),
    (0.0005, 0),
    (0.0005, 1),
    (0.0005, 15),
    (0.003, 0),
    (0.003, 5),
    (0.003, 15),
    (0.0131, 0),
    (0.0131, 11),
    (0.0131, 15),
]
QUICK = [(0.0005, 0), (0.0005, 15), (0.003, 0), (0.003, 15)]
CAP = 4.0
SIZE = 300


def _rounds_for(seconds: float, a: np.ndarray) -> tuple[int, float]:
    """How many products take about ``seconds`` here, and one product's time."""
    m = a
    start = time.perf_counter()
    for _ in range(10):
        m = np.remainder(m @ a, MOD)
    per_round = (time.perf_counter() - start) / 10
    return max(1, int(seconds / per_round)), per_round


def run_case(
    client: offload.Client,
    a: np.ndarray,
    rounds: int,
    per_round: float,
    expected: np.ndarray,
    mu: float,
    checkpoints: int,
    job_s: float,
    seed: int,
    cap: float = CAP,
) -> dict[str, Any]:
    """One case: the job under its failure schedule, until done or ``CAP`` x its length."""
    rng = random.Random(seed)
    rate = mu * 1000 / job_s  # failures per second of running
    times = [rng.expovariate(rate) for _ in range(10_000)]
    if checkpoints:
        fn = offload.offload(
            matrix_rounds.__wrapped__, mode="remote", checkpoint_every=job_s / (checkpoints + 1)
        )
    else:
        fn = offload.offload(matrix_rounds.__wrapped__, mode="remote", retries=10_000)
    with tempfile.TemporaryDirectory() as tmp:
        schedule = Path(tmp) / "schedule.json"
        schedule.write_text(json.dumps({"times": times, "next": 0, "home": os.getpid()}))
        start = time.perf_counter()
        job = client.submit(fn, a, rounds, str(schedule))
        try:
            result = job.result(timeout=cap * job_s)
            finished = True
        except TimeoutError:
            job.cancel()
            result, finished = None, False
        completion = time.perf_counter() - start
        failures = json.loads(schedule.read_text())["next"] - 1
        rounds_log = Path(str(schedule) + ".rounds")
        done_rounds = rounds_log.stat().st_size if rounds_log.exists() else 0
    return {
        "mu": mu,
        "checkpoints": checkpoints,
        "checkpoint_every_s": job_s / (checkpoints + 1) if checkpoints else None,
        "failures": failures,
        "finished": finished,
        "completion_s": completion if finished else None,
        "redone_s": (done_rounds - rounds) * per_round if finished else None,
        "correct": bool(finished and np.array_equal(result, expected)),
        "checkpoints_taken": job.progress.checkpoints,
        "runs": job.progress.runs,
        "finished_on": "server" if job.progress.where != "local" else "client",
        "seed": seed,
    }


@contextlib.contextmanager
def _server() -> Iterator[tuple[offload.LocalServer, offload.Client]]:
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "ERROR"]
        ) as server,
        # The job stays on its server however often the worker dies: the failures
        # being measured are the server's (a client would normally take it home).
        offload.Client(
            server, profile_cache="", heartbeat_timeout=30, crash_tolerance=10**6
        ) as client,
    ):
        client.ping(timeout=30)
        yield server, client


def plot(records: list[dict[str, Any]], job_s: float, path: Path) -> None:
    """Completion time against mu, one line per checkpoint count (unfinished: at the cap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k in sorted({r["checkpoints"] for r in records}):
        rows = sorted((r for r in records if r["checkpoints"] == k), key=lambda r: r["mu"])
        mus = [r["mu"] for r in rows]
        times = [r["completion_s"] if r["finished"] else CAP * job_s for r in rows]
        ax.plot(mus, times, "o-", label=f"{k} checkpoints" if k else "0 (retry from scratch)")
    ax.axhline(job_s, color="k", linestyle=":", label="uninterrupted")
    ax.axhline(CAP * job_s, color="r", linestyle="--", label="cap (not finished)")
    ax.set(xscale="log", xlabel="failure rate mu (per 1/1000 of the job)", ylabel="completion s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Failures: {report['job_s']:.1f} s job ({report['rounds']} products of "
        f"{SIZE}x{SIZE} int64 matrices), worker killed by SIGKILL at exponential times",
        "",
        "| mu | checkpoints | failures | completion s | redone s | correct | runs | seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["cases"]:
        done = f"{r['completion_s']:.1f}" if r["finished"] else f"not done in {CAP:g}x"
        redone = f"{r['redone_s']:.1f}" if r["finished"] else "-"
        lines.append(
            f"| {r['mu']} | {r['checkpoints']} | {r['failures']} | {done} | {redone} | "
            f"{r['correct']} | {r.get('runs', '-')} | {r['seed']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench failures")
    parser.add_argument("--quick", action="store_true", help="a shorter job and four cases")
    parser.add_argument("--seed", type=int, default=20261122)
    opts = parser.parse_args(argv)
    job_s = 3.0 if opts.quick else 8.0
    a = np.random.default_rng(opts.seed).integers(0, MOD, (SIZE, SIZE))
    rounds, per_round = _rounds_for(job_s, a)
    expected = matrix_rounds.__wrapped__(a, rounds)  # the uninterrupted run, here
    records = []
    with _server() as (_, client):
        start = time.perf_counter()
        client.call(matrix_rounds, (a, rounds), {})  # uninterrupted, on the server
        job_s = time.perf_counter() - start
    for i, (mu, k) in enumerate(steps(QUICK if opts.quick else CASES, "cases", unit="case")):
        with _server() as (_, client):  # each case on a fresh server
            record = run_case(client, a, rounds, per_round, expected, mu, k, job_s, opts.seed + i)
        print(
            f"mu {mu} checkpoints {k}: {record['failures']} failures, "
            f"{record['completion_s'] or 'not done'} s"
        )
        records.append(record)
    report = {"job_s": job_s, "rounds": rounds, "cap": CAP, "cases": records}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failures.json").write_text(json.dumps(report, indent=1))
    plot(records, job_s, RESULTS / "failures.png")
    table = markdown(report)
    (RESULTS / "failures.md").write_text(table)
    print(table)
    return report
