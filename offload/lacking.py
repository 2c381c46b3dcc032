"""Servers that could not run a function, and when they are asked for it again.

A call refused by a server as unknown there or of another version
(:data:`offload.fallback.STICKY`) marks the function in that server's
:class:`~offload.profiler.choice.Candidate` (``lacks``), and the decision sends
it elsewhere. The mark is not for good: once the server's PONG shows its code
changed (another instance, other functions: a restart, a deployment), or
after ``LACKS_RETRY`` probations (a new version under the same names, which a
PONG does not show), the server is a candidate for the function again, with a
warning: a call may then fail over once more.
"""

from __future__ import annotations

import logging
import time

from .profiler.choice import Candidate
from .remote import Remote

log = logging.getLogger("offload")

#: Probations after which a server that lacked a function is asked for it again.
LACKS_RETRY = 12.0


def code_of(remote: Remote) -> str:
    """What a server's latest PONG says of its code: its instance and its functions."""
    info = remote.server_info
    return f"{info.get('instance')}/{info.get('functions')}"


class Lacking:
    """The marks of the servers that lacked functions: what their code was, since when."""

    def __init__(self, probation: float) -> None:
        self._retry_s = LACKS_RETRY * probation
        self._marked: dict[str, tuple[str, float]] = {}  # address -> (code then, when)

    def mark(self, candidate: Candidate, remote: Remote, name: str) -> None:
        """``candidate`` (served by ``remote``) cannot run ``name``."""
        candidate.lacks.add(name)
        self._marked.setdefault(candidate.address, (code_of(remote), time.monotonic()))

    def forgive(self, candidate: Candidate, remote: Remote, now: float) -> None:
        """Clear ``candidate``'s marks if its code changed or they are old enough."""
        code, since = self._marked.get(candidate.address, ("", now))
        if code_of(remote) != code:
            why = "its code changed since"
        elif now - since >= self._retry_s:
            why = f"{now - since:.0f} s passed"
        else:
            return
        log.warning(
            "offload: %s could not run %s; %s: calls of them may go there again",
            candidate.address,
            ", ".join(sorted(candidate.lacks)),
            why,
        )
        candidate.lacks.clear()
        self._marked.pop(candidate.address, None)
