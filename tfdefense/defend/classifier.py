"""ClassifierDefense: a Keras classifier as a ``Defense`` (it never rejects or purifies).

The undefended ("Normal") and adversarially trained (PGD-AT, ``models.PGDAdversarialTraining``)
rows of CD-VAE Table 7 are plain classifiers: their robustness, if any, is in the weights.
Wrapping one gives it the interface every defense shares: ``predict`` /
``predict_with_decisions`` (every input ``ACCEPTED``), ``logits`` for an adaptive attacker
(the classifier itself; deterministic), ``save`` / ``tfdefense.defend.load`` and a SavedModel
with ``serving_default`` and ``defend``.

Example:
    >>> import numpy as np
    >>> from tfdefense import nets
    >>> from tfdefense.defend import ClassifierDefense
    >>> defense = ClassifierDefense(nets.small_cnn(width=4, dense_units=8))
    >>> labels, decisions = defense.predict_with_decisions(np.zeros((2, 28, 28, 1), "float32"))
    >>> defense.input_shape, labels.shape, decisions.tolist()
    ((28, 28, 1), (2,), [0, 0])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.defend.base import Defense, register_defense
from tfdefense.validation import check_positive_int


def classifier_input_shape(model: keras.Model) -> tuple[int, int, int]:
    """Per-image shape (H, W, C) of a Keras image classifier (``input_shape_`` if it has one)."""
    shape = getattr(model, "input_shape_", None)
    if shape is None:
        try:
            shape = model.input_shape[1:]
        except (AttributeError, ValueError) as exc:
            raise ValueError(f"classifier: {model.name!r} has no input shape; give it an "
                             "Input or call it on a batch") from exc
    shape = tuple(shape)
    if len(shape) != 3 or None in shape:
        raise ValueError(f"classifier: expected images (N, H, W, C) of a fixed size, got input "
                         f"shape {shape}")
    return shape


@register_defense
class ClassifierDefense(Defense):
    """Classify with ``classifier(x)``; every input is accepted.

    Args:
        classifier: a Keras model, images in [0, 1] (N, H, W, C) → logits (N, K): a
            plain classifier, a PGD-AT model (``models.PGDAdversarialTraining``), ...
        batch_size: images per compiled batch in ``predict``.
    """

    def __init__(self, classifier: keras.Model, batch_size: int = 256):
        if not isinstance(classifier, keras.Model):
            raise ValueError(f"classifier: expected a Keras model, got {type(classifier).__name__}")
        self.classifier = classifier
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.input_shape = classifier_input_shape(classifier)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """classifier(x) in inference mode: the whole defense, differentiable."""
        return self.classifier(tf.cast(x, tf.float32), training=False)

    def components(self) -> dict[str, keras.Model]:
        return {"classifier": self.classifier}

    def get_config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> ClassifierDefense:
        return cls(components["classifier"], **config)
