"""The Defense base class on a hand-made detecting defense: the empty batch, the serving
signatures a detecting subclass gets, and the metadata an export carries."""

import keras
import numpy as np
import tensorflow as tf

from tfdefense.decisions import Decision
from tfdefense.defend.base import REJECTED, Defense


class Threshold(Defense):
    """Logits [0, x00 − 0.5]; rejects where x00 > 0.9 (margin x00 − 0.9)."""

    detects = True
    input_shape = (2, 2, 1)

    def __init__(self):
        x = keras.Input(self.input_shape)
        dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
            [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]),
            bias_initializer=keras.initializers.Constant([0.0, -0.5]))
        self.classifier = keras.Model(x, dense(keras.layers.Flatten()(x)))

    def logits(self, x):
        return self.classifier(x, training=False)

    def detection_margin(self, x):
        return tf.reshape(x, (-1, 4))[:, 0] - 0.9

    def defend(self, x):
        labels, _ = super().defend(x)
        rejected = self.detection_margin(x) > 0
        return (tf.where(rejected, tf.constant(REJECTED, tf.int64), labels),
                tf.where(rejected, int(Decision.REJECTED), int(Decision.ACCEPTED)))

    def components(self):
        return {"classifier": self.classifier}

    def get_config(self):
        return {"threshold": 0.9}

    @classmethod
    def from_parts(cls, config, components, state):
        return cls()


def test_an_empty_batch_gives_empty_labels_and_decisions():
    labels, decisions = Threshold().predict_with_decisions(np.zeros((0, 2, 2, 1), np.float32))
    assert labels.shape == decisions.shape == (0,)
    assert labels.dtype == np.int64 and decisions.dtype == np.int32


def test_predict_labels_and_rejects_by_the_margin():
    # x00 = 0.2: logits [0, −0.3] -> 0; 0.7: [0, 0.2] -> 1; 0.95: margin 0.05 > 0 -> rejected
    x = np.zeros((3, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = [0.2, 0.7, 0.95]
    labels, decisions = Threshold().predict_with_decisions(x, batch_size=2)
    assert labels.tolist() == [0, 1, -1] and decisions.tolist() == [0, 0, 2]


def test_a_detecting_defense_serves_detect_with_its_margin_and_documented_outputs():
    spec = Threshold().serving_spec()
    assert [s.name for s in spec.signatures] == ["serving_default", "detect", "defend"]
    detect = spec.signatures[1]
    assert detect.outputs["score"] == "float32 (N,) detection margin; > 0 = rejected"
    assert "is_adversarial" in detect.outputs
    x = tf.constant(np.full((1, 2, 2, 1), 0.95, np.float32))
    out = detect.fn(x)
    np.testing.assert_allclose(out["score"].numpy(), [0.05], atol=1e-6)
    assert out["is_adversarial"].numpy().tolist() == [True]
    defend = spec.signatures[2].fn(x)
    assert defend["label"].numpy().tolist() == [-1]
    assert defend["decision_name"].numpy().tolist() == [b"rejected"]


def test_export_metadata_names_the_class_config_and_flags():
    meta = Threshold().serving_spec().metadata
    assert meta == {"model": "Threshold", "defense_config": {"threshold": 0.9},
                    "stochastic": False, "detects": True}
