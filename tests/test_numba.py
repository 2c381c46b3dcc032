"""numba is not needed by offload, and an ``@offload`` ``@njit`` function works (with numba)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import offload
from offload.runtime.functions import fingerprint

ROOT = Path(__file__).resolve().parent.parent
needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="no numba")


def test_neither_package_imports_numba() -> None:
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("offload", "edge_server")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__main__.py"
    ]
    check = f"import sys\nfor m in {modules!r}: __import__(m)\nassert 'numba' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture(scope="module")
def numba_client() -> Iterator[offload.Client]:
    with (
        offload.serve_local(["tests.apps_numba"], workers=1) as server,
        offload.Client(server, mode="remote", heartbeat_timeout=30) as client,
    ):
        yield client


@needs_numba
def test_name_and_fingerprint_come_from_the_python_function() -> None:
    from tests import apps_numba

    dispatcher = apps_numba.dot.__wrapped__
    assert apps_numba.dot.wire_name == "tests.apps_numba:dot"
    assert apps_numba.dot.fingerprint == fingerprint(dispatcher.py_func)


@needs_numba
def test_the_server_compiles_once_and_keeps_the_compiled_code(
    numba_client: offload.Client,
) -> None:
    from tests import apps_numba

    a, b = np.arange(5.0), np.ones(5)
    first = numba_client.submit(apps_numba.dot, a, b).result(timeout=120)
    pid, signatures = numba_client.submit(apps_numba.compiled).result(timeout=30)
    second = numba_client.submit(apps_numba.dot, a * 2, b).result(timeout=30)
    assert (first, second) == (10.0, 20.0)
    assert numba_client.submit(apps_numba.compiled).result(timeout=30) == (pid, signatures)
    assert signatures == 1


@needs_numba
def test_a_local_call_runs_the_compiled_code_here() -> None:
    from tests import apps_numba

    assert apps_numba.dot.local(np.arange(3.0), np.arange(3.0)) == 5.0
