"""What loading a pickle stream will cost, in bytes of memory, reckoned before loading it.

A stream's size does not bound what unpickling it takes: ``EMPTY_SET`` is one
byte and makes a 216-byte set (5 MB of them took a worker to 1.2 GB), and
``LONG_BINPUT`` with a large index makes the unpickler grow and zero its memo
table to that index (five bytes, gigabytes). :func:`check` walks the opcodes
(skipping over their arguments, never copying them) and adds up an estimate
(right within a small factor) of the memory each one takes: the objects it
makes, the references it pushes, the memo table; a stream that would cost
more than the budget is refused before the unpickler sees it. The point is
the bombs, which cost hundreds of times their size or more.

The walk is Python-speed (a fraction of a microsecond per opcode), so it is
skipped where it cannot matter: a stream too short to cost the budget even at
the worst ratio per byte, and without a memo store by explicit index.
"""

from __future__ import annotations

import pickletools
import struct
from typing import Any

from .._exceptions import PayloadTooLarge, SerializationError

#: The most memory one byte of stream can cost outside the memo table (an EMPTY_SET).
WORST_PER_BYTE = 232
_POINTER = 8
_MEMO_SLOT = 16  # the memo table grows to twice the largest index, 8 bytes a slot
_DEFAULT = 48  # a small object and the reference to it

# Variable-length argument kinds, as pickletools numbers them.
_LINE, _LEN1, _LEN4, _LEN4U, _LEN8U = -1, -2, -3, -4, -5

_COSTS = {
    "EMPTY_SET": 232,
    "FROZENSET": 232,
    "ADDITEMS": 0,
    "EMPTY_DICT": 240,
    "DICT": 240,
    "EMPTY_LIST": 64,
    "LIST": 64,
    "EMPTY_TUPLE": _POINTER,
    "TUPLE1": 56,
    "TUPLE2": 64,
    "TUPLE3": 72,
    "TUPLE": 64,
    "NONE": _POINTER,
    "NEWTRUE": _POINTER,
    "NEWFALSE": _POINTER,
    "BININT1": _POINTER,
    "BININT2": 36,
    "BININT": 36,
    "BINFLOAT": 32,
    "MEMOIZE": _MEMO_SLOT,
    "BINPUT": _MEMO_SLOT,
    "LONG_BINPUT": _MEMO_SLOT,
    "PUT": _MEMO_SLOT,
    "MARK": _POINTER,
    "POP": 0,
    "POP_MARK": 0,
    "STOP": 0,
    "PROTO": 0,
    "FRAME": 0,
    "APPEND": 0,
    "APPENDS": 0,
    "SETITEM": _POINTER,
    "SETITEMS": _POINTER,
    "DUP": _POINTER,
    "GET": _POINTER,
    "BINGET": _POINTER,
    "LONG_BINGET": _POINTER,
}
_TEXT = {"STRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}  # up to 4x

_TABLE: list[tuple[int, int, bool, str] | None] = [None] * 256
for _op in pickletools.opcodes:
    _TABLE[ord(_op.code)] = (
        0 if _op.arg is None else _op.arg.n,
        _COSTS.get(_op.name, _DEFAULT),
        _op.name in _TEXT,
        _op.name,
    )


def check(stream: Any, budget: int) -> None:
    """Raise :class:`PayloadTooLarge` if loading ``stream`` would take more than ``budget`` bytes.

    Raises :class:`SerializationError` for a stream that is not a pickle.
    """
    view = memoryview(stream).cast("B")
    size = view.nbytes
    if size * WORST_PER_BYTE <= budget:
        raw = bytes(view)  # small, by the test above
        if b"p" not in raw and b"r" not in raw:
            return  # nothing in it can cost the budget: no need to walk it
    cost = _walk(view)
    if cost > budget:
        raise PayloadTooLarge(
            f"a pickle stream of {size} bytes would take about {cost} bytes to load, "
            f"over the budget of {budget}"
        )


def _walk(view: memoryview) -> int:
    table, size = _TABLE, view.nbytes
    pos = cost = memo = 0
    while pos < size:
        entry = table[view[pos]]
        if entry is None:
            raise SerializationError(f"not a pickle: unknown opcode {view[pos]:#04x} at {pos}")
        pos += 1
        length, each, text, name = entry
        if length >= 0:
            if name == "LONG_BINPUT" or name == "BINPUT":
                index = view[pos] if length == 1 else struct.unpack_from("<I", view, pos)[0]
                memo = max(memo, index)
            pos += length
            cost += each
            continue
        if length == _LINE:
            end = _line_end(view, pos)
            if name in ("GLOBAL", "INST"):
                end = _line_end(view, end + 1)
            elif name == "PUT":
                try:
                    memo = max(memo, int(bytes(view[pos:end])))
                except ValueError as exc:
                    raise SerializationError(f"not a pickle: bad PUT at {pos}") from exc
            arg = end - pos
            pos = end + 1
        else:
            width = {_LEN1: 1, _LEN4: 4, _LEN4U: 4, _LEN8U: 8}[length]
            if pos + width > size:
                break
            arg = int.from_bytes(view[pos : pos + width], "little")
            pos += width + arg
        cost += each + arg * (4 if text else 1)
    return cost + memo * _MEMO_SLOT


def _line_end(view: memoryview, pos: int) -> int:
    """Where the newline ending the argument at ``pos`` is (the end if there is none)."""
    start = pos
    while pos < view.nbytes:
        found = bytes(view[pos : pos + 4096]).find(b"\n")
        if found >= 0:
            return pos + found
        pos += 4096
    return max(start, view.nbytes)
