"""Function profiler: each function's cost on each side as a function of its input size.

Per function, three :class:`~offload.profiler.models.SizeModel` s learn from
every call: execution time on both sides in one model (here, and on the
server as it reports in each reply, so compute and transfer are told apart;
the two share their shape and differ by a speed factor), and bytes up and
down. Running totals per side feed ``offload.stats()``.

Profiles persist in a small JSON file (by default under the user's cache
directory, see :class:`offload.Config`) keyed by function name and code
fingerprint, so a restarted app starts warm and a changed function starts
cold. The file holds only numbers; it is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..runtime.files import atomic_write
from .models import SizeModel

log = logging.getLogger("offload")

SIDES = ("local", "remote")
#: Side indices in :attr:`FunctionProfile.time`: on the server, and here.
THERE, HERE = 0, 1
_TOTALS = ("calls", "seconds", "bytes_up", "bytes_down", "energy_j")


class FunctionProfile:
    """What has been learned about one function."""

    __slots__ = (
        "backlog",
        "clock",
        "down",
        "key",
        "lock",
        "side",
        "time",
        "timed_here",
        "totals",
        "typical",
        "typical_w",
        "up",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        # Side THERE: server execution; side HERE: local. Slower to forget than the bytes:
        # the shared drifts follow a server or a device that changes speed, not the shape.
        self.time = SizeModel(forget=0.9)
        self.up = SizeModel()
        self.down = SizeModel(slope_prior=0.0)  # results often do not grow with the input
        self.totals = {side: dict.fromkeys(_TOTALS, 0.0) for side in SIDES}
        self.clock = 0  # decisions made: the time base of exploration
        self.side: str | None = None  # the side chosen last (hysteresis)
        #: Local runs long enough to measure this device's speed on it (see Learning._learn).
        self.timed_here = 0
        self.typical = 0.0  # smoothed estimated seconds of a call on its better side
        #: The weight ``typical`` has gathered (it starts at 0): ``typical / typical_w`` is
        #: the mean without the pull of its start (see cold.dear).
        self.typical_w = 0.0
        # DJOS virtual queue of deadline batches (dropped items owed). It starts
        # where an item of twice the typical cost is still worth doing.
        self.backlog = 2.0
        self.lock = threading.Lock()

    def add(
        self, side: str, seconds: float, up: int, down: int, energy: float, calls: int = 1
    ) -> None:
        """Count one finished call in the totals (``calls=0``: a transfer outside calls)."""
        totals = self.totals[side]
        totals["calls"] += calls
        totals["seconds"] += seconds
        totals["bytes_up"] += up
        totals["bytes_down"] += down
        totals["energy_j"] += energy

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.to_json(),
            "up": self.up.to_json(),
            "down": self.down.to_json(),
            "clock": self.clock,
            "timed_here": self.timed_here,
        }

    def load(self, data: dict[str, Any]) -> None:
        for name in ("time", "up", "down"):
            getattr(self, name).load(data[name])
        self.clock = int(data["clock"])
        # Saved before it was counted: take every local run as long enough.
        self.timed_here = int(data.get("timed_here", self.time.counts[HERE]))


class ProfileStore:
    """The function profiles and link estimates of one client, optionally backed by a file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.functions: dict[str, FunctionProfile] = {}
        self.links: dict[str, dict[str, Any]] = {}
        self._saved: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self._saved = _read(self.path)
        self._saved.setdefault("functions", {})
        self.links = dict(self._saved.get("links", {}))

    def profile(self, key: str) -> FunctionProfile:
        """The profile for ``key``, loaded from the file the first time if it is there."""
        prof = self.functions.get(key)
        if prof is None:
            with self._lock:
                prof = self.functions.get(key)
                if prof is None:
                    prof = _restore(key, self._saved["functions"].get(key))
                    self.functions[key] = prof
        return prof

    def save(self, links: dict[str, Any] | None = None) -> None:
        """Write every profile (and ``links``) to the file, if there is one."""
        if self.path is None:
            return
        with self._lock:
            functions = dict(self._saved["functions"])
            for key, prof in list(self.functions.items()):
                with prof.lock:  # not half-way through learning a call
                    functions[key] = prof.to_json()
            self.links.update(links or {})
            data = {"version": 2, "functions": functions, "links": self.links}
        with contextlib.suppress(OSError, ValueError):  # a read-only cache fails no call
            atomic_write(self.path, lambda out: out.write(json.dumps(data).encode()))


def _restore(key: str, saved: Any) -> FunctionProfile:
    """A profile from its saved form, or a fresh one if there is none or it is malformed."""
    prof = FunctionProfile(key)
    if saved is None:
        return prof
    try:
        prof.load(saved)
    except Exception as exc:  # anything in the file may be wrong: start this one cold
        log.warning("ignoring the saved profile of %s: %r", key, exc)
        return FunctionProfile(key)
    return prof


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable profile file %s: %s", path, exc)
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != 2
        or not isinstance(data.get("functions", {}), dict)
        or not isinstance(data.get("links", {}), dict)
    ):
        log.warning("ignoring profile file %s: not a version 2 profile file", path)
        return {}
    return data
