"""DeepMarket's experiment 1 on a Dask site: one job of many tasks on 1-4 lent Pi-class machines.

DeepMarket (Kim, 2019) ran one training job on 1, 2, 3 and 4 lenders'
machines and found the completion time falling as workers were added. Here:
a Dask scheduler and an edge server with ``--engine dask`` on loopback, and
lenders started by ``offload lend``, each in a cgroup (v1 ``cpu.cfs_quota_us``
or v2 ``cpu.max``) of a quarter of one CPU, a Pi-class machine, so four fit in
this 2-core machine. The job: ``tasks`` calls of DCOF's and FlexConnect's
integer matrix products (:func:`bench.workloads.matrix_rounds`, 160x160,
``rounds`` products each), sent with ``Client.map``; each is a site job, run
in its own process on a lender. Lenders join one at a time (1, then 2, ...)
and the same job runs again after each joins.

Also: the Dask engine's overhead against the local engine for one small job
(a no-op) on one worker without a quota (median of ``calls``), and the
credits each lender's machine earned.

``python -m bench site [--quick]`` writes ``bench/results/site.json`` (with a
list ``workers`` of ``{workers, completion_s, speedup, efficiency}``),
``site.md`` and ``site.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import offload

from .workloads import MOD, matrix_rounds, noop

RESULTS = Path(__file__).parent / "results"
SHARE = 0.25  # of one CPU per lender: a Pi-class machine
_PERIOD_US = 100_000
_CGROUP = Path("/sys/fs/cgroup")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def _quota_group(name: str) -> Path | None:
    """A cgroup of SHARE of one CPU (None if this machine or user cannot make one)."""
    quota = int(SHARE * _PERIOD_US)
    try:
        if (_CGROUP / "cpu" / "cpu.cfs_quota_us").exists():
            group = _CGROUP / "cpu" / name
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
            return group
        if (_CGROUP / "cgroup.controllers").exists():
            group = _CGROUP / name
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
            return group
    except OSError:
        return None
    return None


class Site:
    """A scheduler, an edge server on it, and lenders joining one by one."""

    def __init__(self, root: Path, quota: bool) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.quota = quota
        self.port = _free_port()
        self.scheduler = f"tcp://127.0.0.1:{self.port}"
        self.lenders: list[subprocess.Popen[bytes]] = []
        self.groups: list[Path] = []
        log = open(root / "scheduler.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-dashboard"],
            stdout=log, stderr=log, env=_env(), start_new_session=True,
        )  # fmt: skip
        _wait_port(self.port)
        self.server = offload.serve_local(
            ["bench.workloads"],
            data_dir=str(root / "data"),
            extra_args=["--engine", "dask", "--scheduler", self.scheduler,
                        "--log-level", "WARNING"],
        )  # fmt: skip
        self.client = offload.Client(self.server.address, mode="remote", heartbeat_timeout=60)

    def add_lender(self) -> None:
        i = len(self.lenders) + 1
        command = [
            sys.executable, "-c", "from offload.cli import main; raise SystemExit(main())",
            "lend", "--server", self.server.address, "--cores", "1", "--host", f"pi{i}",
            "--local-directory", str(self.root / f"pi{i}"),
        ]  # fmt: skip
        group = _quota_group(f"offload-bench-site-{os.getpid()}-{i}") if self.quota else None
        if group is not None:
            self.groups.append(group)
            # Into the quota's group before it starts: its nanny, worker and jobs follow.
            command = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *command]
        log = open(self.root / f"pi{i}.log", "wb")  # noqa: SIM115
        self.lenders.append(
            subprocess.Popen(command, stdout=log, stderr=log, env=_env(), start_new_session=True)
        )
        deadline = time.monotonic() + 120
        while self.workers() < i:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lender {i} did not join")
            time.sleep(0.2)

    def workers(self) -> int:
        return int(self.client.server.health()["site"]["workers"])

    def close(self) -> None:
        self.client.shutdown()
        for process in self.lenders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.server.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait()
        time.sleep(0.2)
        for group in self.groups:
            with contextlib.suppress(OSError):
                group.rmdir()


def _median_call(client: offload.Client, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.submit(noop).result(timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead(root: Path, calls: int) -> dict[str, float]:
    """A no-op job on one worker: the local engine against the Dask engine (no quota)."""
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "WARNING"]
        ) as server,
        offload.Client(server.address, mode="remote", heartbeat_timeout=60) as client,
    ):
        _median_call(client, 3)
        local = _median_call(client, calls)
    site = Site(root / "overhead", quota=False)
    try:
        site.add_lender()
        _median_call(site.client, 2)
        dask = _median_call(site.client, calls)
    finally:
        site.close()
    return {"local_s": local, "dask_s": dask, "overhead_s": dask - local}


def run(quick: bool, root: Path) -> dict[str, Any]:
    tasks, rounds = (8, 50) if quick else (12, 100)
    a = np.random.default_rng(14).integers(0, MOD, (160, 160))
    expected = matrix_rounds.__wrapped__(a, rounds)
    quota = _quota_group(f"offload-bench-site-probe-{os.getpid()}") is not None
    with contextlib.suppress(OSError):
        for base in (_CGROUP / "cpu", _CGROUP):
            (base / f"offload-bench-site-probe-{os.getpid()}").rmdir()
    site = Site(root / "scaling", quota)
    rows = []
    try:
        for count in range(1, 5):
            site.add_lender()
            site.client.submit(noop).result(timeout=120)  # the new worker has the apps
            start = time.perf_counter()
            results = list(site.client.map(matrix_rounds, [a] * tasks, [rounds] * tasks))
            completion = time.perf_counter() - start
            assert all(np.array_equal(r, expected) for r in results), "wrong result"
            rows.append({"workers": count, "completion_s": round(completion, 3)})
            print(f"{count} lenders: {completion:.2f} s", flush=True)
        machines = site.client.server.resources()
        credits = site.client.server.credits()
    finally:
        site.close()
    base = rows[0]["completion_s"]
    for row in rows:
        row["speedup"] = round(base / row["completion_s"], 3)
        row["efficiency"] = round(row["speedup"] / row["workers"], 3)
    return {
        "quick": quick,
        "tasks": tasks,
        "rounds": rounds,
        "matrix": 160,
        "share_of_cpu": SHARE if quota else None,
        "workers": rows,
        "lenders": [
            {"host": m["host"], "earned_micro_credits": m["earned"], "online_s": m["online_s"]}
            for m in machines
        ],
        "prices": credits["prices"],
    }


def markdown(report: dict[str, Any]) -> str:
    share = report["share_of_cpu"]
    lines = [
        f"One job of {report['tasks']} tasks ({report['rounds']} products of "
        f"{report['matrix']}x{report['matrix']} integer matrices each) on 1-4 lenders, each "
        + (f"a cgroup of {share:g} CPU." if share else "without a CPU quota (no cgroups here)."),
        "",
        "| lenders | completion (s) | speed-up | efficiency |",
        "|---:|---:|---:|---:|",
    ]
    for row in report["workers"]:
        lines.append(
            f"| {row['workers']} | {row['completion_s']:.2f} | {row['speedup']:.2f}x "
            f"| {row['efficiency']:.2f} |"
        )
    over = report.get("overhead")
    if over:
        lines += [
            "",
            f"A no-op job on one worker (median): local engine {over['local_s'] * 1e3:.1f} ms, "
            f"Dask engine {over['dask_s'] * 1e3:.0f} ms (a Dask task, the call fetched over the "
            "site socket, and a fresh job process on the lender).",
        ]
    lines += ["", "| lender | earned (credits) |", "|---|---:|"]
    for lender in report["lenders"]:
        lines.append(f"| {lender['host']} | {lender['earned_micro_credits'] / 1e6:.6f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = report["workers"]
    n = [r["workers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(n, [r["completion_s"] for r in rows], "o-")
    left.set_xlabel("lenders (quarter-CPU each)")
    left.set_ylabel("completion time (s)")
    left.set_xticks(n)
    right.plot(n, [r["speedup"] for r in rows], "o-", label="measured")
    right.plot(n, n, "--", label="linear")
    right.plot(n, [0.7 * k for k in n], ":", label="0.7x linear")
    right.set_xlabel("lenders")
    right.set_ylabel("speed-up")
    right.set_xticks(n)
    right.legend()
    fig.suptitle("DeepMarket's experiment 1 on a Dask site")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench site", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter tasks")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports go")
    opts = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="offload-bench-site-"))
    try:
        report = run(opts.quick, root)
        report["overhead"] = overhead(root, 5 if opts.quick else 15)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    opts.out.mkdir(exist_ok=True)
    (opts.out / "site.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (opts.out / "site.md").write_text(table)
    plot(report, opts.out / "site.png")
    print(table)
    return report
