"""FM-Defense's equations on hand cases: a combo-VAE, a DGMM and a classifier with hand-set
weights on 2x2 images, and morphs whose label flips are counted by hand.

Every expected number is derived in a comment from fm-defense.txt, not from the library's
code. Images are 2x2x1, flattened row-major as [x00, x01, x10, x11]. Already pinned by hand
elsewhere, not repeated: Eq 5's distance, θ_r's quantile rule and θ_d (tests/fm/
test_fm_resistance.py), Eq 6's TC read off the discriminator's logit and the closed-form KL
(tests/fm/test_fm_losses.py).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_models import SHAPE, constant_dense, flat_model

from tfdefense.decisions import Decision
from tfdefense.defend import FMDefense
from tfdefense.defend.fm_defense import defense_accuracy
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.models import DGMM, ComboVAE
from tfdefense.models.dgmm import lgm_loss


def images(*pixels):
    return np.asarray(pixels, np.float32).reshape(-1, *SHAPE)


def hand_dgmm(kernel=None, bias=(0.5,)):
    """z_u = x·kernel + bias (one feature; kernel 0 by default), two classes: μ = (0, 2),
    σ = (1, 2)."""
    kernel = np.zeros((4, 1)) if kernel is None else kernel
    dgmm = DGMM(flat_model(1, kernel, bias), num_classes=2)
    dgmm.means.assign([[0.0], [2.0]])
    dgmm.log_scales.assign([[0.0], [math.log(2.0)]])
    return dgmm


def decoder(kernel):
    """[z_s, z_u] -> concat -> Dense(4) with ``kernel`` (no bias) -> 2x2x1 image."""
    z_s, z_u = keras.Input((len(kernel) - 1,)), keras.Input((1,))
    joined = keras.layers.Concatenate()([z_s, z_u])
    return keras.Model([z_s, z_u],
                       keras.layers.Reshape(SHAPE)(constant_dense(4, kernel, np.zeros(4))(joined)))


# ---------------------------------------------------------------- Eq 2-4 and 8, combo-VAE
def hand_combo_vae(discriminator=True, **kwargs):
    """μ = 1 and log σ² = −20 for every x (σ = e⁻¹⁰ ≈ 4.5e-5, so the sampled z is 1 to
    5 digits); z_u = 0.5; x̂ = z_s·[0, 0.1, 0.2, 0.3] + z_u·[0.2, 0.2, 0.2, 0.2];
    TC discriminator logit 2·z + 0.5."""
    enc = flat_model(2, np.zeros((4, 2)), [1.0, -20.0])
    dec = decoder([[0.0, 0.1, 0.2, 0.3], [0.2, 0.2, 0.2, 0.2]])
    disc = None
    if discriminator:
        z = keras.Input((1,))
        disc = keras.Model(z, constant_dense(1, [[2.0]], [0.5])(z))
    return ComboVAE(enc, dec, hand_dgmm(), disc, **kwargs)


# x = 0.5 everywhere; z = 1, z_u = 0.5: x̂ = [0, 0.1, 0.2, 0.3] + 0.1 = [0.1, 0.2, 0.3, 0.4]
# L_R (the l2 loss, §III-B) = 0.4² + 0.3² + 0.2² + 0.1² = 0.30
# L_KL = ½(μ² + σ² − 1 − log σ²) = ½(1 + e⁻²⁰ − 1 + 20) = 10.0
# L_TC = log D/(1 − D) = the logit 2·1 + 0.5 = 2.5 (Eq 6)
# Eq 8 as a loss with γ = 40 (§IV-A), β = 1: 0.30 + 10.0 + 40·2.5 = 110.30
# D's loss −½[log D(z) + log(1 − D(z̃))]; one image, so the permuted z̃ = z: logit 2.5 both:
#   ½[ln(1 + e^−2.5) + ln(1 + e^2.5)] = ½[0.0788897 + 2.5788897] = 1.3288897
def test_eq8_combo_vae_loss_by_hand():
    vae = hand_combo_vae()
    assert (vae.gamma, vae.beta) == (40.0, 1.0)  # §IV-A's γ; Eq 8 has no β
    vae.compile()
    logs = vae.evaluate(images((0.5,) * 4), verbose=0, return_dict=True)
    assert logs["reconstruction_loss"] == pytest.approx(0.30, abs=1e-4)
    assert logs["kl_loss"] == pytest.approx(10.0, rel=1e-6)
    assert logs["tc_loss"] == pytest.approx(2.5, abs=1e-3)
    assert logs["loss"] == pytest.approx(110.30, rel=1e-4)
    assert logs["discriminator_loss"] == pytest.approx(1.3288897, abs=1e-3)


def test_eq2_to_4_beta_vae_without_the_tc_term():
    # the basic combo-VAE (no discriminator, γ ignored): L_R + β·L_KL, Eq 4 with β = 4
    #   0.30 + 4·10.0 = 40.30
    vae = hand_combo_vae(discriminator=False, beta=4.0)
    vae.compile()
    logs = vae.evaluate(images((0.5,) * 4), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(40.30, rel=1e-4)
    assert logs["tc_loss"] == 0.0


# ------------------------------------------------------------------------ Eq 9-12, DGMM
# two classes, one feature: N(z; 0, 1) and N(z; 2, 2²), p(c) = ½; at z = 1:
#   log N0 = −½·1² − 0 − ½ ln 2π = −1.4189385
#   log N1 = −½·(1 − 2)²/4 − ln 2 − ½ ln 2π = −1.7370857
# Eq 9:  log p(z) = ln(½e^−1.4189385 + ½e^−1.7370857) = −1.5654129
# Eq 10: L_cls(y = 1) = −ln(N1/(N0 + N1)) = 0.8648200
# Eq 11: L_lkd(y = 1) = 1.7370857
# Eq 12: L_GM = 0.8648200 + 0.1·1.7370857 = 1.0385285 (λ_lkd = 0.1, §IV-A)
LOG_N0, LOG_N1 = -1.4189385, -1.7370857
L_CLS, L_LKD, L_GM = 0.8648200, 1.7370857, 1.0385285


def test_eq9_mixture_density_by_hand():
    dgmm = hand_dgmm()
    assert float(dgmm.mixture().log_prob(tf.constant([[1.0]]))[0]) == pytest.approx(
        -1.5654129, abs=1e-6)
    # logits are the class log-likelihoods (uniform p(c) drops out)
    z_is_x00 = hand_dgmm(kernel=[[1.0], [0.0], [0.0], [0.0]], bias=(0.0,))
    logits = z_is_x00(images((1.0, 0.0, 0.0, 0.0))).numpy()[0]
    np.testing.assert_allclose(logits, [LOG_N0, LOG_N1], atol=1e-6)


def test_eq10_to_12_lgm_loss_by_hand():
    terms = lgm_loss(tf.constant([[1.0]]), tf.constant([1]), tf.constant([[0.0], [2.0]]),
                     tf.constant([[0.0], [math.log(2.0)]]), lambda_lkd=0.1)
    assert float(terms["cls_loss"][0]) == pytest.approx(L_CLS, abs=1e-6)
    assert float(terms["lkd_loss"][0]) == pytest.approx(L_LKD, abs=1e-6)
    assert float(terms["loss"][0]) == pytest.approx(L_GM, abs=1e-6)


def test_dgmm_evaluate_reports_eq12_with_the_papers_lambda():
    dgmm = hand_dgmm(kernel=[[1.0], [0.0], [0.0], [0.0]], bias=(0.0,))
    assert dgmm.lambda_lkd == 0.1
    dgmm.compile(optimizer="adam")
    logs = dgmm.evaluate(images((1.0, 0.0, 0.0, 0.0)), np.array([1]), verbose=0,
                         return_dict=True)
    assert logs["loss"] == pytest.approx(L_GM, abs=1e-5)
    assert logs["accuracy"] == 0.0  # N0 > N1 at z = 1: predicts class 0


# --------------------------------------------------- resistance r(i), θ_r / θ_d, the defense
# Morph values (image, code, morph), given instead of the stochastic search. The engine
# decodes z_s with code i moved to each value, classifies, and counts labels equal to C(x).
MORPHS = np.array([
    # image A (x00 = 0.8, x01 = 0.6): C(x) = 1
    [[0.1, 0.3, 0.5, 0.9], [0.1, 0.3, 0.5, 0.9]],
    # image B (x00 = 0.2, x01 = 0.3): C(x) = 0
    [[0.0, 0.2, 0.6, 1.0], [0.9, 0.95, 1.0, 0.1]],
    # image C (x00 = 0.9, x01 = 0.9): C(x) = 1
    [[0.2, 0.5, 0.7, 1.0], [0.3, 0.4, 0.6, 0.8]],
], np.float32)
# the classifier: logits [0, x00 + x01 − 1], so class 1 iff x00 + x01 > 1
# the combo-VAE: μ(x) = (x00, x01); the decoder puts z_s back in pixels 00 and 01
# A, code 0 moved (x01 = 0.6 kept): class 1 iff v > 0.4: 0.5, 0.9 keep   -> r = 2/4 = 0.50
# A, code 1 moved (x00 = 0.8 kept): class 1 iff v > 0.2: 0.3, 0.5, 0.9   -> r = 3/4 = 0.75
# B, code 0 (x01 = 0.3): class 0 iff v < 0.7: 0.0, 0.2, 0.6 keep         -> r = 3/4 = 0.75
# B, code 1 (x00 = 0.2): class 0 iff v < 0.8: only 0.1 keeps             -> r = 1/4 = 0.25
# C, code 0 (x01 = 0.9): class 1 iff v > 0.1: all four                   -> r = 1.00
# C, code 1 (x00 = 0.9): class 1 iff v > 0.1: all four                   -> r = 1.00
RESISTANCE = [[0.5, 0.75], [0.75, 0.25], [1.0, 1.0]]
X_ABC = images((0.8, 0.6, 0.0, 0.0), (0.2, 0.3, 0.0, 0.0), (0.9, 0.9, 0.0, 0.0))


class GivenMorphs(MorphEngine):
    """A MorphEngine whose morph values are MORPHS (the search is replaced, nothing else)."""

    def draw_morphs(self, mean, seed):
        return tf.constant(MORPHS), tf.fill(MORPHS.shape[:2], MORPHS.shape[2])


def hand_engine():
    pick = np.zeros((4, 4))
    pick[0, 0] = pick[1, 1] = 1.0  # μ = (x00, x01), log σ² = 0
    vae = ComboVAE(flat_model(4, pick, np.zeros(4)),
                   decoder([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
                   hand_dgmm())
    clf = flat_model(2, [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], [0.0, -1.0])
    return GivenMorphs(vae, clf, n_morphs=4).set_ranges([0.0, 0.0], [1.0, 1.0])


def test_resistance_counts_the_morphs_that_keep_the_label():
    np.testing.assert_allclose(hand_engine().resistance(X_ABC), RESISTANCE)


def test_fm_defense_accepts_purifies_and_rejects_by_theta_r_and_theta_d():
    # θ_r = 0.6 for both codes, θ_d = 0.2; Eq 5 over the codes below θ_r:
    #   A: |0.5 − 0.6| = 0.1 ≤ θ_d -> salvageable, purified: C(D([μ, z_u])) = C([0.8, 0.6]) = 1
    #   B: |0.25 − 0.6| = 0.35 > θ_d -> rejected (−1)
    #   C: no code below θ_r, distance 0 -> accepted, C(x) = 1
    detector = ResistanceDetector(hand_engine(), unified_threshold=0.6, theta_d=0.2)
    detector.fit_resistance(np.ones((4, 2)))
    np.testing.assert_allclose(detector.score_resistance(np.array(RESISTANCE)), [0.1, 0.35, 0.0],
                               atol=1e-6)
    labels, decisions = FMDefense(detector).predict_with_decisions(X_ABC)
    assert decisions.tolist() == [Decision.PURIFIED, Decision.REJECTED, Decision.ACCEPTED]
    assert labels.tolist() == [1, -1, 1]


# -------------------------------------------------------------- final accuracy, Table II
def test_final_accuracy_counts_true_positives_true_negatives_and_recovered():
    D = Decision
    cases = [  # (y, adversarial, label, decision): final / strict
        (0, False, 0, D.ACCEPTED),   # TN                        final ✓ strict ✓
        (1, False, 7, D.ACCEPTED),   # TN (detection-wise)       final ✓ strict ✗
        (2, False, 2, D.PURIFIED),   # clean salvaged: recovered final ✓ strict ✓
        (3, False, -1, D.REJECTED),  # clean rejected            final ✗ strict ✗
        (4, True, -1, D.REJECTED),   # TP                        final ✓ strict ✓
        (5, True, 5, D.PURIFIED),    # adversarial recovered     final ✓ strict ✓
        (6, True, 0, D.PURIFIED),    # salvaged, wrong label     final ✗ strict ✗
        (7, True, 7, D.ACCEPTED),    # accepted adversarial      final ✗ strict ✓ (attack failed)
        (8, False, 3, D.ACCEPTED),   # TN (detection-wise)       final ✓ strict ✗
    ]
    y, adv, labels, decisions = (list(c) for c in zip(*cases, strict=True))
    acc = defense_accuracy(y, adv, labels, decisions)
    # (TP 1 + TN 3 + Recovered 2) / 9; strict: inputs 0, 2, 4, 5, 7 -> 5 / 9
    assert (acc["true_positive"], acc["true_negative"], acc["recovered"]) == (1, 3, 2)
    assert acc["final_accuracy"] == pytest.approx(6 / 9)
    assert acc["strict_accuracy"] == pytest.approx(5 / 9)
    # adversarial 4, 5, 6, 7: three not accepted; clean 0, 1, 2, 3, 8: two not accepted
    assert acc["detected_adversarial"] == pytest.approx(3 / 4)
    assert acc["clean_false_positive"] == pytest.approx(2 / 5)
    assert acc["salvageable"] == 3
