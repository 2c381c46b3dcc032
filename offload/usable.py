"""Which servers calls may go to now, when a client knows several (issue 13, items 5 and 6).

A server is usable when it is trusted (:mod:`offload.fleet`), answers, and
is not on probation. Each has a :class:`~offload.profiler.choice.Candidate`
the decision reads: its link, the load of its latest PONG, this client's
calls in flight there, the functions it serves. :meth:`Usable.refresh` keeps
them current from the profiler's thread (a PING to each server every
``heartbeat_interval``, which measures the RTT when the connection is idle
and brings the load); the call path reads one tuple.

Failover follows the ZeroMQ guide's Freelance pattern (the client holds
several servers, chooses, and retries elsewhere): a server that loses a
call (:meth:`Usable.lose`) or goes silent leaves the tuple at once; once it
answers again it comes back after answering for ``probation`` seconds, so a
server that flaps does not take calls between its crashes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from . import _exceptions as errors
from .config import Config
from .fleet import Known
from .profiler.choice import Candidate
from .remote import Remote

log = logging.getLogger("offload")


class Usable:
    """The usable servers of one client, as :class:`Candidate` s, and those on probation."""

    def __init__(self, config: Config, connect: Callable[[str], Remote | None]) -> None:
        self._config = config
        self._connect = connect
        self._lock = threading.Lock()  # held briefly: never while waiting for a server
        self._first_lock = threading.Lock()
        self._by_address: dict[str, Candidate] = {}
        self._remotes: dict[str, Remote] = {}
        #: address -> when it answered again after it was lost (None: not yet).
        self._lost: dict[str, float | None] = {}
        self._pinged = 0.0
        self._first = True
        #: What the decision reads: the usable servers now (a new tuple on every change).
        self.candidates: tuple[Candidate, ...] = ()
        #: Servers not usable now, and why (for ``explain`` and ``offload servers``).
        self.excluded: dict[str, str] = {}

    def ready(self, known: Callable[[], list[Known]]) -> tuple[Candidate, ...]:
        """The usable servers; the first time, after waiting for each one's first PONG."""
        if self._first:
            with self._first_lock:
                if self._first:
                    self.refresh(known(), wait=self._config.connect_timeout)
                    self._first = False
        return self.candidates

    def refresh(self, known: list[Known], wait: float = 0.0) -> None:
        """Connect to new trusted servers, PING each now and then, and rebuild the tuple.

        ``wait``: wait up to that long for the PINGs (never holding the lock: a
        reply's callback may need it to say its server was lost).
        """
        now = time.monotonic()
        pings = []
        with self._lock:
            due = now - self._pinged >= self._config.heartbeat_interval or wait > 0
            if due:
                self._pinged = now
            for server in known:
                remote = self._remote(server)
                if remote is not None and due:
                    pings.append((remote, remote.ping()))
        if wait > 0:  # the first PING connects; a second one, on an idle line, times the RTT
            deadline = now + wait
            answered = [r for r, pinged in pings if _answered(pinged, deadline)]
            for pinged in [remote.ping() for remote in answered]:
                _answered(pinged, deadline)
        with self._lock:
            self._rebuild()

    def _remote(self, server: Known) -> Remote | None:
        """The connection to a trusted server (made on first sight), else None (lock held)."""
        if not server.trusted:
            self.excluded[server.address] = f"not trusted ({server.why})"
            return None
        remote = self._remotes.get(server.address)
        if remote is None:
            try:
                remote = self._connect(server.address)
            except errors.OffloadError as exc:
                self.excluded[server.address] = str(exc)
                return None
            if remote is None:
                return None
            self._remotes[server.address] = remote
            self._by_address[server.address] = Candidate(
                server.address,
                remote.link,
                distance_km=server.distance_km(self._config),
                in_flight=remote.conn.in_flight,
            )
        return remote

    def _rebuild(self) -> None:
        now = time.monotonic()
        usable, excluded = [], {}
        probation = self._config.probation
        for address, candidate in self._by_address.items():
            remote = self._remotes[address]
            _update(candidate, remote)
            up = remote.conn.up
            if address in self._lost:
                since = self._lost[address]
                if not up:
                    self._lost[address] = None
                    excluded[address] = "lost; not answering"
                    continue
                if since is None:
                    self._lost[address] = since = now
                if now - since < probation:
                    excluded[address] = f"answering again: on probation for {probation:g} s"
                    continue
                del self._lost[address]
                log.warning(
                    "offload: %s answered for %g s: calls go there again", address, probation
                )
            elif up is False:  # silent by itself (heartbeats): lost like a lost call
                self._lost[address] = None
                excluded[address] = "not answering"
                continue
            elif up is None:
                excluded[address] = "has not answered yet"
                continue
            usable.append(candidate)
        self.excluded = {**{a: w for a, w in self.excluded.items() if "trusted" in w}, **excluded}
        self.candidates = tuple(usable)

    def lose(self, address: str) -> bool:
        """``address`` lost a call (its server died or went silent): use it no more for now.

        Returns False when it was already lost (the warning was said then).
        """
        with self._lock:
            first = address not in self._lost or self._lost[address] is not None
            self._lost[address] = None
            remote = self._remotes.get(address)
            if remote is not None and remote.conn.up:
                remote.conn.up = False  # answers again only once a PONG says so
            self.candidates = tuple(c for c in self.candidates if c.address != address)
            self.excluded[address] = "lost a call; not answering"
        return first

    def lacks(self, address: str, name: str) -> None:
        """The server at ``address`` cannot run ``name`` (unknown there, or another version)."""
        candidate = self._by_address.get(address)
        if candidate is not None:
            candidate.lacks.add(name)

    def loads(self) -> dict[str, dict[str, Any]]:
        """Each server's latest load, by address."""
        remotes = self._remotes.items()
        return {a: r.server_info["load"] for a, r in remotes if "load" in r.server_info}


def _answered(pinged: Future[Any], deadline: float) -> bool:
    """Whether a PING is answered by ``deadline``."""
    try:
        pinged.result(max(0.0, deadline - time.monotonic()))
    except Exception:
        return False  # not answering: the rebuild says so
    return True


def server_load(remote: Remote) -> tuple[int, int, float] | None:
    """Other clients' calls queued or running, workers, and calls ended per second, from
    the server's latest PONG (None when it told none, or nonsense).

    Read after every call (``lessons.crowded``), so worked out once per PONG: kept
    in ``remote.load_memo`` with the PONG's dict and count it came from.
    """
    info, calls = remote.server_info, remote.calls_at_pong
    memo = remote.load_memo
    if memo is not None and memo[0] is info and memo[1] == calls:
        return memo[2]
    load = _load_of(info, calls)
    remote.load_memo = (info, calls, load)
    return load


def _load_of(info: dict[str, Any], calls: int) -> tuple[int, int, float] | None:
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
    return max(ahead - calls, 0), max(workers, 1), rate


def _update(candidate: Candidate, remote: Remote) -> None:
    """Copy what the server's latest PONG said into its candidate."""
    info = remote.server_info
    load = server_load(remote)
    if load is None and isinstance(info.get("load"), dict):
        return  # a malformed load: keep the candidate as it was
    if load is not None:
        candidate.others, candidate.workers, candidate.rate = load
    functions = info.get("functions")
    if isinstance(functions, list):
        candidate.functions = frozenset(f for f in functions if isinstance(f, str))
    candidate.ships_code = bool(info.get("code_shipping"))
