"""README.md runs: its Python blocks as one session against a local server, its commands' help.

Blocks are read in order. One preceded by ``<!-- readme-test: file NAME -->``
is written to (appended to) file NAME in a scratch directory: the app module
the server serves. One preceded by ``<!-- readme-test: skip (reason) -->`` is
not run. Every other block runs, in one interpreter and one namespace, in a
subprocess whose working directory is the scratch directory, with
``OFFLOAD_SERVER`` set to a local server serving the app modules, and the
placeholder address ``tcp://edge.local:5555`` replaced by that server's.
Tracebacks name README.md and its line numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import offload

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLACEHOLDER = "tcp://edge.local:5555"
MARK = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->")

RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for line, source in json.load(open(sys.argv[1])):
    code = compile("\\n" * (line - 1) + source, "README.md", "exec")
    exec(code, namespace)
    print(f"README.md:{line} ran", flush=True)
"""


def blocks(language: str) -> list[tuple[int, str, str, str]]:
    """``(line of the first code line, mark, argument, code)`` of each ```language block."""
    found = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start = i + 1
            end = lines.index("```", start)
            mark = arg = ""
            previous = [line for line in lines[:i] if line.strip()][-1:]
            if previous and (m := MARK.fullmatch(previous[0].strip())):
                mark, arg = m.group(1), m.group(2)
            found.append((start + 1, mark, arg, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return found


def test_marks_are_known_and_skips_give_a_reason() -> None:
    for line, mark, arg, _ in blocks("python"):
        assert mark in ("", "file", "skip"), f"README.md:{line}: unknown mark {mark!r}"
        if mark:
            assert arg, f"README.md:{line}: {mark} needs a file name or a reason"


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session: list[tuple[int, str]] = []
    for line, mark, arg, code in blocks("python"):
        if mark == "file":
            with open(tmp_path / arg, "a") as out:
                out.write(code)
        elif mark != "skip":
            session.append((line, code))
    assert session, "README.md has no Python block to run"
    apps = sorted(path.stem for path in tmp_path.glob("*.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with offload.serve_local(
        apps, workers=1, extra_args=["--keep-results", "all", "--log-level", "WARNING"]
    ) as server:
        script = [(line, code.replace(PLACEHOLDER, server.address)) for line, code in session]
        (tmp_path / "session.json").write_text(json.dumps(script))
        (tmp_path / "session.py").write_text(RUNNER)
        env = {
            **os.environ,
            "OFFLOAD_SERVER": server.address,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        }
        done = subprocess.run(
            [sys.executable, "session.py", "session.json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    ran = re.findall(r"^README\.md:(\d+) ran$", done.stdout, re.MULTILINE)
    assert [int(line) for line in ran] == [line for line, _ in session]


def _help(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_commands_in_shell_blocks_exist() -> None:
    """Every ``offload`` subcommand and ``edge-server`` option the README shows is in --help."""
    commands = [
        command
        for _, _, _, code in blocks("bash")
        for line in code.replace("\\\n", " ").splitlines()
        for command in re.split(r"\||&&", line.split("#")[0])
    ]
    offload_help = _help("offload.cli")
    server_help = _help("edge_server")
    seen_offload = seen_server = 0
    for command in commands:
        command = command.strip()
        if m := re.match(r"offload (\w+)", command):
            seen_offload += 1
            assert m.group(1) in offload_help, command
            sub_help = _help("offload.cli", m.group(1))
            for option in re.findall(r"(--[a-z][a-z-]*)", command):
                assert option in sub_help or m.group(1) == "keys", command
        elif command.startswith("edge-server"):
            seen_server += 1
            for option in re.findall(r"(--[a-z][a-z-]*)", command):
                assert option in server_help, f"{option} ({command})"
    assert seen_offload and seen_server
