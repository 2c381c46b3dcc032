"""Measurements, cost models and the per-call decision."""

from .decision import LOCAL, REMOTE, Decider, ReachabilityDecider, Side

__all__ = ["LOCAL", "REMOTE", "Decider", "ReachabilityDecider", "Side"]
