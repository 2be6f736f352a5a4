"""A defense's fingerprint (what its cached attack sets and readings are keyed by) covers its
configuration as well as its weights and fitted state: the same weights under another
hyperparameter give another fingerprint, the same weights and configuration the same one,
in this process and in a fresh one."""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfdefense.attacks.adversarial_set import model_fingerprint
from tfdefense.attacks.robustness import defense_config_json, defense_weights_fingerprint
from tfdefense.defend import ClassifierDefense
from tfdefense.defend.base import Defense

#: a classifier with given weights (2x2 images, 3 classes): the same in every process
BUILD = """
import keras
import numpy as np
from tfdefense.defend import ClassifierDefense

def classifier():
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.set_weights([np.arange(12, dtype="float32").reshape(4, 3) / 10,
                       np.array([0.5, -0.5, 0.0], "float32")])
    return model
"""


def _build():
    scope: dict = {}
    exec(BUILD, scope)  # noqa: S102 - the same source the fresh process runs
    return scope["classifier"]


class Configured(Defense):
    """A defense whose config holds what JSON does not: numpy numbers, a tuple, an array, a
    set and a Keras object."""

    def __init__(self, classifier, config):
        self.classifier, self.config = classifier, config

    def predict_with_decisions(self, x, batch_size=None):
        raise NotImplementedError

    def components(self):
        return {"classifier": self.classifier}

    def get_config(self):
        return self.config

    @classmethod
    def from_parts(cls, config, components, state):
        return cls(components["classifier"], config)


def test_same_weights_and_another_config_give_another_fingerprint():
    clf = _build()()
    assert defense_weights_fingerprint(ClassifierDefense(clf, batch_size=64)) != \
        defense_weights_fingerprint(ClassifierDefense(clf, batch_size=32))


def test_same_weights_and_config_give_the_hand_computed_fingerprint():
    first, second = _build()(), _build()()  # two models, equal weights
    fp = defense_weights_fingerprint(ClassifierDefense(first, batch_size=64))
    assert fp == defense_weights_fingerprint(ClassifierDefense(second, batch_size=64))
    weights = model_fingerprint(first)  # no fitted state
    assert fp == hashlib.sha256(f'{weights}:{{"batch_size": 64}}'.encode()).hexdigest()


def test_weights_still_count():
    clf = _build()()
    before = defense_weights_fingerprint(ClassifierDefense(clf))
    clf.layers[-1].bias.assign(np.array([0.5, -0.5, 0.25], "float32"))
    assert defense_weights_fingerprint(ClassifierDefense(clf)) != before


def test_fingerprint_is_the_same_in_a_fresh_process():
    fp = defense_weights_fingerprint(ClassifierDefense(_build()(), batch_size=64))
    script = BUILD + """
from tfdefense.attacks.robustness import defense_weights_fingerprint
print(defense_weights_fingerprint(ClassifierDefense(classifier(), batch_size=64)))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == fp


def test_non_json_config_values_print_the_same_whatever_their_identity():
    clf = _build()()

    def config(layer_name_offset: int):
        for _ in range(layer_name_offset):  # Keras numbers unnamed layers per process
            keras.layers.Dense(2)
        return {"rho": np.float32(0.95), "codes": (3, 1), "ranges": np.array([0.5, 1.5]),
                "modes": {"b", "a"}, "head": keras.layers.Dense(2, activation="relu"),
                "init": keras.initializers.Constant(0.5)}

    a, b = Configured(clf, config(0)), Configured(clf, config(3))
    assert defense_config_json(a) == defense_config_json(b)
    assert defense_weights_fingerprint(a) == defense_weights_fingerprint(b)
    text = json.loads(defense_config_json(a))
    assert text["rho"] == pytest.approx(0.95) and text["codes"] == [3, 1]
    assert text["modes"] == ["a", "b"] and text["head"]["keras"] == "Dense"
    assert text["head"]["config"]["activation"] == "relu" and "name" not in text["head"]["config"]
    assert text["ranges"]["shape"] == [2]
    other = Configured(clf, {**config(0), "ranges": np.array([0.5, 1.25])})
    assert defense_weights_fingerprint(other) != defense_weights_fingerprint(a)


def test_a_config_value_without_a_stable_form_is_refused():
    with pytest.raises(ValueError, match=r"config\['thing'\]"):
        defense_config_json(Configured(_build()(), {"thing": object()}))
