"""``python -m bench NAME [OPTIONS]``: run one benchmark (``NAME --help`` for its options)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("overhead", "decisions", "djos", "failures", "load", "dcof", "peers", "abuse")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python -m bench {{{','.join(BENCHMARKS)}}}", file=sys.stderr)
        return 2
    importlib.import_module(f"bench.{sys.argv[1]}").main(sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
