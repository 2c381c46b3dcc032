"""``python -m bench NAME [OPTIONS]``: run one benchmark (``NAME --help`` for its options)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name: one line on what it does. Each module's ``main(argv)`` parses its own options
# first, so ``NAME --help`` prints them and exits before anything is measured.
BENCHMARKS = {
    "overhead": "a no-op call and 1-128 MB array echoes against raw pyzmq (loopback)",
    "decisions": "every policy replayed against an oracle on a measured trace, then live (root)",
    "decisions_servers": "the same over three shaped servers: here or which server per call (root)",
    "djos": "DJOS's motivating example and simulation; --live: deadline batches on a server",
    "failures": "FlexConnect's Table 1: worker SIGKILLed at exponential times, with checkpoints",
    "load": "100 clients x 100 calls, each answered exactly once, then a SIGKILL and restart",
    "dcof": "DCOF's evaluation: three services x three scenarios on an emulated device (root)",
    "peers": "no-op and array echo beside raw pyzmq, Pyro5, execnet, a process pool, Ray, Dask",
    "abuse": "hostile clients (queued uploads, unread replies, floods, stopping) beside a good one",
    "fleet": "three servers behind shaped links as one gets busy, a link weakens, one dies (root)",
    "profile": "CPU per no-op call in client, server and worker, and py-spy profiles of each",
    "site": "DeepMarket's experiment 1: one many-task job on 1-4 quarter-CPU lenders (Dask site)",
    "report": "rewrite the figure blocks of README.md and bench/README.md from bench/results/",
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--help`` lists the benchmarks, one line each."""
    top = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run one benchmark; its results go to bench/results/.",
        epilog="python -m bench NAME --help lists NAME's options without running it.",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=16, width=100),
    )
    names = top.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, summary in BENCHMARKS.items():
        names.add_parser(name, help=summary, description=summary)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        parser().parse_args(argv)  # --help, or a usage error: exits either way
        return 2
    # The benchmark parses its own options (``--help`` included) before it measures anything.
    result = importlib.import_module(f"bench.{argv[0]}").main(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
