"""``offload deploy`` and ``offload apps``: apps on edge servers, for the ``offload`` command line.

Both talk to several servers at once: each ``--server`` given, else every
configured one (``server``, ``servers`` by address, ``backup_server``), and
report each server's answer (exit status 1 if any refused or did not answer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from . import _exceptions as errors
from . import cli_output as out
from . import deploy, human
from .bundle import pack
from .config import Config
from .profiler import Link
from .remote import Remote
from .servers import config_bps


def add_commands(commands: Any) -> None:
    """Add ``deploy`` and ``apps`` to the ``offload`` parser's subcommands."""
    sub = _multi(commands, "deploy", _deploy, "deploy an app to edge servers (or roll it back)")
    sub.add_argument(
        "path", nargs="?", help="the app: a module file, a package or app directory, a wheel"
    )
    sub.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="serve this module's @offload functions (repeatable; default: the top-level "
        "modules and every module that mentions offload)",
    )
    sub.add_argument("--name", help="the app's name (default: the file's or directory's)")
    sub.add_argument(
        "--fresh",
        action="store_true",
        help="send every file and make a new version even if the server holds this one",
    )
    sub.add_argument(
        "--rollback", metavar="APP", help="serve APP's previous version again (no PATH)"
    )
    sub.add_argument(
        "--to", type=int, metavar="VERSION", help="with --rollback: this version instead"
    )
    sub.add_argument(
        "--timeout",
        type=human.parse_duration,
        default=300.0,
        metavar="DURATION",
        help="how long to wait for each server (default: 5min)",
    )
    _multi(commands, "apps", _apps, "each server's apps: versions, who deployed them, fingerprints")


def _multi(commands: Any, name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
    """A command for several servers: ``--server`` repeatable (default: every configured one)."""
    sub = commands.add_parser(name, help=text, description=text)
    sub.set_defaults(run=run)
    sub.add_argument(
        "--server",
        action="append",
        default=[],
        help="an edge server (repeatable; default: server, servers and backup_server as "
        "configured)",
    )
    sub.add_argument("--server-key", help="the servers' public key file")
    sub.add_argument("--client-key", help="this client's secret key file")
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    return sub


def _remotes(args: argparse.Namespace) -> list[Remote]:
    """A connection to each server the command is for."""
    config = Config.load(
        server_key=args.server_key,
        client_key=args.client_key,
        profile_cache="",
        probe_bytes=0,
    )
    addresses = list(args.server) or [
        a for a in (config.server, *config.static_servers, config.backup_server) if a
    ]
    if not addresses:
        raise errors.ConfigError(
            "no server: give --server (repeatable), OFFLOAD_SERVER, OFFLOAD_SERVERS or offload.toml"
        )
    remotes = []
    try:
        for address in dict.fromkeys(addresses):
            conf = config.replace(server=address)
            remotes.append(Remote(conf, Link(config_bps(conf))))
    except BaseException:
        for remote in remotes:
            remote.close()
        raise
    return remotes


def _each(
    args: argparse.Namespace, ask: Callable[[Remote], Future[Any]], timeout: float
) -> list[tuple[str, Any, BaseException | None]]:
    """``ask`` every server at once; (address, answer, error) for each, in order."""
    remotes = _remotes(args)
    try:
        asked = []
        for remote in remotes:
            try:
                asked.append((remote, ask(remote)))
            except Exception as exc:
                failed: Future[Any] = Future()
                failed.set_exception(exc)
                asked.append((remote, failed))
        results: list[tuple[str, Any, BaseException | None]] = []
        deadline = time.monotonic() + timeout
        for remote, future in asked:
            try:
                answer = future.result(max(0.0, deadline - time.monotonic()))
                results.append((remote.address, answer, None))
            except TimeoutError:
                error = errors.ServerUnavailable(f"no answer within {timeout:g} s")
                results.append((remote.address, None, error))
            except Exception as exc:
                results.append((remote.address, None, exc))
        return results
    finally:
        for remote in remotes:
            remote.close()


def _deploy(args: argparse.Namespace) -> int:
    if args.rollback:
        if args.path:
            raise errors.ConfigError("give PATH to deploy, or --rollback APP, not both")
        return _rollback(args)
    if not args.path:
        raise errors.ConfigError("give the app to deploy (PATH), or --rollback APP")
    bundle = pack(args.path, args.module, args.name)
    results = _each(
        args, lambda remote: deploy.deploy_async(remote, bundle, fresh=args.fresh), args.timeout
    )
    if args.json:
        print(json.dumps([_as_json(a, d.as_dict() if d else None, e) for a, d, e in results]))
    else:
        size = human.size(bundle.size)
        print(f"{bundle.app}: {len(bundle.files)} files, {size} ({bundle.source})", file=sys.stderr)
        for address, done, exc in results:
            if exc is not None:
                print(f"{address}: refused: {type(exc).__name__}: {exc}")
                continue
            if done.unchanged:
                what = f"already serves this version, {done.version}: nothing sent"
            else:
                what = (
                    f"version {done.version}: {done.sent_files} of {done.total_files} files sent "
                    f"({human.size(done.sent_bytes)} of {human.size(done.total_bytes)}), "
                    f"set up in {human.seconds(done.setup_s)}"
                )
            print(f"{address}: {done.app} {what}; {len(done.functions)} functions")
    return 1 if any(e is not None for _, _, e in results) else 0


def _rollback(args: argparse.Namespace) -> int:
    def ask(remote: Remote) -> Future[Any]:
        request: dict[str, Any] = {"op": "rollback", "app": args.rollback}
        if args.to is not None:
            request["version"] = args.to
        _, future = remote.control(request)
        return future

    results = [(a, r[0] if r else None, e) for a, r, e in _each(args, ask, args.timeout)]
    if args.json:
        print(json.dumps([_as_json(a, r, e) for a, r, e in results]))
    else:
        for address, answer, exc in results:
            if exc is not None or answer is None:
                print(f"{address}: refused: {type(exc).__name__}: {exc}")
            else:
                print(
                    f"{address}: {answer['app']} back to version {answer['version']} "
                    f"(was {answer['previous']})"
                )
    return 1 if any(e is not None for _, _, e in results) else 0


def _apps(args: argparse.Namespace) -> int:
    def ask(remote: Remote) -> Future[Any]:
        return remote.control({"op": "apps"})[1]

    results = [(a, r[0]["apps"] if r else None, e) for a, r, e in _each(args, ask, 30.0)]
    if args.json:
        print(
            json.dumps(
                [_as_json(a, {"apps": r} if r is not None else None, e) for a, r, e in results]
            )
        )
    else:
        for address, listed, exc in results:
            if exc is not None or listed is None:
                print(f"{address}: {type(exc).__name__}: {exc}")
                continue
            rows = [row for app in listed for row in out.app_rows(app)]
            print(address)
            print(out.table(rows, out.APP_COLUMNS) if rows else "no apps")
    return 1 if any(e is not None for _, _, e in results) else 0


def _as_json(address: str, answer: dict[str, Any] | None, exc: BaseException | None) -> Any:
    if exc is not None:
        return {"server": address, "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"server": address, **(answer or {})}
