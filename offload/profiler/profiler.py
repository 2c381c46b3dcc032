"""The profiler of one client: device, link, function history and energy model together.

One daemon thread keeps it fresh: every ``interval`` it samples the device,
adopts a measured power figure when the battery reports one, runs the
client's ``tick`` (an idle PING, which measures the RTT and notices a server
that stopped answering) and, every ``save_every`` seconds, writes the
function profiles to disk. Nothing here runs on the call path except reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .device import POWER_SUPPLY, DeviceProfiler
from .energy import EnergyModel
from .history import ProfileStore
from .models import Drift
from .network import Link

log = logging.getLogger("offload")


class Profiler:
    """Measurements one client decides from; ``start``/``stop`` its sampling thread."""

    def __init__(
        self,
        *,
        energy_profile: str = "smartphone-wifi",
        profile_cache: str | None = None,
        prior_bps: float = 54e6 / 8 * 0.5,
        interval: float = 1.0,
        save_every: float = 30.0,
        power_supply: Path = POWER_SUPPLY,
        address: str = "",
        interface: Path | None = None,
    ) -> None:
        self.energy = EnergyModel(energy_profile)
        self.device = DeviceProfiler(interval, power_supply=power_supply, interface=interface)
        self.energy.measured(self.device.state.power_w, not self.device.state.charging)
        self.store = ProfileStore(profile_cache)
        self.link = Link(prior_bps)
        #: How this device's speed has drifted from what the function models learned.
        #: Slow, and only from calls of 0.1 s and more: the CPU load already says when
        #: other apps take the CPU, and a short call here times a CPU quota's period
        #: or a preemption as much as this device's speed.
        self.local_drift = Drift(gain=0.1, floor=0.1)
        self.address = address
        saved_link = self.store.links.get(address)
        if saved_link:
            try:
                self.link.load(saved_link)
            except Exception as exc:  # a bad file must not stop the client
                log.warning("ignoring the saved link estimates of %s: %r", address, exc)
        self.interval = interval
        self.save_every = save_every
        self._tick: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, tick: Callable[[], None] | None = None) -> None:
        """Sample in a daemon thread, calling ``tick`` once per interval."""
        self._tick = tick
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="offload-profiler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop sampling and save the profiles."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.save()

    def save(self) -> None:
        self.store.save({self.address: self.link.to_json()} if self.address else None)

    def _run(self) -> None:
        saved = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                state = self.device.sample()
                self.energy.measured(state.power_w, not state.charging)
                if self._tick is not None:
                    self._tick()
                if time.monotonic() - saved > self.save_every:
                    saved = time.monotonic()
                    self.save()
            except Exception:  # the profiler must never take the app down
                log.debug("profiler sampling failed", exc_info=True)
