"""``edge-server``'s options for a site of lent machines on Dask (issue 14).

:func:`add` puts them on the server's parser; :func:`values` turns the parsed
ones into :class:`~edge_server.config.ServerConfig` fields (credits are
given in credits and kept as exact micro-credits).
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import ServerConfig


def add(parser: argparse.ArgumentParser, defaults: ServerConfig) -> None:
    """The site's options: the engine, the scheduler, the site socket, TLS, credits."""
    parser.add_argument(
        "--engine",
        choices=("local", "dask"),
        default=defaults.engine,
        help="where jobs run: this machine's worker processes, or a Dask cluster of lent "
        "machines (with --scheduler; pip install 'offload[site]') (default: %(default)s)",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="the Dask scheduler (tcp://HOST:8786, tls://...)"
    )
    parser.add_argument(
        "--site-bind",
        default=defaults.site_bind,
        help="where the site's tasks reach this server for their calls, checkpoints and "
        "results (default: %(default)s)",
    )
    parser.add_argument(
        "--site-address", help="the address lenders reach --site-bind at (default: as bound)"
    )
    parser.add_argument("--site-tls-ca", metavar="PEM", help="the site's TLS CA certificate")
    parser.add_argument("--site-tls-cert", metavar="PEM", help="this server's TLS certificate")
    parser.add_argument("--site-tls-key", metavar="PEM", help="this server's TLS key")
    parser.add_argument(
        "--credit-grant",
        type=float,
        default=defaults.credit_grant / 1e6,
        help="credits a new user gets on a site (default: %(default)g)",
    )
    parser.add_argument(
        "--price-cpu",
        type=float,
        default=defaults.price_cpu / 1e6,
        help="starting price of a core-hour in credits (default: %(default)g)",
    )
    parser.add_argument(
        "--price-memory",
        type=float,
        default=defaults.price_memory / 1e6,
        help="starting price of a GB-hour in credits (default: %(default)g)",
    )


def values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerConfig`` fields of the parsed site options."""
    return {
        "engine": args.engine,
        "scheduler": args.scheduler,
        "site_bind": args.site_bind,
        "site_address": args.site_address,
        "site_tls_ca": args.site_tls_ca,
        "site_tls_cert": args.site_tls_cert,
        "site_tls_key": args.site_tls_key,
        "credit_grant": round(args.credit_grant * 1e6),
        "price_cpu": round(args.price_cpu * 1e6),
        "price_memory": round(args.price_memory * 1e6),
    }
