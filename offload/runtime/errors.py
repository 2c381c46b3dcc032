"""Failures on the wire: an exception becomes an ERROR reply, and the reply an exception again.

The server describes a failure in JSON, never pickle: a short code (a key of
:data:`offload._exceptions.ERROR_CODES`), a message and, for an exception
raised by the function itself, its type as ``module:qualname``, its
arguments where they are plain values, and the formatted traceback. The
client rebuilds the function's own exception type when that type is already
imported on the client (so it names nothing the client does not already
trust), with the server's traceback as ``__cause__``, as loky does; otherwise
it raises :class:`~offload.RemoteError`.
"""

from __future__ import annotations

import builtins
import sys
import traceback
from typing import Any

from .. import _exceptions as errors
from . import protocol

_PLAIN = (str, int, float, bool, type(None))


def exception_message(request_id: int, exc: BaseException) -> list[bytes]:
    """The ERROR reply for an exception raised by the called function.

    Describing an exception runs its code (``__str__``, ``repr`` of its
    arguments); whatever that raises, the reply still goes out, truncated text.
    """
    cls = type(exc)
    return protocol.error_message(
        request_id,
        "remote",
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
    code = body.get("code", "remote")
    message = str(body.get("message", ""))
    if code != "remote":
        return errors.ERROR_CODES.get(code, errors.RemoteError)(message)
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
