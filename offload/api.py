"""The ``@offload`` decorator, the callable it returns, and finding them in a module.

An :class:`OffloadedFunction` routes its calls through an executor it is
handed at call time: the default client, which :mod:`offload._default`
registers with :func:`use_default` (so this module imports nothing above it).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from ._exceptions import ConfigError
from .config import MIGRATE, MODES
from .runtime.functions import fingerprint, function_name
from .runtime.serialize import Allowlist

P = ParamSpec("P")
R = TypeVar("R")
ShipCode = Literal["never", "missing", "always"]
Isolation = Literal["process", "thread"]


class Caller(Protocol):
    """What an offloaded function's calls go to: the default :class:`offload.Client`."""

    def call(
        self,
        fn: OffloadedFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        mode: str | None = None,
    ) -> Any: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None
    ) -> Any: ...

    def map_within(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], deadline: float, **options: Any
    ) -> Any: ...


def _no_default() -> Caller:
    raise RuntimeError("offload's default client is not set up (import offload first)")


_default: Callable[[], Caller] = _no_default


def use_default(provider: Callable[[], Caller]) -> None:
    """Route calls of offloaded functions to ``provider()`` (the default client)."""
    global _default
    _default = provider


class OffloadedFunction(Generic[P, R]):
    """A function that may run here or on an edge server; still an ordinary callable.

    ``f(x)`` returns the value, deciding the side per call; ``f.submit(x)``
    returns a :class:`concurrent.futures.Future`; ``f.local(x)`` and
    ``f.remote(x)`` force a side. It pickles by reference, like the function.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        mode: str | None = None,
        timeout: float | None = None,
        ship_code: ShipCode = "missing",
        size: Callable[..., int] | None = None,
        checkpoint_every: float | None = None,
        retries: int = 0,
        provision: bool | None = None,
        migrate: str | None = None,
        isolation: Isolation = "process",
    ) -> None:
        if isolation not in ("process", "thread"):
            raise ConfigError(f"isolation must be 'process' or 'thread', not {isolation!r}")
        if isolation == "thread" and checkpoint_every is not None:
            raise ConfigError("isolation='thread' runs no checkpointed calls: they need a worker")
        if migrate not in (None, *MIGRATE):
            raise ConfigError(f"migrate must be one of {MIGRATE}, not {migrate!r}")
        if checkpoint_every is not None and checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be a number of seconds, 0 or more")
        if retries < 0:
            raise ConfigError("retries must be 0 or more")
        if size is not None and not callable(size):
            raise ConfigError("size must be a callable taking the call's arguments")
        if mode is not None and mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {mode!r}")
        if ship_code not in ("never", "missing", "always"):
            raise ConfigError(
                f"ship_code must be 'never', 'missing' or 'always', not {ship_code!r}"
            )
        if timeout is not None and timeout <= 0:
            raise ConfigError("timeout must be positive")
        functools.update_wrapper(self, fn)
        self.__wrapped__: Callable[P, R] = fn
        self.mode = mode
        self.timeout = timeout
        self.ship_code = ship_code
        self.size = size
        self.checkpoint_every = checkpoint_every
        self.retries = retries
        #: Deploy its app to a server that lacks it (None: the client's ``provision`` setting).
        self.provision = provision
        #: Whether its running jobs move to a server predicted faster (None: the client's).
        self.migrate = migrate
        #: "thread": its calls ask to run in a thread of the server process (edge_server.inline).
        self.isolation = isolation
        self.wire_name = function_name(fn)
        self.allowlist = Allowlist(frozenset({fn.__module__, self.wire_name.split(":")[0]}))
        #: Its calls are :class:`~offload.Job` s: they take checkpoints or may be retried.
        self.is_job = checkpoint_every is not None or retries > 0
        self._fingerprint: bytes | None = None
        self._key: str | None = None

    @property
    def fingerprint(self) -> bytes:
        """Digest of the function's code, computed once (see :mod:`offload.runtime.functions`)."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint_of(self.__wrapped__)
        return self._fingerprint

    @property
    def key(self) -> str:
        """``name@fingerprint``: what the profiler learns under (the same code, the same key)."""
        if self._key is None:
            self._key = f"{self.wire_name}@{self.fingerprint.hex()[:16]}"
        return self._key

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return _default().call(self, args, kwargs)

    def submit(self, /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start a call and return its future."""
        return _default().submit(self, *args, **kwargs)

    def map(self, /, *iterables: Iterable[Any], timeout: float | None = None, **within: Any) -> Any:
        """Like :meth:`concurrent.futures.Executor.map`, calls in flight concurrently.

        With ``deadline=SECONDS`` (and ``objective``, ``max_drop``, ``policy``,
        ``late``), the batch is split between here and the server to be done
        in time, and a :class:`~offload.batch.BatchResult` returned: see
        :meth:`offload.Client.map_within`.
        """
        if within:
            return _default().map_within(self, *iterables, **within)
        return _default().map(self, *iterables, timeout=timeout)

    def local(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run here, now."""
        return self.__wrapped__(*args, **kwargs)

    def remote(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run on the edge server; errors are raised, never hidden by a local run."""
        return _default().call(self, args, kwargs, mode="remote")

    def __reduce__(self) -> str:
        return self.__wrapped__.__qualname__

    def __repr__(self) -> str:
        return f"<offloaded function {self.wire_name} mode={self.mode or 'default'}>"


@overload
def offload(fn: Callable[P, R], /) -> OffloadedFunction[P, R]: ...
@overload
def offload(
    *,
    mode: str | None = None,
    timeout: float | None = None,
    ship_code: ShipCode = "missing",
    size: Callable[..., int] | None = None,
    checkpoint_every: float | None = None,
    retries: int = 0,
    provision: bool | None = None,
    migrate: str | None = None,
    isolation: Isolation = "process",
) -> Callable[[Callable[P, R]], OffloadedFunction[P, R]]: ...
def offload(
    fn: Callable[P, R] | None = None,
    /,
    *,
    mode: str | None = None,
    timeout: float | None = None,
    ship_code: ShipCode = "missing",
    size: Callable[..., int] | None = None,
    checkpoint_every: float | None = None,
    retries: int = 0,
    provision: bool | None = None,
    migrate: str | None = None,
    isolation: Isolation = "process",
) -> Any:
    """Mark ``fn`` as offloadable: each call runs here or on an edge server.

    ``mode``: ``"auto"`` (decided per call), ``"local"`` or ``"remote"``;
    ``None`` takes the client's default. ``timeout``: seconds the server lets
    one call run. ``ship_code``: when the server lacks the function, send it by
    value if the server allows that (``"missing"``), never, or ``"always"``
    (the traditional-offloading baseline). ``size``: a function of the call's
    arguments returning a number that grows with the work (default: estimated
    bytes of the arguments), which the profiler learns costs against.
    ``checkpoint_every``: seconds between the checkpoints the function offers
    (:func:`offload.checkpoint`); its calls become :class:`~offload.Job` s that
    survive a lost server or worker and can pause and resume. ``retries``: the
    function is idempotent; a run lost without a checkpoint starts again,
    that many times. ``provision``: when the server lacks the function, deploy
    its app there first (its key must be in the server's ``--deployers``;
    ``None`` takes the client's ``provision`` setting; see :mod:`offload.deploy`).
    ``migrate``: ``"auto"`` moves a running checkpointed job to another server
    when that is predicted to finish it sooner, moving its last checkpoint
    included; ``"never"`` keeps it where it runs (``None``: the client's
    ``migrate``; see :mod:`offload.migration`). ``isolation``: ``"process"``
    (a worker process per job, the default) or ``"thread"``: for small trusted
    functions, the server runs its calls in a thread of its own process, which
    saves the hop to a worker but gives up crash, memory and CPU isolation and
    cannot stop a hung call; a server runs them only with ``--allow-inline``,
    and refuses them otherwise (:class:`~offload.InlineRefused`).
    """

    def wrap(f: Callable[P, R]) -> OffloadedFunction[P, R]:
        return OffloadedFunction(
            f,
            mode=mode,
            timeout=timeout,
            ship_code=ship_code,
            size=size,
            checkpoint_every=checkpoint_every,
            retries=retries,
            provision=provision,
            migrate=migrate,
            isolation=isolation,
        )

    return wrap if fn is None else wrap(fn)


def as_offloaded(fn: Callable[..., Any]) -> OffloadedFunction[..., Any]:
    """``fn`` itself if decorated, else a wrapper (submitting a plain function).

    Wrappers of plain functions are kept in a small LRU, so submitting the same
    function many times computes its fingerprint once; a bound method gets a
    fresh wrapper each time (keeping one would keep its instance alive).
    """
    if isinstance(fn, OffloadedFunction):
        return fn
    if isinstance(fn, types.FunctionType):
        return _wrapper(fn)
    return OffloadedFunction(fn)


@functools.lru_cache(maxsize=256)
def _wrapper(fn: Callable[..., Any]) -> OffloadedFunction[..., Any]:
    return OffloadedFunction(fn)


def _fingerprint_of(fn: Callable[..., Any]) -> bytes:
    """A method's fingerprint is its function's, cached without keeping the instance alive."""
    func = getattr(fn, "__func__", None)
    if isinstance(func, types.FunctionType):
        return _function_fingerprint(func)
    return fingerprint(fn)


@functools.lru_cache(maxsize=256)
def _function_fingerprint(fn: Callable[..., Any]) -> bytes:
    return fingerprint(fn)


def find_offloaded(module: types.ModuleType) -> dict[str, Any]:
    """The ``@offload`` functions defined in ``module``, by wire name."""
    return {
        obj.wire_name: obj
        for obj in vars(module).values()
        if isinstance(obj, OffloadedFunction) and obj.__module__ == module.__name__
    }
