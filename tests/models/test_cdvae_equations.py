"""CD-VAE's equations on hand cases: Keras layers with hand-set weights on 2x2 images.

Every expected number is derived in a comment from the paper's formula (cd-vae.txt §3),
not from the library's code. Images are 2x2x1, flattened row-major as
[x00, x01, x10, x11] (Flatten and Reshape agree on that order). Already pinned elsewhere,
not repeated here: Eq. 8's margin and Eq. 10's two cross-entropies (tests/models/
test_adversarial.py), the official objective's composition (test_adversarial_official.py),
Eq. 2's KL of N(0, 1) and its closed form (test_cdvae.py), Eq. 6's norms (tests/experiments/
test_cdvae_maths.py).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_models import SHAPE, constant_dense

from tfdefense.models import CDVAE, AdversarialCDVAE, vae_losses
from tfdefense.perturbation import iterative_attack


def images(*pixels):
    return tf.constant(np.asarray(pixels, np.float32).reshape(-1, *SHAPE))


def encoder(mu_kernel, mu_bias, log_var_kernel, log_var_bias, latent):
    x = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(x)
    mu = constant_dense(latent, mu_kernel, mu_bias)(flat)
    log_var = constant_dense(latent, log_var_kernel, log_var_bias)(flat)
    return keras.Model(x, [mu, log_var])


def decoder(kernel, bias, latent):
    z = keras.Input((latent,))
    return keras.Model(z, keras.layers.Reshape(SHAPE)(constant_dense(4, kernel, bias)(z)))


def classifier(kernel, bias=(0.0, 0.0)):
    x = keras.Input(SHAPE)
    return keras.Model(x, constant_dense(2, kernel, bias)(keras.layers.Flatten()(x)))


# ------------------------------------------------------------------ Eq. 1-3, Gaussian CD-VAE
def hand_cdvae():
    """μ(x) = 1, log σ²(x) = ln 0.25 for every x (kernels 0); decoder g̃ = z·[−1, 0, 0.5, 1];
    D's logit of class 1 = 20·(R11 − R00), of class 0 = 0; VAE scale x̃ = (x − 0.5)/0.25."""
    enc = encoder(np.zeros((4, 1)), [1.0], np.zeros((4, 1)), [math.log(0.25)], latent=1)
    dec = decoder([[-1.0, 0.0, 0.5, 1.0]], np.zeros(4), latent=1)
    clf = classifier([[0.0, -20.0], [0.0, 0.0], [0.0, 0.0], [0.0, 20.0]])
    return CDVAE(enc, dec, clf, beta=0.2, gamma=2.0, normalization_mean=(0.5,),
                 normalization_std=(0.25,))


# x = [0.2, 0.4, 0.6, 0.8]; x̃ = (x − 0.5)/0.25 = [−1.2, −0.4, 0.4, 1.2]
# z = μ = 1 (the posterior mean at inference): g̃ = [−1, 0, 0.5, 1]
# Eq. 2, −log p(x|z) as the mean squared error on the normalised scale:
#   x̃ − g̃ = [−0.2, −0.4, −0.1, 0.2] -> (0.04 + 0.16 + 0.01 + 0.04)/4 = 0.0625
# Eq. 2, KL(N(1, 0.25) ‖ N(0, 1)) = ½(σ² + μ² − 1 − ln σ²) = ½(0.25 + 1 − 1 + ln 4) = 0.8181472
# G(x) = 0.25·g̃ + 0.5 = [0.25, 0.5, 0.625, 0.75]; R(x) = x − G(x) = [−0.05, −0.1, −0.025, 0.05]
# Eq. 3: D(R(x)) logits [0, 20·(0.05 + 0.05)] = [0, 2];
#   −log D[1] = ln(1 + e⁻²) = 0.1269280, −log D[0] = 2 + ln(1 + e⁻²) = 2.1269280
# Eq. 1: L = 0.0625 + β·0.8181472 + γ·CE = 0.0625 + 0.1636294 + 2·CE
#   y = 1: 0.4799854;  y = 0: 4.4799854
X_HAND = (0.2, 0.4, 0.6, 0.8)
REC, KL = 0.0625, 0.5 * (0.25 + math.log(4.0))
CE1, CE0 = math.log(1 + math.exp(-2.0)), 2.0 + math.log(1 + math.exp(-2.0))
LOSS1, LOSS0 = 0.4799854, 4.4799854


def test_hand_numbers_are_the_formula():
    assert KL == pytest.approx(0.8181472, abs=1e-7)
    assert REC + 0.2 * KL + 2.0 * CE1 == pytest.approx(LOSS1, abs=1e-7)
    assert REC + 0.2 * KL + 2.0 * CE0 == pytest.approx(LOSS0, abs=1e-7)


def test_eq1_to_3_each_term_and_the_total_by_hand():
    model = hand_cdvae()
    x = images(X_HAND, X_HAND)
    terms = model.compute_losses(x, tf.constant([1, 0], tf.int64), training=False)
    np.testing.assert_allclose(terms["reconstruction"].numpy(), [REC, REC], rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), [KL, KL], rtol=1e-5)
    np.testing.assert_allclose(terms["ce"].numpy(), [CE1, CE0], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"].numpy(), [LOSS1, LOSS0], rtol=1e-5)
    g, r = model.decompose(x[:1])
    np.testing.assert_allclose(g.numpy().ravel(), [0.25, 0.5, 0.625, 0.75], atol=1e-6)
    np.testing.assert_allclose(r.numpy().ravel(), [-0.05, -0.1, -0.025, 0.05], atol=1e-6)


def test_evaluate_reports_the_batch_mean_of_eq1():
    model = hand_cdvae()
    model.compile()
    logs = model.evaluate(images(X_HAND, X_HAND), np.array([1, 0]), verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx((LOSS1 + LOSS0) / 2, rel=1e-5)  # 2.4799854
    assert logs["accuracy"] == pytest.approx(0.5)  # both predict class 1: y = 1 right, y = 0 wrong
    # ‖R‖² = 0.0025 + 0.01 + 0.000625 + 0.0025 = 0.015625, ‖x‖² = 1.2: 1 − 0.015625/1.2
    assert logs["reconstruction_accuracy"] == pytest.approx(1 - 0.015625 / 1.2, rel=1e-5)


# ---------------------------------------------------------- reconstruction accuracy (§4)
def test_reconstruction_accuracy_squares_both_norms():
    # x = [0.3, 0.4], G(x) = [0.15, 0.2]: ‖x − G‖² = 0.0225 + 0.04 = 0.0625, ‖x‖² = 0.25
    #   1 − ‖x − G‖²/‖x‖² = 1 − 0.25 = 0.75
    # without the squares 1 − 0.25/0.5 = 0.5; squaring only the numerator 1 − 0.0625/0.5 = 0.875
    x = tf.constant([0.3, 0.4], shape=(1, 1, 2, 1))
    g = tf.constant([0.15, 0.2], shape=(1, 1, 2, 1))
    assert float(vae_losses.reconstruction_accuracy(x, g)[0]) == pytest.approx(0.75, rel=1e-6)


# ------------------------------------------------------------------ Eq. 4-5, the PGD step
def test_eq5_pgd_steps_sign_of_the_cross_entropy_gradient_then_project():
    # logits [0, w·x] with w = [1, −1, 1, 0]; y = 0: ∂(−log D[0])/∂x = softmax(·)[1]·w, whose
    # sign is sign(w) = [+, −, +, 0]. Steps of α = 0.2, ε = 0.3, from x = [0.5, 0.5, 0.9, 0.5]:
    #   step 1: [0.7, 0.3, 1.1 -> 1.0 (clip to [0, 1]), 0.5]
    #   step 2: [0.9 -> 0.8, 0.1 -> 0.2 (back into the ε-ball), 1.0, 0.5]
    #   step 3: the same; the zero-gradient pixel never moves
    w = tf.constant([1.0, -1.0, 1.0, 0.0])

    def model(x):
        v = tf.reduce_sum(tf.reshape(x, (-1, 4)) * w, axis=1)
        return tf.stack([tf.zeros_like(v), v], axis=1)

    x = images((0.5, 0.5, 0.9, 0.5))
    x_adv = iterative_attack(model, x, tf.constant([0]), tf.constant([0, 0]), eps=0.3, step=0.2,
                             steps=3, norm="linf")
    np.testing.assert_allclose(x_adv.numpy().ravel(), [0.8, 0.2, 1.0, 0.5], atol=1e-6)


# ------------------------------------------------- Eq. 7-10 on an identity G, mixed with Eq. 1
W_G = [1.0, -2.0, 3.0, -4.0]  # D_G's logit of class 1 is W_G·G(x), of class 0 is 0


def identity_g_model(**kwargs):
    """G(x) = x (identity encoder mean, log σ² = 0, identity decoder, VAE scale = pixels);
    D(R) logits = R·0 + [1, 0]; D_G(G) logits = [0, W_G·G]."""
    enc = encoder(np.eye(4), np.zeros(4), np.zeros((4, 4)), np.zeros(4), latent=4)
    dec = decoder(np.eye(4), np.zeros(4), latent=4)
    d = classifier(np.zeros((4, 2)), bias=(1.0, 0.0))
    d_g = classifier(np.stack([np.zeros(4), W_G], axis=1))
    return AdversarialCDVAE(enc, dec, d, d_g, beta=0.2, gamma=2.0, **kwargs)


def test_eq7_crafts_x_prime_at_the_corner_of_the_ball_that_lowers_the_true_class():
    # ε = 0.1, 4 steps of ε/√4 = 0.05: from any start in the ball, 4 sign steps cover 2ε, so
    # every pixel with a non-zero gradient ends on the boundary x ± ε (κ = 10 never caps:
    # |W_G·x′| ≤ 3 here).
    # sample 0: x = 0.5, W_G·x = −1 -> class 0 = y, attacked; max Z_1 − Z_0 = W_G·x, gradient
    #   W_G, x′ = 0.5 + 0.1·sign(W_G) = [0.6, 0.4, 0.6, 0.4]
    # sample 1: same x, y = 1: D_G(G(x)) says 0, wrong: not attacked, x′ = x
    # sample 2: x = [0.9, 0.1, 0.9, 0.1], W_G·x = 3 -> class 1 = y, attacked; gradient −W_G,
    #   x′ = [0.8, 0.2, 0.8, 0.2]
    model = identity_g_model(eps=0.1, attack_steps=4)
    x = images((0.5,) * 4, (0.5,) * 4, (0.9, 0.1, 0.9, 0.1))
    x_adv = model.craft(x, tf.constant([0, 1, 1], tf.int64), seed=tf.constant([3, 4]))
    np.testing.assert_allclose(x_adv.numpy().reshape(3, 4),
                               [[0.6, 0.4, 0.6, 0.4], [0.5] * 4, [0.8, 0.2, 0.8, 0.2]], atol=1e-6)


def test_paper_objective_mixes_the_clean_loss_with_the_in_margin_adversarial_loss():
    # clean_weight 0.5, margin c = 1, β = 0.2, γ = 2; with G = identity rec = 0 and R = 0 for
    # every input, so D's logits are its bias [1, 0]: −log D[0] = ln(1 + e⁻¹) = a = 0.3132617,
    # −log D[1] = 1 + a = 1.3132617. KL = mean over dims of ½μ² (log σ² = 0, μ = x).
    # sample 0, x = 0.5·1, y = 0, x′ = [0.6, 0.4, 0.6, 0.4]:
    #   clean: β·½·0.25 + γ·a = 0.025 + 0.6265234 = 0.6515234
    #   adversarial: D_G(G(x′)) = [0, 0] (W_G·x′ = 0): margin 0 − 0 = 0 ≤ c, in;
    #     Eq. 10: −log D_G[0] = ln 2, target argmax_{y′≠0} = 1: −log D[1] = 1 + a
    #     Eq. 9 + 10: β·½·mean(0.36, 0.16, 0.36, 0.16) + γ·(ln 2 + 1 + a)
    #               = 0.026 + 2·2.0064089 = 4.0388178
    #   total 0.5·0.6515234 + 4.0388178 = 4.3645795
    # sample 1, x = [0.9, 0.1, 0.9, 0.1], y = 1, x′ = [0.8, 0.2, 0.8, 0.2]:
    #   clean: β·½·mean(0.81, 0.01, 0.81, 0.01) + γ·(1 + a) = 0.041 + 2.6265234 = 2.6675234
    #   adversarial: D_G(G(x′)) = [0, 2]: margin 2 − 0 = 2 > c, out (contributes 0)
    #   total 0.5·2.6675234 = 1.3337617
    a = math.log(1 + math.exp(-1.0))
    assert a == pytest.approx(0.3132617, abs=1e-7)
    model = identity_g_model(eps=0.1, attack_steps=4, margin=1.0, clean_weight=0.5)
    x = images((0.5,) * 4, (0.9, 0.1, 0.9, 0.1))
    x_adv = images((0.6, 0.4, 0.6, 0.4), (0.8, 0.2, 0.8, 0.2))
    clean, adv, total = model.joint_losses(x, x_adv, tf.constant([0, 1], tf.int64), training=False)
    np.testing.assert_allclose(clean["loss"].numpy(), [0.6515234, 2.6675234], rtol=1e-5)
    np.testing.assert_allclose(adv["in_margin"].numpy(), [1.0, 0.0])
    np.testing.assert_allclose(adv["ce_residual"].numpy(), [1 + a, a], rtol=1e-5)
    np.testing.assert_allclose(adv["loss"].numpy(), [4.0388178, 0.0], rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), [4.3645795, 1.3337617], rtol=1e-5)
