"""The benchmarks' progress bars: drawn on a terminal, silent in a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

SCRIPT = """
from bench.progress import bar, steps
for _ in steps(range(3), "cases", unit="case"):
    pass
with bar(2, "calls") as tick:
    tick("first"); tick("second")
print("done")
"""


def test_quiet_when_the_output_is_not_a_terminal():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout == "done\n" and out.stderr == ""


def test_a_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdout=follower, stderr=follower, stdin=follower
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other end closed: the process is done writing
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "cases:" in text and "/3 " in text and "calls:" in text and "/2 " in text
    assert "done" in text
