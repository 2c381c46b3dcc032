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
answers again it comes back after answering for its probation, so a server
that flaps does not take calls between its crashes. The probation grows with
the server's losses (:func:`probation_s`): a quarter of ``probation`` after
its first loss, doubling with each further one up to ``probation``, and
forgotten once it has stayed usable for four times ``probation``: a server
restarted once is back within a second, one that keeps crashing waits longer.

A server whose PONG says none of its workers is ready yet (all starting, as
after a restart: its first call would wait seconds for one) is not usable
until one is, unless no other server is.

Between the heartbeats, a watcher thread (:meth:`Usable.watch`) PINGs four
times as often the servers whose state is about to change: those lost, on
probation or starting (so a server that answers again is noticed within a
quarter of a heartbeat; one whose workers start, every 50 ms: it takes calls
as soon as one is ready) and those whose latest PONG reported other clients'
calls (so the decision does not avoid a server for a queue that has drained
since); and, while this client makes calls, every server (so that its calls do
not go to a server other clients filled since its latest heartbeat; an idle
client PINGs once a heartbeat).

It also probes each server's bandwidth (:mod:`offload.probing`): the first call
waits for the probes, so its choice is made on measured links rather than one
assumed figure for all, and a server lost and back is probed again while it
takes no calls yet (probation, or starting). While this client places calls (here
or there), a link calls saw drop gets a small look every heartbeat when time counts
in its objective: calls avoid it, so only a probe would see it come back.
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
from .lacking import Lacking
from .pongs import server_load, workers_starting
from .probing import PROBE_BYTES, Prober, schedule
from .profiler.choice import Candidate
from .remote import Remote

log = logging.getLogger("offload")

#: Losses a server's probation forgets once it has been usable for this many ``probation``.
FORGET = 4.0
#: How many times per heartbeat the watcher PINGs the servers about to change.
WATCH_PER_HEARTBEAT = 4
#: Seconds between the watcher's PINGs of a server whose workers start (none ready yet):
#: it takes calls from the moment one is ready, and a restart ends only then.
STARTING_S = 0.05


def probation_s(probation: float, losses: int) -> float:
    """Seconds a server must answer after its ``losses``-th loss before calls go there again.

    A quarter of ``probation`` after the first, doubling with each further loss,
    at most ``probation``: a server restarted once costs little, a flapping one
    is kept out longer.
    """
    return probation * min(1.0, 0.25 * 2.0 ** max(losses - 1, 0))


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
        #: address -> (losses counted for its probation, when it was usable again).
        self._losses: dict[str, tuple[int, float]] = {}
        self._watcher: threading.Thread | None = None
        #: address -> this client's calls in flight there when it was last PINGed.
        self._mine: dict[str, int] = {}
        #: The servers that could not run a function, asked again later (:mod:`.lacking`).
        self._lacking = Lacking(config.probation)
        self._closed = threading.Event()
        self._pinged = 0.0
        self._first = True
        #: How many times the candidates were asked for: calls placed, and ``explain`` or a
        #: batch's plan (no lock: a count that only has to change).
        self.asked = 0
        #: Measures each usable server's link (again after it was lost): :mod:`offload.probing`.
        nbytes, beat = config.probe_bytes or PROBE_BYTES, config.heartbeat_interval
        self._prober = Prober(schedule(nbytes, beat, config.time_weight))
        #: What the decision reads: the usable servers now (a new tuple on every change).
        self.candidates: tuple[Candidate, ...] = ()
        #: Servers not usable now, and why (for ``explain`` and ``offload servers``).
        self.excluded: dict[str, str] = {}

    def ready(self, known: Callable[[], list[Known]]) -> tuple[Candidate, ...]:
        """The usable servers; the first time, after waiting for each one's first PONG."""
        self.asked += 1  # calls being placed, wherever they run: for the prober's looks
        if self._first:
            with self._first_lock:
                if self._first:
                    self.refresh(known(), wait=self._config.connect_timeout)
                    deadline = time.monotonic() + self._config.connect_timeout
                    self._prober.wait(self._answering(), deadline)
                    self._first = False
                    self._watcher = threading.Thread(
                        target=self.watch, name="offload-fleet-watch", daemon=True
                    )
                    self._watcher.start()
        return self.candidates

    def watch(self) -> None:
        """Until :meth:`close`: PING the servers about to change, then rebuild the tuple.

        Every ``heartbeat_interval / WATCH_PER_HEARTBEAT`` s: the servers lost, on
        probation or starting, and those whose latest PONG counted other clients' calls
        there; while this client makes calls (one ended within a heartbeat), every
        server, so that a server other clients just filled is seen within that time.
        Every :data:`STARTING_S` one whose workers start. Never one whose previous PING
        is still unanswered (a dead server's would pile up, and a call's estimate counts
        what is in flight there). Each step also sends the probes due
        (:mod:`offload.probing`).
        """
        step = max(STARTING_S, self._config.heartbeat_interval / WATCH_PER_HEARTBEAT)
        unanswered: dict[str, Future[Any]] = {}
        pinged: dict[str, float] = {}
        fine = STARTING_S
        calls, called = 0, 0.0
        asked, placed = 0, 0.0
        while not self._closed.wait(fine):
            now = time.monotonic()
            if self.asked != asked:
                asked, placed = self.asked, now
            with self._lock:
                total = sum(r.link.calls for r in self._remotes.values())
                if total != calls:
                    calls, called = total, now
                busy = now - called < self._config.heartbeat_interval  # calls being made
                watched = [
                    (address, remote)
                    for address, remote in self._remotes.items()
                    if (
                        busy
                        or address in self._lost
                        or address in self.excluded
                        or self._by_address[address].others > 0
                    )
                    and (address not in unanswered or unanswered[address].done())
                    and now - pinged.get(address, 0.0)
                    >= (fine if workers_starting(remote) else step)
                ]
            # Looks at a link that dropped pay off while calls are placed, here or there.
            self._prober.step(self._answering(), now - placed < self._config.heartbeat_interval)
            if not watched:
                if self._probation_ended(now):  # usable from now, not from the next PING
                    with self._lock:
                        self._rebuild()
                continue
            deadline = now + fine
            for address, remote in watched:
                pinged[address] = now
                unanswered[address] = self._ping(address, remote)
            for address, _ in watched:
                _answered(unanswered[address], deadline)
            with self._lock:
                self._rebuild()

    def _probation_ended(self, now: float) -> bool:
        """Whether a server answering again has answered for its probation by ``now``."""
        with self._lock:
            return any(
                since is not None and now - since >= self._probation(a)
                for a, since in self._lost.items()
            )

    def _probation(self, address: str) -> float:
        """Seconds ``address``, lost, must answer before calls go there again (lock held)."""
        return probation_s(self._config.probation, self._losses[address][0])

    def _answering(self) -> list[Remote]:
        """The connections to the servers that answer (usable, on probation, or starting)."""
        with self._lock:
            return [r for r in self._remotes.values() if r.conn.up is True]

    def _ping(self, address: str, remote: Remote) -> Future[Any]:
        """PING ``remote``, noting this client's calls in flight there as it goes."""
        self._mine[address] = remote.conn.in_flight()
        return remote.ping()

    def close(self) -> None:
        """Stop the watcher (the connections are the client's to close)."""
        self._closed.set()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)

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
                    pings.append((remote, self._ping(server.address, remote)))
        if wait > 0:  # the first PING connects; a second one, on an idle line, times the RTT
            deadline = now + wait
            answered = [r for r, pinged in pings if _answered(pinged, deadline)]
            for pinged in [self._ping(remote.address, remote) for remote in answered]:
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
        usable, excluded, starting = [], {}, []
        for address, candidate in self._by_address.items():
            remote = self._remotes[address]
            _update(candidate, remote, self._mine.get(address, 0))
            if candidate.lacks:
                self._lacking.forgive(candidate, remote, now)
            up = remote.conn.up
            if address in self._lost:
                since = self._lost[address]
                if not up:
                    self._lost[address] = None
                    excluded[address] = "lost; not answering"
                    continue
                if since is None:
                    self._lost[address] = since = now
                probation = self._probation(address)
                if now - since < probation:
                    excluded[address] = f"answering again: on probation for {probation:g} s"
                    continue
                del self._lost[address]
                self._losses[address] = (self._losses[address][0], now)
                log.warning(
                    "offload: %s answered for %g s: calls go there again", address, probation
                )
            elif up is False:  # silent by itself (heartbeats): lost like a lost call
                self._count_loss(address)
                self._lost[address] = None
                excluded[address] = "not answering"
                continue
            elif up is None:
                excluded[address] = "has not answered yet"
                continue
            if workers_starting(remote):  # its first call would wait for a worker to start
                starting.append(candidate)
                continue
            usable.append(candidate)
        if usable:  # else a call may as well queue where a worker is starting
            excluded.update((c.address, "starting: no worker ready yet") for c in starting)
        else:
            usable = starting
        self.excluded = {**{a: w for a, w in self.excluded.items() if "trusted" in w}, **excluded}
        self.candidates = tuple(usable)

    def lose(self, address: str) -> bool:
        """``address`` lost a call (its server died or went silent): use it no more for now.

        Returns False when it was already lost (the warning was said then).
        """
        with self._lock:
            first = address not in self._lost or self._lost[address] is not None
            if address not in self._lost:
                self._count_loss(address)
            self._lost[address] = None
            remote = self._remotes.get(address)
            if remote is not None and remote.conn.up:
                remote.conn.up = False  # answers again only once a PONG says so
            self._rebuild()  # without it: a server left out as starting may be the one left
            self.excluded[address] = "lost a call; not answering"
        return first

    def _count_loss(self, address: str) -> None:
        """One more loss of ``address`` for its probation (forgotten after a long usable run)."""
        self._prober.forget(address)
        losses, back = self._losses.get(address, (0, 0.0))
        if losses and time.monotonic() - back > FORGET * self._config.probation:
            losses = 0
        self._losses[address] = (losses + 1, float("inf"))

    def lacks(self, address: str, name: str) -> None:
        """The server at ``address`` cannot run ``name`` (unknown there, or another version)."""
        with self._lock:
            candidate = self._by_address.get(address)
            remote = self._remotes.get(address)
            if candidate is not None and remote is not None:
                self._lacking.mark(candidate, remote, name)

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


def _update(candidate: Candidate, remote: Remote, mine: int) -> None:
    """Copy what the server's latest PONG said into its candidate."""
    info = remote.server_info
    load = server_load(remote, mine)
    if load is None and isinstance(info.get("load"), dict):
        return  # a malformed load: keep the candidate as it was
    if load is not None:
        (candidate.others, candidate.workers, candidate.rate, candidate.service_s,
         candidate.clients) = load  # fmt: skip
    functions = info.get("functions")
    if isinstance(functions, list):
        candidate.functions = frozenset(f for f in functions if isinstance(f, str))
    candidate.ships_code = bool(info.get("code_shipping"))
