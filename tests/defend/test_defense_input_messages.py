"""The Defense base class names its argument ``x`` when a batch does not fit the defense's
input shape (the whole message, as the user reads it)."""

import re

import keras
import numpy as np
import pytest

from tfdefense.defend.base import Defense


class Plain(Defense):
    """argmax of a zero Dense on 2x2x1 images (not registered: never saved)."""

    input_shape = (2, 2, 1)

    def __init__(self):
        x = keras.Input(self.input_shape)
        self.classifier = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(x)))

    def logits(self, x):
        return self.classifier(x, training=False)

    def components(self):
        return {"classifier": self.classifier}

    def get_config(self):
        return {}

    @classmethod
    def from_parts(cls, config, components, state):
        return cls()


@pytest.mark.parametrize("method", ["predict_with_decisions", "predict"])
def test_a_batch_of_the_wrong_shape_is_refused_naming_x(method):
    with pytest.raises(ValueError, match="^" + re.escape(
            "x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)") + "$"):
        getattr(Plain(), method)(np.zeros((1, 3, 3, 1), np.float32))
    labels = getattr(Plain(), method)(np.zeros((1, 2, 2, 1), np.float32))
    assert (labels[0] if method == "predict_with_decisions" else labels).tolist() == [0]
