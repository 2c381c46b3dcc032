"""Where a call runs: the one interface the client asks, and the first policy behind it.

The client asks a :class:`Decider` once per ``auto`` call. This first policy
is DCOF's online/offline switch reduced to its core: online (offload) when the
server answers, offline (local) when it does not. The profiler replaces it with
one that weighs measured time and energy; the client does not change.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

Side = Literal["local", "remote"]
LOCAL: Side = "local"
REMOTE: Side = "remote"


class Decider(Protocol):
    """Chooses the side for one call. Must be cheap: it runs on every ``auto`` call."""

    def decide(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], server_up: bool
    ) -> Side:
        """Return ``"local"`` or ``"remote"`` for calling ``fn(*args, **kwargs)``."""
        ...


class ReachabilityDecider:
    """Remote whenever a server answers, else local."""

    def decide(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], server_up: bool
    ) -> Side:
        return REMOTE if server_up else LOCAL
