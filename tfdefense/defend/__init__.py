"""Defenses with one interface: ``predict(x) -> labels``, ``REJECTED = -1``."""

from tfdefense.defend.base import REJECTED, Defense

__all__ = ["REJECTED", "Defense"]
from tfdefense.defend.fm_defense import FMDefense, defense_accuracy  # noqa: E402, I001

__all__ += ["FMDefense", "defense_accuracy"]
from tfdefense.defend.greybox import GreyBoxDefense  # noqa: E402, I001

__all__ += ["GreyBoxDefense"]
