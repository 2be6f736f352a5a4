"""Base class of the detection characteristics (kernel density, LID, Mahalanobis).

A characteristic reads a ``FeatureExtractor``; ``fit`` learns from clean
training images, ``score(x)`` returns one column per layer, shape (N, L).
``adversarial_sign`` tells which way adversarial inputs move the value
(+1: larger, -1: smaller), so ``adversarial_sign * score`` is an
"adversarial-ness" score ready for ``metrics``. ``get_config`` holds the
hyperparameters (never the model or fitted statistics).
"""

from __future__ import annotations

import numpy as np

from tfdefense.detect.extractor import FeatureExtractor, as_extractor


class Characteristic:
    """One detection characteristic over the layers of a feature extractor."""

    #: the name ``LogisticDetector(features=...)`` uses
    name: str = ""
    #: +1 if adversarial inputs score higher, -1 if lower
    adversarial_sign: int = 1
    #: the extractor reduction this characteristic reads
    reduce: str = "flatten"

    def __init__(self, extractor: FeatureExtractor | object):
        self.extractor = as_extractor(extractor)
        self._fitted = False

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict, extractor):
        """Rebuild from ``get_config()`` and an extractor (models are not in configs)."""
        return cls(extractor, **config)

    def feature_names(self) -> list[str]:
        """Column names of ``score``: ``<name>/<layer>`` (known after ``fit``)."""
        self._require_fitted()
        layers = self.extractor.layers or [f"layer_{i}" for i in range(self._columns)]
        return [f"{self.name}/{layer}" for layer in layers]

    def _require_fitted(self):
        if not self._fitted:
            raise ValueError(f"{type(self).__name__}: call fit(...) before score(...)")

    def fit(self, x, y=None):
        raise NotImplementedError

    def score(self, x) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def minibatches(n: int, batch_size: int):
    """(start, stop) pairs covering range(n)."""
    for i in range(0, n, batch_size):
        yield i, min(n, i + batch_size)
