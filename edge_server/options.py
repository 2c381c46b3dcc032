"""The ``edge-server`` command line: every option, its help and readable default, and TOML.

:func:`parse_args` turns arguments (after the ``--config`` TOML file's
settings, which come first so arguments win) into the frozen
:class:`~edge_server.config.ServerConfig` the server is built from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from offload._exceptions import ConfigError
from offload.config import read_toml
from offload.human import duration, parse_duration, parse_size, size

from . import advertise, apps, dashboard, site_options
from .config import ServerConfig


def parse_args(argv: Sequence[str] | None = None) -> tuple[ServerConfig, argparse.Namespace]:
    """Build the server config from command-line arguments."""
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="edge-server",
        description="Serve @offload functions to nearby clients.",
        epilog="commands:\n  edge-server stop --pid-file FILE [--timeout S]\n"
        "      close a server started with --pid-file (its checkpointed jobs hand their "
        "state home first)\n      and wait until it has exited\n"
        "  edge-server service install|uninstall ...  run it as a systemd service\n\n"
        "sizes take units (4096, 64KB, 512MB, 2GB); durations too (30, 90s, 5min, 12h, 7d)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bind",
        default=defaults.bind,
        help="ZeroMQ address to listen on; port * picks a free one (default: %(default)s)",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and serve its @offload functions (repeatable); found as python -m "
        "finds it: in the working directory, then on PYTHONPATH and sys.path",
    )
    parser.add_argument(
        "--allow-type",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="also accept instances of this type in arguments (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="worker processes (default: the CPU count, %(default)s here)",
    )
    parser.add_argument(
        "--allow-code-shipping",
        action="store_true",
        help="accept functions sent by value: runs client code, trusted clients only",
    )
    parser.add_argument(
        "--allow-inline",
        action="store_true",
        help='run @offload(isolation="thread") calls of --app functions in threads of this '
        "process: no worker hop, but no crash, memory or CPU isolation and no stopping a hung "
        "call; trusted small functions only (default: refused)",
    )
    parser.add_argument(
        "--max-message-size",
        type=parse_size,
        default=defaults.max_message_size,
        metavar="SIZE",
        help=f"largest call accepted (default: {size(defaults.max_message_size)})",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help="calls that may wait for a worker; beyond them ServerBusy (default: %(default)s)",
    )
    parser.add_argument(
        "--compression",
        choices=("auto", "off"),
        default=defaults.compression,
        help="lz4 where a sample shows it pays, or never (default: %(default)s)",
    )
    parser.add_argument(
        "--max-call-seconds",
        type=parse_duration,
        default=defaults.max_call_seconds,
        metavar="DURATION",
        help="the longest any call may run, whatever its client asks "
        f"(default: {duration(defaults.max_call_seconds)})",
    )
    parser.add_argument(
        "--busy-poll-us",
        type=float,
        default=defaults.busy_poll * 1e6,
        help="after handing out a job, poll this many microseconds for its reply before "
        "sleeping, only while a core is spare (nothing queued, fewer jobs than cores); 0: never "
        "(default: %(default)g us)",
    )
    parser.add_argument(
        "--close-grace",
        type=parse_duration,
        default=defaults.close_grace,
        metavar="DURATION",
        help="on SIGTERM, how long running jobs get to checkpoint or finish before the "
        f"server exits (default: {duration(defaults.close_grace)})",
    )
    parser.add_argument(
        "--orphans",
        choices=("stop", "keep"),
        default=defaults.orphans,
        help="jobs of a client that disconnected: stop them, or let them run and keep "
        "their results for offload result (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=defaults.data_dir,
        help="where the job store lives: history, waiting calls, kept results, usage "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--keep-results",
        choices=("orphaned", "all"),
        default=defaults.keep_results,
        help="keep the results of jobs whose client is gone, or of all jobs, for "
        "offload result (default: %(default)s)",
    )
    parser.add_argument(
        "--result-ttl",
        type=parse_duration,
        default=defaults.result_ttl,
        metavar="DURATION",
        help=f"how long a kept result stays (default: {duration(defaults.result_ttl)})",
    )
    parser.add_argument(
        "--history-ttl",
        type=parse_duration,
        default=defaults.history_ttl,
        metavar="DURATION",
        help="how long a finished job stays in the history "
        f"(default: {duration(defaults.history_ttl)})",
    )
    parser.add_argument(
        "--secret-key",
        help="this server's CurveZMQ secret key file (offload keys generate NAME); "
        "with --authorized-keys, or --insecure (default: neither, and the server refuses "
        "to start)",
    )
    parser.add_argument(
        "--authorized-keys", help="directory of the public keys (*.key) of allowed clients"
    )
    parser.add_argument(
        "--operator-keys",
        metavar="DIR",
        help="directory of the public keys (*.key) of this server's operators: they may list "
        "its clients (offload clients); needs --secret-key",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no encryption, no authentication: anyone who can connect runs jobs (a lab bench)",
    )
    parser.add_argument(
        "--limit-memory-mb",
        type=float,
        help="memory a job may allocate, in MB (RLIMIT_DATA over the worker's own; "
        "default: no limit)",
    )
    parser.add_argument(
        "--limit-cpu", type=float, help="CPU seconds a job may use (default: no limit)"
    )
    parser.add_argument(
        "--limit-files", type=int, help="files a job may have open at once (default: no limit)"
    )
    parser.add_argument(
        "--limit-processes",
        type=int,
        help="processes and threads a job may start, against fork bombs (default: no limit)",
    )
    parser.add_argument(
        "--limit-disk-mb",
        type=float,
        help="disk a job may write, in MB: its scratch directory (cwd, TMPDIR) and /dev/shm "
        "(a private tmpfs as root), and any one file; its files are deleted when it ends",
    )
    parser.add_argument(
        "--client-running",
        type=int,
        default=defaults.max_running_per_client,
        help="calls of one client running at once (default: no limit but the workers)",
    )
    parser.add_argument(
        "--client-timeout",
        type=parse_duration,
        default=defaults.client_timeout,
        metavar="DURATION",
        help="silence after which a client counts as gone "
        f"(default: {duration(defaults.client_timeout)})",
    )
    # -- byte budgets (issue 19) --
    parser.add_argument(
        "--memory-budget",
        type=_size,
        default=defaults.memory_budget,
        metavar="SIZE",
        help="bytes all clients together may make the server hold: queued calls, running "
        "calls' payloads, unsent replies; past it calls get ServerBusy (K, M, G suffixes; "
        f"default {_readable(defaults.memory_budget)})",
    )
    parser.add_argument(
        "--client-budget",
        type=_size,
        default=defaults.client_budget,
        metavar="SIZE",
        help="the same for one client; its replies past it are dropped and their jobs say so "
        f"(default {_readable(defaults.client_budget)})",
    )
    parser.add_argument(
        "--payload-file-min",
        type=_size,
        default=defaults.payload_file_min,
        metavar="SIZE",
        help="queued payloads this large go to files written off the event loop "
        f"(default {_readable(defaults.payload_file_min)})",
    )
    site_options.add(parser, defaults)  # a site of lent machines on Dask
    apps.add_arguments(parser, defaults)
    parser.add_argument(
        "--purge-on-exit",
        action="store_true",
        help="delete every piece of job data this server stored when it exits",
    )
    parser.add_argument(
        "--pid-file",
        help="write this process's id here while serving (for edge-server stop)",
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when standard input closes (a supervising parent that dies takes us along)",
    )
    parser.add_argument(
        "--print-address",
        action="store_true",
        help="print the bound address on stdout once ready (for supervisors)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        type=str.upper,
        help="the least severe messages logged (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line, for a log collector (default: %(default)s)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file of options under their long names (data-dir = ...), at the top "
        "or in an [edge-server] table; options on the command line win",
    )
    advertise.add_arguments(parser)
    dashboard.add_arguments(parser)  # the operator's view (offload[ui])
    argv = list(sys.argv[1:] if argv is None else argv)
    from_file = _config_file_args(argv)
    known = {o for action in parser._actions for o in action.option_strings}
    unknown = sorted({a for a in from_file if a.startswith("--")} - known)
    if unknown:
        parser.error(f"--config: unknown options {', '.join(o[2:] for o in unknown)}")
    args = parser.parse_args([*from_file, *argv])
    if not args.secret_key and not args.insecure:
        parser.error("give --secret-key and --authorized-keys, or --insecure for an open server")
    try:
        advertise.check_arguments(args)
        dashboard.check_arguments(args)
        config = ServerConfig(
            bind=args.bind,
            apps=tuple(args.app),
            types=tuple(args.allow_type),
            workers=args.workers,
            allow_code_shipping=args.allow_code_shipping,
            allow_inline=args.allow_inline,
            max_message_size=args.max_message_size,
            queue_size=args.queue_size,
            compression=args.compression,
            busy_poll=args.busy_poll_us / 1e6,
            max_call_seconds=args.max_call_seconds,
            close_grace=args.close_grace,
            purge_on_exit=args.purge_on_exit,
            orphans=args.orphans,
            data_dir=args.data_dir,
            keep_results=args.keep_results,
            result_ttl=args.result_ttl,
            history_ttl=args.history_ttl,
            client_timeout=args.client_timeout,
            max_running_per_client=args.client_running,
            limit_memory=int(args.limit_memory_mb * 2**20) if args.limit_memory_mb else None,
            limit_cpu=args.limit_cpu,
            limit_files=args.limit_files,
            limit_processes=args.limit_processes,
            limit_disk=int(args.limit_disk_mb * 2**20) if args.limit_disk_mb else None,
            secret_key=args.secret_key,
            authorized_keys=args.authorized_keys,
            operator_keys=args.operator_keys,
            location=args.location,
            memory_budget=args.memory_budget,
            client_budget=args.client_budget,
            payload_file_min=args.payload_file_min,
            **site_options.values(args),
            deployers=args.deployers,
            deploy_max_bytes=args.deploy_max_bytes,
            deploy_max_files=args.deploy_max_files,
            deploy_keep=args.deploy_keep,
            deploy_check_seconds=args.deploy_check_seconds,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    return config, args


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def _size(text: str) -> int:
    """A byte count: ``1073741824``, ``1G``, ``256M``, ``64K`` (binary units)."""
    number, unit = text.strip().upper().removesuffix("B"), ""
    if number[-1:] in _UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1G, 256M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be positive")
    return int(value)


def _readable(size: int) -> str:
    for unit in ("G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def _config_file_args(argv: Sequence[str]) -> list[str]:
    """The options of ``--config FILE`` (TOML) as command-line arguments, to go first.

    Going through the parser checks their types and choices like the command
    line's own; coming first, the command line's own options win (repeatable
    ones, like ``--app``, add to the file's).
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--config")
    path = early.parse_known_args(argv)[0].config
    if path is None:
        return []
    try:
        table = read_toml(Path(path), "edge-server")
    except ConfigError as exc:
        raise SystemExit(f"edge-server: {exc}") from exc
    args: list[str] = []
    for key, value in table.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            args.append(option)
        elif value is False:
            continue
        elif isinstance(value, list):
            for item in value:
                args += [option, str(item)]
        else:
            args += [option, str(value)]
    return args
