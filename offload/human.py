"""Numbers for people: sizes, durations and times as the command lines print and read them."""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime
from typing import Any

_SIZE_UNITS = (("GB", 2**30), ("MB", 2**20), ("KB", 2**10))
_DURATION_UNITS = (("days", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))
_PARSE_SIZE = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20}
_PARSE_SIZE |= {"g": 2**30, "gb": 2**30}
_PARSE_DURATION = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PARSE_DURATION |= {"day": 86400.0, "days": 86400.0}


def credits(micro: int) -> str:
    """Micro-credits as credits with six decimals (exact: no float on the way)."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def size(nbytes: float) -> str:
    """``512 MB``, ``1.5 KB``, ``12 bytes``: binary units (1 KB = 1,024 bytes)."""
    for unit, scale in _SIZE_UNITS:
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}".replace("e+", "e")
    return f"{nbytes:g} bytes" if nbytes != 1 else "1 byte"


def duration(seconds: float) -> str:
    """``7 days``, ``1.5 h``, ``3 min``, ``0.25 s``."""
    for unit, scale in _DURATION_UNITS:
        if abs(seconds) >= scale:
            value = seconds / scale
            return f"{value:.3g} {unit}" if unit != "days" or value != 1 else "1 day"
    return f"{seconds:.3g} s"


def ago(timestamp: float, now: float | None = None) -> str:
    """``3 min ago`` (``in 5 s`` for the future), from a Unix time."""
    delta = (time.time() if now is None else now) - timestamp
    if abs(delta) < 1:
        return "just now"
    for unit, scale in _DURATION_UNITS:
        if abs(delta) >= scale or unit == "s":
            count = int(abs(delta) // scale)
            text = f"{count} {unit}" if (unit, count) != ("days", 1) else "1 day"
            break
    return f"{text} ago" if delta > 0 else f"in {text}"


def local_time(timestamp: float) -> str:
    """A Unix time as local ISO 8601 to the second, with its UTC offset."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def parse_size(text: str) -> int:
    """``512MB``, ``1.5 GB``, ``4096``: a size in bytes (for argparse's ``type=``)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _PARSE_SIZE:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 4096, 64KB, 512MB or 2GB)")
    try:
        return int(float(m.group(1)) * _PARSE_SIZE[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def parse_duration(text: str) -> float:
    """``30``, ``90s``, ``5min``, ``12h``, ``7d``: a duration in seconds (argparse ``type=``)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _PARSE_DURATION:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (seconds, or say 90s, 5min, 12h or 7d)"
        )
    try:
        return float(m.group(1)) * _PARSE_DURATION[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None


def seconds(value: float | None) -> str:
    """A short time: ``12 us``, ``3.4 ms``, ``2.5 s``, ``3 min``; ``unknown`` when not known."""
    if value is None:
        return "unknown"
    if abs(value) < 1e-3:
        return f"{value * 1e6:.3g} us"
    if abs(value) < 1:
        return f"{value * 1e3:.3g} ms"
    return duration(value)


def rate(bytes_per_s: float | None) -> str:
    """A link speed in Mbit/s (from bytes per second); ``unknown`` when not known."""
    return "unknown" if bytes_per_s is None else f"{bytes_per_s * 8 / 1e6:.3g} Mbit/s"


def joules(value: float | None) -> str:
    """``3.4 mJ``, ``1.2 J``; ``unknown`` when not known."""
    if value is None:
        return "unknown"
    if abs(value) < 1e-3:
        return f"{value * 1e6:.3g} uJ"
    if abs(value) < 1:
        return f"{value * 1e3:.3g} mJ"
    return f"{value:.3g} J"


def share(fraction: float | None) -> str:
    """``45%``; ``unknown`` when not known."""
    return "unknown" if fraction is None else f"{fraction * 100:.0f}%"


def progress_text(progress: Any) -> str:
    """``str()`` of an :class:`offload.Progress`: checkpoints, the last one's age, where."""
    last = f", the last {ago(progress.last_checkpoint)}" if progress.last_checkpoint else ""
    where = {"local": "running here", "paused": "paused"}.get(progress.where)
    count = progress.checkpoints
    where = where or f"on {progress.where}"
    plural = "" if count == 1 else "s"
    done = f"{share(progress.fraction)} done, " if progress.fraction is not None else ""
    job = f" (job {progress.job_id})" if progress.job_id is not None and where != "paused" else ""
    return f"{done}{count} checkpoint{plural}{last}; {where}{job}, run {progress.runs}"
