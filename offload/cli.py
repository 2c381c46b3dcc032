"""``offload``: the command line for users of edge servers.

``offload keys generate NAME [--dir DIR]`` writes a CurveZMQ key pair,
``NAME.key`` (public: give it to the server's operator, who puts it in the
directory of authorized keys) and ``NAME.key_secret`` (keep it; point
``OFFLOAD_CLIENT_KEY`` or ``client_key`` at it). A server's own pair is made
the same way; its public half is the clients' ``server_key``.

``offload deploy PATH`` deploys an app (a module file, a package or app
directory, a wheel) to every configured server, or each ``--server``, that
lets this client's key deploy: only the files a server lacks travel.
``offload deploy --rollback APP`` serves the app's previous version again;
``offload apps`` lists each server's apps, versions and fingerprints.

The other commands talk to the configured server (``--server``, else
``OFFLOAD_SERVER`` or ``offload.toml``) as the configured client key, and see
that key's jobs: ``jobs``, ``status JOB``, ``wait JOB``, ``result JOB [-o
FILE]``, ``cancel JOB``, ``usage``, ``clients`` (an operator's: who used the
server lately) and ``servers`` (every configured or
discovered server: where, how far, whether it answers, RTT, load, trusted).
Output is for people (times as dates and ages, sizes in KB and MB), or JSON
with ``--json``, every command's: a failure is then
``{"error": {"type": ..., "message": ...}}`` on standard output, and the exit
status is not 0 either way.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import zmq.auth

from . import _exceptions as errors
from . import cli_deploy, cli_fleet, cli_site, human
from . import cli_output as out
from .client import Client
from .config import Config
from .control import JobInfo
from .runtime.states import JobState
from .survey import survey
from .ui import cli as ui_cli

_COLUMNS = ("id", "state", "function", "submitted", "took", "cpu", "in", "out")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``offload`` command; the exit status is 0 on success."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser("--json" in argv).parse_args(argv)
    try:
        return int(args.run(args))
    except TimeoutError as exc:
        if args.command != "wait":  # a job's own TimeoutError, fetched with its result
            return _failed(args, exc)
        message = f"job {args.job} has not finished after {args.timeout:g} s"
        return _failed(args, TimeoutError(message), 3)
    except Exception as exc:  # offload's errors, or the exception a fetched job raised
        return _failed(args, exc)


def _failed(args: argparse.Namespace, exc: BaseException, status: int = 1) -> int:
    if args.json:
        print(out.error_json(exc))
    else:
        print(f"offload: {type(exc).__name__}: {exc}", file=sys.stderr)
    return status


class _Parser(argparse.ArgumentParser):
    """With ``--json`` on the command line, a usage error is a JSON error too (exit status 2)."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if not self.json_errors:
            super().error(message)
        print(json.dumps({"error": {"type": "UsageError", "message": f"{self.prog}: {message}"}}))
        sys.exit(2)


def _parser(json_errors: bool = False) -> argparse.ArgumentParser:
    _Parser.json_errors = json_errors
    parser = _Parser(prog="offload", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    keys = commands.add_parser("keys", help="CurveZMQ keys").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    generate = keys.add_parser("generate", help="write NAME.key and NAME.key_secret")
    generate.set_defaults(run=_generate, command="keys")
    generate.add_argument("name")
    generate.add_argument("--dir", default=".", help="where to write them (default: here)")
    generate.add_argument("--json", action="store_true", help="print JSON for scripts")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        sub.add_argument("--server", help="the edge server (default: the configured one)")
        sub.add_argument("--server-key", help="the server's public key file")
        sub.add_argument("--client-key", help="this client's secret key file")
        sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    jobs = command("jobs", _jobs, "list your jobs on the server, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default: 20)")
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
            sub.add_argument(
                "--timeout",
                type=human.parse_duration,
                default=None,
                help="give up after this long (30, 90s, 5min; exit status 3; default: never)",
            )
        if name == "result":
            sub.add_argument(
                "-o",
                "--output",
                help="write it to FILE: bytes as they are, str as UTF-8, a numpy array as "
                ".npy, anything else pickled; with --json, where an array goes (default: "
                "job-ID.npy)",
            )
            sub.add_argument(
                "--trust", action="append", default=[], help="app module its classes come from"
            )
    command("usage", _usage, "your totals on the server: jobs, CPU seconds, bytes")
    cli_site.add_commands(command, _client)  # a site of lent machines: credits, lending
    ui_cli.add_command(command)  # the app in the browser (offload[ui])
    command(
        "clients", _clients, "who used the server lately: calls, bytes, distance (operators only)"
    )
    cli_deploy.add_commands(commands)
    servers = command(
        "servers", _servers, "configured and discovered servers: distance, answering, RTT, load"
    )
    servers.add_argument("--app", metavar="MODULE", help="also say who holds this app's code")
    servers.add_argument(
        "--wait",
        type=human.parse_duration,
        default=2.0,
        metavar="DURATION",
        help="with servers=auto, browse the LAN this long (default: 2 s)",
    )
    cli_fleet.add_arguments(servers)
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
    if args.json:
        print(json.dumps([j.as_dict() for j in jobs]))
        return 0
    if not jobs:
        print("no jobs" + (f" in state {', '.join(args.state)}" if args.state else ""))
        return 0
    print(out.table([out.job_row(j) for j in jobs], _COLUMNS))
    if len(jobs) == args.limit:
        more = ["offload jobs", *(f"--state {s}" for s in args.state)]
        more += [f"--limit {args.limit}", f"--before {jobs[-1].id}"]
        print(f"(the newest {len(jobs)} shown; older ones: {' '.join(more)})", file=sys.stderr)
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
        if args.json or not sys.stderr.isatty():
            job = client.server.wait(args.job, args.timeout)
        else:
            job = _wait_showing_progress(client, args.job, args.timeout)
    _show_job(args, job)
    return 0 if job.state is JobState.DONE else 1


def _wait_showing_progress(client: Client, job_id: int, timeout: float | None) -> JobInfo:
    """Wait a second at a time, showing the job's state and time on the terminal's last line."""
    start = time.monotonic()
    try:
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} has not finished after {timeout:g} s")
            try:
                return client.server.wait(job_id, 1.0 if left is None else min(1.0, left))
            except TimeoutError:
                info = client.server.status(job_id)
                waited = human.duration(time.monotonic() - start)
                print(f"\rjob {job_id}: {info.state}, waited {waited}   ", end="", file=sys.stderr)
    finally:
        print(file=sys.stderr)


def _result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        value = client.server.result(args.job, args.trust)
    if args.json:
        saved: list[Path] = []
        npy = Path(args.output or f"job-{args.job}.npy")
        print(json.dumps(out.typed(value, npy, saved)))
    elif args.output:
        _write(Path(args.output), value)
        print(f"wrote job {args.job}'s result to {args.output}", file=sys.stderr)
    else:
        print(repr(value))
    return 0


def _usage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        usage = client.server.usage()
    if args.json:
        print(json.dumps(usage))
        return 0
    fields = [
        ("jobs", str(usage.get("jobs", 0))),
        ("cpu", human.seconds(usage.get("cpu_s", 0.0))),
        ("bytes in", human.size(usage.get("bytes_in", 0))),
        ("bytes out", human.size(usage.get("bytes_out", 0))),
    ]
    if usage.get("owner"):
        fields.append(("owner", str(usage["owner"])))
    print(out.fields_text(fields))
    return 0


def _clients(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.server.clients()
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no clients seen", file=sys.stderr)
    else:
        print(out.table([out.client_row(row) for row in rows], out.CLIENT_COLUMNS))
    return 0


def _servers(args: argparse.Namespace) -> int:
    config = Config.load(
        server=args.server,
        server_key=args.server_key,
        client_key=args.client_key,
        profile_cache="",
        **cli_fleet.settings(args),
    )
    if not (config.server or config.backup_server or config.servers):
        raise errors.ConfigError(
            "no server configured: give --server, --servers auto, OFFLOAD_SERVER or OFFLOAD_SERVERS"
        )
    rows = survey(config, args.wait, args.app)
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no servers found", file=sys.stderr)
    else:
        print(out.table([out.server_row(row) for row in rows], out.SERVER_COLUMNS))
        for row in rows:
            if row.get("error"):
                print(f"{row['address']}: {row['error']}", file=sys.stderr)
    configured_down = any(r["role"] != "discovered" and not r["answering"] for r in rows)
    return 1 if configured_down or not rows else 0


def _show_job(args: argparse.Namespace, job: JobInfo) -> None:
    if args.json:
        print(json.dumps(job.as_dict()))
    else:
        print(out.fields_text(out.job_fields(job)))


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


def _generate(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{args.name}.key_secret"
    if secret.exists():
        raise FileExistsError(f"{secret} exists; not overwriting a secret key")
    public, secret_path = zmq.auth.create_certificates(str(directory), args.name)
    Path(secret_path).chmod(0o600)
    if args.json:
        print(json.dumps({"public": str(public), "secret": str(secret_path)}))
    else:
        print(f"public key: {public}\nsecret key: {secret_path} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
