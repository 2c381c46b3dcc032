"""What the router teaches the profiler after each call (part of :class:`~offload.routing.Router`).

Only whole calls teach: a job resumed from a checkpoint ran part of its work.
A failure here never fails the call: its result stands, whatever the
profiler makes of it.
"""

from __future__ import annotations

import logging
from typing import Any

from .api import OffloadedFunction
from .deploy import count_transfer
from .outcome import Outcome
from .pongs import server_load
from .profiler import Decider
from .remote import Remote
from .servers import Servers

log = logging.getLogger("offload")


class Lessons:
    """The profiler's lessons from calls that ran here or on a server."""

    decider: Decider
    servers: Servers

    def learn_local(self, fn: OffloadedFunction[..., Any], size: int, seconds: float) -> None:
        """A whole call of ``size`` ran here in ``seconds``."""
        try:
            self.decider.observe_local(fn, size, seconds)
        except Exception:  # the result stands, whatever the profiler thinks
            log.warning("the profiler could not learn from a call", exc_info=True)

    def learn_remote(
        self, fn: OffloadedFunction[..., Any], size: int, outcome: Outcome, remote: Remote | None
    ) -> None:
        """A whole call of ``size`` ran on ``remote``; it teaches that server's link.

        With one server, only the configured server's calls teach (a backup's
        would pass for it); with several, each server's calls teach its own link.
        A call sent while other clients' calls filled that server's workers (its
        latest PONG) teaches the function's time there, not the link: its wait in
        the queue would pass for a slow link, and keep calls off that server long
        after the load went (the load itself is weighed from each PONG).
        """
        if remote is None or (remote is not self.servers.primary and not self.servers.fleet):
            return
        if outcome.provision is not None:  # the app deployed for it: a transfer like any other
            count_transfer(self.decider, fn, outcome.provision)
        try:
            self.decider.observe_remote(
                fn,
                size,
                outcome.turnaround,
                outcome.server_s,
                outcome.sent,
                outcome.received,
                outcome.alone and not crowded(remote),
                remote.link,
            )
        except Exception:  # the result stands, whatever the profiler thinks
            log.warning("the profiler could not learn from a call", exc_info=True)


def crowded(remote: Remote) -> bool:
    """Whether the server's latest PONG counted other clients' calls filling its workers."""
    load = server_load(remote)
    return load is not None and load[0] >= load[1]
