"""``offload servers``: every configured or discovered server, asked how it is.

Each trusted server gets two PINGs over a fresh connection: the first
connects (and, with CURVE, proves the server holds its key), the second is
timed for the RTT; its PONG carries the server's load. Untrusted servers are
listed from their advertisement only: they are never called.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

from . import _exceptions as errors
from .config import Config
from .discovery import module_digest
from .profiler import Link
from .servers import Servers, config_bps


def survey(
    config: Config, wait: float = 1.0, app: str | None = None, servers: Servers | None = None
) -> list[dict[str, Any]]:
    """One row per server: who and where it is, whether it answers, RTT, load, trust.

    ``servers``: ask over these connections (a running client's, whose LAN
    browser already knows what was advertised) rather than fresh ones; they
    stay open. A second mDNS browser in the same process may never hear the
    answers, which go to the first one's socket.
    """
    config = config.replace(probe_bytes=0, profile_cache="")
    own = servers is None
    if servers is None:
        servers = Servers(config, Link(config_bps(config)))
    try:
        if servers.browser is not None and own:
            servers.browser.wait(wait)
        digest = module_digest(app) if app else None
        rows, first = [], []
        for known in servers.known():
            row: dict[str, Any] = {**known.describe(config), "app": app}
            row["holds_app"] = known.holds(app, digest) if app and digest else None
            row.update(answering=None, ok=False, rtt_ms=None, load=None)
            rows.append(row)
            if not known.trusted:
                continue
            try:
                remote = servers.get(known.address)
            except errors.OffloadError as exc:
                row.update(answering=False, error=str(exc))
                continue
            assert remote is not None
            first.append((row, remote, remote.ping(timed=False)))
        timeout = max(config.connect_timeout, 2.0)
        for row, remote, pinged in first:
            _answer(row, pinged, timeout)
            if row["answering"]:
                start = time.perf_counter()
                _answer(row, remote.ping(), timeout)
                if row["answering"]:
                    row["rtt_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return rows
    finally:
        if own:
            servers.close()


def _answer(row: dict[str, Any], pinged: Future[dict[str, Any]], timeout: float) -> None:
    try:
        info = pinged.result(timeout)
    except TimeoutError:
        row.update(answering=False, ok=False, error=f"did not answer within {timeout:g} s")
        return
    except Exception as exc:
        row.update(answering=False, ok=False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        return
    load = info.get("load") or {}
    row.update(answering=True, ok=True, load=load, functions=len(info.get("functions", ())))
    for key in ("queued", "running", "workers", "rate_per_s"):
        row[key] = load.get(key)
