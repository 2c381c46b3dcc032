"""Energy from the device's own battery counter, where it has one (issue 17, item 5).

A laptop, or a Raspberry Pi with a UPS board, reports its battery under
``/sys/class/power_supply/*/``: ``energy_now`` (µWh left) or ``power_now``
(µW drawn now). :class:`Meter` reads the first such battery over a run: the
drop of ``energy_now``, or ``power_now`` sampled and integrated; the bench
then reports the measured joules beside what the energy model says for the
same calls. Where no battery reports either counter (a VM, a server on
mains), or when a saved trace is replayed (nothing runs), the report says
``skipped`` and why, instead of a figure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path("/sys/class/power_supply")
COUNTERS = ("energy_now", "power_now")
_SAMPLE_S = 0.25


def counter(root: Path = ROOT) -> Path | None:
    """The first battery counter under ``root`` (``energy_now`` preferred), or ``None``."""
    for name in COUNTERS:
        for path in sorted(root.glob(f"*/{name}")):
            try:
                int(path.read_text())
            except (OSError, ValueError):
                continue
            return path
    return None


def why_not(root: Path = ROOT, replayed: bool = False) -> str | None:
    """Why the battery cannot be measured here (``None``: it can)."""
    if counter(root) is None:
        return f"no battery reports {' or '.join(COUNTERS)} under {root} on this machine"
    if replayed:
        return "a replayed trace runs nothing; a live run measures the battery"
    return None


class Meter:
    """Joules the battery gave over the ``with`` block (:attr:`joules`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.joules = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0

    def _read(self) -> int:
        return int(self.path.read_text())

    def __enter__(self) -> Meter:
        self._start = self._read()
        if self.path.name == "power_now":
            self._thread = threading.Thread(target=self._integrate, daemon=True)
            self._thread.start()
        return self

    def _integrate(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(_SAMPLE_S):
            now = time.monotonic()
            self.joules += self._read() * 1e-6 * (now - last)  # µW over the interval
            last = now

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.joules = (self._start - self._read()) * 1e-6 * 3600  # µWh to J


def report(meter: Meter | None, modelled_j: float | None, reason: str | None) -> dict[str, Any]:
    """The ``battery`` entry of a report: measured against modelled, or why it was skipped."""
    if meter is None or modelled_j is None:
        return {"skipped": reason or "no live run"}
    return {
        "counter": str(meter.path),
        "measured_j": meter.joules,
        "modelled_j": modelled_j,
        "measured_over_modelled": meter.joules / modelled_j if modelled_j else None,
        "note": "the whole machine's draw over the live run (the emulated server runs on it "
        "too); the model's figure is for the calls alone",
    }
