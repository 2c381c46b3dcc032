"""Energy model: joules of running a call here versus offloading it, per device profile.

Local: the CPU draws ``cpu_w`` for the call's duration. Offloaded: the radio
draws ``tx_w`` while the arguments go up and ``rx_w`` while the result comes
down, and the device waits at ``idle_w`` for the rest of the turnaround (the
server computing, the round trip). This is the model of Kumar and Lu (2010)
and of MAUI (Cuervo et al. 2010), with coefficients from the sources cited in
each profile. Where the battery reports the power it delivers (sysfs
``power_now``), that measured figure replaces ``cpu_w``, and every report
says which was used (:attr:`EnergyModel.source`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._exceptions import ConfigError


@dataclass(frozen=True)
class EnergyProfile:
    """Power draws of one kind of device, in watts, with where each came from."""

    name: str
    cpu_w: float
    idle_w: float
    tx_w: float
    rx_w: float
    source: str


PROFILES: dict[str, EnergyProfile] = {
    p.name: p
    for p in (
        EnergyProfile(
            "smartphone-wifi",
            cpu_w=0.9,
            idle_w=0.3,
            tx_w=1.3,
            rx_w=1.3,
            source=(
                "Kumar & Lu, 'Cloud Computing for Mobile Users: Can Offloading Computation "
                "Save Energy?', IEEE Computer 43(4), 2010 (an HP iPAQ with a 400 MHz XScale "
                "on Wi-Fi): 0.9 W computing, 0.3 W idle, 1.3 W sending or receiving"
            ),
        ),
        EnergyProfile(
            "raspberry-pi-4",
            cpu_w=6.0,
            idle_w=3.0,
            tx_w=3.32,
            rx_w=3.12,
            source=(
                "Raspberry Pi documentation, power supplies (Pi 4 B, whole board at 5 V): "
                "idle 0.6 A = 3.0 W, stress average 1.2 A = 6.0 W; radio: idle plus the "
                "Intel 5300 card's transmit (+0.32 W) and receive (+0.12 W) increments over "
                "idle from Halperin et al., 'Demystifying 802.11n power consumption', "
                "HotPower 2010 (a stand-in: no Pi figure is published)"
            ),
        ),
        EnergyProfile(
            "laptop",
            cpu_w=30.0,
            idle_w=8.0,
            tx_w=8.32,
            rx_w=8.12,
            source=(
                "Mahesri & Vardhan, 'Power Consumption Breakdown on a Modern Laptop', PACS "
                "2004: whole system 8 W idle to 30 W under load (a 2003 ThinkPad R40); "
                "radio increments over idle as for raspberry-pi-4 (Halperin et al. 2010)"
            ),
        ),
    )
}


class EnergyModel:
    """Joules per call for one profile, optionally with a measured CPU draw."""

    __slots__ = ("cpu_w", "idle_w", "profile", "rx_w", "source", "tx_w")

    def __init__(self, profile: EnergyProfile | str = "smartphone-wifi") -> None:
        if isinstance(profile, str):
            if profile not in PROFILES:
                raise ConfigError(
                    f"energy_profile must be one of {sorted(PROFILES)}, not {profile!r}"
                )
            profile = PROFILES[profile]
        self.profile = profile
        self.cpu_w, self.idle_w, self.tx_w, self.rx_w = (
            profile.cpu_w,
            profile.idle_w,
            profile.tx_w,
            profile.rx_w,
        )
        self.source = f"modelled ({profile.name})"

    def measured(self, power_w: float | None, discharging: bool) -> None:
        """Use the draw the battery reports as the computing draw while it reports one.

        Only a discharging battery's figure is the device's own draw (charging,
        it is the charger's current); without one the profile's figure is back.
        """
        if power_w is not None and power_w > 0 and discharging:
            self.cpu_w = power_w
            self.source = f"measured cpu draw (power_now), modelled radio ({self.profile.name})"
        else:
            self.cpu_w = self.profile.cpu_w
            self.source = f"modelled ({self.profile.name})"

    def local(self, seconds: float) -> float:
        """Joules of computing for ``seconds`` here."""
        return self.cpu_w * seconds

    def remote(self, up_s: float, down_s: float, total_s: float) -> float:
        """Joules of sending ``up_s``, receiving ``down_s``, waiting the rest of ``total_s``."""
        wait = total_s - up_s - down_s
        return self.tx_w * up_s + self.rx_w * down_s + self.idle_w * (wait if wait > 0 else 0.0)
