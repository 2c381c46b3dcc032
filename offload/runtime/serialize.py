"""Values to frames and back: pickle protocol 5 with out-of-band buffers, restricted loading.

:func:`dumps` turns a value into ``(codecs, frames)``: frame 0 is the pickle
stream, every large contiguous buffer (a numpy array's data, bytes-like
objects) is its own frame, referenced rather than copied, so it can be handed
to ZeroMQ with ``copy=False``. Each frame is then lz4-compressed where that
pays (:mod:`.compression`).

:func:`loads` never uses the plain unpickler: :class:`Allowlist` names the
globals a stream may reference (safe builtins, numpy's array and dtype
reconstructors, classes *defined* in the trusted application modules, and
types registered by the operator). Anything else, such as the ``os.system``
of a malicious ``__reduce__``, raises :class:`ForbiddenType` before it is
imported or called.
"""

from __future__ import annotations

import builtins
import io
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ForbiddenType, OffloadError, ProtocolError, SerializationError
from .compression import decompress, maybe_compress
from .protocol import RAW

OUT_OF_BAND_MIN = 1024

_SAFE_BUILTINS = frozenset(
    {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "object",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
        "Ellipsis",
        "NotImplemented",
    }
    | {
        name
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
)
_SAFE_GLOBALS = frozenset(
    {("builtins", name) for name in _SAFE_BUILTINS}
    | {
        (mod, name)
        for mod in ("numpy._core.multiarray", "numpy.core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(mod, "_frombuffer") for mod in ("numpy._core.numeric", "numpy.core.numeric")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    | {("collections", n) for n in ("OrderedDict", "deque", "defaultdict", "Counter")}
    | {("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")}
    | {("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID")}
)


@dataclass(frozen=True)
class Allowlist:
    """The globals a restricted load may resolve.

    ``modules`` are trusted application modules: a class *defined* in one of
    them is admitted (not functions, and not names a module merely imported).
    ``types`` are ``(module, qualname)`` pairs of extra types the operator
    registered.
    """

    modules: frozenset[str] = frozenset()
    types: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def extended(self, modules: Iterable[str] = (), types: Iterable[type] = ()) -> Allowlist:
        """A copy that also trusts ``modules`` and ``types``."""
        return Allowlist(
            self.modules | frozenset(modules),
            self.types | frozenset((t.__module__, t.__qualname__) for t in types),
        )

    def resolve(self, unpickler: pickle.Unpickler, module: str, name: str) -> Any:
        """Look up ``module.name`` if admitted, else raise :class:`ForbiddenType`."""
        key = (module, name)
        if key in _SAFE_GLOBALS or key in self.types:
            return pickle.Unpickler.find_class(unpickler, module, name)
        if module in self.modules:
            obj = pickle.Unpickler.find_class(unpickler, module, name)
            if isinstance(obj, type) and obj.__module__ == module:
                return obj
        raise ForbiddenType(
            f"refusing to load global {module}.{name}: not a safe builtin, a numpy type, "
            "a class of a trusted application module, or a registered type"
        )


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: Any, buffers: Sequence[Any], allowlist: Allowlist) -> None:
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._allowlist = allowlist

    def find_class(self, module: str, name: str) -> Any:
        return self._allowlist.resolve(self, module, name)


def _out_of_band(frames: list[Any]):
    def callback(buf: pickle.PickleBuffer) -> bool:
        try:
            view = buf.raw()
        except BufferError:  # not contiguous: let pickle copy it in-band
            return True
        if view.nbytes < OUT_OF_BAND_MIN:
            return True
        frames.append(view)
        return False

    return callback


def dumps(value: Any, *, compress: bool = True) -> tuple[bytes, list[Any]]:
    """Serialize ``value`` to ``(codecs, frames)``; large buffers are referenced, not copied."""
    frames: list[Any] = []
    try:
        stream = pickle.dumps(value, protocol=5, buffer_callback=_out_of_band(frames))
    except Exception as exc:
        raise SerializationError(f"cannot serialize {type(value).__name__}: {exc}") from exc
    frames.insert(0, stream)
    if not compress:
        return bytes(len(frames)), frames
    codecs = bytearray(len(frames))
    for i, frame in enumerate(frames):
        codecs[i], frames[i] = maybe_compress(memoryview(frame))
    return bytes(codecs), frames


def loads(codecs: bytes, frames: Sequence[Any], allowlist: Allowlist, limit: int) -> Any:
    """Deserialize frames made by :func:`dumps`, admitting only what ``allowlist`` allows."""
    if len(codecs) != len(frames) or not frames:
        raise ProtocolError(f"{len(frames)} payload frames but {len(codecs)} codecs")
    if any(codecs):
        frames = [
            frame if codec == RAW else decompress(codec, memoryview(frame), limit)
            for codec, frame in zip(codecs, frames)
        ]
    try:
        return _RestrictedUnpickler(frames[0], frames[1:], allowlist).load()
    except OffloadError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot deserialize payload: {exc!r}") from exc
