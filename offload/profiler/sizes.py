"""The size of a call: an estimate of its arguments' bytes, cheap enough for every call.

Serializing the arguments to count them would cost more than the decision is
allowed to, so the size is estimated from the values: exact for bytes, strings
and buffers (``nbytes``), 8 for a number, and for a list or tuple its length
times the size of its first element (so a list of 40,000 ints is 320,000 and
a 450x450 matrix of lists 1,620,000). Containers are sampled, never walked:
the cost is bounded by the nesting depth, not the data. The estimate only has
to grow with the work and the wire bytes; the function profiler learns the
actual bytes sent against it. Where bytes are a poor measure of the work (the
exponent of a power computation), pass ``@offload(size=...)``.
"""

from __future__ import annotations

import sys
from typing import Any

_SCALAR = 8
_DEPTH = 4
# Type sets: one membership test instead of a chain of ``is`` tests (every auto call runs
# this). Exact types, as ``type(value) is int`` was: a subclass takes the general path.
_SCALARS = frozenset((int, float, bool, type(None)))
_NUMBERS = frozenset((int, float))
_SEQUENCES = frozenset((list, tuple))
_TEXT = frozenset((bytes, str, bytearray))


def value_bytes(value: Any, depth: int = 0) -> int:
    """Estimated bytes of one value."""
    kind = type(value)
    if kind in _SCALARS:
        return _SCALAR
    if kind in _SEQUENCES:
        if not value:
            return _SCALAR
        first = type(value[0])
        if first in _NUMBERS or depth >= _DEPTH:  # numbers: no call deeper
            return len(value) * _SCALAR
        return len(value) * value_bytes(value[0], depth + 1)
    if kind in _TEXT:
        return len(value)
    nbytes = getattr(value, "nbytes", None)  # numpy arrays, memoryviews
    if type(nbytes) is int:
        return nbytes
    if kind is dict:
        return len(value) * 2 * _SCALAR
    return sys.getsizeof(value)


def argument_bytes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Estimated bytes of a call's arguments (at least 1)."""
    total = 1
    for value in args:
        total += value_bytes(value)
    if kwargs:
        for value in kwargs.values():
            total += value_bytes(value)
    return total


def call_size(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The size a call is known by: ``fn.size(*args, **kwargs)`` if given, else argument bytes."""
    measure = fn.size
    if measure is not None:
        return int(measure(*args, **kwargs))
    total = 1  # argument_bytes, inlined: every auto call pays for this
    for value in args:
        total += value_bytes(value)
    if kwargs:
        for value in kwargs.values():
            total += value_bytes(value)
    return total
