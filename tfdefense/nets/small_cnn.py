"""A small CNN classifier for MNIST-like data (logits out).

Two conv blocks and a dense head, the usual MNIST classifier of the
adversarial-detection literature (Carlini & Wagner 2017's MNIST model, halved
in width by default so tests stay fast). ``penultimate`` names the feature
layer that detectors (KD, LID, Mahalanobis) read.

Example:
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10)
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

import keras
from keras import layers

PENULTIMATE = "penultimate"


def small_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    width: int = 32,
    dense_units: int = 128,
    dropout: float = 0.0,
    name: str = "small_cnn",
) -> keras.Model:
    """Conv(w)-Conv(w)-Pool-Conv(2w)-Conv(2w)-Pool-Dense-Dense(logits).

    Args:
        input_shape: (H, W, C) of the images in [0, 1].
        num_classes: number of logits.
        width: filters of the first block (C&W's MNIST model uses 32).
        dense_units: units of the penultimate layer (C&W: 200).
        dropout: dropout before the logits.
        name: model name.
    """
    inputs = keras.Input(input_shape, name="images")
    h = inputs
    for filters in (width, 2 * width):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(dense_units, activation="relu", name=PENULTIMATE)(h)
    if dropout:
        h = layers.Dropout(dropout)(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, logits, name=name)
