"""The one piece of global state: the default client used by ``@offload`` functions."""

from __future__ import annotations

import atexit
import threading
from typing import Any

from .api import use_default
from .client import Client
from .profiler import Explanation, Stats

_lock = threading.Lock()
_client: Client | None = None


def configure(server: str | object | None = None, **settings: Any) -> Client:
    """Replace the default client with one for ``server`` and ``settings``; return it.

    Settings not given come from ``OFFLOAD_*`` variables or the TOML file
    (see :class:`offload.Config`). The previous default client is shut down.
    """
    global _client
    new = Client(server, **settings)
    with _lock:
        old, _client = _client, new
    if old is not None:
        old.shutdown(wait=False)
    return new


def default_client() -> Client:
    """The default client, created from the environment on first use."""
    global _client
    client = _client
    if client is None:
        with _lock:
            if _client is None:
                _client = Client()
            client = _client
    return client


use_default(default_client)


@atexit.register
def _shutdown_default() -> None:
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.shutdown(wait=False)


def explain(fn: Any, /, *args: Any, **kwargs: Any) -> Explanation:
    """Where ``fn(*args, **kwargs)`` would run now on the default client, and why; runs nothing."""
    return default_client().explain(fn, *args, **kwargs)


def stats() -> Stats:
    """The default client's per-function counts, seconds, bytes and joules, by side."""
    return default_client().stats()
