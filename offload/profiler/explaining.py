"""What the decider would do and why (``offload.explain``), and its running totals.

Split from :mod:`~offload.profiler.decision`: explaining runs the same
evaluation as a decision and changes nothing. With several servers it lists
every candidate ("here" and each server) with its estimate and why it lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import log
from typing import TYPE_CHECKING, Any

from .choice import EXPLORE as EXPLORE_SERVER
from .choice import WHY, Candidate, ServerChoice
from .decider import LOCAL, Explanation, Policy, Side
from .history import FunctionProfile
from .network import Link
from .sizes import call_size

if TYPE_CHECKING:
    from .profiler import Profiler

# Reasons, as short codes on the hot path and sentences in explain().
OFFLINE, COLD, CHEAPER, KEPT, EXPLORE = range(5)
REASONS = {
    OFFLINE: "no server answers: offline mode, run here",
    COLD: "no history on this side yet: try it once",
    CHEAPER: "estimated cheaper",
    KEPT: "kept the previous side: the other is not cheaper by the hysteresis margin",
    EXPLORE: "exploring: the other side's estimate is stale",
}

UNTRIED = (
    "never run here: tried here once its servers get dear (twice the usual), "
    "or after explore_every decisions per server"
)


class Explaining:
    """The visibility half of :class:`~offload.profiler.decision.AdaptiveDecider`."""

    profiler: Profiler
    policy: Policy
    servers: ServerChoice
    _profiles: dict[str, FunctionProfile]

    def profile(self, fn: Any) -> FunctionProfile:
        raise NotImplementedError

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
        raise NotImplementedError

    def costs(self, fn: Any, size: int) -> tuple[float, float, float, float, float] | None:
        """(local s, server s, transfer s, local J, remote J) of a call, if both sides are known."""
        _, _, est = self._evaluate(self.profile(fn), size, True, energy=True)
        if est[2] is None:
            return None
        t_local, t_exec, _, t_wire, e_local, e_remote, _ = est
        return t_local, t_exec, t_wire, e_local, e_remote

    def explain(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        server_up: bool,
        servers: Sequence[Candidate] | None = None,
    ) -> Explanation:
        """What a decision would answer for this call now, and why; changes nothing.

        ``servers``: the usable servers when there are several; the answer then
        names the chosen one and lists every candidate.
        """
        size = call_size(fn, args, kwargs)
        prof = self.profile(fn)
        chosen: Candidate | None = None
        ranked: list[tuple[float, Candidate]] = []
        why = 0
        log_x = log(size) if size > 1 else 0.0
        if servers is not None:
            chosen, why, ranked = self.servers.pick(prof, log_x, servers, fn.wire_name)
            seconds = self.servers.seconds  # shown in seconds, whatever they were ranked by
            ranked = [(seconds(prof, log_x, c, fn.wire_name), c) for _, c in ranked]
            server_up = chosen is not None
        link, wait = None, 0.0
        if chosen is not None:  # here faces the best server, as in where_among
            face = ranked[0][1] if why == EXPLORE_SERVER else chosen
            link, wait = face.link, face.wait(self.servers.exec_s(prof, log_x, face))
        among = len(ranked)
        side, reason, est = self._evaluate(prof, size, server_up, link, wait, 0, True, among)
        t_local, t_exec, t_remote, t_wire, e_local, e_remote, critical = est
        reasons = [REASONS[reason]]
        if reason == COLD and side != LOCAL and t_local is None and among > 1:
            reasons[0] = UNTRIED  # it is not tried at once (see cold.cold_among)
        state = self.profiler.device.state
        if critical:
            reasons.append(
                f"critical condition (battery {state.battery}, charging {state.charging}, "
                f"cpu {state.cpu_load:.0%}, free memory {state.memory_free:.0%}): prefer online"
            )
        known = t_remote is not None
        result = Explanation(
            side=side,
            reasons=reasons,
            size=size,
            estimates={
                "local": {"time_s": t_local, "energy_j": e_local if known else None},
                "remote": {
                    "time_s": t_remote,
                    "server_s": t_exec,
                    "transfer_s": t_wire,
                    "energy_j": e_remote if known else None,
                },
            },
            device={
                "cpu_load": state.cpu_load,
                "memory_free": state.memory_free,
                "battery": state.battery,
                "charging": state.charging,
                "power_w": state.power_w,
            },
            link=(link or self.profiler.link).snapshot(),
            energy_source=self.profiler.energy.source,
            objective_time_weight=self.policy.time_weight,
        )
        if servers is not None:
            result.server = chosen.address if chosen is not None else None
            result.candidates = _candidates(
                side, reasons[0], t_local, chosen, why, ranked, servers, fn.wire_name
            )
        return result

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function and side: calls, seconds, bytes up and down, joules."""
        source = self.profiler.energy.source
        return {
            prof.key.split("@")[0]: {
                "local": dict(prof.totals["local"]),
                "remote": dict(prof.totals["remote"]),
                "energy_source": source,
            }
            for prof in list(self._profiles.values())
        }


def _candidates(
    side: Side,
    reason: str,
    t_local: float | None,
    chosen: Candidate | None,
    why: int,
    ranked: list[tuple[float, Candidate]],
    servers: Sequence[Candidate],
    name: str,
) -> list[dict[str, Any]]:
    """Every candidate, here first: its estimate, whether chosen, and why it lost."""
    here_won = side == LOCAL
    rows: list[dict[str, Any]] = [
        {
            "where": "here",
            "time_s": t_local,
            "chosen": here_won,
            "why": reason
            if here_won
            else f"the server {chosen.address if chosen else '?'} won: " + reason,
        }
    ]
    t_chosen = next((t for t, c in ranked if c is chosen), None)
    for t, c in ranked:
        row: dict[str, Any] = {"where": c.address, "time_s": t, "ahead": c.others + c.in_flight()}
        row["chosen"] = c is chosen and not here_won
        if c is chosen:
            row["why"] = WHY[why] + ("" if not here_won else f"; but here won: {reason}")
        elif t_chosen is not None and t >= t_chosen:
            row["why"] = f"estimated {t / t_chosen - 1:.0%} slower than {chosen.address}"  # type: ignore[union-attr]
        else:
            row["why"] = f"not chosen: {WHY[why]} ({chosen.address if chosen else 'none'})"
        rows.append(row)
    for c in servers:
        if not c.serves(name):
            rows.append(
                {"where": c.address, "time_s": None, "chosen": False, "why": f"lacks {name}"}
            )
    return rows
