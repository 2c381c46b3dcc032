"""The client: a :class:`concurrent.futures.Executor` that runs each call here or on a server.

:class:`Client` puts the pieces together and is the API: a
:class:`~offload.profiler.Profiler` (what is measured), a
:class:`~offload.profiler.Decider` (where ``auto`` calls go),
:class:`~offload.servers.Servers` (the connections), and the
:class:`~offload.routing.Router`, the one place every call is routed. In
``auto`` mode a call the server cannot take (unreachable, busy, unknown
function, other code version, too large) runs locally instead, with one
warning per function and reason, so the app keeps working offline. Failures
of the function itself are never retried: they are raised as the function's
own exception type.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from . import _exceptions as errors
from .api import OffloadedFunction, as_offloaded
from .batch import BatchPlanner, BatchResult
from .checkpoints import read_checkpoint
from .config import Config
from .control import ServerJobs
from .jobs import Job
from .profiler import LOCAL, REMOTE, AdaptiveDecider, Decider, Explanation, Profiler, Stats
from .routing import Router
from .servers import Servers, config_bps


class Client(Executor):
    """Runs offloadable calls on ``server`` or locally; thread-safe, many calls in flight.

    ``server`` overrides ``config.server``; ``settings`` override other fields
    of a config loaded by :meth:`Config.load`. ``decider`` and ``profiler``
    replace the default :class:`~offload.profiler.AdaptiveDecider` and the
    :class:`~offload.profiler.Profiler` it reads.
    """

    def __init__(
        self,
        server: str | object | None = None,
        *,
        config: Config | None = None,
        decider: Decider | None = None,
        profiler: Profiler | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = Config.load(**settings)
        elif settings:
            config = config.replace(**settings)
        if server is not None:
            config = config.replace(server=str(server))
        self.config = config
        #: What the decisions are made from (built from ``config`` unless given).
        self.profiler = profiler or Profiler(
            energy_profile=config.energy_profile,
            profile_cache=config.profile_cache,
            prior_bps=config_bps(config),
            interval=config.profile_interval,
            address=config.server or "",
        )
        #: Chooses the side of ``auto`` calls and learns from finished ones.
        self.decider: Decider = decider or AdaptiveDecider(self.profiler, config.policy())
        #: The connections to the server(s).
        self.servers = Servers(config, self.profiler.link)
        #: Where every call is routed.
        self.router = Router(config, self.decider, self.servers)
        self._batches = BatchPlanner(self.router, self.decider, self.servers, self.profiler.link)
        busy = self.servers.primary is not None or self.servers.fleet
        self.profiler.start(self.servers.tick if busy else None)

    @property
    def server_info(self) -> dict[str, Any]:
        """The server's self-description (functions, limits, instance), from its latest PONG."""
        return self.servers.info

    @property
    def server(self) -> ServerJobs:
        """This client's jobs on its server: list, status, result, wait, cancel, usage, health."""
        return ServerJobs(self.servers.require(), max(self.config.connect_timeout, 10.0))

    # -- Executor API ---------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Start ``fn(*args, **kwargs)`` here or remotely; return its future."""
        return self.router.submit(as_offloaded(fn), args, kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like :meth:`Executor.map`; all calls are in flight at once."""
        return super().map(as_offloaded(fn), *iterables, timeout=timeout, chunksize=chunksize)

    def map_within(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        deadline: float,
        **options: Any,
    ) -> BatchResult:
        """Run the batch split between here and the server so it is done by ``deadline`` s.

        ``options`` (see :meth:`offload.batch.BatchPlanner.run`): ``objective``
        ("energy" or "time"), ``max_drop`` (long-run share of items that may
        be dropped to save energy), ``policy`` ("djos", "lfos", "efos"),
        ``late`` ("drop": items not done in time are
        :class:`~offload.batch.Dropped`; "complete": done anyway), ``weight``
        (DJOS's M).
        """
        self._check_open()
        calls = list(zip(*iterables))
        return self._batches.run(as_offloaded(fn), calls, deadline=deadline, **options)

    def resume_from(
        self, path: str | os.PathLike[str], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Job:
        """Continue ``fn(*args, **kwargs)`` from a checkpoint file an earlier process wrote.

        The file is one ``checkpoint_dir`` holds (:func:`offload.checkpoints.checkpoint_path`);
        its state is loaded as the function's results are, with the restricted unpickler.
        """
        self._check_open()
        fn = as_offloaded(fn)
        if fn.checkpoint_every is None:
            raise errors.NotCheckpointable(f"{fn.wire_name} takes no checkpoints")
        state, count = read_checkpoint(path, fn)
        side, size = self.router.place(fn, args, kwargs, self.router.mode_of(fn))
        job = Job(fn, args, kwargs, size, state, count, host=self.router)
        return job.start(side)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls, as :meth:`Executor.shutdown`.

        ``wait``: return once every call in flight has finished, however long
        that takes (none is failed or run again here to hurry it).
        ``cancel_futures``: first cancel the calls that have not started (queued
        here or on the server).
        """
        self.profiler.stop()
        self.router.shutdown(wait, cancel_futures=cancel_futures)

    # -- calls ----------------------------------------------------------------------------------

    def call(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None = None,
    ) -> Any:
        """Run one call synchronously and return its value."""
        return self.router.call(fn, args, kwargs, mode)

    def explain(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Explanation:
        """Where ``fn(*args, **kwargs)`` would run now, with estimates and reasons; runs nothing."""
        fn = as_offloaded(fn)
        if self.servers.fleet:
            result = self.decider.explain(fn, args, kwargs, True, self.servers.candidates())
            assert self.servers.usable is not None
            for address, why in self.servers.usable.excluded.items():
                result.candidates.append({"where": address, "time_s": None, "why": why})
        else:
            result = self.decider.explain(fn, args, kwargs, self.servers.up())
        mode = self.router.mode_of(fn)
        if mode != "auto":
            result.side = LOCAL if mode == "local" else REMOTE
            result.reasons.insert(0, f"mode={mode!r} overrides the decision")
            for row in result.candidates:  # with several servers
                row["chosen"] = row["where"] == ("here" if mode == "local" else result.server)
                if row["chosen"]:
                    row["why"] = f"mode={mode!r}" + ("" if mode == "local" else ": the best server")
        elif self.router.fallbacks.sticks_here(fn):
            result.side = LOCAL
            result.reasons.insert(0, "the server cannot run this function (warned before)")
        return result

    def quote(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The credits ``fn(*args, **kwargs)`` would cost on the server's site now; runs nothing.

        From the profiler's predicted server time for a call of this size
        (``basis``: ``"server"``), else its time here (``"local"``, an upper
        bound on a faster machine), else 0 (``"unknown"``: no call of ``fn``
        measured yet). The price is the site's for the slot the call starts
        in (``offload credits`` shows the day's slots). Keys: ``micro_credits``
        (exact), ``credits``, ``seconds``, ``basis``, ``balance``, ``price_cpu``.
        """
        estimates = self.explain(fn, *args, **kwargs).estimates
        seconds = estimates.get("remote", {}).get("server_s")
        basis = "server"
        if seconds is None:
            seconds, basis = estimates.get("local", {}).get("time_s"), "local"
        if seconds is None:
            seconds, basis = 0.0, "unknown"
        quote = self.server.quote(float(seconds))
        quote["basis"] = basis
        return quote

    def stats(self) -> Stats:
        """Per function and side: calls, seconds, bytes up and down, joules (estimated).

        A dict; ``str()`` of it (``print(offload.stats())``) is a table.
        """
        return Stats(self.decider.stats())

    def probe(self, nbytes: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Measure bandwidth actively: ``nbytes`` up in a PING, then down in its PONG."""
        return self.servers.probe(nbytes, timeout)

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        """Ask the server to answer; return its self-description or raise ServerUnavailable."""
        return self.servers.ping(timeout)

    def server_up(self) -> bool:
        """Whether the server currently answers; probes again every ``retry_interval``."""
        return self.servers.up()

    def _check_open(self) -> None:
        if self.router.stopping:
            raise RuntimeError("cannot schedule new futures after shutdown")
