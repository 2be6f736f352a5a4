"""The models' inference paths run their networks in inference mode: a call without
``training=`` (and every attack, purification or evaluation step) must not take the training
branch of dropout / BatchNorm. The hand networks end in a layer that negates (or shifts by 1)
its input in training mode only (``hand_models``), so the training branch changes a logit, a
pixel or a code by a known amount.

Images are 2x2x1, flattened (x00, x01, x10, x11).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import cdvae_parts, grid_encoder, image_decoder
from hand_models import SHAPE, NegatedInTraining, ShiftedInTraining, flat_model

from tfdefense.models import CDVAE, DGMM, VQCDVAE, AdversarialCDVAE, ComboVAE, PGDAdversarialTraining

X = np.array([[0.25, 0.75, 0.25, 0.75]], np.float32).reshape(1, *SHAPE)


def pgd_classifier():
    """Logits (0, w·x + 0.5), w = (1, −1, 1, −1); negated in training mode."""
    kernel = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0], [0.0, -1.0]])
    return flat_model(2, kernel, [0.0, 0.5], NegatedInTraining())


def pgd_model():
    return PGDAdversarialTraining(pgd_classifier(), eps=0.25, attack_steps=1,
                                  attack_step_size=1.0, seed=0)


def test_pgd_training_crafts_against_the_inference_mode_classifier():
    # y = 0, two classes: ∂CE/∂x = p1·(w1 − w0) = p1·(1, −1, 1, −1), whose sign does not depend
    # on x; a step of 1 from any start in the 0.25-ball ends at its corner x + 0.25·sign:
    # (0.5, 0.5, 0.5, 0.5). The training-mode (negated) logits would flip the sign: (0, 1, 0, 1).
    x_adv = pgd_model().craft(tf.constant(X), tf.constant([0], tf.int64), seed=tf.constant([1, 2]))
    np.testing.assert_allclose(x_adv.numpy().ravel(), [0.5, 0.5, 0.5, 0.5], atol=1e-6)


def test_pgd_training_calls_and_evaluates_in_inference_mode():
    model = pgd_model()
    model.compile()
    # clean x: w·x = 0.25 − 0.75 + 0.25 − 0.75 = −1, logits (0, −0.5) -> class 0, right
    np.testing.assert_allclose(model(tf.constant(X)).numpy(), [[0.0, -0.5]], atol=1e-6)
    # x′ = 0.5 everywhere (above): w·x′ = 0, logits (0, 0.5) -> class 1, wrong;
    # CE = log(1 + e^0.5) = 0.9740770 (training mode: (0, −0.5), log(1 + e^−0.5) = 0.4740770)
    metrics = model.evaluate(X, np.array([0]), verbose=0, return_dict=True)
    assert metrics["accuracy"] == 1.0 and metrics["adversarial_accuracy"] == 0.0
    assert math.isclose(metrics["loss"], math.log(1 + math.exp(0.5)), rel_tol=1e-5)


def hand_cdvae(cls=CDVAE, **kwargs):
    """G(x) = 0 at inference (zero encoder and decoder), 1 in training (a shifted decoder);
    D(R) logits (0, R00), negated in training mode."""
    parts = cdvae_parts()
    parts["decoder"] = image_decoder(1, SHAPE, ShiftedInTraining())
    kernel = np.zeros((4, 2))
    kernel[0, 1] = 1.0
    parts["classifier"] = flat_model(2, kernel, [0.0, 0.0], NegatedInTraining())
    return cls(**parts, **kwargs)


def test_cdvae_calls_without_training_are_inference():
    model = hand_cdvae()
    x = tf.constant(X)
    # μ = 0, σ = 1: inference takes z = μ = 0 (training would sample z ~ N(0, 1))
    z, kl = model.latent(x)
    np.testing.assert_array_equal(z.numpy(), [[0.0]])
    np.testing.assert_allclose(kl.numpy(), [0.0], atol=1e-7)  # KL(N(0, 1) ‖ N(0, 1))
    np.testing.assert_array_equal(model.generate(x).numpy(), np.zeros((1, *SHAPE)))
    g, r = model.decompose(X)
    np.testing.assert_array_equal(g.numpy(), np.zeros((1, *SHAPE)))
    np.testing.assert_array_equal(r.numpy(), X)
    # D(R(x)) = D(x): logits (0, x00) = (0, 0.25); in training (0, −(0.25 − 1)) = (0, 0.75)
    np.testing.assert_allclose(model(x).numpy(), [[0.0, 0.25]], atol=1e-7)


def test_adversarial_cdvae_defended_and_residual_logits_are_inference():
    d_g = flat_model(2, np.zeros((4, 2)), [0.0, 1.0], NegatedInTraining())
    model = hand_cdvae(AdversarialCDVAE, generated_classifier=d_g)
    x = tf.constant(X)
    np.testing.assert_allclose(model(x).numpy(), [[0.0, 1.0]], atol=1e-7)  # training: −1
    np.testing.assert_allclose(model.defended_logits(x).numpy(), [[0.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(model.residual_logits(x).numpy(), [[0.0, 0.25]], atol=1e-7)


def test_vq_codebook_usage_and_latent_leave_the_ema_codebook_alone():
    # with EMA, a training-mode call moves the codes towards the encoder outputs (here 0)
    model = VQCDVAE(grid_encoder(2), image_decoder(2), flat_model(2, np.zeros((4, 2)), [0, 0]),
                    num_codes=4, ema=True)
    before = model.quantizer.codebook.numpy().copy()
    usage = model.codebook_usage(np.concatenate([X, X]))
    model.latent(tf.constant(X))
    np.testing.assert_array_equal(model.quantizer.codebook.numpy(), before)
    # both images' z_e = 0 go to the one nearest code: 1 of 4 used, perplexity 1
    assert usage == {"codes_used": 1, "fraction_used": 0.25, "perplexity": 1.0}
    model.quantizer(tf.zeros((1, 1, 1, 2)), training=True)  # the training branch does move them
    assert not np.array_equal(model.quantizer.codebook.numpy(), before)


def test_dgmm_encodes_and_classifies_in_inference_mode():
    # z_u = 0.5 at inference, 1.5 in training (shifted)
    model = DGMM(flat_model(1, np.zeros((4, 1)), [0.5], ShiftedInTraining()), num_classes=2)
    np.testing.assert_allclose(model.encode(tf.constant(X)).numpy(), [[0.5]])
    model.means.assign([[0.5], [1.5]])
    # unit scales: logits −½(z − μ_c)² (+ the same constant): class 0 at z = 0.5
    assert model.predict_labels(X).tolist() == [0]
    logits = model(tf.constant(X)).numpy()
    assert logits[0, 0] - logits[0, 1] == pytest.approx(0.5, abs=1e-6)  # ½·1² − 0


def test_combo_vae_reconstructs_in_inference_mode():
    z_s, z_u = keras.Input((1,)), keras.Input((1,))
    dense = keras.layers.Dense(4, kernel_initializer="zeros")
    decoder = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(
        ShiftedInTraining()(dense(keras.layers.Concatenate()([z_s, z_u])))))
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    model = ComboVAE(flat_model(2, np.zeros((4, 2)), [0.0, 0.0]), decoder, dgmm)
    # zero decoder: x̂ = 0 at inference (1 in training)
    np.testing.assert_array_equal(model(tf.constant(X)).numpy(), np.zeros((1, *SHAPE)))
    np.testing.assert_array_equal(model.reconstruct(X).numpy(), np.zeros((1, *SHAPE)))

