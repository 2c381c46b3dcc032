"""Where a call runs: the decision engine the client asks on every ``auto`` call.

For a call of size ``s`` (bytes of the arguments, or the function's own
``size=``), the engine estimates from the profiler:

* local time ``t_L = local(s)`` and energy ``E_L = P_cpu * t_L``;
* remote time ``t_R = RTT + overhead + up(s)/B_up + server(s) + down(s)/B_down``
  and energy ``E_R = P_tx * t_up + P_rx * t_down + P_idle * (t_R - t_up - t_down)``;

then scores each side as ``w * t / (t_L + t_R) + (1 - w) * E / (E_L + E_R)``
(``w`` is 1 for ``objective="time"``, 0 for ``"energy"``, or the given mix)
and runs the call on the cheaper side, subject to, in order:

1. Offline: no server answers, so local (DCOF's offline mode).
2. Cold start: a function never run remotely is offloaded once (DCOF's
   online mode). Its local time is then estimated from its server time and
   how much slower this device has been on other functions; until that is
   known, it is run here once, on a call the server did in under
   ``cheap_try_s`` even if its cost grew with the square of its size (or after
   four calls without one, on a call no bigger than those seen there). Until
   one of its runs here lasts ``Drift.floor`` (shorter ones time fixed costs,
   alike on both sides), how much slower here is is at least what other
   functions showed. With several servers, here is tried on a dear call, or
   after ``explore_every`` decisions per server (:func:`.cold.cold_among`).
3. Critical conditions (DCOF's switch to online mode): the battery below
   ``battery_low`` and discharging (the objective becomes energy), the CPU
   above ``cpu_busy`` or free memory below ``memory_low``: the local score is
   multiplied by ``critical_bias``.
4. Hysteresis: the side changes only when the other is ``hysteresis`` cheaper.
5. Exploration: the side not chosen is tried again once what makes it look
   worse is stale. For the function's own history of that side: after
   ``explore_every * (its extra cost, 0.25 to 50)`` of its decisions, on a call
   no bigger than usual. Across functions (that side's speed, a server seen
   busy; or the bandwidth, for a call that is mostly transfer): once the
   seconds spent on all calls since it was last measured are
   ``explore_every`` times this call's extra cost, so the first call cheap
   enough to try is the one that tries it. A change (a link that recovered)
   is noticed while each kind of exploration costs at most about
   ``1 / explore_every`` of the total (with several servers, here's own
   history waits as many times longer as there are servers: they share that
   budget). When this device gets much slower (its
   CPU taken by another app), or a critical condition begins or ends, the
   server side is re-checked at once.

The path reads plain attributes and does a few float operations: no system
call, no lock. :meth:`AdaptiveDecider.explain` runs the same code and says why.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from math import exp, log
from typing import Any

from .among import Among
from .choice import ServerChoice
from .cold import cold_among, cold_local
from .decider import LOCAL, REMOTE, Policy, Side
from .device import DeviceState
from .explaining import CHEAPER, COLD, EXPLORE, KEPT, OFFLINE, Explaining
from .history import HERE, THERE, FunctionProfile
from .learning import Learning, contention
from .network import Link
from .profiler import Profiler
from .sizes import call_size

logger = logging.getLogger("offload.decision")

#: Profiles kept in memory at once (functions made at run time must not grow it forever).
MAX_PROFILES = 1024

#: A device this much slower than at the last sample re-checks the server side (see _adopt).
_RECHECK = 1.5

_SETTLED = frozenset((CHEAPER, KEPT))  # reasons that settle the side: one lookup per call


def _none() -> None:
    """What the weak reference to the last function decided gives before there is one."""


class AdaptiveDecider(Among, Explaining, Learning):
    """The default decider: per-call estimates of time and energy from a :class:`Profiler`."""

    def __init__(self, profiler: Profiler, policy: Policy | None = None) -> None:
        self.profiler = profiler
        self.policy = policy or Policy()
        self._link, self._energy, self._device = profiler.link, profiler.energy, profiler.device
        self._local_drift = profiler.local_drift
        # The policy's numbers, and what the current device state means for the
        # decision, kept as plain attributes: the hot path reads, never derives.
        self._every, self._cheap_try_s = self.policy.explore_every, self.policy.cheap_try_s
        self._keep = 1.0 - self.policy.hysteresis
        #: Which server, when there are several (:mod:`.choice`).
        self.servers = ServerChoice(self.policy.hysteresis, self._every)
        # Seconds spent so far (each decision's estimated cost on its side), and what had
        # been spent when each shared estimate was last refreshed: the server's speed
        # (THERE), this device's (HERE), the bandwidth.
        self._spent = 0.0
        self._fresh = [0.0, 0.0]
        self._fresh_link = 0.0
        self._state: DeviceState | None = None
        self._busy = 1.0
        self._critical = False
        self._adopt(self._device.state)
        # Learning (never deciding) takes this: calls finish on several threads, and
        # the drifts, the slowdown and the link are shared by all functions.
        self._learning = threading.Lock()
        # By the function's key (name and fingerprint), so transient wrappers of one
        # function share a profile; the least recently created go past MAX_PROFILES.
        self._profiles: OrderedDict[str, FunctionProfile] = OrderedDict()
        self._last: tuple[Callable[[], Any], FunctionProfile] = (_none, FunctionProfile(""))

    # -- the hot path ------------------------------------------------------------------------

    def _adopt(self, state: DeviceState) -> None:
        """Derive from a new device snapshot: objective weight, bias, critical, contention."""
        policy = self.policy
        weight, bias, critical = policy.time_weight, 1.0, False
        battery = state.battery
        if battery is not None and battery < policy.battery_low and not state.charging:
            weight, bias, critical = 0.0, policy.critical_bias, True
        if state.cpu_load > policy.cpu_busy or state.memory_free < policy.memory_low:
            bias, critical = policy.critical_bias, True
        if self._state is not None and critical != self._critical:
            # A critical condition began or ended (the battery ran low or was charged, the
            # CPU or memory ran short): the sides settled before were weighed otherwise,
            # and the server's speed may be as stale as the time since it was last
            # tried, so the next call able to measure it goes there once.
            self._fresh[THERE] = -1e300
        self._weight, self._bias, self._critical = weight, bias, critical
        # Ranking servers: a second of transfer against a second of waiting, in joules too.
        model = self._energy
        radio = (model.tx_w + model.rx_w) / 2 / model.idle_w if model.idle_w > 0 else 1.0
        self.servers.transfer_w = weight + (1.0 - weight) * radio
        self._credit_s = policy.credit_value_s
        busy = contention(state.cpu_load)
        if busy > _RECHECK * self._busy:
            # This device just got much slower (another app took its CPU): running
            # there matters more than when the server's speed and the link were last
            # measured, so the next call able to measure them goes there once.
            self._fresh[THERE] = self._fresh_link = -1e300
        self._busy = busy
        mbit = state.link_mbit
        if mbit != (self._state.link_mbit if self._state is not None else None):
            # The access link reports a new rate: the bandwidth estimate follows at once.
            self._link.on_reported(mbit * 125_000.0 if mbit is not None else None)
        self._state = state
        # Asking the logger costs more than a decision; a new level shows with the next sample.
        self._debug = logger.isEnabledFor(logging.DEBUG)

    def decide(
        self, fn: Any, args: tuple[Any, ...], kwargs: Any, server_up: bool, extra_up: int = 0
    ) -> tuple[Side, int]:
        size = call_size(fn, args, kwargs)
        # The last function decided, and its profile: calls of one function come in runs,
        # and fn.key, a property, costs as much as a tenth of the decision. Weakly: a
        # wrapper must not keep its function alive (a bound method, so its instance).
        last = self._last
        prof = last[1]
        if last[0]() is not fn:
            prof = self.profile(fn)
            try:
                self._last = (weakref.ref(fn), prof)  # one tuple: read whole by other threads
            except TypeError:  # a function object that takes no weak reference: not kept
                self._last = (_none, prof)
        side = self.choose(prof, size, server_up, None, 0.0, extra_up)
        if self._debug:
            logger.debug("%s size=%d -> %s", prof.key, size, side)
        return side, size

    def choose(
        self,
        prof: FunctionProfile,
        size: int,
        server_up: bool,
        link: Link | None = None,
        wait: float = 0.0,
        extra_up: int = 0,
        among: int = 0,
    ) -> Side:
        """Decide for a call of ``size`` and advance the function's decision clock.

        ``link``: the server's (default the configured one); ``wait``: seconds the
        call would wait there behind others (see :mod:`.choice`); ``extra_up``:
        bytes to send before the call could run there (its app, to provision);
        ``among``: how many servers could take it, when several (see :mod:`.cold`).
        """
        side, reason, est = self._evaluate(prof, size, server_up, link, wait, extra_up, among=among)
        clock = prof.clock = prof.clock + 1
        if est[2] is not None:  # the cost of a typical call, to keep explorations cheap
            best = est[2] if est[0] is None or est[2] < est[0] else est[0]
            prof.typical += 0.1 * (best - prof.typical)
            prof.typical_w += 0.1 * (1.0 - prof.typical_w)
            self._spent += best
        if reason in _SETTLED:  # the usual case, tested first: the side stands
            prof.side = side
        elif reason != OFFLINE:  # COLD or EXPLORE
            # Mark the side as freshly tried so that calls made before this one
            # reports do not all try it too; its result moves the mark on.
            index = HERE if side == LOCAL else THERE
            prof.time.seen[index] = clock
            self._fresh[index] = self._spent
            if index == THERE:
                self._fresh_link = self._spent
            if reason == COLD:  # an exploration does not move the side settled on
                prof.side = side
        return side

    def _evaluate(
        self,
        prof: FunctionProfile,
        size: int,
        server_up: bool,
        link: Link | None = None,
        wait: float = 0.0,
        extra_up: int = 0,
        energy: bool = False,
        among: int = 0,
    ) -> tuple[Side, int, tuple[Any, ...]]:
        """(side, reason, estimates) without changing any state (``among``: see choose).

        The estimated joules are ``None`` when the objective is time alone, unless
        ``energy`` asks for them (``explain``, ``costs``): the decision does not need them.
        """
        x = log(size) if size > 1 else 0.0  # log_size, inlined: the hot path
        if link is None:
            link = self._link
        if self._device.state is not self._state:
            self._adopt(self._device.state)
        m = prof.time
        a, b, c = m.params
        base = a + b * x
        nominal = exp(base)  # the call's execution time on a server of nominal speed
        there, here = m.counts  # indices THERE = 0, HERE = 1
        busy = self._busy
        if here and not prof.timed_here:
            # Its runs here all too short to time (fixed costs, alike on both sides, pull
            # the ratio towards 1): here is at least as much slower as others showed.
            prior = link.slowdown.mean
            if prior is not None and prior > c:
                c = prior
        t_local = nominal * exp(c) * self._local_drift.value * busy if here else None
        if not server_up:
            return LOCAL, OFFLINE, (t_local, None, None, None, 0.0, 0.0, False)
        drift = link.server_drift
        every = self._every
        if not there or t_local is None:  # a cold start to weigh (else the usual case, below)
            t_exec = nominal * drift.value + wait if there else None
            if t_exec is None and prof.clock - m.seen[THERE] >= every:
                # Its app alone would take longer to send than the call takes here: local.
                app_s = link.fixed + extra_up / link.up_rate if extra_up else 0.0
                if extra_up and t_local is not None and app_s > t_local:
                    return LOCAL, CHEAPER, (t_local, None, None, None, 0.0, 0.0, False)
                return REMOTE, COLD, (t_local, None, None, None, 0.0, 0.0, False)
            if t_local is None and there and link.slowdown.mean is not None:
                # Never run here, but other functions say how much slower here is.
                t_local = exp(base + link.slowdown.mean) * self._local_drift.value * busy
            alone = among < 2  # several servers: never run here is weighed below (cold_among)
            if alone and t_local is None and cold_local(prof, x, t_exec, self._cheap_try_s):
                return LOCAL, COLD, (None, t_exec, None, None, 0.0, 0.0, False)
            if t_exec is None or (alone and t_local is None):  # a first try still running
                return (REMOTE if t_local is None else LOCAL), COLD, (t_local, t_exec) + (None,) * 5
        else:
            t_exec = nominal * drift.value + wait

        # Both sides known (a remote sample also teaches the byte models).
        a, b, _ = prof.up.params
        t_up = (exp(a + b * x) + extra_up) / link.up_rate
        a, b, _ = prof.down.params
        t_down = exp(a + b * x) / link.down_rate
        t_remote = link.fixed + t_up + t_exec + t_down
        if t_local is None:  # never run here, with several servers to run it
            go = cold_among(prof, x, t_exec, t_remote, self._cheap_try_s, every, among)
            est = (None, t_exec, t_remote, t_up + t_down, None, None, False)
            return (LOCAL if go else REMOTE), COLD, est
        # A site's credits, as the time they are worth to the user (credit_value_s).
        t_cost = t_remote + self._credit_s * link.price_s * t_exec
        weight = self._weight
        if weight == 1.0 and not energy:  # the time objective: the joules are not needed
            s_local, s_remote = self._bias * t_local, t_cost  # (scores compare only as ratios)
            e_local = e_remote = None
        else:
            # EnergyModel.local and .remote, inlined: the radio is busy for the wire's
            # share of the transfer, the device idles for the rest of the call.
            model, bias = self._energy, self._bias
            e_local = model.cpu_w * t_local
            radio_up, radio_down = t_up * link.radio_up, t_down * link.radio_down
            idle = t_remote - radio_up - radio_down
            e_remote = model.tx_w * radio_up + model.rx_w * radio_down
            if idle > 0:
                e_remote += model.idle_w * idle
            if weight == 0.0:
                s_local, s_remote = bias * e_local, e_remote
            else:
                per_s = weight / (t_local + t_cost)  # each side's share of the time, weighted
                per_j = (1.0 - weight) / (e_local + e_remote)  # and of the energy
                s_local = bias * (per_s * t_local + per_j * e_local)
                s_remote = per_s * t_cost + per_j * e_remote
        estimates = (t_local, t_exec, t_remote, t_up + t_down, e_local, e_remote, self._critical)

        if s_local <= s_remote:  # one test of the side, not one per use: the hot path
            side, best, other = LOCAL, s_local, s_remote
        else:
            side, best, other = REMOTE, s_remote, s_local
        reason = CHEAPER
        last = prof.side
        if last != side and last is not None and best > other * self._keep:
            side, reason, best, other = (REMOTE if side == LOCAL else LOCAL), KEPT, other, best
        # Explore the other side if what makes it look worse has gone stale, in
        # proportion to how much worse: this function's own estimate of it, or
        # (across functions) the speed of that side or the bandwidth.
        # Waiting every * (extra cost of one try) decisions keeps the cost of
        # exploring under about 1 / every of the total.
        extra = other / best - 1.0 if best > 0 else 50.0
        wait = every * (0.25 if extra < 0.25 else 50.0 if extra > 50.0 else extra)
        # Across functions: once the seconds spent since that side was last measured are
        # ``every`` times this call's extra cost (``budget``), the first call cheap
        # enough tries it. (A pessimistic estimate is not faded with disuse: that sent
        # big calls to a server still busy; a cheap call finds out first.)
        spent = self._spent
        if side == LOCAL:
            budget = every * extra * t_local
            shared = (t_up + t_down > 0.25 * t_remote and spent - self._fresh_link >= budget) or (
                drift.value > 1.2
                and spent - self._fresh[THERE] >= budget
                and nominal >= drift.floor  # long enough to measure speed
            )
            seen, cost, elsewhere = m.seen[THERE], t_local, REMOTE
        else:
            budget = every * extra * t_remote
            here_drift = self._local_drift
            shared = (
                here_drift.value > 1.2
                and spent - self._fresh[HERE] >= budget
                and nominal * exp(c) >= here_drift.floor
            )
            seen, cost, elsewhere = m.seen[HERE], t_remote, LOCAL
            if among > 1:  # here is one of the sides sharing the budget (see cold_among)
                wait *= among
        own = prof.clock - (seen if seen > 0 else 0) >= wait
        # ...on a call no bigger than usual: never a big one just to learn.
        if shared or (own and cost <= 2.0 * prof.typical):
            return elsewhere, EXPLORE, estimates
        return side, reason, estimates

    def profile(self, fn: Any) -> FunctionProfile:
        """What has been learned about ``fn`` (created, or loaded from disk, on first use)."""
        key = fn.key
        prof = self._profiles.get(key)
        if prof is None:
            prof = self.profiler.store.profile(key)
            self._profiles[key] = prof
            while len(self._profiles) > MAX_PROFILES:
                self._profiles.popitem(last=False)  # the store keeps what it learned
        return prof
