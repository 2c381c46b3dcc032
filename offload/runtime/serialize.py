"""Values to frames and back: pickle protocol 5 with out-of-band buffers, restricted loading.

:func:`dumps` turns a value into ``(codecs, frames)``: frame 0 is the pickle
stream, and the data of every large contiguous buffer (a numpy array, a
bytes-like object) is its own frame, referenced rather than copied, so it can
be handed to ZeroMQ with ``copy=False``. Each frame is then lz4-compressed
where that pays (:mod:`.compression`).

:func:`loads` never uses the plain unpickler, and it never hands a stream a
callable or a class it could abuse:

* Numpy values cross in three shapes this module builds itself: a dtype from
  its text description (:func:`_dtype`), a numeric array over a buffer
  (:func:`_array`, which refuses object dtypes: raw bytes would become object
  pointers), an object array from a list (:func:`_object_array`). Numpy's own
  reconstructors trust dtype flags taken from the stream, so they are not
  admitted.
* Classes of trusted application modules (and types the operator registers)
  are admitted as :class:`_ClassRef` handles, never as the class itself: a
  stream can call one or create an instance of it, but cannot set attributes
  on the class (pickle's BUILD on a class would change it for every client).
  Instances made with ``__new__`` are rewritten by the pickler to go through
  :func:`_new`. Classes themselves are therefore not accepted as values.
* Builtins are admitted only where the protocol has no opcode for them and
  they cannot be used to allocate without bound (``complex``, ``range``,
  ``slice``, exceptions), plus a few immutable C types from the standard
  library that cannot consume an iterable. What remains is bounded by the
  stream's own size, times Python's per-object overhead.

Anything else, such as the ``os.system`` of a malicious ``__reduce__``, raises
:class:`ForbiddenType` before it is imported or called.
"""

from __future__ import annotations

import builtins
import copyreg
import io
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .._exceptions import (
    ForbiddenType,
    OffloadError,
    PayloadTooLarge,
    ProtocolError,
    SerializationError,
)
from . import picklecost
from .compression import MIN_SIZE, declared_size, decompress, maybe_compress
from .protocol import RAW

OUT_OF_BAND_MIN = 1024
_ONE_RAW = bytes(1)  # the codecs of one raw frame
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
_NEWOBJ = copyreg.__newobj__  # type: ignore[attr-defined]
_NEWOBJ_EX = copyreg.__newobj_ex__  # type: ignore[attr-defined]

_SAFE_GLOBALS = frozenset(
    {("builtins", name) for name in ("complex", "range", "slice", "Ellipsis", "NotImplemented")}
    | {
        ("builtins", name)
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    | {("collections", n) for n in ("OrderedDict", "defaultdict")}
    | {("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")}
    | {("decimal", "Decimal")}
    | {(__name__, n) for n in ("_object_array", "_dtype", "_scalar", "_new", "_new_ex")}
)


class _ClassRef:
    """A handle on an admitted class: callable, and usable by :func:`_new`, but not settable."""

    __slots__ = ("cls",)
    cls: type

    def __init__(self, cls: type) -> None:
        object.__setattr__(self, "cls", cls)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise ForbiddenType(f"a stream may not set attributes on class {self.cls.__qualname__}")

    def __setstate__(self, state: Any) -> None:
        raise ForbiddenType(f"a stream may not set state on class {self.cls.__qualname__}")


def _new(ref: _ClassRef, *args: Any) -> Any:
    """``cls.__new__(cls, *args)`` for an admitted class (pickle's NEWOBJ, made safe)."""
    if not isinstance(ref, _ClassRef):
        raise ForbiddenType("_new needs an admitted class")
    return ref.cls.__new__(ref.cls, *args)


def _new_ex(ref: _ClassRef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``cls.__new__(cls, *args, **kwargs)`` for an admitted class (NEWOBJ_EX, made safe)."""
    if not isinstance(ref, _ClassRef):
        raise ForbiddenType("_new_ex needs an admitted class")
    return ref.cls.__new__(ref.cls, *args, **kwargs)


def _describe(dtype: np.dtype[Any]) -> Any:
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return ("subarray", _describe(base), shape)
    return npy_format.dtype_to_descr(dtype)


def _dtype(description: Any) -> np.dtype[Any]:
    """A dtype rebuilt from its description, so its flags are numpy's, not the stream's."""
    if isinstance(description, tuple) and len(description) == 3 and description[0] == "subarray":
        return np.dtype((_dtype(description[1]), description[2]))
    return npy_format.descr_to_dtype(description)


def _array(buffer: Any, dtype: np.dtype[Any], shape: tuple[int, ...], order: str) -> Any:
    """A numeric array over ``buffer`` (zero-copy for an out-of-band buffer).

    Resolved per load as :meth:`_RestrictedUnpickler._array`, which lets each
    buffer back one array only: a stream that reused one buffer for thousands
    of arrays would have them all sent back as separate copies.
    """
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise ForbiddenType("arrays over raw buffers must have a numeric dtype")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _object_array(items: list[Any], shape: tuple[int, ...]) -> Any:
    """An object array from its elements (a list: nothing lazy) in C order."""
    if type(items) is not list:
        raise ForbiddenType("object arrays are built from lists only")
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


def _scalar(dtype: np.dtype[Any], data: bytes) -> Any:
    """A numpy scalar from its bytes, which must be exactly one item."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.subdtype is not None:
        raise ForbiddenType("numpy scalars must have a plain numeric dtype")
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise ForbiddenType("numpy scalar data does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0]


@dataclass(frozen=True)
class Allowlist:
    """The globals a restricted load may resolve.

    ``modules`` are trusted application modules: a class *defined* in one of
    them is admitted (as a :class:`_ClassRef`; not functions, and not names a
    module merely imported). ``types`` are ``(module, qualname)`` pairs of
    extra types the operator registered.
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
        if key in _SAFE_GLOBALS:
            return pickle.Unpickler.find_class(unpickler, module, name)
        if key in self.types or module in self.modules:
            obj = pickle.Unpickler.find_class(unpickler, module, name)
            if isinstance(obj, type) and (key in self.types or obj.__module__ == module):
                return _ClassRef(obj)
        raise ForbiddenType(
            f"refusing to load global {module}.{name}: not a safe builtin, a numpy value, "
            "a class of a trusted application module, or a registered type"
        )


_unpickler_init = pickle.Unpickler.__init__


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: Any, buffers: Sequence[Any], allowlist: Allowlist) -> None:
        _unpickler_init(self, io.BytesIO(data), buffers=buffers)
        self._allowlist = allowlist
        # Made by the first array (most results have none): the buffers used, and
        # those buffers kept alive so that their ids stay theirs.
        self._used: set[int] | None = None
        self._keep: list[Any] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_array":
            return self._array
        return self._allowlist.resolve(self, module, name)

    def _array(self, buffer: Any, *args: Any) -> Any:
        if self._used is None:
            self._used = set()
        elif id(buffer) in self._used:
            raise ForbiddenType("a buffer may back one array only")
        self._used.add(id(buffer))
        self._keep.append(buffer)
        return _array(buffer, *args)


class _Pickler(pickle.Pickler):
    """Pickles numpy values and ``__new__``-built instances in the shapes :func:`loads` admits."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is np.ndarray or kind is np.memmap:
            return _reduce_array(obj)
        if isinstance(obj, np.dtype):
            return _dtype, (_describe(obj),)
        if isinstance(obj, np.generic) and not obj.dtype.hasobject:
            return _scalar, (obj.dtype, obj.tobytes())
        if not kind.__flags__ & _HEAPTYPE or kind.__reduce_ex__ is not object.__reduce_ex__:
            return NotImplemented  # C types, and classes that reduce themselves
        reduced = obj.__reduce_ex__(5)
        if isinstance(reduced, tuple) and reduced:
            if reduced[0] is _NEWOBJ:
                return (_new, *reduced[1:])
            if reduced[0] is _NEWOBJ_EX:
                return (_new_ex, *reduced[1:])
        return reduced


def _reduce_array(array: Any) -> Any:
    array = array.view(np.ndarray)
    if array.dtype.hasobject:
        if array.dtype != np.dtype(object):
            raise SerializationError("structured arrays with object fields are not supported")
        return _object_array, (array.ravel().tolist(), array.shape)
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    buffer = pickle.PickleBuffer(array)
    return _array, (buffer, array.dtype, array.shape, order)


def _out_of_band(frames: list[Any]) -> Any:
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
    stream = io.BytesIO()
    try:
        _Pickler(stream, protocol=5, buffer_callback=_out_of_band(frames)).dump(value)
    except OffloadError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot serialize {type(value).__name__}: {exc}") from exc
    if not frames and stream.tell() < MIN_SIZE:  # one small frame: nothing to compress
        return _ONE_RAW, [stream.getbuffer()]
    frames.insert(0, stream.getbuffer())
    if not compress:
        return bytes(len(frames)), frames
    codecs = bytearray(len(frames))
    for i, frame in enumerate(frames):
        codecs[i], frames[i] = maybe_compress(memoryview(frame))
    return bytes(codecs), frames


def loads(codecs: bytes, frames: Sequence[Any], allowlist: Allowlist, limit: int) -> Any:
    """Deserialize frames made by :func:`dumps`, admitting only what ``allowlist`` allows.

    ``limit`` bounds the total size of all frames after decompression (checked
    on the sizes they declare, before any is decompressed) and, separately,
    the memory unpickling the stream may take (:mod:`.picklecost`).
    """
    if len(codecs) != len(frames) or not frames:
        raise ProtocolError(f"{len(frames)} payload frames but {len(codecs)} codecs")
    try:
        if any(codecs):
            total = sum(declared_size(c, memoryview(f)) for c, f in zip(codecs, frames))
            if total > limit:
                raise PayloadTooLarge(
                    f"payload (lz4) would decompress to {total} bytes, over the limit of {limit}"
                )
            budget, inflated = limit, []
            for codec, frame in zip(codecs, frames):
                data = frame if codec == RAW else decompress(codec, memoryview(frame), budget)
                budget -= memoryview(data).nbytes
                inflated.append(data)
            frames = inflated
        picklecost.check(frames[0], limit)
        return _RestrictedUnpickler(frames[0], frames[1:], allowlist).load()
    except OffloadError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot deserialize payload: {exc!r}") from exc
