"""Every function the futures suite submits, importable by the test server by module name.

Adapted from the module-level helpers, lambdas and local functions of CPython's
``Lib/test/test_concurrent_futures/`` (executor.py, test_shutdown.py, test_wait.py;
CPython main, Python Software Foundation License). A call sent to the server names
its function (``module:qualname``) and the server imports it from here, so no lambda,
local function or builtin is submitted: builtins (``pow``, ``divmod``, ``time.sleep``,
``str``, ``int``, ``abs``, ``id``) and bound methods (``event.wait``,
``my_object.my_method``) have a named ``@offload`` stand-in with the same semantics.

``threading.Event`` cannot cross processes, so :class:`Event` is a file-backed event
(the worker runs on this machine) that both sides can wait on and set.

Each ``@offload`` function ``name`` also has a checkpointed twin ``ck_name`` (the same
code, ``checkpoint_every=CHECKPOINT_EVERY``), whose calls are :class:`offload.Job` s.
The waiting functions offer a checkpoint while they wait (:func:`offload.checkpoint`
does nothing outside a job), so a job can be paused or cancelled at a safe point.
"""

from __future__ import annotations

import builtins
import os
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import offload as offload_api
from offload import offload

#: Seconds between the checkpoints a ``ck_`` twin takes.
CHECKPOINT_EVERY = 0.05

_SLICE = 0.005  # how often the waiting functions look up (and offer a checkpoint)


@dataclass
class Event:
    """A ``threading.Event`` shared between processes: set means ``path`` exists."""

    path: str

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            offload_api.checkpoint(None)
            time.sleep(_SLICE)
        return True


class MyObject:
    def my_method(self) -> None:
        pass


@offload
def mul(x: Any, y: Any) -> Any:
    return x * y


@offload
def capture(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


@offload
def pow_(*args: Any) -> Any:
    """``pow``."""
    return builtins.pow(*args)


@offload
def divmod_(a: Any, b: Any) -> Any:
    """``divmod``."""
    return builtins.divmod(a, b)


@offload
def str_(x: Any) -> str:
    """``str``."""
    return builtins.str(x)


@offload
def int_(*args: Any) -> int:
    """``int``."""
    return builtins.int(*args)


@offload
def abs_(x: Any) -> Any:
    """``abs``."""
    return builtins.abs(x)


@offload
def id_(x: Any) -> int:
    """``id``."""
    return builtins.id(x)


@offload
def sleep(seconds: float) -> None:
    """``time.sleep``, in short slices that offer a checkpoint (a no-op outside a job)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        offload_api.checkpoint(None)
        time.sleep(min(left, _SLICE))


@offload
def event_wait(event: Event, timeout: float | None = None) -> bool:
    """``event.wait``."""
    return event.wait(timeout)


@offload
def wait_and_return(event: Event, value: Any) -> Any:
    """Wait for ``event``, then return ``value`` (a Job that finishes when told to)."""
    event.wait()
    return value


@offload
def wait_and_raise(event: Event) -> None:
    event.wait()
    raise Exception("this is an exception")


@offload
def sleep_and_print(t: float, msg: str) -> str:
    """Sleep and return ``msg``, which the caller prints (:func:`print_result`).

    CPython's version prints ``msg`` itself; a remote call would print it in the
    server's worker, so the caller prints what the call returned instead.
    """
    time.sleep(t)
    return msg


class FalseyBoolException(Exception):
    def __bool__(self) -> bool:
        return False


class FalseyLenException(Exception):
    def __len__(self) -> int:
        return 0


@offload
def raiser(exception: type[BaseException], msg: str = "std") -> None:
    """Used in test_swallows_falsey_exceptions."""
    raise exception(msg)


@offload
def timeout_on_one(x: int) -> int:
    if x == 1:
        raise TimeoutError
    return x


@offload
def add(a: Any, b: Any) -> Any:
    """``operator.add``."""
    return a + b


@offload
def make_dummy_object(_: Any) -> MyObject:
    return MyObject()


@offload
def my_method(obj: MyObject) -> None:
    """``obj.my_method``."""
    obj.my_method()


def print_result(future: Any) -> None:
    """A done callback for the shutdown scripts: print the call's value, or its failure.

    A cancelled call prints nothing (CPython's scripts print only from a call that ran).
    """
    if future.cancelled():
        return
    if future.exception() is None:
        print(future.result(), flush=True)
    else:
        print(repr(future.exception()), file=sys.stderr, flush=True)


def _checkpointed(fn: offload_api.OffloadedFunction[..., Any]) -> Any:
    """A twin of ``fn`` named ``ck_<name>`` in this module, taking checkpoints."""
    plain = fn.__wrapped__
    name = f"ck_{plain.__name__}"
    twin = types.FunctionType(
        plain.__code__, plain.__globals__, name, plain.__defaults__, plain.__closure__
    )
    twin.__qualname__ = name
    twin.__module__ = plain.__module__
    twin.__doc__ = plain.__doc__
    twin.__kwdefaults__ = plain.__kwdefaults__
    return offload(checkpoint_every=CHECKPOINT_EVERY)(twin)


#: Each plain function and its checkpointed twin.
CHECKPOINTED: dict[Any, Any] = {}
for _fn in [
    obj for obj in list(globals().values()) if isinstance(obj, offload_api.OffloadedFunction)
]:
    CHECKPOINTED[_fn] = globals()[f"ck_{_fn.__wrapped__.__name__}"] = _checkpointed(_fn)
del _fn
