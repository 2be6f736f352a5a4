"""The shared case of the compiled minimization attacks' tests (C&W-L2, DeepFool) against
Foolbox: a small CNN with fixed weights and 16 mnist_5k test images, labelled by the model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.nets import small_cnn


def small_cnn_case():
    """(model, x, y): a small CNN, 16 mnist_5k test images and the model's labels."""
    from tfdefense import data

    tf.keras.utils.set_random_seed(0)
    model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    x = data.load_arrays("mnist_5k", "test")[0][:16]
    y = np.argmax(np.asarray(model(x)), 1)
    return model, x, y


def fooled(model, x_adv, y):
    """Per image: does ``model`` misclassify ``x_adv``?"""
    return np.argmax(np.asarray(model(x_adv)), 1) != y
