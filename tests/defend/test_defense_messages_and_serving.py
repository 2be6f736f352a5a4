"""Defense messages, refusals and the serving purify signature on hand-set 2x2x1 models:
FMDefense refuses another object and a detector whose engine has no normal ranges, saving a
subclass that is not registered names the decorator, ``predict`` names a bad batch_size, and
GreyBoxDefense's ``purify`` signature returns the same G(x) as ``purify``.

Images are flattened row-major as [x00, x01, x10, x11].
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import pixel_cdvae
from hand_models import SHAPE, flat_model, hand_combo_vae

from tfdefense.defend import ClassifierDefense, FMDefense, GreyBoxDefense
from tfdefense.defend.base import Defense
from tfdefense.detect import MorphEngine, ResistanceDetector


def whole(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def classifier():
    """Logits [0, 20·(x11 − x00)]."""
    return flat_model(2, [[0.0, -20.0], [0.0, 0.0], [0.0, 0.0], [0.0, 20.0]], [0.0, 0.0])


# ------------------------------------------------------------------ FMDefense refusals
def hand_engine():
    """A MorphEngine on the smallest ComboVAE (z_s = (x00, x01), z_u from a zero-kernel DGMM),
    its normal ranges not fitted (``low_ is None``)."""
    return MorphEngine(hand_combo_vae(), classifier(), n_morphs=4)


def test_another_object_is_refused_with_its_type_named():
    with whole("detector: expected a ResistanceDetector, got object"):
        FMDefense(object())


def test_a_detector_with_thresholds_but_no_engine_ranges_is_not_fitted():
    # θ_r, θ_d from given resistances (fit_resistance does not fit the engine's ranges)
    detector = ResistanceDetector(hand_engine(), unified_threshold=0.6, theta_d=0.2)
    detector.fit_resistance(np.ones((4, 2)))
    assert detector.theta_r_.tolist() == [0.6, 0.6] and detector.engine.low_ is None
    with whole("detector: not fitted; call detector.fit(x_val) (or fit_resistance) before "
               "building the defense"):
        FMDefense(detector)
    detector.engine.set_ranges([0.0, 0.0], [1.0, 1.0])
    assert FMDefense(detector).detector is detector


# ------------------------------------------------------------------ Defense base
class Unregistered(Defense):
    """Labels by the classifier; not decorated with @register_defense."""

    input_shape = SHAPE

    def __init__(self):
        self.classifier = classifier()

    def logits(self, x):
        return self.classifier(x, training=False)

    def get_config(self):
        return {}

    def components(self):
        return {"classifier": self.classifier}


def test_saving_an_unregistered_defense_names_the_decorator(tmp_path):
    with whole("Unregistered: not registered; decorate the class with @register_defense so "
               "tfdefense can load it"):
        Unregistered().save(str(tmp_path / "defense"))


def test_predict_names_a_bad_batch_size():
    defense = ClassifierDefense(classifier())
    x = np.zeros((2, *SHAPE), np.float32)
    with whole("batch_size: expected an integer >= 1, got -1"):
        defense.predict(x, batch_size=-1)
    with whole("batch_size: expected an integer >= 1, got -1"):
        defense.predict_with_decisions(x, batch_size=-1)
    assert defense.predict(x, batch_size=1).tolist() == [0, 0]


# ------------------------------------------------------------------ GreyBoxDefense serving
def hand_cdvae():
    """G = 0.25·(−1, 0, 0.5, 1) + 0.5 = [0.25, 0.5, 0.625, 0.75] at inference (``pixel_cdvae``)."""
    return pixel_cdvae([-1.0, 0.0, 0.5, 1.0], classifier())


def test_the_purify_signature_returns_g_of_x():
    defense = GreyBoxDefense(hand_cdvae(), classifier())
    spec = defense.serving_spec()
    purify = next(s for s in spec.signatures if s.name == "purify")
    out = purify.fn(tf.constant(np.full((2, *SHAPE), 0.5, np.float32)))
    assert list(out) == ["purified"]
    np.testing.assert_allclose(out["purified"].numpy().reshape(2, 4),
                               [[0.25, 0.5, 0.625, 0.75]] * 2, atol=1e-6)
    # num_classes from the classifier's (None, 2) output
    assert spec.metadata["num_classes"] == 2
