"""Which server a call goes to, when a client can reach several (issue 13, item 5).

Each usable server is a :class:`Candidate`: its own
:class:`~offload.profiler.network.Link` (RTT, bandwidth, and the server's
speed as ``server_drift``, learned from the calls that ran there), the load
its latest PONG reported, this client's calls in flight there, and what it
is known to serve. For a call of log size ``x`` the estimate on one server is::

    t = RTT + overhead + up(x) / B_up + exec(x) * drift + wait + down(x) / B_down

where ``exec(x)`` is the function's model of server time (shared by all
servers; each one's drift says how fast it is against that model) and
``wait`` the time spent behind the calls ahead of this one there
(:meth:`Candidate.wait`): ``max(0, ahead + 1 - workers) / workers`` runs,
``ahead`` being the other clients' calls (from the PONG: those running, and
of those queued one per client waiting, as the server takes calls
round-robin between clients) and this client's in flight, a run of another
client's lasting the server's mean run lately (``service_s``; from an older
server, ``workers / rate``, its recent service rate).
Before any PING answered, the RTT is a prior from the distance to the server
(or 5 ms when it is not known): distance is a prior, never the criterion.

With the energy objective the servers are ranked with each second of transfer
weighted by the radio's power over the idle device's (:attr:`ServerChoice.transfer_w`):
a slow link costs more joules than its seconds say.

Hysteresis and exploration are the decider's, extended over servers: the
server used last by a function stays until another is ``hysteresis``
cheaper; a server is tried again once the seconds spent on calls since one
last went there are ``explore_every`` times what trying it costs on this
call (so one slow sample does not condemn a server for good), likewise its
link once those spent since a call there last moved enough bytes to tell
its bandwidth, on a call that would and is mostly transfer there (small
calls tell the server's speed, not its link's: a link measured while weak
stayed condemned while only they went there), or when this
function has not used it for ``explore_every`` times (its extra cost, 0.25
to 50) of its decisions, on a call no bigger than usual; each of these
waits as many times longer as there are servers, as here's explorations do
(here and the other servers share the ``1 / explore_every`` budget). The
chosen server then faces "here" in the decider's usual time/energy
comparison. Everything read here is a plain attribute: no system call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import exp
from typing import Any

from .history import THERE, FunctionProfile
from .network import BOUND, Link

#: Seconds of round trip per km of distance (light in fibre, and routes twice as long).
RTT_PER_KM = 2e-5
#: The round trip assumed before any PING answered and with no distance to go by.
RTT_UNKNOWN = 0.005
#: The run assumed of a function never run anywhere, to weigh the queues ahead of it.
UNRUN_S = 0.01

# Why a server was chosen (short codes on the hot path).
BEST, KEPT, EXPLORE = range(3)
WHY = {
    BEST: "estimated fastest server",
    KEPT: "kept the server used last: no other is cheaper by the hysteresis margin",
    EXPLORE: "exploring: this server's estimate for the function is stale",
}


def _no_calls() -> int:
    return 0


@dataclass(eq=False)
class Candidate:
    """One server a call may go to, as the decision reads it: plain attributes, no I/O.

    The client's server list (:class:`~offload.servers.Servers`) keeps these
    current from its profiler thread (each PONG's load, the functions the
    server serves); the decision only reads them.
    """

    address: str
    link: Link
    distance_km: float | None = None
    workers: int = 1
    others: int = 0  # other clients' calls queued or running there at its latest PONG
    rate: float = 0.0  # calls it ended per second lately (its PONG's ``rate_per_s``)
    service_s: float = 0.0  # a call's mean run there lately (its PONG's; 0.0: not told)
    clients: int | None = None  # clients with calls waiting there (its PONG's; None: not told)
    in_flight: Callable[[], int] = _no_calls  # this client's requests there now
    functions: frozenset[str] | None = None  # the names it serves (None: not known yet)
    ships_code: bool = False  # it accepts functions it lacks by value
    lacks: set[str] = field(default_factory=set)  # failed there as unknown or another version

    @property
    def rtt_prior(self) -> float:
        """The round trip assumed before one is measured: from the distance, if known."""
        if self.distance_km is None:
            return RTT_UNKNOWN
        return 0.001 + self.distance_km * RTT_PER_KM

    def wait(self, t_exec: float) -> float:
        """Seconds a call that runs ``t_exec`` there waits behind the calls ahead of it.

        ``(ahead + 1 - workers) / workers`` runs. Ahead of it: this client's calls in
        flight, the other clients' running ones and, of their queued ones, one per
        client waiting when the PONG says how many (the server takes calls round-robin
        between clients: a newcomer waits behind one call of each, not behind a batch),
        else all. A run of another client's is the server's mean run (``service_s``)
        when told; else ``workers / rate``, never shorter than this one (a rate over a
        window the server was partly idle in is too low: the run it implies too long);
        else :data:`UNRUN_S`.
        """
        workers = self.workers if self.workers > 0 else 1
        others = self.others
        queued = others - workers
        clients = self.clients
        if clients is not None and queued > clients:
            others -= queued - (clients if clients > 0 else 1)
        excess = others + self.in_flight() + 1 - workers
        if excess <= 0:
            return 0.0
        run = t_exec
        if others:  # another client's run
            if self.service_s > 0:
                other = self.service_s
            else:
                other = workers / self.rate if self.rate > 0 else UNRUN_S
                other = other if other > run else run
            run = (run * (excess - others) + other * others) / excess
        return excess * run / workers

    def serves(self, name: str) -> bool:
        """Whether a call of ``name`` can run there (perhaps by shipping its code)."""
        if name in self.lacks:
            return False
        return self.functions is None or name in self.functions or self.ships_code


class ServerChoice:
    """Ranks the usable servers for one call; remembers each function's last and tried ones."""

    def __init__(self, hysteresis: float, explore_every: int) -> None:
        self._keep = 1.0 - hysteresis
        self._every = explore_every
        #: How much a second of transfer weighs against a second of waiting: 1 for the
        #: time objective; for energy, the radio's power over the idle device's (the
        #: decider sets it), so that a slow link costs what its joules do.
        self.transfer_w = 1.0
        self._last: dict[str, str] = {}  # function key -> address used last
        self._seen: dict[tuple[str, str], int] = {}  # (function key, address) -> decision
        self._spent = 0.0  # estimated seconds of the calls sent so far
        self._fresh: dict[str, float] = {}  # address -> _spent when a call last went there
        #: address -> _spent when a call big enough to measure its bandwidth last went there
        #: (a small call measures the server's speed, not the link: a link that was weak and
        #: recovered stays condemned by its old estimate if only small calls try it).
        self._fresh_bw: dict[str, float] = {}

    def seconds(self, prof: FunctionProfile, x: float, c: Candidate, name: str) -> float:
        """Seconds a call of log size ``x`` would take on ``c`` (see the module's formula)."""
        fixed, t_up, t_exec, t_down = self.parts(prof, x, c, name)
        return fixed + t_up + t_exec + c.wait(t_exec) + t_down

    def estimate(self, prof: FunctionProfile, x: float, c: Candidate, name: str) -> float:
        """What the servers are ranked by: :meth:`seconds`, the transfer's weighted by
        :attr:`transfer_w` (1 for the time objective)."""
        fixed, t_up, t_exec, t_down = self.parts(prof, x, c, name)
        return fixed + t_exec + c.wait(t_exec) + self.transfer_w * (t_up + t_down)

    def parts(
        self, prof: FunctionProfile, x: float, c: Candidate, name: str
    ) -> tuple[float, float, float, float]:
        """(round trip and overhead, upload, run, download) seconds of a call on ``c``.

        The run once a worker takes it: the wait behind others is not in it.
        """
        link = c.link
        up, down = _bytes(prof, x)
        t_up, t_down = up / link.up_rate, down / link.down_rate
        fixed = link.fixed if link.rtt.mean is not None else c.rtt_prior
        if c.functions is not None and name not in c.functions:
            fixed *= 2  # its code goes first (an UnknownFunction, then the call by value)
        return fixed, t_up, self.exec_s(prof, x, c), t_down

    def exec_s(self, prof: FunctionProfile, x: float, c: Candidate) -> float:
        """Seconds a call of log size ``x`` runs on ``c`` once a worker takes it."""
        if not prof.time.count:  # never run: the model's prior would say ``size`` seconds
            return UNRUN_S * c.link.server_drift.value
        a, b, _ = prof.time.params
        return exp(a + b * x) * c.link.server_drift.value

    def pick(
        self,
        prof: FunctionProfile,
        x: float,
        candidates: Sequence[Candidate],
        name: str,
        explore: bool = True,
    ) -> tuple[Candidate | None, int, list[tuple[float, Candidate]]]:
        """(server, why, [(estimate, server)] best first) for a call; changes nothing.

        ``explore`` False: never a server only to explore it (a call that already lost
        its server goes on to the best one left: its caller has waited once already).
        """
        ranked = sorted(
            ((self.estimate(prof, x, c, name), c) for c in candidates if c.serves(name)),
            key=_first,
        )
        if not ranked:
            return None, BEST, ranked
        t_best, best = ranked[0]
        last = self._last.get(prof.key)
        if last is not None and last != best.address:
            for t, c in ranked:
                if c.address == last:
                    if t_best > t * self._keep:
                        return c, KEPT, ranked
                    break
        if explore and prof.time.counts[THERE]:  # once the function has run somewhere
            # Here and the other servers share one budget: each waits len(ranked) times.
            clock, every, spent = prof.clock, self._every * len(ranked), self._spent
            for t, c in ranked[1:]:
                # Across functions: once the seconds spent since this server was last
                # measured are ``every`` times what trying it costs on this call.
                gap = every * (t - t_best)
                if spent - self._fresh.get(c.address, 0.0) >= gap:
                    return c, EXPLORE, ranked
                # Its bandwidth, on a call that would measure it and is mostly transfer there.
                if spent - self._fresh_bw.get(c.address, 0.0) >= gap and self._measures_link(
                    prof, x, c, t
                ):
                    return c, EXPLORE, ranked
                # This function's own estimate there: after every * (extra cost) decisions.
                extra = t / t_best - 1.0 if t_best > 0 else 50.0
                wait = every * (0.25 if extra < 0.25 else 50.0 if extra > 50.0 else extra)
                seen = self._seen.get((prof.key, c.address), 0)
                if clock - seen >= wait and t <= 2.0 * prof.typical:
                    return c, EXPLORE, ranked
        return best, BEST, ranked

    def _measures_link(self, prof: FunctionProfile, x: float, c: Candidate, t: float) -> bool:
        """Whether a call of log size ``x`` on ``c`` (estimated ``t``) would tell its link's
        bandwidth (``BOUND`` bytes one way, see :class:`~.network.Link`) and is mostly
        transfer there (so that the estimate matters)."""
        up, down = _bytes(prof, x)
        if up < BOUND and down < BOUND:
            return False
        link = c.link
        return self.transfer_w * (up / link.up_rate + down / link.down_rate) > 0.25 * t

    def commit(
        self, prof: FunctionProfile, server: Candidate, why: int, t: float, x: float | None = None
    ) -> None:
        """The call goes to ``server`` (estimated ``t`` s); it is the last one unless explored.

        ``x``: the call's log size, to tell whether it measures the link's bandwidth.
        """
        self._spent += t
        self._fresh[server.address] = self._spent  # its reply measures it afresh
        if x is not None and max(_bytes(prof, x)) >= BOUND:
            self._fresh_bw[server.address] = self._spent
        self._seen[(prof.key, server.address)] = prof.clock
        if why != EXPLORE:
            self._last[prof.key] = server.address


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def _bytes(prof: FunctionProfile, x: float) -> tuple[float, float]:
    """Bytes up and down of a call of log size ``x``, as the function's models expect."""
    a, b, _ = prof.up.params
    up = exp(a + b * x)
    a, b, _ = prof.down.params
    return up, exp(a + b * x)
