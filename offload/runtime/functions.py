"""Naming and fingerprinting functions, and pickling one by value.

Replicated code (DCOF) means the client and the server import the same module,
so a call only has to name the function. The name is ``"module:qualname"``;
the fingerprint is a 16-byte BLAKE2b digest of the function's source text, so
the server can tell when its copy differs from the client's. Source is used
rather than bytecode because a phone and a Pi rarely run the same Python
version, and bytecode differs between versions for identical code. Where no
source exists (functions built at run time), the code object is hashed: its
bytecode, names and constants, nested code objects included, but not line
numbers or file names. A compiled function that keeps its Python function as
``py_func`` (a numba ``@njit`` dispatcher) is named and fingerprinted by that
Python function: the server imports the same module and compiles it itself,
once per worker process, on its first call there.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from .._exceptions import SerializationError


def python_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Python function behind a compiled one (a numba dispatcher's ``py_func``), else ``fn``."""
    py_func = getattr(fn, "py_func", None)
    return py_func if isinstance(py_func, types.FunctionType) else fn


def function_name(fn: Callable[..., Any]) -> str:
    """``"module:qualname"``; ``__main__`` becomes the real module name under ``python -m``."""
    fn = python_function(fn)
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}:{fn.__qualname__}"


def _code_bytes(code: types.CodeType) -> Iterator[bytes]:
    yield code.co_code
    yield repr(code.co_names).encode()
    yield repr((code.co_argcount, code.co_kwonlyargcount, code.co_varnames)).encode()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_bytes(const)
        else:
            yield repr(const).encode()


def fingerprint(fn: Callable[..., Any]) -> bytes:
    """A 16-byte digest identifying this version of ``fn``'s code."""
    fn = python_function(fn)
    h = hashlib.blake2b(digest_size=16)
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:  # a builtin: its name is all there is to it
            h.update(b"name\0" + function_name(fn).encode())
            return h.digest()
        h.update(b"code\0")
        for part in _code_bytes(code):
            h.update(part)
            h.update(b"\0")
    else:
        h.update(b"source\0")
        h.update(textwrap.dedent(source).encode())
    return h.digest()


_by_value_lock = threading.Lock()


def pickle_by_value(fn: Callable[..., Any]) -> bytes:
    """``fn`` pickled with its code (cloudpickle), even when its module is importable.

    This is the "traditional offloading" path: the server needs nothing of the
    app beforehand. cloudpickle's by-value registry is process-wide, hence the lock.
    """
    module = sys.modules.get(fn.__module__)
    with _by_value_lock:
        by_value = module is not None and module.__name__ != "__main__"
        if by_value:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(fn)
        except Exception as exc:
            raise SerializationError(f"cannot ship {fn.__qualname__} by value: {exc}") from exc
        finally:
            if by_value:
                cloudpickle.unregister_pickle_by_value(module)
