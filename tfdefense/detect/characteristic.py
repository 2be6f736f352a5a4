"""``Characteristic``: base class of the detection characteristics (kernel density, LID, Mahalanobis).

A characteristic reads a ``FeatureExtractor``; ``fit`` learns from clean
training images, ``score(x)`` returns one column per layer, shape (N, L).
``adversarial_sign`` tells which way adversarial inputs move the value
(+1: larger, -1: smaller), so ``adversarial_sign * score`` is an
"adversarial-ness" score ready for ``metrics``. ``get_config`` holds the
hyperparameters (never the model or fitted statistics).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.detect.extractor import FeatureExtractor, as_extractor


class Characteristic:
    """One detection characteristic over the layers of a feature extractor.

    Subclasses set ``name``, ``adversarial_sign`` and ``reduce`` and implement
    ``fit``, ``score`` and ``get_config``.

    Example:
        >>> import numpy as np
        >>> from tfdefense.detect.characteristic import Characteristic
        >>> from tfdefense.nets import small_cnn
        >>> class Norm(Characteristic):
        ...     name = "norm"
        ...     def get_config(self):
        ...         return {}
        ...     def fit(self, x, y=None):
        ...         self._fitted, self._columns = True, 1
        ...         return self
        ...     def score(self, x):
        ...         self._require_fitted()
        ...         return np.linalg.norm(x.reshape(len(x), -1), axis=1)[:, None]
        >>> Norm(small_cnn()).fit(None).score(np.ones((2, 28, 28, 1))).round(1).tolist()
        [[28.0], [28.0]]
    """

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

    def score_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """(N, L) float64 ``score`` as TensorFlow ops on a batch (for one exported graph).

        A characteristic that cannot be computed in one graph raises ``ValueError`` saying why.
        """
        raise ValueError(f"{type(self).__name__}: no graph form of the score (score_tensor)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def minibatches(n: int, batch_size: int):
    """(start, stop) pairs covering range(n)."""
    for i in range(0, n, batch_size):
        yield i, min(n, i + batch_size)
