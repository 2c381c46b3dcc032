"""``edge-server service install``: the systemd units of a Pi's server, and closing time.

The units are written to a temporary directory (``--unit-dir``) and read back
with configparser; where ``systemd-analyze`` exists it checks them too.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_server import cli, service

ROOT = Path(__file__).resolve().parent.parent


def read(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def install(tmp_path: Path, *args: str) -> Path:
    units = tmp_path / "units"
    assert cli.main(["service", "install", "--unit-dir", str(units), *args]) == 0
    return units


def test_the_unit_has_each_directive(tmp_path):
    data = tmp_path / "data"
    units = install(
        tmp_path, "--user", "edgy", "--data-dir", str(data), "--memory-max", "600M",
        "--", "--app", "my_app", "--close-grace", "45s",
    )  # fmt: skip
    assert sorted(os.listdir(units)) == ["edge-server.service"]
    s = read(units / "edge-server.service")["Service"]
    assert s["Restart"] == "on-failure"
    assert s["User"] == s["Group"] == "edgy"
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert str(data) in s["ReadWritePaths"].split()
    assert s["MemoryMax"] == "600M"
    assert s["Delegate"] == "yes"
    assert s["KillMode"] == "mixed"  # SIGTERM to the server only: it stops its workers
    assert int(s["TimeoutStopSec"]) >= 45 + 10  # the close grace and then some
    command = shlex.split(s["ExecStart"])
    assert command[:3] == [sys.executable, "-m", "edge_server"]
    assert command[command.index("--data-dir") + 1] == str(data)
    assert command[command.index("--pid-file") + 1] == service.PID_FILE
    assert command[-4:] == ["--app", "my_app", "--close-grace", "45s"]
    assert "--purge-on-exit" not in command
    assert read(units / "edge-server.service")["Install"]["WantedBy"] == "multi-user.target"


def test_closing_time_adds_a_timer_a_stop_and_purge_on_exit(tmp_path):
    units = install(tmp_path, "--closing", "22:00", "--opening", "7:30", "--", "--app", "a")
    main = shlex.split(read(units / "edge-server.service")["Service"]["ExecStart"])
    assert "--purge-on-exit" in main
    timer = read(units / "edge-server-closing.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 22:00:00"
    assert timer["Timer"]["Unit"] == "edge-server-closing.service"
    assert timer["Install"]["WantedBy"] == "timers.target"
    closing = read(units / "edge-server-closing.service")["Service"]
    assert closing["Type"] == "oneshot"
    stop = shlex.split(closing["ExecStart"])
    assert stop[1:4] == ["-m", "edge_server", "stop"]
    assert stop[stop.index("--pid-file") + 1] == main[main.index("--pid-file") + 1]
    grace = 10 + service.STOP_MARGIN  # the default close grace
    assert float(stop[stop.index("--timeout") + 1]) >= grace
    assert int(closing["TimeoutStartSec"]) > grace
    opening = read(units / "edge-server-opening.timer")["Timer"]
    assert (opening["OnCalendar"], opening["Unit"]) == ("*-*-* 07:30:00", "edge-server.service")
    # installed again without closing time: the timers go, and so does --purge-on-exit
    install(tmp_path)
    assert sorted(os.listdir(units)) == ["edge-server.service"]
    assert "--purge-on-exit" not in read(units / "edge-server.service")["Service"]["ExecStart"]


def test_close_grace_from_a_config_file_sets_the_stop_timeout(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('[edge-server]\nclose-grace = "5min"\n')
    units = install(tmp_path, "--", "--config", str(config))
    assert int(read(units / "edge-server.service")["Service"]["TimeoutStopSec"]) >= 300


def test_dry_run_prints_and_writes_nothing(tmp_path, capsys):
    units = tmp_path / "units"
    args = ["service", "install", "--dry-run", "--unit-dir", str(units), "--closing", "22:00"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"# {units / 'edge-server.service'}" in out and "OnCalendar=*-*-* 22:00:00" in out
    assert not units.exists()


def test_uninstall_removes_the_units(tmp_path):
    units = install(tmp_path, "--closing", "22:00")
    assert len(os.listdir(units)) == 3
    assert cli.main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert os.listdir(units) == []


def test_a_bad_time_of_day_is_refused(tmp_path):
    with pytest.raises(SystemExit) as exc:
        install(tmp_path, "--closing", "25:00")
    assert exc.value.code == 2


def test_percent_and_dollar_reach_the_server_unchanged(tmp_path):
    units = install(tmp_path, "--", "--app", "50%$HOME")
    # systemd turns %% into % and $$ into $
    assert "50%%$$HOME" in read(units / "edge-server.service")["Service"]["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path):
    units = install(tmp_path, "--closing", "22:00", "--opening", "08:00", "--", "--app", "a")
    files = sorted(str(p) for p in units.iterdir())
    done = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if str(units) in line]
    assert done.returncode == 0 and complaints == [], done.stderr


def test_closing_time_stops_the_server_and_deletes_its_job_data(tmp_path, monkeypatch):
    """The units' own command lines: the server as the main unit runs it, then closing time."""
    monkeypatch.setattr(service, "PID_FILE", str(tmp_path / "edge-server.pid"))
    data = tmp_path / "data"
    data.mkdir()
    units = install(
        tmp_path, "--data-dir", str(data), "--closing", "22:00",
        "--", "--insecure", "--bind", "tcp://127.0.0.1:*", "--app", "tests.apps", "--workers", "1",
    )  # fmt: skip
    main = shlex.split(read(units / "edge-server.service")["Service"]["ExecStart"])
    stop = shlex.split(read(units / "edge-server-closing.service")["Service"]["ExecStart"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(main, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "edge-server.pid").exists() and time.monotonic() < deadline:
            assert server.poll() is None
            time.sleep(0.05)
        assert any(data.iterdir())  # the job store
        done = subprocess.run(stop, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert server.wait(timeout=10) == 0
        assert server.stderr is not None
        assert "purged" in server.stderr.read()
        assert not (tmp_path / "edge-server.pid").exists()
    finally:
        server.kill()
        server.wait()


def test_the_arm64_check_is_an_executable_bash_script():
    script = ROOT / "deploy" / "check-arm64.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def test_installing_for_real_creates_the_user_and_starts_the_units(tmp_path, monkeypatch):
    """What install does beyond writing files, with useradd, chown and systemctl recorded."""
    units = tmp_path / "system"
    monkeypatch.setattr(service, "UNIT_DIR", str(units))
    ran: list[list[str]] = []

    def run(command, check=False):
        ran.append(list(command))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(service.subprocess, "run", run)
    monkeypatch.setattr(service.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(service.os, "geteuid", lambda: 0)
    monkeypatch.setattr(service.shutil, "chown", lambda *a: ran.append(["chown", *map(str, a)]))
    user = "no-such-user-k18"
    data = tmp_path / "data"
    args = ["service", "install", "--unit-dir", str(units), "--user", user]
    assert cli.main([*args, "--data-dir", str(data), "--closing", "22:00"]) == 0
    assert ran[0][0] == "useradd" and ran[0][-1] == user and "--system" in ran[0]
    assert ran[1] == ["chown", str(data), user, user] and data.is_dir()
    assert ran[2:] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "edge-server.service", "edge-server-closing.timer"],
        ["systemctl", "restart", "edge-server.service"],
    ]
    ran.clear()
    assert cli.main([*args, "--data-dir", str(data)]) == 0  # again, without closing time
    assert ["systemctl", "disable", "--now", "edge-server-closing.timer"] in ran
    assert sorted(os.listdir(units)) == ["edge-server.service"]
    ran.clear()
    assert cli.main(["service", "uninstall", "--unit-dir", str(units)]) == 0
    assert ran == [
        ["systemctl", "disable", "--now", "edge-server.service"],
        ["systemctl", "daemon-reload"],
    ]
    assert os.listdir(units) == []
