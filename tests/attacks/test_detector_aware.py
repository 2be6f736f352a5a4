"""DetectorAwarePGD on hand-made stub defenses whose every iterate can be computed by hand.

The stubs see two-pixel images x = (x1, x2) (shape (1, 2, 1)) of true class 0. Their
"classifier" has logits [0, x1 - 0.5] (class 1, a mistake, exactly where x1 > 0.5) and their
"detector" the linear margin d(x) = w1 x1 + w2 x2 + b (rejected exactly where d > 0). All the
numbers below are multiples of 1/32, exact in float32.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import DetectorAwarePGD, get_attack
from tfdefense.decisions import Decision
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.nets import small_cnn


class LinearStub(Defense):
    """logits [0, x1 - 0.5]; detection margin w·x + b (rejects where > 0)."""

    input_shape = (1, 2, 1)
    detects = True

    def __init__(self, w, b):
        self.w = tf.constant(w, tf.float32)
        self.b = float(b)

    def logits(self, x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, 2])
        return tf.stack([tf.zeros_like(flat[:, 0]), flat[:, 0] - 0.5], axis=1)

    def detection_margin(self, x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, 2])
        return tf.reduce_sum(flat * self.w, axis=1) + self.b

    def defend(self, x):
        labels = tf.argmax(self.logits(x), axis=-1, output_type=tf.int64)
        rejected = self.detection_margin(x) > 0
        labels = tf.where(rejected, tf.constant(REJECTED, tf.int64), labels)
        decisions = tf.where(rejected, int(Decision.REJECTED), int(Decision.ACCEPTED))
        return labels, tf.cast(decisions, tf.int32)


class RandomSlopeStub(Defense):
    """No detector; logits [0, s (x1 - 0.5)] with a random slope s per row and call: -1 with
    probability 3/4, +7 with probability 1/4. The mean slope is +1, so the expected gradient
    points up x1 (towards class 1) while three draws in four point down. ``defend`` labels
    with the mean slope: class 1 exactly where x1 > 0.5."""

    input_shape = (1, 2, 1)
    stochastic = True

    def __init__(self, seed=0):
        self.generator = tf.random.Generator.from_seed(seed)

    def logits(self, x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, 2])
        u = self.generator.uniform(tf.shape(flat)[:1])
        slope = tf.where(u < 0.25, 7.0, -1.0)
        return tf.stack([tf.zeros_like(flat[:, 0]), slope * (flat[:, 0] - 0.5)], axis=1)

    def defend(self, x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, 2])
        labels = tf.cast(flat[:, 0] > 0.5, tf.int64)
        return labels, tf.zeros(tf.shape(labels), tf.int32)


X0 = np.array([0.375, 0.25], np.float32).reshape(1, 1, 2, 1)
Y0 = np.array([0])
#: d = x1 - x2 - 9/32: accepted and misclassified points exist within Linf 1/4 of X0
TRADE_OFF = LinearStub([1.0, -1.0], -0.28125)
#: d = x1 - x2/4 - 11/32: inside the Linf 1/4 ball of X0 (x1 <= 5/8, x2 <= 1/2) every point with
#: x1 > 1/2 has d > 1/2 - 1/8 - 11/32 = 1/32 > 0; X0 itself has d = -1/32 (accepted)
ALWAYS_REJECTED = LinearStub([1.0, -0.25], -0.34375)


def _linf_attack(steps, **kwargs):
    params = dict(eps=0.25, steps=steps, step_size=0.0625, rand_init=False, penalty=2.0,
                  tau=0.0625)
    params.update(kwargs)
    return DetectorAwarePGD(**params)


def _outcome(defense, x_adv):
    labels, decisions = defense.predict_with_decisions(x_adv)
    return int(labels[0]), int(decisions[0])


def test_finds_the_accepted_misclassified_point_computed_by_hand():
    # Sign steps of 1/16; the penalty is active where d > -1/16 and then, c = 2 > 1, steps
    # x1 down and x2 up, else x1 up alone. From (6/16, 4/16): (7,4) (8,4) (7,5) (8,5) (9,5)*
    # (8,6) (9,6)* (10,6)* (9,7)* (10,7)* and (10,7) stays (x1 at the eps bound, no penalty);
    # * = class 1 and accepted. The objective min(x1 - 1/2, 10) - 2 relu(d + 1/16) is largest,
    # 1/8, first at (10/16, 7/16): that iterate is returned.
    x_adv = _linf_attack(20).generate(X0, Y0, model=TRADE_OFF)
    np.testing.assert_array_equal(x_adv.reshape(2), [0.625, 0.4375])
    assert _outcome(TRADE_OFF, x_adv) == (1, int(Decision.ACCEPTED))


def test_returns_the_best_iterate_not_the_last_one():
    # after 6 steps the iterate is (8/16, 6/16), class 0 (tie at x1 = 1/2); the only success on
    # the way was the 5th iterate (9/16, 5/16)
    x_adv = _linf_attack(6).generate(X0, Y0, model=TRADE_OFF)
    np.testing.assert_array_equal(x_adv.reshape(2), [0.5625, 0.3125])
    assert _outcome(TRADE_OFF, x_adv) == (1, int(Decision.ACCEPTED))


def test_without_the_penalty_the_same_attack_is_rejected():
    # plain PGD on the logits walks x1 to the bound 10/16 with x2 fixed: d = 3/32 > 0, rejected,
    # and no iterate on the way succeeded, so the last one is returned
    x_adv = _linf_attack(20, penalty=0.0).generate(X0, Y0, model=TRADE_OFF)
    np.testing.assert_array_equal(x_adv.reshape(2), [0.625, 0.25])
    assert _outcome(TRADE_OFF, x_adv) == (REJECTED, int(Decision.REJECTED))


def test_no_success_where_every_misclassified_point_in_the_ball_is_rejected():
    for norm, eps in (("linf", 0.25), ("l2", 0.25)):
        x_adv = _linf_attack(30, norm=norm, eps=eps, step_size=0.03).generate(
            X0, Y0, model=ALWAYS_REJECTED)
        delta = (x_adv - X0).reshape(2)
        size = np.abs(delta).max() if norm == "linf" else np.linalg.norm(delta)
        assert size <= eps + 1e-6, (norm, delta)  # the L2 ball lies inside the Linf one
        label, _ = _outcome(ALWAYS_REJECTED, x_adv)
        assert label in (0, REJECTED), (norm, x_adv.reshape(2), label)


def test_l2_version_trades_misclassification_against_the_detector():
    # d = x1 - x2 - 3/16: moving x1 alone past 1/2 gives d >= 1/16 > 0 (rejected); an accepted
    # mistake needs x2 - 1/4 >= (x1 - 3/8) - 1/16 > 1/16, e.g. delta = (0.14, 0.08), L2 0.16
    stub = LinearStub([1.0, -1.0], -0.1875)
    attack = DetectorAwarePGD(eps=0.3, norm="l2", steps=40, step_size=0.02, rand_init=False,
                              tau=0.02)
    x_adv = attack.generate(X0, Y0, model=stub)
    x1, x2 = x_adv.reshape(2)
    assert np.linalg.norm(x_adv - X0) <= 0.3 + 1e-5
    assert x1 > 0.5 and x1 - x2 - 0.1875 <= 0.0
    assert _outcome(stub, x_adv) == (1, int(Decision.ACCEPTED))
    plain = attack.__class__(**{**attack.get_config(), "penalty": 0.0}).generate(X0, Y0, model=stub)
    assert _outcome(stub, plain)[0] in (0, REJECTED)


def test_eot_follows_the_mean_gradient_of_a_stochastic_defense():
    # one draw steps x1 down three times in four; the default 20 draws step it up
    x_eot = _linf_attack(12, penalty=0.0).generate(X0, Y0, model=RandomSlopeStub(seed=1))
    assert x_eot.reshape(2)[0] > 0.5 and _outcome(RandomSlopeStub(), x_eot)[0] == 1
    x_one = _linf_attack(12, penalty=0.0, eot_iter=1).generate(X0, Y0, model=RandomSlopeStub(seed=1))
    assert x_one.reshape(2)[0] <= 0.5


def test_batch_of_images_is_attacked_independently():
    # the trade-off image and one whose start is already a success (kept: 0 steps needed)
    x = np.concatenate([X0, np.array([0.5625, 0.375], np.float32).reshape(1, 1, 2, 1)])
    x_adv = _linf_attack(20).generate(x, np.array([0, 0]), model=TRADE_OFF)
    np.testing.assert_array_equal(x_adv[0].reshape(2), [0.625, 0.4375])
    assert _outcome(TRADE_OFF, x_adv[1:]) == (1, int(Decision.ACCEPTED))


def test_registered_names_and_parameter_checks():
    attack = get_attack("detector_aware_pgd_l2", eps=1.0, steps=4)
    assert isinstance(attack, DetectorAwarePGD) and attack.norm == "l2"
    assert attack.label == "detector_aware_pgd_l2" and attack.step == pytest.approx(2.5 / 4)
    assert attack.draws(RandomSlopeStub()) == 20 and attack.draws(TRADE_OFF) == 1
    with pytest.raises(ValueError, match="Defense"):
        DetectorAwarePGD(small_cnn(width=4, dense_units=8))
    with pytest.raises(ValueError, match="Defense"):
        DetectorAwarePGD().generate(X0, Y0, model=small_cnn(width=4, dense_units=8))
    for bad in ({"loss": "dlr"}, {"kappa": 0.0}, {"penalty": -1.0}, {"eot_iter": 0},
                {"normalize": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DetectorAwarePGD(**bad)
