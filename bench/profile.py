"""Where a no-op call's time goes: CPU per call and py-spy profiles of client, server, worker.

Issue 16 asks for profiles before any optimisation. This runs ``--calls``
no-op calls (``bench.workloads.noop``) from a ``mode="remote"`` client to a
one-worker local server twice: first plain, measuring CPU per call in each
process from ``process_time`` and ``psutil`` deltas; then with ``py-spy
record`` sampling the client, the server's front process and its worker at
once (sampling inflates CPU, so the first run's figures are the ones to
quote). Writes ``bench/results/profile_noop.json`` (the CPU figures) and
``profile_noop.md`` (those, and each process's top functions by self and
inclusive samples). Needs ``py-spy`` on the PATH (``pip install py-spy``)
for the profiles; without it only the CPU figures are written.

CPU times swing with whatever else the machine runs; the Python opcodes the
calling thread executes per call (counted with ``sys.settrace`` over a few
hundred calls) do not, so they are reported too, per function: the figure to
compare across changes on a shared machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import offload

from .progress import steps
from .workloads import noop

RESULTS = Path(__file__).parent / "results"


def _run(calls: int, spy_dir: Path | None) -> dict[str, float]:
    """CPU and wall time per call of ``calls`` no-op calls; py-spy into ``spy_dir`` if given."""
    with (
        offload.serve_local(
            ["bench.workloads"], workers=1, extra_args=["--log-level", "WARNING"]
        ) as server,
        offload.Client(server.address, mode="remote", profile_cache="") as client,
    ):
        client.ping(timeout=10)
        for _ in range(500):  # warm: connections, caches, the worker's imports
            client.call(noop, (), {})
        front = psutil.Process(server.process.pid)
        worker = front.children(recursive=True)[-1]
        spies = []
        if spy_dir is not None:
            seconds = str(max(5, int(calls / 500)))
            for name, pid in (
                ("client", os.getpid()),
                ("server", front.pid),
                ("worker", worker.pid),
            ):
                spies.append(
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(pid),
                            "-r",
                            "500",
                            "-d",
                            seconds,
                            "-f",
                            "raw",
                            "-o",
                            str(spy_dir / f"{name}.txt"),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(1.5)  # attached before the calls
        cpu, wall = time.process_time(), time.perf_counter()
        front_cpu, worker_cpu = sum(front.cpu_times()[:2]), sum(worker.cpu_times()[:2])
        chunk = max(1, calls // 100)  # the bar ticks per chunk: its cost stays out of the figures
        for first in steps(range(0, calls, chunk), "no-op calls", unit="%"):
            for _ in range(min(chunk, calls - first)):
                client.call(noop, (), {})
        per_call = {
            "wall_us": (time.perf_counter() - wall) / calls * 1e6,
            "client_cpu_us": (time.process_time() - cpu) / calls * 1e6,
            "server_front_cpu_us": (sum(front.cpu_times()[:2]) - front_cpu) / calls * 1e6,
            "worker_cpu_us": (sum(worker.cpu_times()[:2]) - worker_cpu) / calls * 1e6,
        }
        for spy in spies:
            spy.wait(timeout=120)
        if spy_dir is None:
            per_call.update(_opcodes(client, 300))
    return per_call


def _opcodes(client: offload.Client, calls: int) -> dict[str, Any]:
    """Python opcodes (and the top functions by opcodes) the caller runs per no-op call."""
    per: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            code = frame.f_code
            per["/".join(code.co_filename.split("/")[-2:]) + ":" + code.co_name] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(calls):
            client.call(noop, (), {})
    finally:
        sys.settrace(None)
    top = [(name, round(n / calls, 1)) for name, n in per.most_common(15)]
    return {"client_opcodes": round(sum(per.values()) / calls), "client_opcodes_top": top}


def _top(path: Path) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self, top inclusive project functions) of a py-spy raw file."""
    own: collections.Counter[str] = collections.Counter()
    within: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            within[frame] += n
    ours = [f for f in within.most_common(80) if "offload" in f[0] or "edge_server" in f[0]]
    return total, own.most_common(10), ours[:10]


def _report(figures: dict[str, Any], spy_dir: Path | None) -> str:
    lines = [
        "# Where a no-op call's time goes\n",
        f'`python -m bench profile`: {figures["calls"]:,} no-op calls, `mode="remote"`, one worker '
        f"(load average {figures['load_average_1min']:.1f}). CPU per call, without profiling: "
        f"client {figures['plain']['client_cpu_us']:.0f} us, server front "
        f"{figures['plain']['server_front_cpu_us']:.0f} us, worker "
        f"{figures['plain']['worker_cpu_us']:.0f} us; wall {figures['plain']['wall_us']:.0f} us "
        "per call (mean).\n",
    ]
    if "client_opcodes" in figures["plain"]:
        lines.append(
            f"The calling thread runs {figures['plain']['client_opcodes']:,} Python opcodes per "
            "call (`sys.settrace`, 300 calls: unlike CPU time, the same on a busy machine); "
            "by function:\n\n| opcodes per call | function |\n|---|---|"
        )
        lines += [f"| {n:.0f} | `{f}` |" for f, n in figures["plain"]["client_opcodes_top"]]
        lines.append("")
    if spy_dir is None:
        lines.append("py-spy was not on the PATH: no profiles.\n")
        return "\n".join(lines)
    lines.append("py-spy at 500 Hz on all three processes at once (shares of its samples):\n")
    for name in ("client", "server", "worker"):
        path = spy_dir / f"{name}.txt"
        if not path.exists():
            continue
        total, own, ours = _top(path)
        lines.append(f"## {name} ({total} samples)\n\n| self | function |\n|---|---|")
        lines += [f"| {n / total:.1%} | `{f[:100]}` |" for f, n in own]
        lines.append("\n| inclusive (project code) | function |\n|---|---|")
        lines += [f"| {n / total:.1%} | `{f[:100]}` |" for f, n in ours]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure, profile, write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench profile",
        description="CPU per no-op call in client, server and worker, and py-spy profiles of "
        "each; writes bench/results/profile_noop.json and .md.",
    )
    parser.add_argument("--calls", type=int, default=10_000, help="calls per run (10,000)")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"calls": args.calls, "load_average_1min": os.getloadavg()[0]}
    figures["plain"] = _run(args.calls, None)
    spy_dir = Path(tempfile.mkdtemp(prefix="offload-spy-")) if shutil.which("py-spy") else None
    try:
        if spy_dir is not None:
            figures["profiled"] = _run(args.calls, spy_dir)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "profile_noop.json").write_text(json.dumps(figures, indent=1) + "\n")
        report = _report(figures, spy_dir)
        (RESULTS / "profile_noop.md").write_text(report)
        print(report)
    finally:
        if spy_dir is not None:
            shutil.rmtree(spy_dir, ignore_errors=True)
