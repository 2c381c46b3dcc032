"""``offload``: the command line for users of edge servers.

``offload keys generate NAME [--dir DIR]`` writes a CurveZMQ key pair,
``NAME.key`` (public: give it to the server's operator, who puts it in the
directory of authorized keys) and ``NAME.key_secret`` (keep it; point
``OFFLOAD_CLIENT_KEY`` or ``client_key`` at it). A server's own pair is made
the same way; its public half is the clients' ``server_key``.

The other commands talk to the configured server (``--server``, else
``OFFLOAD_SERVER`` or ``offload.toml``) as the configured client key, and see
that key's jobs: ``jobs``, ``status JOB``, ``wait JOB``, ``result JOB [-o
FILE]``, ``cancel JOB``, ``usage`` and ``servers`` (configured servers and
whether they answer). Output is a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import zmq.auth

from . import _exceptions as errors
from .client import Client
from .config import Config
from .control import JobInfo
from .runtime.states import JobState

_COLUMNS = ("id", "state", "function", "submitted", "took_s", "cpu_s", "bytes_in", "bytes_out")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``offload`` command; the exit status is 0 on success."""
    args = _parser().parse_args(argv)
    if args.command == "keys":
        return _generate(args.name, Path(args.dir))
    try:
        return int(args.run(args))
    except TimeoutError as exc:
        if args.command != "wait":  # a job's own TimeoutError, fetched with its result
            return _failed(exc)
        print(f"offload: job {args.job} has not finished after {args.timeout:g} s", file=sys.stderr)
        return 3
    except Exception as exc:  # offload's errors, or the exception a fetched job raised
        return _failed(exc)


def _failed(exc: BaseException) -> int:
    print(f"offload: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offload", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="CurveZMQ keys").add_subparsers(
        dest="action", required=True
    )
    generate = keys.add_parser("generate", help="write NAME.key and NAME.key_secret")
    generate.add_argument("name")
    generate.add_argument("--dir", default=".", help="where to write them (default: here)")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        sub.add_argument("--server", help="the edge server (default: the configured one)")
        sub.add_argument("--server-key", help="the server's public key file")
        sub.add_argument("--client-key", help="this client's secret key file")
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    jobs = command("jobs", _jobs, "list your jobs on the server, newest first")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument(
        "--state",
        action="append",
        default=[],
        help=f"only jobs in this state ({', '.join(JobState)}); may be repeated",
    )
    jobs.add_argument("--before", type=int, help="only jobs older than this id (next page)")
    for name, run, text in (
        ("status", _status, "one job's state, times, CPU seconds and bytes"),
        ("cancel", _cancel, "cancel a queued or running job"),
        ("wait", _wait, "block until a job has finished; exit 1 unless it is done"),
        ("result", _result, "a finished job's kept result (or its error)"),
    ):
        sub = command(name, run, text)
        sub.add_argument("job", type=int)
        if name == "wait":
            sub.add_argument("--timeout", type=float, default=None, help="seconds (exit 3)")
        if name == "result":
            sub.add_argument(
                "-o",
                "--output",
                help="write it to FILE: bytes as they are, str as UTF-8, a numpy array as "
                ".npy, anything else pickled",
            )
            sub.add_argument(
                "--trust", action="append", default=[], help="app module its classes come from"
            )
    command("usage", _usage, "your totals on the server: jobs, CPU seconds, bytes")
    command("servers", _servers, "the configured servers and whether they answer")
    return parser


def _client(args: argparse.Namespace, server: str | None = None) -> Client:
    config = Config.load(
        server=server or args.server,
        server_key=args.server_key,
        client_key=args.client_key,
        profile_cache="",
        probe_bytes=0,
    )
    if config.server is None:
        raise errors.ConfigError("no server: give --server, OFFLOAD_SERVER or offload.toml")
    return Client(config=config)


def _jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = client.server.jobs(args.limit, args.state, args.before)
    _show(args, [j.as_dict() for j in jobs], [_row(j) for j in jobs], _COLUMNS)
    return 0


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.server.status(args.job)
    _show_job(args, job)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.server.cancel(args.job)
    _show_job(args, job)
    return 0


def _wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.server.wait(args.job, args.timeout)
    _show_job(args, job)
    return 0 if job.state is JobState.DONE else 1


def _result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        value = client.server.result(args.job, args.trust)
    if args.output:
        _write(Path(args.output), value)
    elif args.json:
        print(json.dumps(value, default=repr))
    else:
        print(repr(value))
    return 0


def _usage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        usage = client.server.usage()
    _show(args, usage, [usage], ("jobs", "cpu_s", "bytes_in", "bytes_out"))
    return 0


def _servers(args: argparse.Namespace) -> int:
    config = Config.load(server=args.server, profile_cache="")
    configured = [("server", config.server), ("backup_server", config.backup_server)]
    rows, down = [], 0
    for role, address in configured:
        if address is None:
            continue
        row: dict[str, Any] = {"role": role, "address": address}
        try:
            with _client(args, address) as client:
                client.ping(timeout=5.0)
                row.update(client.server.health(), answers=True)
        except errors.OffloadError as exc:
            row.update(answers=False, ok=False, error=str(exc))
            down += 1
        rows.append(row)
    if not rows:
        raise errors.ConfigError("no server configured: give --server or OFFLOAD_SERVER")
    columns = ("role", "address", "answers", "ok", "workers", "running", "queued", "uptime_s")
    _show(args, rows, rows, columns)
    return 1 if down else 0


def _row(job: JobInfo) -> dict[str, Any]:
    took = job.finished - job.started if job.finished and job.started else None
    when = datetime.datetime.fromtimestamp(job.submitted).strftime("%Y-%m-%d %H:%M:%S")
    return {**job.as_dict(), "submitted": when, "took_s": took}


def _show_job(args: argparse.Namespace, job: JobInfo) -> None:
    if args.json:
        print(json.dumps(job.as_dict()))
        return
    for key, value in _row(job).items():
        print(f"{key:>10}  {_cell(value)}")


def _show(
    args: argparse.Namespace, data: Any, rows: list[dict[str, Any]], columns: Sequence[str]
) -> None:
    """``data`` as JSON, or ``rows`` as a table of ``columns``."""
    if args.json:
        print(json.dumps(data))
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _write(path: Path, value: Any) -> None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        path.write_bytes(bytes(value))
    elif isinstance(value, str):
        path.write_text(value, encoding="utf-8")
    elif type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        import numpy as np

        with path.open("wb") as out:
            np.save(out, value, allow_pickle=False)
    else:
        path.write_bytes(pickle.dumps(value))


def _generate(name: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.key_secret"
    if secret.exists():
        print(f"offload: {secret} exists; not overwriting a secret key", file=sys.stderr)
        return 1
    public, secret_path = zmq.auth.create_certificates(str(directory), name)
    Path(secret_path).chmod(0o600)
    print(f"public key: {public}\nsecret key: {secret_path} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
