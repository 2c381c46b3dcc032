"""What the ``offload`` command line prints: tables and fields for people, typed JSON."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import human
from .control import JobInfo


def error_json(exc: BaseException) -> str:
    """``{"error": {"type": ..., "message": ...}}``: how every command reports a failure in JSON."""
    return json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}})


def job_row(job: JobInfo, now: float | None = None) -> dict[str, str]:
    """One job for the ``jobs`` table: ages, durations and sizes in units."""
    now = time.time() if now is None else now
    return {
        "id": str(job.id),
        "state": state(job),
        "function": job.function,
        "submitted": human.ago(job.submitted, now),
        "took": took(job, now),
        "cpu": human.seconds(job.cpu_s),
        "in": human.size(job.bytes_in),
        "out": human.size(job.bytes_out),
    }


def state(job: JobInfo) -> str:
    """The state, and where a moved or resumed job went: ``moved (here)``, ``resumed (job 9)``."""
    if job.moved_to is None:
        return str(job.state.value)
    return f"{job.state.value} ({'here' if job.moved_to == 'local' else job.moved_to})"


def took(job: JobInfo, now: float | None = None) -> str:
    """How long it ran; for a running job ``12 s so far``, for a waiting one ``waiting 3 s``."""
    now = time.time() if now is None else now
    if job.finished is not None and job.started is not None:
        return human.seconds(job.finished - job.started)
    if job.started is not None and job.finished is None:
        return f"{human.seconds(now - job.started)} so far"
    if job.finished is None:
        return f"waiting {human.seconds(now - job.submitted)}"
    return "-"  # finished without starting: cancelled while waiting


def job_fields(job: JobInfo, now: float | None = None) -> list[tuple[str, str]]:
    """One job, field by field, for ``status``, ``wait`` and ``cancel``."""
    now = time.time() if now is None else now

    def when(timestamp: float | None) -> str:
        if timestamp is None:
            return "-"
        return f"{human.local_time(timestamp)} ({human.ago(timestamp, now)})"

    fields = [
        ("id", str(job.id)),
        ("state", state(job)),
        ("function", job.function),
        ("submitted", when(job.submitted)),
        ("started", when(job.started)),
        ("finished", when(job.finished)),
        ("took", took(job, now)),
        ("cpu", human.seconds(job.cpu_s)),
        ("bytes in", human.size(job.bytes_in)),
        ("bytes out", human.size(job.bytes_out)),
        ("result", "kept: offload result " + str(job.id) if job.kept else "not kept"),
        ("owner", job.owner or "-"),
    ]
    if job.error:
        fields.append(("error", job.error))
    return fields


SERVER_COLUMNS = (
    "name",
    "site",
    "address",
    "km",
    "answering",
    "rtt",
    "load",
    "app",
    "trusted",
)


def server_row(row: dict[str, Any]) -> dict[str, Any]:
    """One server for the ``servers`` table: km, RTT in ms, load as busy workers and queue."""
    load = row.get("load") or {}
    shown = None
    if load:
        shown = f"{load.get('running')}/{load.get('workers')} busy, {load.get('queued')} queued"
    rtt = row.get("rtt_ms")
    return {
        **row,
        "name": row.get("name") or row.get("role"),
        "km": None if row.get("distance_km") is None else f"{row['distance_km']:.1f}",
        "rtt": None if rtt is None else f"{rtt:.2g} ms" if rtt < 10 else f"{rtt:.0f} ms",
        "load": shown,
        "app": row.get("holds_app") if row.get("app") else None,
        "trusted": f"yes ({row['trust']})" if row.get("trusted") else f"NO ({row.get('trust')})",
    }


CLIENT_COLUMNS = ("client", "first seen", "last seen", "calls", "in", "out", "km")


def client_row(row: dict[str, Any]) -> dict[str, Any]:
    """One client for the ``clients`` table: times as ago, sizes, distance."""
    now = time.time()
    km = row.get("distance_km")
    return {
        "client": row.get("client"),
        "first seen": human.ago(row["first_seen"], now) if row.get("first_seen") else None,
        "last seen": human.ago(row["last_seen"], now) if row.get("last_seen") else None,
        "calls": row.get("calls"),
        "in": human.size(row.get("bytes_in", 0)),
        "out": human.size(row.get("bytes_out", 0)),
        "km": None if km is None else f"{km:.1f}",
    }


def fields_text(fields: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name:>{width}}  {value}" for name, value in fields)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as aligned columns under a header line."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [list(columns), *cells]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in lines
    )


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def typed(value: Any, npy: Path, saved: list[Path]) -> Any:
    """``value`` as JSON data: numbers, strings, lists, objects.

    A numpy array becomes ``{"dtype", "shape", "file"}`` with the array written
    to a ``.npy`` file (``npy``, then ``npy`` with ``-1``, ``-2``... for more
    arrays; each appended to ``saved``); numpy scalars become numbers; bytes
    ``{"bytes_base64": ...}``; anything else ``{"type", "repr"}``. Floats that
    JSON cannot hold (NaN, infinities) become the strings ``"nan"``, ``"inf"``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [typed(item, npy, saved) for item in value]
    if isinstance(value, dict):
        return {str(key): typed(item, npy, saved) for key, item in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes_base64": base64.b64encode(bytes(value)).decode()}
    module = type(value).__module__
    if module == "numpy" and type(value).__name__ == "ndarray":
        import numpy as np

        path = npy if not saved else npy.with_name(f"{npy.stem}-{len(saved)}{npy.suffix}")
        with path.open("wb") as out:
            np.save(out, value, allow_pickle=False)
        saved.append(path)
        return {"dtype": str(value.dtype), "shape": list(value.shape), "file": str(path)}
    if module == "numpy" and hasattr(value, "item"):
        return typed(value.item(), npy, saved)
    return {"type": f"{module}.{type(value).__qualname__}", "repr": repr(value)}


APP_COLUMNS = ("app", "version", "deployed", "by", "files", "size", "functions")


def app_rows(app: dict[str, Any], now: float | None = None) -> list[dict[str, str]]:
    """One app of ``offload apps``: a row per version (the current one starred), or its module."""
    now = time.time() if now is None else now
    if app.get("source") != "deployed":
        return [
            {
                "app": str(app.get("app")),
                "version": "--app",
                "functions": functions_text(app.get("functions") or {}),
            }
        ]
    rows = []
    for version in app.get("versions") or []:
        number = version.get("version")
        rows.append(
            {
                "app": str(app.get("app")),
                "version": f"{number} *" if number == app.get("current") else str(number),
                "deployed": human.ago(version.get("deployed_at", now), now),
                "by": str(version.get("deployer") or "-")[:12],
                "files": str(version.get("files")),
                "size": human.size(version.get("bytes", 0)),
                "functions": functions_text(version.get("functions") or {}),
            }
        )
    return rows


def functions_text(functions: dict[str, str]) -> str:
    """``name fingerprint`` pairs, short: ``sort 1a2b3c4d, power 5e6f7a8b``."""
    return ", ".join(f"{n.split(':')[-1]} {fp[:8]}" for n, fp in sorted(functions.items()))
