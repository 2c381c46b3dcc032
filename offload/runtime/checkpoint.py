"""Checkpoints: the same function code saves its progress here and on a server.

A checkpointable function picks its own safe points and says what its state
is; the runtime decides whether a checkpoint is due, and where it goes::

    @offload(checkpoint_every=2.0)
    def multiply(a, b):
        row, done = offload.restore((0, []))    # where an earlier run got to, or the start
        for i in range(row, len(a)):
            done.append(product_row(a[i], b))
            offload.checkpoint((i + 1, done), done=i + 1, total=len(a))  # cheap unless due
        return done

:func:`restore` returns the state of the checkpoint a run resumes from (or
``default``); :func:`checkpoint` hands a new state to the run's
:class:`Session`, which keeps it only if ``checkpoint_every`` seconds have
passed since the last one (a call between two due points costs a clock
read), or when asked for one at once (pause, a server closing). Outside an
offloaded call both are no-ops, so the function still runs as plain Python.
On a server the session ships each state to the client as it is taken; on
this device it hands it to the job's future. Either way the state must be
something the restricted unpickler admits (numpy arrays included).

The session of a run lives in a :class:`contextvars.ContextVar`, so threads
and the local pool each see only their own call's.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "offload_checkpoint", default=None
)


class Stopped(BaseException):
    """Unwinds a run from a checkpoint it was asked to stop at (``args[0]``: why).

    A ``BaseException``, like ``KeyboardInterrupt``, so that the function's
    own ``except Exception`` does not swallow it.
    """


class Session:
    """The checkpointing of one run: its starting state, its pace, where states go."""

    def __init__(
        self, state: Any, every: float, sink: Callable[[Any, int, int, int], None], count: int = 0
    ) -> None:
        """``sink(state, count, done, total)`` takes each checkpoint (0, 0: no fraction told)."""
        self.state = state
        self.every = every
        self.sink = sink
        self.count = count  # checkpoints taken so far (across resumed runs)
        self._last = time.monotonic()
        #: Set (from a signal handler or another thread) to take the next
        #: checkpoint at once and stop there; the value says why ("paused", ...).
        self.stop: str | None = None

    def offer(self, state: Any, done: int = 0, total: int = 0) -> None:
        """A safe point with ``state`` (``done`` of ``total``): keep it if due; stop if asked."""
        stop = self.stop
        now = time.monotonic()
        if stop is None and now - self._last < self.every:
            return
        self._last = now
        self.count += 1
        self.state = state
        self.sink(state, self.count, done, total)
        if stop is not None:
            raise Stopped(stop)


@contextmanager
def running(session: Session) -> Iterator[Session]:
    """Make ``session`` the current run's for the block."""
    token = _session.set(session)
    try:
        yield session
    finally:
        _session.reset(token)


def restore(default: Any = None) -> Any:
    """The state to resume from: the last checkpoint of an interrupted run, else ``default``."""
    session = _session.get()
    if session is None or session.state is None:
        return default
    return session.state


def checkpoint(state: Any, *, done: int | None = None, total: int | None = None) -> None:
    """Offer ``state`` as a checkpoint; taken if one is due (see ``checkpoint_every``).

    ``done`` of ``total`` (whole numbers, in any unit the function likes:
    rows, epochs, items) says how far the run has come; the job's
    :attr:`~offload.Job.progress` shows the fraction with each checkpoint.
    """
    session = _session.get()
    if session is None:
        return
    if done is None or total is None:
        session.offer(state)
        return
    if not 0 <= done <= total < 2**63:
        raise ValueError(f"checkpoint(done={done!r}, total={total!r}): need 0 <= done <= total")
    session.offer(state, int(done), int(total))
