"""Measurements, cost models and the per-call decision.

``Profiler`` gathers what is measured (device, link, function history,
energy); ``AdaptiveDecider`` turns it into a side for each call.
"""

from .decider import LOCAL, REMOTE, Decider, Explanation, Policy, Side, Stats
from .decision import AdaptiveDecider
from .device import DeviceProfiler, DeviceState
from .energy import PROFILES, EnergyModel, EnergyProfile
from .history import FunctionProfile, ProfileStore
from .models import Drift, SizeModel, Smoothed
from .network import Link
from .profiler import Profiler
from .sizes import argument_bytes

__all__ = [
    "LOCAL",
    "PROFILES",
    "REMOTE",
    "AdaptiveDecider",
    "Decider",
    "DeviceProfiler",
    "DeviceState",
    "Drift",
    "EnergyModel",
    "EnergyProfile",
    "Explanation",
    "FunctionProfile",
    "Link",
    "Policy",
    "ProfileStore",
    "Profiler",
    "Side",
    "SizeModel",
    "Smoothed",
    "Stats",
    "argument_bytes",
]
