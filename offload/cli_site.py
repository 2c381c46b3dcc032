"""``offload`` commands for a site of lent machines: credits, quote, lend, resources.

They are registered on ``offload``'s parser by :func:`add_commands` and talk
to the site's edge server like the other commands (``--server``, keys,
``--json``).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from typing import Any

from . import _exceptions as errors
from . import cli_output as out
from . import human
from .client import Client
from .config import Config

#: Makes the command's client: ``client_of(args, server=None)``.
ClientOf = Callable[..., Client]


def add_commands(command: Callable[..., Any], client_of: ClientOf) -> None:
    """Add the site's commands with ``command(name, run, help)`` (as ``offload``'s others)."""
    credits = command(
        "credits",
        functools.partial(_credits, client_of),
        "your credits on a site: balance, statement, prices",
    )
    credits.add_argument("--limit", type=int, default=20, help="statement entries (default: 20)")
    quote = command(
        "quote",
        functools.partial(_quote, client_of),
        "what a call would cost on the site, from its predicted server time",
    )
    quote.add_argument("function", help="MODULE:NAME of an @offload function")
    quote.add_argument("args", nargs="*", help="its arguments, as Python literals")
    quote.add_argument(
        "--seconds", type=float, help="quote this many seconds instead of the predicted time"
    )
    lend = command(
        "lend",
        functools.partial(_lend, client_of),
        "lend this machine to a site: a Dask worker for credits",
    )
    lend.add_argument("--site", help="the site's edge server (default: --server)")
    lend.add_argument("--cores", type=int, help="threads (jobs at once) (default: all cores)")
    lend.add_argument(
        "--memory",
        type=human.parse_size,
        default=0,
        help="memory for jobs, e.g. 2GB (default: Dask's share of the machine)",
    )
    lend.add_argument(
        "--hours", help="daily window HH:MM-HH:MM, e.g. 18:00-08:00 (default: always)"
    )
    lend.add_argument(
        "--for",
        dest="duration",
        type=human.parse_duration,
        help="lend this long, then retire and exit (30min, 2h)",
    )
    lend.add_argument(
        "--grace",
        type=human.parse_duration,
        default=60.0,
        help="at retirement, how long jobs without checkpoints get (default: 60 s)",
    )
    lend.add_argument("--tls-ca", help="the site's CA certificate (Dask TLS)")
    lend.add_argument("--tls-cert", help="this machine's certificate")
    lend.add_argument("--tls-key", help="this machine's key")
    lend.add_argument("--local-directory", help="where the worker keeps jobs' working directories")
    lend.add_argument("--host", help="the name this machine is lent under (default: host name)")
    command(
        "resources",
        functools.partial(_resources, client_of),
        "your lent machines: cores, memory, hours, online, earned",
    )


def _credits(client_of: ClientOf, args: argparse.Namespace) -> int:
    with client_of(args) as client:
        credits = client.server.credits(args.limit)
    if args.json:
        print(json.dumps(credits))
        return 0
    prices = credits["prices"]
    fields = [("balance", f"{human.credits(credits['balance'])} credits")]
    for slot, (cpu, memory) in enumerate(prices["slots"]):
        now = " (now)" if slot == prices["slot"] else ""
        fields.append(
            (
                f"{slot * 6:02d}-{slot * 6 + 6:02d}h",
                f"{human.credits(cpu)}/core-hour, {human.credits(memory)}/GB-hour{now}",
            )
        )
    print(out.fields_text(fields))
    rows = [
        {
            "when": human.local_time(entry["at"]),
            "amount": human.credits(entry["amount"]),
            "job": str(entry["job"] or ""),
            "what": entry["memo"],
        }
        for entry in credits["statement"]
    ]
    if rows:
        print(out.table(rows, ("when", "amount", "job", "what")))
    return 0


def _quote(client_of: ClientOf, args: argparse.Namespace) -> int:
    import ast
    import importlib

    module, _, name = args.function.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
        values = [ast.literal_eval(a) for a in args.args]
    except (ImportError, AttributeError, ValueError, SyntaxError) as exc:
        raise errors.ConfigError(f"cannot quote {args.function}: {exc}") from exc
    config = Config.load(server=args.server, server_key=args.server_key, client_key=args.client_key)
    with Client(config=config) as client:
        if args.seconds is not None:
            quote = {**client.server.quote(args.seconds), "basis": "given"}
        else:
            quote = client.quote(fn, *values)
    if args.json:
        print(json.dumps(quote))
        return 0
    print(
        out.fields_text(
            [
                ("cost", f"{human.credits(quote['micro_credits'])} credits"),
                ("time", f"{human.seconds(quote['seconds'])} ({quote['basis']})"),
                ("price", f"{human.credits(quote['price_cpu'])}/core-hour (slot {quote['slot']})"),
                ("balance", f"{human.credits(quote['balance'])} credits"),
            ]
        )
    )
    return 0


def _lend(client_of: ClientOf, args: argparse.Namespace) -> int:
    import logging
    import os

    from edge_server.site.security import tls_security

    from .lend import Hours, lend

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    hours = Hours.parse(args.hours)
    security = tls_security(args.tls_ca, args.tls_cert, args.tls_key)
    with client_of(args, args.site) as client:
        site = client.server
        return lend(
            site,
            args.cores or os.cpu_count() or 1,
            args.memory,
            hours,
            security=security,
            duration=args.duration,
            grace=args.grace,
            local_directory=args.local_directory,
            host=args.host,
        )


def _resources(client_of: ClientOf, args: argparse.Namespace) -> int:
    with client_of(args) as client:
        machines = client.server.resources()
    if args.json:
        print(json.dumps(machines))
        return 0
    if not machines:
        print("no machines lent (offload lend --site ...)")
        return 0
    rows = [
        {
            "id": str(m["id"]),
            "host": m["host"],
            "cores": str(m["cores"]),
            "memory": human.size(m["memory"]) if m["memory"] else "auto",
            "hours": m["hours"],
            "online": "yes" if m["online"] else "no",
            "earned": human.credits(m["earned"]),
        }
        for m in machines
    ]
    print(out.table(rows, ("id", "host", "cores", "memory", "hours", "online", "earned")))
    return 0
