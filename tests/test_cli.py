"""The command lines: edge-server (clear errors, readable help) and offload (people and JSON)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import offload
from offload import human

from . import apps

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_server", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "workers must be at least 1"),
        (["--app", "no_such_module_here"], "cannot import app module 'no_such_module_here'"),
        (["--allow-type", "tests.apps:Nope"], "cannot import type 'tests.apps:Nope'"),
        (["--bind", "tcp://127.0.0.1:notaport"], "cannot bind"),
        (["--limit-cpu", "-1"], "limit_cpu must be positive"),
        (["--secret-key", "/nonexistent"], "secret_key and authorized_keys go together"),
    ],
)
def test_bad_options_fail_clearly(args, message):
    result = run("--insecure", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_an_open_server_must_be_asked_for():
    result = run("--bind", "tcp://127.0.0.1:*")
    assert result.returncode == 2 and "--insecure" in result.stderr


def test_help_and_console_script():
    assert "--allow-code-shipping" in run("--help").stdout
    script = shutil.which("edge-server")
    if script is not None:  # installed with pip install -e .
        out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
        assert "--app" in out.stdout


AS_CONSOLE_SCRIPT = (  # like the installed edge-server: the working directory not on sys.path
    "import sys; del sys.path[0]; from edge_server.cli import main; sys.exit(main())"
)


def test_app_modules_are_found_in_the_working_directory(tmp_path):
    (tmp_path / "myapp.py").write_text(
        "from offload import offload\n\n\n@offload\ndef double(x):\n    return 2 * x\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--app", "myapp", "--insecure", "--bind", "tcp://127.0.0.1:*"]
    args += ["--print-address", "--exit-with-stdin", "--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(
        [sys.executable, "-c", AS_CONSOLE_SCRIPT, *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        address = server.stdout.readline().strip()
        assert address.startswith("tcp://")
        sys.path.insert(0, str(tmp_path))
        try:
            import myapp  # the same module the server imported

            with offload.Client(address, mode="remote", heartbeat_timeout=30) as client:
                assert client.submit(myapp.double, 21).result(timeout=30) == 42
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("myapp", None)
            server.stdin.close()
            server.wait(30)


def test_a_missing_app_module_says_where_it_looked(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", AS_CONSOLE_SCRIPT, "--app", "nosuchapp", "--insecure"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no module 'nosuchapp' in " in done.stderr
    assert str(tmp_path) in done.stderr and str(ROOT) in done.stderr


def test_help_documents_every_option_with_readable_defaults(tmp_path):
    parser_help = run("--help")
    assert parser_help.returncode == 0
    text = parser_help.stdout
    assert "edge-server stop --pid-file FILE" in text
    assert "512 MB" in text and "7 days" in text and "30 days" in text
    assert not re.search(r"\d{6,}|\d\.\de\+", text), "a raw number in --help"
    from edge_server.options import parse_args

    with pytest.raises(SystemExit):  # --help prints and exits; it starts nothing
        parse_args(["--help"])
    section = text.split("\noptions:\n")[1].split("\n\n")[0]
    entries = re.split(r"\n(?=  -)", section)
    assert len(entries) > 30
    for entry in entries:
        option = entry.split()[0].rstrip(",")
        described = re.sub(r"^\s*(-\S+)( [A-Z_:]+| \{[^}]*\})?,?", "", entry, count=2)
        assert described.strip(), f"{option} has no help"
    stop_help = run("stop", "--help")
    assert stop_help.returncode == 0 and "--pid-file" in stop_help.stdout
    assert not list(tmp_path.iterdir())


def test_sizes_and_durations_take_units():
    from edge_server.options import parse_args

    config, _ = parse_args(
        ["--insecure", "--max-message-size", "64MB", "--result-ttl", "2d", "--close-grace", "90s"]
    )
    assert config.max_message_size == 64 * 2**20
    assert (config.result_ttl, config.close_grace) == (2 * 86400, 90)
    with pytest.raises(SystemExit):
        parse_args(["--insecure", "--max-message-size", "lots"])


# -- the offload command line: output for people, JSON for scripts ------------------------------


def offload_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_jobs_status_and_usage_for_people(make_server):
    from .test_jobs import wait_for

    server = make_server("--keep-results", "all")
    at = ("--server", server.address)
    nap = offload.offload(apps.nap.__wrapped__, mode="remote")
    echo = offload.offload(apps.echo.__wrapped__, mode="remote")
    with offload.Client(server) as client:
        data = os.urandom(3000)  # incompressible: 3,000 bytes each way
        assert client.submit(echo, data).result(timeout=30) == data
        running = client.submit(nap, 30.0)
        wait_for(lambda: client.server.jobs(states=["running"]))
        table = offload_cli("jobs", *at)
        status = offload_cli("status", str(client.server.jobs()[1].id), *at)
        page = offload_cli("jobs", "--limit", "1", *at)
        assert offload_cli("cancel", str(client.server.jobs()[0].id), *at).returncode == 0
        with pytest.raises(offload.JobCancelled):
            running.result(timeout=30)
        usage = offload_cli("usage", *at)
    assert table.returncode == 0, table.stderr
    header, newest, older = table.stdout.splitlines()
    assert header.split() == ["id", "state", "function", "submitted", "took", "cpu", "in", "out"]
    assert "running" in newest and "so far" in newest  # elapsed time of a running job
    assert re.search(r" ago | just now ", older) and "KB" in older  # when, and sizes in units
    assert not re.search(r"\de[+-]\d", table.stdout)
    assert "(the newest" not in table.stderr  # fewer than --limit: nothing more to page
    assert len(page.stdout.splitlines()) == 2
    assert f"--before {newest.split()[0]}" in page.stderr  # the next page, spelled out
    fields = dict(line.strip().split("  ", 1) for line in status.stdout.splitlines())
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ", fields["submitted"])
    assert fields["bytes in"].strip().endswith("KB")
    assert re.search(r"\(.* ago\)|\(just now\)", fields["submitted"])
    assert usage.returncode == 0 and re.search(r"jobs\s+2", usage.stdout)


def test_every_command_speaks_json_and_errors_are_json(make_server, tmp_path):
    server = make_server("--keep-results", "all")
    at = ("--server", server.address, "--json")
    echo = offload.offload(apps.echo.__wrapped__, mode="remote")
    value = {"n": 2, "x": 1.5, "items": (1, "two"), "a": np.arange(6.0).reshape(2, 3)}
    with offload.Client(server) as client:
        client.submit(echo, value).result(timeout=30)
        (job,) = client.server.jobs()
    for command in (["jobs"], ["status", str(job.id)], ["wait", str(job.id)], ["usage"]):
        done = offload_cli(*command, *at)
        assert done.returncode == 0, done.stdout + done.stderr
        json.loads(done.stdout)
    out = tmp_path / "a.npy"
    fetched = offload_cli("result", str(job.id), "-o", str(out), *at)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    typed = json.loads(fetched.stdout)
    assert typed["n"] == 2 and typed["x"] == 1.5 and typed["items"] == [1, "two"]
    assert typed["a"] == {"dtype": "float64", "shape": [2, 3], "file": str(out)}
    assert np.load(out).tolist() == value["a"].tolist()
    missing = offload_cli("cancel", "9999", *at)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["type"] == "UnknownJob"
    misused = offload_cli("status", "not-a-number", *at)
    assert misused.returncode == 2
    assert json.loads(misused.stdout)["error"]["type"] == "UsageError"
    keys = offload_cli("keys", "generate", "alice", "--dir", str(tmp_path), "--json")
    assert json.loads(keys.stdout)["public"].endswith("alice.key")
    again = offload_cli("keys", "generate", "alice", "--dir", str(tmp_path), "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["type"] == "FileExistsError"


def test_explanation_progress_and_stats_read_as_text():
    with offload.Client(None) as client:  # no server: every call runs here
        assert client.call(apps.add, (1, 2), {}) == 3
        text = str(client.explain(apps.add, 1, 2))
        stats = client.stats()
    assert text.startswith("here (local): ") and "call size" in text and "link" in text
    assert stats["tests.apps:add"]["local"]["calls"] == 1  # still a dict
    assert str(stats).splitlines()[1].split()[:3] == ["tests.apps:add", "local", "1"]
    progress = offload.Progress(12, time.time() - 180, "tcp://edge:5555", 1)
    assert str(progress) == "12 checkpoints, the last 3 min ago; on tcp://edge:5555, run 1"
    assert str(offload.Progress(1, None, "paused", 2)) == "1 checkpoint; paused, run 2"


def test_human_units():
    assert (human.size(536870912), human.size(1536), human.size(12)) == (
        "512 MB",
        "1.5 KB",
        "12 bytes",
    )
    assert (human.duration(604800.0), human.duration(3600), human.duration(90)) == (
        "7 days",
        "1 h",
        "1.5 min",
    )
    assert human.ago(1000.0, now=1185.0) == "3 min ago"
    assert human.parse_size("512MB") == 512 * 2**20 and human.parse_duration("7d") == 604800
