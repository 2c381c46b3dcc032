"""The load a server reports in every PONG: queued and running calls, workers (and how
many are ready: not still starting), service rate.

A client that can reach several servers needs their load to choose among
them, and the PONG it gets anyway (heartbeats, idle pings) is the cheapest
place to carry it: no extra request, and always fresh where the client looks.

The service rate is the calls that ended (answered, failed or cancelled) per
second over about the last minute. It needs no hook in the dispatcher: every
admitted call has the next job id, and is queued, running or ended, so the
ended count is ``last id - queued - running`` (a call handed back to a worker
queue after a crash stays counted as not ended).
"""

from __future__ import annotations

import json
import mmap
import time
from collections import deque
from typing import Any, Protocol

from offload.runtime import protocol

WINDOW_S = 60.0  # the rate is measured over about this long
_SAMPLE_EVERY_S = 1.0  # at most one sample a second is kept


# Zeros for bandwidth probes: an anonymous mapping reads as the shared zero page,
# so it costs no memory however often it is sent.
_PADDING = memoryview(mmap.mmap(-1, protocol.PROBE_MAX))


class Waiting(Protocol):
    """The server's queue, as the load reads it (:class:`~edge_server.fairqueue.FairQueue`)."""

    @property
    def clients(self) -> int: ...


_encoded: tuple[list[tuple[str, Any]], bytes] = ([], b"")  # info and load's items, their JSON


def pong(request_id: int, info: dict[str, Any], load: dict[str, Any], pad: int) -> list[Any]:
    """A PONG: the server's self-description and load, padded with ``pad`` bytes for a probe.

    The body is encoded again only when the description or the load changed:
    PINGs are the server's most frequent message, a flood of them its cheapest
    attack, and encoding the body took a quarter of the loop's time in one.
    """
    global _encoded
    items = [*info.items(), ("load", load)]  # compared item by item, each by identity first
    if items != _encoded[0]:
        _encoded = (items, json.dumps({**info, "load": load}).encode())
    header = protocol.encode_header(protocol.PONG, request_id, codecs=bytes([protocol.RAW]))
    frames: list[Any] = [header, _encoded[1]]
    if pad:
        frames.append(_PADDING[: min(pad, protocol.PROBE_MAX)])
    return frames


class LoadMeter:
    """Samples of the ended-call count and of the busy worker-seconds, kept for the last
    :data:`WINDOW_S` seconds.

    The rate alone does not say how long a call runs: over a window in which the
    server was idle for a while, calls ended per second are few though each ran
    briefly (a server busy for 10 s of the last minute reports a sixth of its
    service rate, and ``workers / rate`` six times its calls' length). Over the
    same window, busy worker-seconds over ended calls is the mean service time
    (Little's law: mean running = rate * service time), whatever the idle share:
    ``service_s``. ``running`` is sampled at each PING (held until the next one).

    ``queue``: the server's, whose ``clients`` (how many clients have calls waiting)
    the load reports: calls are taken round-robin between clients, so a newcomer's
    call waits behind one call of each, not behind all the calls queued.
    """

    def __init__(self, queue: Waiting | None = None) -> None:
        self._queue = queue
        self._samples: deque[tuple[float, int, float]] = deque()
        self._busy = 0.0  # worker-seconds of calls running, since the meter began
        self._seen: tuple[float, int] | None = None  # (when, running) at the last PING

    def load(self, health: dict[str, Any], last_job_id: int, now: float | None = None) -> dict:
        """The ``load`` object of a PONG, from the server's health and its last job id."""
        now = time.monotonic() if now is None else now
        queued, running = int(health["queued"]), int(health["running"])
        ended = last_job_id - queued - running
        if self._seen is not None and now > self._seen[0]:
            self._busy += self._seen[1] * (now - self._seen[0])
        self._seen = (now, running)
        samples = self._samples
        if not samples or now - samples[-1][0] >= _SAMPLE_EVERY_S:
            samples.append((now, ended, self._busy))
        while len(samples) > 2 and now - samples[1][0] >= WINDOW_S:
            samples.popleft()
        then, ended_then, busy_then = samples[0]
        span, calls = now - then, ended - ended_then
        price = float(health.get("price_s") or 0.0)  # a site's price of a core-second
        return {
            **({"price_s": price} if price > 0 else {}),
            "queued": queued,
            "running": running,
            "workers": int(health["workers"]),
            "ready": int(health.get("ready", health["workers"])),  # not still starting
            "queue_size": int(health["queue_size"]),
            "rate_per_s": round(calls / span, 3) if span >= 1.0 else None,
            "rate_window_s": round(span, 1),
            "service_s": round((self._busy - busy_then) / calls, 4) if calls > 0 else None,
            **({"clients": self._queue.clients} if self._queue is not None else {}),
        }
