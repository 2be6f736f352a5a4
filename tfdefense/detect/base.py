"""The interface every adversarial-example detector shares: fit, score, detect, save, serve.

A ``Detector`` (``LogisticDetector``, ``ResistanceDetector``, MagNet's detectors) answers:

* ``fit(...)``: learn from clean (and, for some, adversarial) data; returns the detector;
* ``score(x) -> (N,)``: how adversarial each input looks (larger = more adversarial);
* ``detect(x) -> (report, is_adversarial)``: a dict of per-input values (scores,
  thresholds, ...) and a bool (N,) array, the detector's verdict;
* ``get_config()``: JSON-able hyperparameters (never models or fitted arrays);
* ``save(path)`` / ``load(path)``: by default a folder (``detector.json`` with the class
  name and config, one ``<name>.keras`` per model of ``components()``, ``state.npz`` with
  ``state()``), rebuilt by ``from_parts``; a subclass with its own format overrides both;
* ``serving_spec()``: its signatures for ``tfdefense.export.for_serving`` (a ``detect``
  signature with at least ``score`` and ``is_adversarial``); the base raises
  ``ValueError`` (not exportable).

``@register_detector`` lets :func:`load` (and ``Detector.load``) find a subclass by name.

Example:
    >>> import numpy as np
    >>> from tfdefense.detect.base import Detector
    >>> class Brightness(Detector):
    ...     def __init__(self, threshold=0.5):
    ...         self.threshold = threshold
    ...     def fit(self, x):
    ...         return self
    ...     def score(self, x):
    ...         return np.asarray(x).reshape(len(x), -1).mean(axis=1)
    ...     def detect(self, x):
    ...         s = self.score(x)
    ...         return {"score": s, "threshold": self.threshold}, s > self.threshold
    ...     def get_config(self):
    ...         return {"threshold": self.threshold}
    >>> report, flagged = Brightness().detect(np.array([[0.2, 0.4], [0.9, 0.7]]))
    >>> report["score"].tolist(), flagged.tolist()
    ([0.30000000000000004, 0.8], [False, True])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfdefense.saving import PartsRegistry, SavedAsParts

__all__ = ["Detector", "load", "register_detector", "registered_detectors"]

CONFIG_FILE = "detector.json"
#: every registered detector class; ``Detector.save`` and :func:`load` go through it
DETECTORS = PartsRegistry("detector", CONFIG_FILE)
#: class decorator: :func:`load` rebuilds saved detectors of the class by its name
register_detector = DETECTORS.register


def registered_detectors() -> dict[str, type[Detector]]:
    """Name -> class of every registered detector (importing ``tfdefense`` registers ours)."""
    return DETECTORS.classes()


class Detector(SavedAsParts):
    """Base class of every detector; see the module docstring for the contract."""

    _parts_registry = DETECTORS

    # ------------------------------------------------------------ what subclasses give
    def fit(self, *args: Any, **kwargs: Any) -> Detector:
        """Learn the detector from data; returns ``self``."""
        raise NotImplementedError(f"{type(self).__name__}.fit")

    def score(self, x) -> np.ndarray:
        """(N,) adversarial-ness of each input of ``x`` (larger = more adversarial)."""
        raise NotImplementedError(f"{type(self).__name__}.score")

    def detect(self, x) -> tuple[dict[str, Any], np.ndarray]:
        """(report dict, is_adversarial bool (N,)) for ``x``."""
        raise NotImplementedError(f"{type(self).__name__}.detect")

    def serving_spec(self):
        """The detector's ``tfdefense.serving.ServingSpec``; the base is not exportable."""
        raise ValueError(f"{type(self).__name__} has no exportable signatures (no serving_spec)")

    # ----------------------------------------------------------------- save and load

    @classmethod
    def load(cls, path: str) -> Detector:
        """The detector ``save`` wrote to ``path``; ``ValueError`` if it is not a ``cls``."""
        detector = load(path)
        if not isinstance(detector, cls):
            raise ValueError(f"path: {path} holds a {type(detector).__name__}, not a {cls.__name__}")
        return detector


def load(path: str) -> Detector:
    """The detector ``Detector.save`` wrote to the folder ``path``.

    Raises ``ValueError`` for a folder without ``detector.json`` or a class that is not
    registered.
    """
    if str(path).endswith(".npz"):
        raise ValueError(f"path: {path} is a file; a LogisticDetector .npz loads with "
                         "LogisticDetector.load(path, model) (its classifier is not stored)")
    return DETECTORS.load(path)
