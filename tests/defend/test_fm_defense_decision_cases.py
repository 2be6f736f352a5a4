"""FMDefense's surfaces on a hand case: which logits each decision serves, the margin, the
labels of cached resistances, the adaptive attacker's EOT logits, and the saved config.

A combo-VAE and a classifier with hand-set weights on 2x2x1 images (flattened row-major as
[x00, x01, x10, x11]); the morph values are given instead of the stochastic search, so the
label flips can be counted by hand (the same morphs as tests/fm/test_fm_equations.py). The
decoder puts z_s back in pixels 00 and 01 and leaves x10 at 0, and the classifier reads x10,
so C(x) and C(purify(x)) differ by a known amount. Its last layer negates the logits in
training mode, so an inference path that runs it in training mode gives the other label.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from hand_models import SHAPE, NegatedInTraining, flat_model, hand_combo_vae

from tfdefense.decisions import Decision
from tfdefense.defend import FMDefense
from tfdefense.defend.fm_defense import defense_accuracy
from tfdefense.detect import MorphEngine, ResistanceDetector


def hand_classifier():
    """Logits [0.5·x10, x00 + x01 − 1] at inference (negated in training mode)."""
    return flat_model(2, [[0.0, 1.0], [0.0, 1.0], [0.5, 0.0], [0.0, 0.0]], [0.0, -1.0],
                      NegatedInTraining())


# morph values (image, code, morph), as in tests/fm/test_fm_equations.py
MORPHS = np.array([
    [[0.1, 0.3, 0.5, 0.9], [0.1, 0.3, 0.5, 0.9]],
    [[0.0, 0.2, 0.6, 1.0], [0.9, 0.95, 1.0, 0.1]],
    [[0.2, 0.5, 0.7, 1.0], [0.3, 0.4, 0.6, 0.8]],
], np.float32)
# Images: A = (0.8, 0.6, 0.2, 0), B = (0.2, 0.3, 0.2, 0), C = (0.9, 0.9, 0.2, 0).
# C(x): A [0.1, 0.4] -> 1; B [0.1, −0.5] -> 0; C [0.1, 0.8] -> 1.
# A morph decodes to (v or x00, v or x01, 0, 0): class 1 iff its pixels 00 + 01 > 1, so
# x10 does not change the counts of tests/fm/test_fm_equations.py:
#   A: code 0 keeps 0.5, 0.9 -> 0.5; code 1 keeps 0.3, 0.5, 0.9 -> 0.75
#   B: code 0 keeps 0.0, 0.2, 0.6 -> 0.75; code 1 keeps 0.1 -> 0.25
#   C: every morph keeps -> 1.0, 1.0
X = np.array([[0.8, 0.6, 0.2, 0.0], [0.2, 0.3, 0.2, 0.0], [0.9, 0.9, 0.2, 0.0]],
             np.float32).reshape(-1, *SHAPE)
RESISTANCE = [[0.5, 0.75], [0.75, 0.25], [1.0, 1.0]]
# θ_r = 0.6 for both codes, θ_d = 0.2; Eq 5: A 0.1 (purified), B 0.35 (rejected), C 0 (accepted)
DISTANCE = [0.1, 0.35, 0.0]
DECISIONS = [Decision.PURIFIED, Decision.REJECTED, Decision.ACCEPTED]
# purify(x) = (x00, x01, 0, 0): C(purify(A)) = [0, 0.4] -> 1, C(purify(B)) = [0, −0.5] -> 0
LABELS = [1, -1, 1]


class GivenMorphs(MorphEngine):
    """A MorphEngine whose morph values are MORPHS, and whose EOT sample is code 0 set to 0."""

    def draw_morphs(self, mean, seed):
        return tf.constant(MORPHS), tf.fill(MORPHS.shape[:2], MORPHS.shape[2])

    def sample_morph_latents(self, mean, n_samples, seed):
        morph = mean * tf.constant([0.0, 1.0])
        return tf.repeat(morph[:, None], n_samples, axis=1)


def hand_defense(**kwargs):
    engine = GivenMorphs(hand_combo_vae(), hand_classifier(), n_morphs=4).set_ranges([0.0, 0.0],
                                                                             [1.0, 1.0])
    detector = ResistanceDetector(engine, unified_threshold=0.6, theta_d=0.2)
    return FMDefense(detector.fit_resistance(np.ones((4, 2))), **kwargs)


def test_the_hand_engine_counts_the_flips_derived_above():
    defense = hand_defense()
    np.testing.assert_allclose(defense.engine.resistance(X), RESISTANCE)
    labels, decisions = defense.predict_with_decisions(X)
    assert decisions.tolist() == DECISIONS and labels.tolist() == LABELS


def test_cached_resistances_give_the_labels_of_the_inference_mode_classifier():
    # in training mode C flips: accepted C would get 0, purified A 0
    labels, decisions = hand_defense().predict_resistance(X, np.array(RESISTANCE))
    assert decisions.tolist() == DECISIONS and labels.tolist() == LABELS
    assert labels.dtype == np.int64 and decisions.dtype == np.int32


def test_cached_resistances_of_the_wrong_count_are_refused():
    with pytest.raises(ValueError, match="2 resistance vectors|3 resistance vectors"):
        hand_defense().predict_resistance(X[:2], np.array(RESISTANCE))
    labels, decisions = hand_defense().predict_resistance(X[:0], np.zeros((0, 2)))
    assert labels.shape == decisions.shape == (0,)


def test_serving_logits_are_c_of_x_where_accepted_and_c_of_the_purification_elsewhere():
    # A purified: C(0.8, 0.6, 0, 0) = [0, 0.4]; B rejected: C(0.2, 0.3, 0, 0) = [0, −0.5];
    # C accepted: C(x) = [0.1, 0.8]
    logits = hand_defense().serving_logits(tf.constant(X)).numpy()
    np.testing.assert_allclose(logits, [[0.0, 0.4], [0.0, -0.5], [0.1, 0.8]], atol=1e-6)


def test_detection_margin_is_distance_minus_theta_d():
    # A 0.1 − 0.2 = −0.1, B 0.35 − 0.2 = 0.15, C 0 − 0.2 = −0.2: > 0 only for rejected B
    margin = hand_defense().detection_margin(tf.constant(X))
    assert margin.dtype == tf.float32
    np.testing.assert_allclose(margin.numpy(), [-0.1, 0.15, -0.2], atol=1e-6)


def test_detection_outputs_give_resistance_and_float32_distance():
    out = hand_defense().detection_outputs(tf.constant(X))
    assert out["distance"].dtype == tf.float32
    np.testing.assert_allclose(out["distance"].numpy(), DISTANCE, atol=1e-6)
    np.testing.assert_allclose(out["resistance"].numpy(), RESISTANCE)


def test_serving_detect_signature_gives_margin_and_rejected_flag():
    spec = hand_defense().serving_spec()
    detect = next(s for s in spec.signatures if s.name == "detect")
    out = detect.fn(tf.constant(X))
    np.testing.assert_allclose(out["score"].numpy(), [-0.1, 0.15, -0.2], atol=1e-6)
    assert out["is_adversarial"].numpy().tolist() == [False, True, False]
    np.testing.assert_allclose(out["distance"].numpy(), DISTANCE, atol=1e-6)
    assert spec.metadata["codes"] == [0, 1]


def softmax(logits):
    e = np.exp(np.asarray(logits, np.float64))
    return e / e.sum(-1, keepdims=True)


def test_eot_logits_are_the_log_of_the_mean_softmax_over_x_purification_and_morphs():
    # eot_morphs = 1, the morph is code 0 set to 0, decoded (0, x01, 0, 0). For A:
    #   C(x) = [0.1, 0.4], C(purify) = [0, 0.4], C(morph) = C(0, 0.6, 0, 0) = [0, −0.4]
    #   p(class 1) = σ(0.3), σ(0.4), σ(−0.4) = 0.574443, 0.598688, 0.401312; mean 0.524814
    #   logits = log([1 − 0.524814, 0.524814]) (mean over k + 2 = 3 outputs)
    logits = hand_defense(eot_morphs=1).logits(tf.constant(X[:1])).numpy()
    p1 = (softmax([0.1, 0.4])[1] + softmax([0.0, 0.4])[1] + softmax([0.0, -0.4])[1]) / 3
    assert p1 == pytest.approx(0.524814, abs=1e-6)
    np.testing.assert_allclose(logits[0], np.log([1 - p1, p1]), atol=1e-5)
    # with two morphs (k + 2 = 4 outputs, the morph twice): (0.574443 + 0.598688
    #   + 2·0.401312) / 4 = 0.493939
    logits2 = hand_defense(eot_morphs=2).logits(tf.constant(X[:1])).numpy()
    assert math.exp(logits2[0, 1]) == pytest.approx(0.493939, abs=1e-5)


def test_purify_is_the_reconstruction():
    np.testing.assert_allclose(hand_defense().purify(X).numpy().reshape(3, 4),
                               [[0.8, 0.6, 0, 0], [0.2, 0.3, 0, 0], [0.9, 0.9, 0, 0]], atol=1e-6)


def test_config_and_from_parts_defaults():
    defense = hand_defense(eot_morphs=3, eot_seed=5)
    config = defense.get_config()
    assert (config["eot_morphs"], config["eot_seed"]) == (3, 5)
    assert config["detector"]["detector"]["theta_d"] == 0.2
    rebuilt = FMDefense.from_parts({"detector": config["detector"]}, defense.components(),
                                   defense.state())
    assert (rebuilt.eot_morphs, rebuilt.eot_seed) == (8, 0)
    assert rebuilt.detector.theta_r_.tolist() == [0.6, 0.6] and rebuilt.detector.theta_d_ == 0.2
    assert sorted(defense.state()) == ["high", "low", "theta_d", "theta_r"]


def test_an_unfitted_detector_or_another_object_is_refused():
    engine = GivenMorphs(hand_combo_vae(), hand_classifier(), n_morphs=4)
    with pytest.raises(ValueError, match=r"^detector: not fitted; call detector\.fit\(x_val\) "
                                         r"\(or fit_resistance\) before building the defense$"):
        FMDefense(ResistanceDetector(engine, unified_threshold=0.6, theta_d=0.2))
    with pytest.raises(ValueError, match="ResistanceDetector"):
        FMDefense(engine)
    with pytest.raises(ValueError, match="eot_morphs"):
        hand_defense(eot_morphs=0)
    with pytest.raises(ValueError, match="eot_seed"):
        hand_defense(eot_seed=-1)


# ------------------------------------------------------------------ defense_accuracy edges
def test_accuracy_of_an_all_clean_set_has_no_detection_rate():
    # two clean inputs, one accepted (TN) and one purified to the wrong label: final 1/2
    acc = defense_accuracy([3, 4], [False, False], [3, 5], [Decision.ACCEPTED, Decision.PURIFIED])
    assert acc["final_accuracy"] == 0.5 and math.isnan(acc["detected_adversarial"])
    assert acc["clean_false_positive"] == 0.5 and acc["n"] == 2
    acc = defense_accuracy([3], [True], [-1], [Decision.REJECTED])
    assert acc["final_accuracy"] == 1.0 and math.isnan(acc["clean_false_positive"])


def test_accuracy_needs_equal_non_zero_lengths():
    with pytest.raises(ValueError, match="equal non-zero"):
        defense_accuracy([1, 2], [False], [1, 2], [0, 0])
    with pytest.raises(ValueError, match="equal non-zero"):
        defense_accuracy([], [], [], [])


def test_margin_gradient_raises_the_smooth_resistance_of_the_codes_below_theta():
    # the backward pass goes through Σ_i [r_i < θ_r,i]·(θ_r,i − r̃_i), r̃_i the mean over code
    # i's morphs of C's softmax probability of C(x).
    # A: only code 0 is below θ_r; its morphs keep x01: p(1) = σ(v + x01 − 1), so
    #   ∂margin/∂x01 = −mean σ'(v − 0.4) over v = 0.1, 0.3, 0.5, 0.9
    #   = −(0.244458 + 0.249376 + 0.249376 + 0.235004)/4 = −0.244554; ∂/∂x00 = 0
    # B: only code 1 is below; its morphs keep x00: p(0) = σ(1 − x00 − v), so
    #   ∂margin/∂x00 = +mean σ'(0.8 − v) over v = 0.9, 0.95, 1.0, 0.1
    #   = (0.249376 + 0.248600 + 0.247517 + 0.221713)/4 = 0.241802; ∂/∂x01 = 0
    # C: no code below θ_r: zero gradient
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        margin = hand_defense().detection_margin(x)
    grad = tape.gradient(margin, x).numpy().reshape(3, 4)
    np.testing.assert_allclose(grad, [[0.0, -0.244554, 0, 0], [0.241802, 0, 0, 0], [0, 0, 0, 0]],
                               atol=1e-5)
