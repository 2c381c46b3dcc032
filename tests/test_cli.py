"""The edge-server command line: clear errors for bad options, before anything starts."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


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
