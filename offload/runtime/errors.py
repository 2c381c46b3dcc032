"""Failures on the wire: an exception becomes an ERROR reply, and the reply an exception again.

The server describes a failure in JSON, never pickle: a short code (a key of
:data:`offload._exceptions.ERROR_CODES`), a message and, for an exception
raised by the function itself, its type as ``module:qualname``, its
arguments where they are plain values, and the formatted traceback. The
client rebuilds the function's own exception type when that type is already
imported on the client (so it names nothing the client does not already
trust), with the server's traceback as ``__cause__``, as loky does; otherwise
it raises :class:`~offload.RemoteError`.

offload's own errors cross the same way: the server raises the classes of
:mod:`offload._exceptions`, :func:`error_reply` turns one into its code (the
only mapping is :data:`~offload._exceptions.ERROR_CODES`) at the boundary, and
:func:`rebuild` turns the code back into the class on the client. No code is
spelled anywhere else.
"""

from __future__ import annotations

import builtins
import sys
import traceback
from typing import Any

from .. import _exceptions as errors
from . import protocol

_PLAIN = (str, int, float, bool, type(None))
_REMOTE = errors.CODE_OF[errors.RemoteError]  # the function's own exception


def code_of(exc: BaseException | type[BaseException], default: str | None = None) -> str:
    """The wire code of an offload error: that of its class, or of its nearest base with one.

    ``default`` (a code) for an error with none of its own, e.g. a
    :class:`~offload.ConfigError`; without it, :class:`~offload.ProtocolError`'s.
    """
    cls = exc if isinstance(exc, type) else type(exc)
    for base in cls.__mro__:
        code = errors.CODE_OF.get(base)
        if code is not None:
            return code
    return default if default is not None else errors.CODE_OF[errors.ProtocolError]


def error_class(code: object) -> type[errors.OffloadError]:
    """The class a wire code stands for (:class:`~offload.RemoteError` for one it does not know)."""
    known = errors.ERROR_CODES.get(code) if isinstance(code, str) else None
    return known or errors.RemoteError


def error_reply(request_id: int, exc: errors.OffloadError) -> list[bytes]:
    """The ERROR reply that tells a client ``exc`` (an offload error, not the function's own)."""
    return protocol.error_message(request_id, code_of(exc), str(exc))


def describe(exc: errors.OffloadError) -> str:
    """``code: message``, as the server records a job's error."""
    return f"{code_of(exc)}: {exc}"


def exception_message(request_id: int, exc: BaseException) -> list[bytes]:
    """The ERROR reply for an exception raised by the called function.

    Describing an exception runs its code (``__str__``, ``repr`` of its
    arguments); whatever that raises, the reply still goes out, truncated text.
    """
    cls = type(exc)
    return protocol.error_message(
        request_id,
        _REMOTE,
        _text(str, exc),
        type=f"{cls.__module__}:{cls.__qualname__}",
        args=[_arg(a) for a in exc.args],
        traceback=_text(lambda e: "".join(traceback.format_exception(e)), exc),
    )


def _arg(value: Any) -> Any:
    """An exception argument as JSON can carry it: plain values as they are, else text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if abs(value) < 2**63 else _text(repr, value)
    if isinstance(value, _PLAIN) and (not isinstance(value, str) or len(value) <= 20_000):
        return value
    return _text(repr, value)


def _text(describe: Any, value: Any, limit: int = 20_000) -> str:
    try:
        text = describe(value)
    except Exception as exc:
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "... [truncated]"


def rebuild(body: dict[str, Any]) -> BaseException:
    """The exception an ERROR reply describes, as its own type where possible."""
    code = body.get("code", _REMOTE)
    message = str(body.get("message", ""))
    if code != _REMOTE:
        return error_class(code)(message)
    type_name = str(body.get("type", ""))
    remote_tb = str(body.get("traceback") or "")
    exc = _instantiate(type_name, body.get("args", [message]))
    if exc is None:
        exc = errors.RemoteError(f"{type_name}: {message}", type_name, remote_tb)
    if remote_tb:
        exc.__cause__ = errors.RemoteTraceback(remote_tb)
    return exc


def _instantiate(type_name: str, args: Any) -> BaseException | None:
    module_name, _, qualname = type_name.partition(":")
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    cls = getattr(module, qualname, None) if module is not None and "." not in qualname else None
    if not (isinstance(cls, type) and issubclass(cls, Exception)) or not isinstance(args, list):
        return None
    if issubclass(cls, errors.OffloadError):
        return None  # offload's own errors from inside a call must not look like this call's
    try:
        return cls(*args)
    except Exception:
        return None
