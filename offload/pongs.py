"""What a server's latest PONG says of its load, as the client's decision weighs it.

Every PONG (heartbeats, idle PINGs, the fleet watcher's) carries the server's
load: calls queued and running, workers and how many are ready, calls ended
per second, a call's mean run, clients with calls waiting. :func:`server_load`
reads it into a :class:`Load` once per PONG; :func:`workers_starting` says whether all
of its workers are still starting.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .remote import Remote


def workers_starting(remote: Remote) -> bool:
    """Whether the server's latest PONG says none of its workers is ready yet (all starting)."""
    load = remote.server_info.get("load")
    if not isinstance(load, dict):
        return False
    ready = load.get("ready")
    return isinstance(ready, int) and ready <= 0 and load.get("running") == 0


class Load(NamedTuple):
    """What a server's latest PONG says of its load, as the decision weighs it."""

    others: int  # other clients' calls queued or running
    workers: int
    rate: float  # calls ended per second lately (0.0: not told)
    service_s: float  # a call's mean run lately (0.0: not told)
    clients: int | None  # clients with calls waiting (None: not told)


def server_load(remote: Remote, mine: int = 0) -> Load | None:
    """The load of the server's latest PONG (None when it told none, or nonsense).

    This client's calls there are not others': those in flight when the PONG came, or
    ``mine`` (those in flight when the PING left), whichever is more. A call that ended
    between the two was counted by the server, but its reply may be read before the PONG
    (it comes on another socket): counted as another client's, it made the server look
    busy until the next PONG, and the decision alternated between it and another server.

    Read after every call (``lessons.crowded``), so worked out once per PONG: kept
    in ``remote.load_memo`` with the PONG's dict and the count of ours it came from.
    """
    info, calls = remote.server_info, max(remote.calls_at_pong, mine)
    memo = remote.load_memo
    if memo is not None and memo[0] is info and memo[1] == calls:
        return memo[2]
    load = _load_of(info, calls)
    remote.load_memo = (info, calls, load)
    return load


def _load_of(info: dict[str, Any], calls: int) -> Load | None:
    """:func:`server_load` from a PONG's ``info``, sent with ``calls`` of ours in flight."""
    load = info.get("load")
    if not isinstance(load, dict):
        return None
    try:
        workers = int(load.get("workers") or info.get("workers") or 1)
        ahead = int(load.get("queued", 0)) + int(load.get("running", 0))
    except (TypeError, ValueError):
        return None
    rate = load.get("rate_per_s")
    rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else 0.0
    run = load.get("service_s")
    run = float(run) if isinstance(run, (int, float)) and 0 < run < 1e9 else 0.0
    clients = load.get("clients")
    clients = clients if isinstance(clients, int) and clients >= 0 else None
    return Load(max(ahead - calls, 0), max(workers, 1), rate, run, clients)
