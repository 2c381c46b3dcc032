"""The worker's after-job check of descriptors: its shortcut proves or defers, never misses.

Each case runs in a fresh interpreter (a Baseline makes its process a child
subreaper, which the test runner must not become).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SETUP = """
import os
from edge_server.clean import Baseline, FdCheck
os.dup2(2, 40)  # a descriptor above a gap, as multiprocessing's are in a worker
baseline = Baseline()
"""


def _run(body: str) -> str:
    code = textwrap.dedent(_SETUP) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_shortcut_is_on_and_says_unchanged_when_nothing_changed():
    out = _run("print(baseline.fd_check.on, baseline.fd_check.unchanged(), baseline.leftovers())")
    assert out == "True True None"


@pytest.mark.parametrize(
    "job",
    [
        "f = open(os.devnull)",  # a file left open at the lowest free number
        "os.dup2(2, 100)",  # one far above the others
        "fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 90); os.close(fd); os.close(40)",
        "fd = os.open(os.devnull, os.O_RDONLY); os.close(0)",  # one of the worker's closed
    ],
)
def test_a_file_left_open_is_caught_however_the_numbers_are_shuffled(job):
    out = _run(f"{job}\nprint(baseline.fd_check.unchanged(), baseline.leftovers())")
    assert out == "False 1 files left open"


def test_a_closed_descriptor_of_the_worker_is_not_taken_for_unchanged():
    assert _run("os.close(40)\nprint(baseline.fd_check.unchanged(), baseline.leftovers())") == (
        "False None"
    )


def test_without_a_count_from_the_kernel_the_shortcut_is_off():
    out = _run(
        """
        import edge_server.clean as clean
        clean._fd_count = lambda fd_dir=None: 0
        check = FdCheck(baseline.fds)
        print(check.on, check.unchanged())
        """
    )
    assert out == "False False"


def test_a_job_that_puts_another_directory_under_the_counted_ones_is_still_counted():
    out = _run(
        """
        import tempfile, threading
        empty = os.open(tempfile.mkdtemp(), os.O_RDONLY)  # 2 links: would count 0 threads
        os.dup2(empty, baseline._task_dir.fd)
        os.dup2(empty, baseline._fd_dir.fd)
        os.close(empty)
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        print(baseline._task_dir.stat().st_nlink > 2, baseline.leftovers())
        """
    )
    assert out == "True 1 threads still running"
