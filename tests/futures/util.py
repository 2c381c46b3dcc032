"""Mixins binding CPython's executor tests to offload's executors.

Adapted from CPython's ``Lib/test/test_concurrent_futures/util.py`` (CPython main,
Python Software Foundation License). ``create_future``, the ``*_FUTURE`` constants,
``BaseTestCase``, ``ExecutorMixin`` and ``create_executor_tests`` keep CPython's shape;
the pool mixins (``ThreadPoolMixin``, ``InterpreterPoolMixin``, ``ProcessPool*Mixin``)
are replaced by four offload executors:

- ``LocalClientMixin``: ``offload.Client`` with no server, every call local;
- ``RemoteClientMixin``: a ``Client`` in ``mode="remote"`` on a live test server;
- ``AutoClientMixin``: a ``Client`` in ``mode="auto"`` on the same server;
- ``CheckpointedClientMixin``: remote mode, every submitted function replaced by its
  ``@offload(checkpoint_every=...)`` twin, so ``submit`` returns :class:`offload.Job` s.

Each client is built from an explicit :class:`offload.Config` (no ``OFFLOAD_*``
variable, config file or profile cache leaks in). ``max_workers`` becomes
``local_workers``. One server (``offload.serve_local(["tests.futures.fns"],
workers=2)``) serves a test module; it is started by the first test that needs it and
stopped by the module's ``tearDownModule`` (:func:`teardown_module`).

Left out of CPython's util: ``threading_helper.threading_setup/cleanup`` and
``support.reap_children`` in ``BaseTestCase`` (they check this process's threads and
children; a client keeps its connection and profiler threads until shutdown, and
the server is this module's own child), ``mp_context``/``get_context`` (process
pools only), and ``setup_module``'s multiprocessing cleanup.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Iterator
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any

import offload
from offload import Future

from . import fns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = [
    "CANCELLED",
    "CANCELLED_AND_NOTIFIED",
    "FINISHED",
    "PENDING",
    "RUNNING",
]


def create_future(state=PENDING, exception=None, result=None):
    f = Future()
    f._state = state
    f._exception = exception
    f._result = result
    return f


PENDING_FUTURE = create_future(state=PENDING)
RUNNING_FUTURE = create_future(state=RUNNING)
CANCELLED_FUTURE = create_future(state=CANCELLED)
CANCELLED_AND_NOTIFIED_FUTURE = create_future(state=CANCELLED_AND_NOTIFIED)
EXCEPTION_FUTURE = create_future(state=FINISHED, exception=OSError())
SUCCESSFUL_FUTURE = create_future(state=FINISHED, result=42)

#: support.SHORT_TIMEOUT is 30 s; the suite's tests must stay under pytest's 60 s.
SHORT_TIMEOUT = 20.0


def gc_collect() -> None:
    """support.gc_collect."""
    gc.collect()
    gc.collect()
    gc.collect()


@contextlib.contextmanager
def captured_stderr() -> Iterator[io.StringIO]:
    """support.captured_stderr, also catching the ``concurrent.futures`` logger.

    Future logs a failing callback with ``LOGGER.exception``; outside pytest no handler
    is configured and logging's last resort writes it to ``sys.stderr``. Under pytest
    the root logger has handlers, so a handler on the future's logger writes it there.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stderr(stream):
            yield stream
    finally:
        logger.removeHandler(handler)


def run_python(code: str, timeout: float = 45.0) -> tuple[int, bytes, bytes]:
    """script_helper.assert_python_ok('-c', code): run it from the repository root.

    The child gets no ``OFFLOAD_*`` variables; it builds its executor with
    :func:`make_executor` like the tests do.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, proc.stdout, proc.stderr


# -- the test server ------------------------------------------------------------------------

_server: offload.LocalServer | None = None


def server_address() -> str:
    """The module's test server, started on first use."""
    global _server
    if _server is None:
        _server = offload.serve_local(
            ["tests.futures.fns"], workers=2, extra_args=["--log-level", "WARNING"]
        )
        # Both workers up before the first test, as a pool's threads are: a call
        # that waits for a worker to start is still cancellable, which would change
        # what test_cancel_futures counts.
        with offload.Client(_server.address, profile_cache="", mode="remote") as probe:
            for future in [probe.submit(fns.sleep, 0.2) for _ in range(2)]:
                future.result(timeout=30)
    return _server.address


def setup_module() -> None:
    pass


def teardown_module() -> None:
    """Stop the module's server, if a test started it."""
    global _server
    if _server is not None:
        _server.stop()
        _server = None


# -- the executors --------------------------------------------------------------------------


class CheckpointedClient(offload.Client):
    """A remote client whose submit runs each function's checkpointed twin (a Job)."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(fns.CHECKPOINTED.get(fn, fn), *args, **kwargs)


def make_executor(kind: str, address: str | None = None, max_workers: int | None = None):
    """A fresh executor of ``kind``: "local", "remote", "auto" or "checkpointed"."""
    base = offload.Config(local_workers=max_workers, profile_cache=None)
    if kind == "local":
        return offload.Client(config=base.replace(server=None, mode="auto"))
    if kind == "remote":
        return offload.Client(config=base.replace(server=address, mode="remote"))
    if kind == "auto":
        return offload.Client(config=base.replace(server=address, mode="auto"))
    if kind == "checkpointed":
        return CheckpointedClient(config=base.replace(server=address, mode="remote"))
    raise ValueError(kind)


class BaseTestCase(unittest.TestCase):
    pass


class ExecutorMixin:
    worker_count = 5
    executor_kwargs = {}
    kind = ""

    def setUp(self):
        super().setUp()
        self._event_dir = tempfile.mkdtemp(prefix="offload-futures-")
        self._events = 0
        self.created_events = []
        self.t1 = time.monotonic()
        self.executor = self.executor_type(max_workers=self.worker_count, **self.executor_kwargs)

    def tearDown(self):
        self.executor.shutdown(wait=True)
        self.executor = None

        dt = time.monotonic() - self.t1
        shutil.rmtree(self._event_dir, ignore_errors=True)
        self.assertLess(dt, 300, "synchronization issue: test lasted too long")

        super().tearDown()

    def executor_type(self, max_workers=None, **kwargs):
        """A new executor of this mixin's kind (CPython's ``executor_type(max_workers=...)``)."""
        address = server_address() if self.kind != "local" else None
        return make_executor(self.kind, address, max_workers=max_workers, **kwargs)

    def executor_script(self, max_workers=None):
        """Python source building this mixin's executor in a child process."""
        address = server_address() if self.kind != "local" else None
        return (
            "__import__('tests.futures.util').futures.util.make_executor("
            f"{self.kind!r}, {address!r}, max_workers={max_workers!r})"
        )

    def create_event(self):
        """An event the executor's functions can wait on, wherever they run."""
        self._events += 1
        event = fns.Event(os.path.join(self._event_dir, f"event-{self._events}"))
        self.created_events.append(event)
        return event


class LocalClientMixin(ExecutorMixin):
    kind = "local"


class RemoteClientMixin(ExecutorMixin):
    kind = "remote"


class AutoClientMixin(ExecutorMixin):
    kind = "auto"


class CheckpointedClientMixin(ExecutorMixin):
    kind = "checkpointed"


EXECUTOR_MIXINS = (
    LocalClientMixin,
    RemoteClientMixin,
    AutoClientMixin,
    CheckpointedClientMixin,
)


def create_executor_tests(
    remote_globals: dict[str, Any],
    mixin,
    bases=(BaseTestCase,),
    executor_mixins=EXECUTOR_MIXINS,
):
    def strip_mixin(name):
        if name.endswith(("Mixin", "Tests")):
            return name[:-5]
        elif name.endswith("Test"):
            return name[:-4]
        else:
            return name

    module = remote_globals["__name__"]
    for exe in executor_mixins:
        name = f"{strip_mixin(exe.__name__)}{strip_mixin(mixin.__name__)}Test"
        cls = type(name, (mixin, exe, *bases), {"__module__": module})
        remote_globals[name] = cls
