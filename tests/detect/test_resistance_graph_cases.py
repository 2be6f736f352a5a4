"""ResistanceDetector's graph form, serving signature and config on hand-made resistances.

Eq 5 (FM-Defense §III-A): Dis(r, θ_r) = Σ_i |r_i − θ_r,i| over the codes with r_i < θ_r,i;
decision 0 clean (Dis = 0), 1 salvageable (0 < Dis ≤ θ_d), 2 rejected (Dis > θ_d). The
numbers are powers of two so that every distance is exact in float64 and the boundary cases
(r_i = θ_r,i, Dis = θ_d) are hit exactly. The numpy rules are pinned in
tests/fm/test_fm_resistance.py; here the TensorFlow ops, the serving graph and the config.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.detect.resistance import ResistanceDetector, distance_threshold

THETA_R = [0.75, 0.5, 1.0]
THETA_D = 0.25
R = np.array([
    [0.75, 0.5, 1.0],     # every code at its threshold (equality is clean): Dis 0    -> 0
    [0.5, 0.5, 1.0],      # code 0 below by 0.25: Dis 0.25 = θ_d                       -> 1
    [0.25, 0.5, 1.0],     # code 0 below by 0.5: Dis 0.5 > θ_d                          -> 2
    [0.75, 0.25, 0.875],  # codes 1 and 2 below by 0.25 and 0.125: Dis 0.375 > θ_d      -> 2
    [0.75, 0.375, 1.0],   # code 1 below by 0.125: Dis 0.125 ≤ θ_d                      -> 1
    [1.0, 1.0, 1.0],      # above every threshold (the excess is not counted): Dis 0    -> 0
])
DISTANCE = [0.0, 0.25, 0.5, 0.375, 0.125, 0.0]
DECISION = [0, 1, 2, 2, 1, 0]


class StubEngine:
    """Stands in for a MorphEngine: its resistance of any batch is R (the first N rows)."""

    low_ = np.zeros(3)
    high_ = np.ones(3)
    codes = (4, 7, 9)
    input_shape = (2, 2, 1)

    def __init__(self, classifier=None):
        x = keras.Input((2, 2, 1))
        self.classifier = classifier or keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        self.combo_vae = keras.Model(x, keras.layers.Identity()(x))

    def resistance_graph(self, x):
        return tf.constant(R)[: tf.shape(x)[0]], None

    def resistance(self, x, batch_size):
        return R[: len(x)]

    def get_params(self):
        return {"codes": self.codes, "n_morphs": 4}


def fitted(engine=None):
    """θ_r = (0.75, 0.5, 1.0) per code: ρ = 0.5 on two validation rows equal to θ_r, k = ⌊0.5·2⌋
    = 1, the second smallest of (θ_r, θ_r); θ_d = 0.25 given."""
    det = ResistanceDetector(engine or StubEngine(), rho=0.5, theta_d=THETA_D)
    return det.fit_resistance(np.array([THETA_R, THETA_R]))


def test_per_code_thresholds_come_from_the_validation_rows():
    det = fitted()
    assert det.theta_r_.tolist() == THETA_R and det.theta_d_ == THETA_D


def test_distance_tensor_is_eq5_in_float64_with_equality_clean():
    out = fitted().distance_tensor(tf.constant(R, tf.float32))
    assert out.dtype == tf.float64
    np.testing.assert_array_equal(out.numpy(), DISTANCE)


def test_decision_tensor_boundaries_zero_clean_theta_d_salvageable():
    det = fitted()
    decision = det.decision_tensor(tf.constant(DISTANCE, tf.float32))
    assert decision.numpy().tolist() == DECISION
    # the numpy path gives the same codes
    assert det.decide_resistance(R).tolist() == DECISION


def test_resistance_tensors_give_int32_decisions_and_flag_every_nonzero_distance():
    out = fitted().resistance_tensors(tf.zeros((6, 2, 2, 1)))
    assert out["decision"].dtype == tf.int32
    assert out["decision"].numpy().tolist() == DECISION
    np.testing.assert_array_equal(out["distance"].numpy(), DISTANCE)
    assert out["is_adversarial"].numpy().tolist() == [False, True, True, True, True, False]
    np.testing.assert_array_equal(out["resistance"].numpy(), R)


def test_detect_and_score_read_the_engines_resistance():
    det = fitted()
    report, is_adv = det.detect(np.zeros((6, 2, 2, 1), np.float32))
    assert report["decision"].tolist() == DECISION and is_adv.tolist() == [
        False, True, True, True, True, False]
    assert report["theta_r"].tolist() == THETA_R and report["theta_d"] == THETA_D
    np.testing.assert_array_equal(det.score(np.zeros((6, 2, 2, 1), np.float32)), DISTANCE)


def test_serving_detect_signature_outputs_the_same_values_as_float32():
    spec = fitted().serving_spec()
    (signature,) = spec.signatures
    assert signature.name == "detect"
    out = signature.fn(tf.zeros((6, 2, 2, 1)))
    assert out["score"].dtype == tf.float32 and out["distance"].dtype == tf.float32
    assert out["resistance"].dtype == tf.float32
    np.testing.assert_array_equal(out["score"].numpy(), DISTANCE)
    np.testing.assert_array_equal(out["distance"].numpy(), DISTANCE)
    assert out["decision"].numpy().tolist() == DECISION
    assert out["is_adversarial"].numpy().tolist() == [False, True, True, True, True, False]
    assert spec.input_shape == (2, 2, 1)
    assert spec.metadata["codes"] == [4, 7, 9]
    assert spec.metadata["theta_r"] == THETA_R and spec.metadata["theta_d"] == THETA_D
    assert spec.metadata["model"] == "ResistanceDetector"


def test_config_lists_the_engines_tuples_and_the_detectors_parameters():
    config = fitted().get_config()
    assert config == {
        "detector": {"rho": 0.5, "eta": 0.9, "threshold_mode": "per_code",
                     "unified_threshold": None, "theta_d": THETA_D, "batch_size": 32},
        "engine": {"codes": [4, 7, 9], "n_morphs": 4}}


def test_state_holds_the_ranges_and_thresholds():
    state = fitted().state()
    assert sorted(state) == ["high", "low", "theta_d", "theta_r"]
    assert state["theta_r"].tolist() == THETA_R and float(state["theta_d"]) == THETA_D
    assert state["low"].tolist() == [0, 0, 0] and state["high"].tolist() == [1, 1, 1]
    unfitted = ResistanceDetector(StubEngine())
    assert sorted(unfitted.state()) == ["high", "low"]


def test_components_need_a_keras_classifier():
    det = fitted()
    assert set(det.components()) == {"combo_vae", "classifier"}
    with pytest.raises(ValueError, match="plain callable"):
        fitted(StubEngine(classifier=lambda x: x)).components()


def test_unified_mode_fits_one_threshold_on_the_per_image_minimum():
    # per-image minima of the rows: 0.5, 0.25, 0.75, 1.0; ρ = 0.75 on 4 rows: k = ⌊0.25·4⌋ = 1,
    # the second smallest minimum: 0.5 for every code
    r_val = np.array([[0.5, 1.0], [1.0, 0.25], [0.75, 1.0], [1.0, 1.0]])
    det = ResistanceDetector(StubEngine(), rho=0.75, threshold_mode="unified", theta_d=0.5)
    assert det.fit_resistance(r_val).theta_r_.tolist() == [0.5, 0.5]


def test_eta_fractile_of_the_flagged_validation_distances_is_theta_d():
    # θ_r = 1 for both codes (ρ = 0.5 on 4 rows: k = 2, the third smallest: 1.0);
    # distances 0, 0.25, 0.5, 0 -> flagged {0.25, 0.5}; η = 0.5, method "higher": 0.5
    r_val = np.array([[1.0, 1.0], [0.75, 1.0], [1.0, 0.5], [1.0, 1.0]])
    det = ResistanceDetector(StubEngine(), rho=0.5, eta=0.5).fit_resistance(r_val)
    assert det.theta_r_.tolist() == [1.0, 1.0] and det.theta_d_ == 0.5


def test_serving_outputs_document_dtype_and_shape():
    outputs = fitted().serving_spec().signatures[0].outputs
    for name in ("score", "distance"):
        assert outputs[name].startswith("float32 (N,) Eq 5 distance")
    assert outputs["resistance"].startswith("float32 (N, 3) share of morphs")
    assert outputs["decision"].startswith("int32 (N,) 0 clean")
    assert outputs["is_adversarial"].startswith("bool (N,) suspicious")


def test_no_flagged_validation_image_warns_that_every_suspicious_input_is_rejected():
    with pytest.warns(UserWarning) as caught:
        det = ResistanceDetector(StubEngine(), rho=0.5).fit_resistance(np.ones((4, 3)))
    assert [str(w.message) for w in caught] == [
        "no clean validation image is flagged, so the eta-fractile of their distances is "
        "undefined: theta_d = 0, every suspicious input is rejected (pass theta_d= or lower "
        "rho to purify)."]
    assert det.theta_d_ == 0.0


def test_defaults_are_the_papers_rho_and_eta_and_nothing_is_fitted():
    # ρ = 99.9% and η = 90% (FM-Defense §IV-A)
    det = ResistanceDetector(StubEngine())
    assert (det.rho, det.eta, det.threshold_mode) == (0.999, 0.9, "per_code")
    assert det.theta_r_ is None and det.theta_d_ is None and det.val_resistance_ is None


def test_distance_threshold_default_eta_is_ninety_percent():
    # 20 flagged distances 0.05, 0.10, …, 1.00 (and two unflagged zeros); the 0.9-quantile
    # with method "higher": position 0.9·19 = 17.1 -> index 18 -> 0.95
    d = np.r_[0.0, 0.0, np.arange(1, 21) / 20]
    assert distance_threshold(d) == 0.95


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": 1.0}, "rho: expected a value in (0.0, 1.0), got 1.0"),
    ({"eta": 1.5}, "eta: expected a value in [0.0, 1.0], got 1.5"),
    ({"batch_size": True}, "batch_size: expected an integer >= 1, got True"),
    ({"batch_size": 2.0}, "batch_size: expected an integer >= 1, got 2.0"),
])
def test_bad_parameters_are_named_at_the_start_of_the_message(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ResistanceDetector(StubEngine(), **kwargs)


def test_a_plain_callable_classifier_cannot_be_saved():
    with pytest.raises(ValueError, match=r"^classifier: a plain callable cannot be saved or "
                                         r"exported; build the engine with a Keras model$"):
        fitted(StubEngine(classifier=lambda x: x)).components()


@pytest.mark.parametrize("eta", [1.5, -0.1])
def test_distance_threshold_refuses_an_eta_outside_the_unit_interval(eta):
    # numpy's quantile would refuse too, but with its own words; ours names eta and its range
    with pytest.raises(ValueError, match=rf"eta: expected a value in \[0.0, 1.0\], got {eta}"):
        distance_threshold(np.array([0.5, 1.0]), eta=eta)
