"""Defenses with one interface: ``predict(x) -> labels``, ``REJECTED = -1``."""

from tfdefense.defend.base import REJECTED, Defense

__all__ = ["REJECTED", "Defense"]
