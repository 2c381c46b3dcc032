"""The edge-server command line: clear errors for bad options, before anything starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import offload

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
    from edge_server.cli import parse_args

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
    from edge_server.cli import parse_args

    config, _ = parse_args(
        ["--insecure", "--max-message-size", "64MB", "--result-ttl", "2d", "--close-grace", "90s"]
    )
    assert config.max_message_size == 64 * 2**20
    assert (config.result_ttl, config.close_grace) == (2 * 86400, 90)
    with pytest.raises(SystemExit):
        parse_args(["--insecure", "--max-message-size", "lots"])
