"""The ``@offload`` decorator and the callable it returns."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from ._exceptions import ConfigError
from .config import MODES
from .runtime.functions import fingerprint, function_name
from .runtime.serialize import Allowlist

P = ParamSpec("P")
R = TypeVar("R")
ShipCode = Literal["never", "missing", "always"]


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
    ) -> None:
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
        self.wire_name = function_name(fn)
        self.allowlist = Allowlist(frozenset({fn.__module__, self.wire_name.split(":")[0]}))
        self._fingerprint: bytes | None = None

    @property
    def fingerprint(self) -> bytes:
        """Digest of the function's code, computed once (see :mod:`offload.runtime.functions`)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.__wrapped__)
        return self._fingerprint

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from ._default import default_client

        return default_client().call(self, args, kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start a call and return its future."""
        from ._default import default_client

        return default_client().submit(self, *args, **kwargs)

    def map(self, *iterables: Iterable[Any], timeout: float | None = None, **within: Any) -> Any:
        """Like :meth:`concurrent.futures.Executor.map`, calls in flight concurrently.

        With ``deadline=SECONDS`` (and ``objective``, ``max_drop``, ``policy``,
        ``late``), the batch is split between here and the server to be done
        in time, and a :class:`~offload.batch.BatchResult` returned: see
        :meth:`offload.Client.map_within`.
        """
        from ._default import default_client

        if within:
            return default_client().map_within(self, *iterables, **within)
        return default_client().map(self, *iterables, timeout=timeout)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run here, now."""
        return self.__wrapped__(*args, **kwargs)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run on the edge server; errors are raised, never hidden by a local run."""
        from ._default import default_client

        return default_client().call(self, args, kwargs, mode="remote")

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
    that many times.
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
        )

    return wrap if fn is None else wrap(fn)


def as_offloaded(fn: Callable[..., Any]) -> OffloadedFunction[..., Any]:
    """``fn`` itself if decorated, else a transient wrapper (submitting a plain function)."""
    return fn if isinstance(fn, OffloadedFunction) else OffloadedFunction(fn)
