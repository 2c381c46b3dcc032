"""``edge-server service install|uninstall``: the edge server as a systemd service (a Pi's).

``install`` writes ``edge-server.service`` to ``/etc/systemd/system``: the
server runs as a user of its own (created if missing), restarts after a
failure, cannot gain privileges, sees the file system read-only except its
data directory (``ProtectSystem=strict``, ``ReadWritePaths=``), is capped at
``MemoryMax=`` and owns its cgroup subtree (``Delegate=yes``: on cgroup v2 the
per-job groups of :mod:`edge_server.pids` live there). ``KillMode=mixed``: a
stop sends SIGTERM to the server alone, which gives running jobs
``--close-grace`` to checkpoint and stops its workers itself; whatever is
left when ``TimeoutStopSec=`` (the grace plus a margin) runs out is killed.

``--closing 22:00`` adds closing time: a timer runs ``edge-server stop
--pid-file ...`` then (checkpointed jobs hand their state home first), and
the server runs with ``--purge-on-exit`` (no job data stays overnight).
``--opening 08:00`` starts it again in the morning. ``--dry-run`` prints the
files instead; ``--unit-dir DIR`` writes them there and does nothing else.
Arguments after ``--`` go to the server (``-- --app my_app --config FILE``).
"""

from __future__ import annotations

import argparse
import math
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from offload._exceptions import ConfigError
from offload.config import read_toml
from offload.human import parse_duration

from .config import ServerConfig

UNIT_DIR = "/etc/systemd/system"
NAME = "edge-server"
PID_FILE = f"/run/{NAME}/{NAME}.pid"
STOP_MARGIN = 30  # seconds past --close-grace: closing the store, purging, stopping workers
FILES = tuple(f"{NAME}{end}" for end in (".service", "-closing.service", "-closing.timer"))
FILES += (f"{NAME}-opening.timer",)


def _clock(text: str) -> str:
    """``22:00`` -> ``22:00`` (checked: a time of day for OnCalendar=)."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day like 22:00")
    return f"{int(match[1]):02d}:{match[2]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-server service",
        description="Run the edge server as a systemd service.",
        epilog="edge-server service install --closing 22:00 -- --config /etc/edge/server.toml",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="write the unit(s), enable and start them")
    install.add_argument("--user", default="edge", help="run as this user (default: %(default)s)")
    install.add_argument(
        "--data-dir",
        default="/var/lib/edge-server",
        help="the server's --data-dir, its only writable place (default: %(default)s)",
    )
    install.add_argument(
        "--working-dir",
        help="where --app modules are found (default: the data directory)",
    )
    install.add_argument(
        "--memory-max",
        default="75%",
        help="MemoryMax= of the whole service, workers included (default: %(default)s)",
    )
    install.add_argument(
        "--closing",
        type=_clock,
        metavar="HH:MM",
        help="stop every day at this time (checkpoints handed home, job data deleted)",
    )
    install.add_argument(
        "--opening", type=_clock, metavar="HH:MM", help="start every day at this time"
    )
    install.add_argument("--dry-run", action="store_true", help="print the files, change nothing")
    install.add_argument(
        "--unit-dir",
        default=UNIT_DIR,
        help="write the files here and do nothing else (default: %(default)s, then "
        "create the user, systemctl daemon-reload and enable --now)",
    )
    install.add_argument("server_args", nargs="*", help="after --: edge-server's own options")
    uninstall = commands.add_parser("uninstall", help="stop, disable and remove the unit(s)")
    uninstall.add_argument("--unit-dir", default=UNIT_DIR, help="(default: %(default)s)")
    return parser


def close_grace(server_args: Sequence[str]) -> float:
    """The server's --close-grace in seconds: from its arguments, its --config, or the default."""
    grace: float = ServerConfig().close_grace
    args = list(server_args)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            value = read_toml(Path(args[i + 1]), "edge-server").get("close-grace")
            if value is not None:
                grace = parse_duration(str(value))
    for i, arg in enumerate(args):
        if arg.startswith("--close-grace="):
            grace = parse_duration(arg.partition("=")[2])
        elif arg == "--close-grace" and i + 1 < len(args):
            grace = parse_duration(args[i + 1])
    return grace


def _command(*args: str) -> str:
    """A command line for ExecStart=: shell-quoted, systemd's % and $ escaped."""
    line = shlex.join([sys.executable, "-m", "edge_server", *args])
    return line.replace("%", "%%").replace("$", "$$")


def units(
    *,
    user: str,
    data_dir: str,
    server_args: Sequence[str],
    working_dir: str | None = None,
    memory_max: str = "75%",
    closing: str | None = None,
    opening: str | None = None,
) -> dict[str, str]:
    """File name -> text of the unit files to install."""
    grace = math.ceil(close_grace(server_args))
    server = ["--data-dir", data_dir, "--pid-file", PID_FILE]
    if closing is not None and "--purge-on-exit" not in server_args:
        server.append("--purge-on-exit")
    state = ""
    if data_dir.startswith("/var/lib/"):  # systemd creates it, owned by the user
        state = f"StateDirectory={data_dir[len('/var/lib/') :]}\n"
    files = {
        f"{NAME}.service": f"""\
[Unit]
Description=offload edge server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={_command(*server, *server_args)}
WorkingDirectory={working_dir or data_dir}
{state}RuntimeDirectory={NAME}
Restart=on-failure
RestartSec=5
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data_dir}
PrivateTmp=yes
MemoryMax={memory_max}
Delegate=yes
KillMode=mixed
TimeoutStopSec={grace + STOP_MARGIN}

[Install]
WantedBy=multi-user.target
"""
    }
    if closing is not None:
        files[f"{NAME}-closing.service"] = f"""\
[Unit]
Description=offload edge server: closing time (checkpoints handed home, job data deleted)

[Service]
Type=oneshot
User={user}
ExecStart={_command("stop", "--pid-file", PID_FILE, "--timeout", str(grace + STOP_MARGIN))}
TimeoutStartSec={grace + 2 * STOP_MARGIN}
"""
        files[f"{NAME}-closing.timer"] = _timer(closing, "closing time", f"{NAME}-closing.service")
    if opening is not None:
        files[f"{NAME}-opening.timer"] = _timer(opening, "opening time", f"{NAME}.service")
    return files


def _timer(clock: str, what: str, unit: str) -> str:
    return f"""\
[Unit]
Description=offload edge server: {what} at {clock}

[Timer]
OnCalendar=*-*-* {clock}:00
AccuracySec=1s
Unit={unit}

[Install]
WantedBy=timers.target
"""


def _systemctl(*args: str) -> bool:
    """Run systemctl; say so (and what to run by hand) when it fails or is missing."""
    command = ["systemctl", *args]
    if shutil.which("systemctl") is None:
        print(f"edge-server service: no systemctl here; run: {shlex.join(command)}")
        return False
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        print(f"edge-server service: {shlex.join(command)} failed ({done.returncode})")
    return done.returncode == 0


def _ensure_user(user: str, home: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--home-dir", home),
                *("--no-create-home", "--shell", "/usr/sbin/nologin", user),
            ],
            check=True,
        )
        print(f"edge-server service: created system user {user}")


def install(args: argparse.Namespace) -> int:
    try:
        files = units(
            user=args.user,
            data_dir=os.path.abspath(args.data_dir),
            server_args=args.server_args,
            working_dir=args.working_dir and os.path.abspath(args.working_dir),
            memory_max=args.memory_max,
            closing=args.closing,
            opening=args.opening,
        )
    except (ConfigError, ValueError) as exc:
        print(f"edge-server service: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for name, text in files.items():
            print(f"# {Path(args.unit_dir) / name}\n{text}")
        return 0
    system = os.path.abspath(args.unit_dir) == UNIT_DIR
    if system and os.geteuid() != 0:
        print("edge-server service: run it as root (sudo)", file=sys.stderr)
        return 1
    if system:
        _ensure_user(args.user, os.path.abspath(args.data_dir))
        data = Path(args.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, args.user, args.user)
    directory = Path(args.unit_dir)
    directory.mkdir(parents=True, exist_ok=True)
    unwanted = [name for name in FILES if name not in files and (directory / name).exists()]
    timers = [name for name in unwanted if name.endswith(".timer")]
    if system and timers:  # an earlier install's timers that this one does not want go
        _systemctl("disable", "--now", *timers)
    for name in unwanted:
        (directory / name).unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
        print(f"edge-server service: wrote {directory / name}")
    if system and _systemctl("daemon-reload"):
        enable = [name for name in files if not name.endswith("closing.service")]
        _systemctl("enable", "--now", *enable)
        _systemctl("restart", f"{NAME}.service")  # a reinstall runs the new unit
    return 0


def uninstall(args: argparse.Namespace) -> int:
    directory = Path(args.unit_dir)
    present = [name for name in FILES if (directory / name).exists()]
    system = os.path.abspath(args.unit_dir) == UNIT_DIR
    if system and present:
        _systemctl("disable", "--now", *[n for n in present if not n.endswith("closing.service")])
    for name in present:
        (directory / name).unlink()
        print(f"edge-server service: removed {directory / name}")
    if system:
        _systemctl("daemon-reload")
        print("edge-server service: the user and the data directory are left in place")
    return 0


def main(argv: Sequence[str]) -> int:
    """``edge-server service install|uninstall ...``."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:  # everything after -- belongs to the server, options and all
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    args = _parser().parse_args(argv)
    if args.command == "install":
        args.server_args = [*args.server_args, *extra]
        return install(args)
    return uninstall(args)
