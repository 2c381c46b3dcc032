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
    """The ERROR reply for an exception raised by the called function."""
    cls = type(exc)
    return protocol.error_message(
        request_id,
        "remote",
        str(exc),
        type=f"{cls.__module__}:{cls.__qualname__}",
        args=[a if isinstance(a, _PLAIN) else repr(a) for a in exc.args],
        traceback="".join(traceback.format_exception(cls, exc, exc.__traceback__)),
    )


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
