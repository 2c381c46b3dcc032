"""The command-line options for several servers: ``--servers``, ``--location``, trust.

``offload servers`` and ``offload ui`` take the same four; they become the
:class:`~offload.Config` fields of the same names.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--servers``, ``--location``, ``--known-servers`` and ``--insecure``."""
    parser.add_argument("--servers", help='"auto" (find them on the LAN) or addresses, a,b')
    parser.add_argument("--location", metavar="LAT,LON", help="where this device is")
    parser.add_argument("--known-servers", metavar="DIR", help="public keys of trusted servers")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="trust servers without a key"
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~offload.Config` settings the options gave."""
    return {
        "servers": args.servers,
        "location": args.location,
        "known_servers": args.known_servers,
        "insecure": args.insecure,
    }
