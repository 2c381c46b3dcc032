"""Where a call runs when a client can reach several servers (issue 13, item 5).

Split from :mod:`~offload.profiler.decision` (the decision between here and one
server): :mod:`.choice` ranks the servers, and here faces the best of them in
the decider's usual comparison, told how many servers could take the call (a
function never run here is tried here on other terms then, see :mod:`.cold`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from math import log
from typing import Any

from .choice import EXPLORE as EXPLORE_SERVER
from .choice import WHY, Candidate, ServerChoice
from .decider import LOCAL, REMOTE, Side
from .device import DeviceProfiler, DeviceState
from .history import FunctionProfile
from .network import Link
from .sizes import call_size

logger = logging.getLogger("offload.decision")


class Among:
    """The several-servers half of :class:`~offload.profiler.decision.AdaptiveDecider`."""

    servers: ServerChoice
    _device: DeviceProfiler
    _state: DeviceState | None
    _link: Link
    _debug: bool

    def profile(self, fn: Any) -> FunctionProfile:
        raise NotImplementedError

    def _adopt(self, state: DeviceState) -> None:
        raise NotImplementedError

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
        raise NotImplementedError

    def decide_among(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], servers: Sequence[Candidate]
    ) -> tuple[str, int]:
        """Where a call runs among here and ``servers``: "local" or an address; and its size."""
        size = call_size(fn, args, kwargs)
        return self.where_among(fn, size, servers), size

    def where_among(
        self,
        fn: Any,
        size: int,
        servers: Sequence[Candidate],
        here: bool = True,
        explore: bool = True,
    ) -> str:
        """ "local" or the address of the server a call of ``size`` goes to (see choice).

        ``here`` False (``mode="remote"``): the best server, "remote" if there is none;
        ``explore`` False (a call going on after its server was lost): no exploration.
        """
        prof = self.profile(fn)
        x = log(size) if size > 1 else 0.0
        if self._device.state is not self._state:
            self._adopt(self._device.state)
        reported = self._link.reported
        for candidate in servers:  # this device's access link is on the way to every server
            if candidate.link.reported != reported:
                candidate.link.on_reported(reported)
        server, why, ranked = self.servers.pick(prof, x, servers, fn.wire_name, explore)
        if server is None:
            return self.choose(prof, size, False) if here else REMOTE
        if here:
            # Here faces the best server: a server explored takes a call that goes to a
            # server anyway (faced with its stale estimate, here would win that call).
            face = ranked[0][1] if why == EXPLORE_SERVER else server
            wait = face.wait(self.servers.exec_s(prof, x, face))
            if self.choose(prof, size, True, face.link, wait, 0, len(ranked)) == LOCAL:
                return LOCAL
        else:
            prof.clock += 1
        self.servers.commit(prof, server, why, next(t for t, c in ranked if c is server), x)
        if self._debug:
            logger.debug("%s size=%d -> %s (%s)", prof.key, size, server.address, WHY[why])
        return server.address
