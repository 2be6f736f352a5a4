"""Loss maths of FM-Defense against analytic values and direct TFP computations."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfdefense.models.combo_vae import (
    discriminator_loss,
    gaussian_kl,
    permute_dims,
    reconstruction_loss,
    tc_estimate,
)
from tfdefense.models.dgmm import gm_log_likelihoods, lgm_loss

tfd = tfp.distributions


def _gm_params(rng, c=4, k=3):
    means = rng.normal(size=(c, k)).astype("float32")
    log_scales = (0.3 * rng.normal(size=(c, k))).astype("float32")
    return tf.constant(means), tf.constant(log_scales)


def test_lgm_loss_matches_tfp_mixture(rng):
    means, log_scales = _gm_params(rng)
    z = tf.constant(rng.normal(size=(16, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 4, 16))
    terms = lgm_loss(z, y, means, log_scales, lambda_lkd=0.1)
    mix = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros(4)),
                                tfd.MultivariateNormalDiag(means, tf.exp(log_scales)))
    comp = mix.components_distribution.log_prob(z[:, None, :])  # (N, C)
    posterior = comp + math.log(1 / 4) - mix.log_prob(z)[:, None]  # log q(c|z), Eq 10
    cls = -tf.gather(posterior, y, batch_dims=1)
    lkd = -tf.gather(comp, y, batch_dims=1)  # Eq 11
    np.testing.assert_allclose(terms["cls_loss"], cls, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms["lkd_loss"], lkd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms["loss"], cls + 0.1 * lkd, rtol=1e-5, atol=1e-5)


def test_lgm_analytic_values():
    # one class at the origin, unit covariance: -log N(0; 0, I_K) = K/2 log 2π, L_cls = 0
    z = tf.zeros((1, 2))
    terms = lgm_loss(z, tf.constant([0]), tf.zeros((1, 2)), tf.zeros((1, 2)), lambda_lkd=0.1)
    assert terms["lkd_loss"].numpy()[0] == pytest.approx(math.log(2 * math.pi), rel=1e-6)
    assert terms["cls_loss"].numpy()[0] == pytest.approx(0.0, abs=1e-6)
    # two symmetric classes, z halfway: posterior 1/2 each
    means = tf.constant([[-1.0, 0.0], [1.0, 0.0]])
    t2 = lgm_loss(z, tf.constant([1]), means, tf.zeros((2, 2)))
    assert t2["cls_loss"].numpy()[0] == pytest.approx(math.log(2), rel=1e-6)


def test_lgm_margin_raises_true_class_loss(rng):
    means, log_scales = _gm_params(rng)
    z = tf.constant(rng.normal(size=(8, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 4, 8))
    base = lgm_loss(z, y, means, log_scales)["cls_loss"]
    margin = lgm_loss(z, y, means, log_scales, margin=0.5)["cls_loss"]
    assert np.all(margin.numpy() > base.numpy())
    ll = gm_log_likelihoods(z, means, log_scales)
    assert ll.shape == (8, 4)


def test_gaussian_kl_analytic():
    assert gaussian_kl(tf.zeros((3, 5)), tf.zeros((3, 5))).numpy().tolist() == [0.0] * 3
    mean = tf.constant([[1.0, -2.0]])
    log_var = tf.constant([[math.log(4.0), 0.0]])
    expected = 0.5 * (1 + 4 - 1 - math.log(4.0)) + 0.5 * 4.0
    assert gaussian_kl(mean, log_var).numpy()[0] == pytest.approx(expected, rel=1e-6)
    q = tfd.Normal(mean, tf.exp(0.5 * log_var))
    direct = tf.reduce_sum(tfd.kl_divergence(q, tfd.Normal(0.0, 1.0)), -1)
    np.testing.assert_allclose(gaussian_kl(mean, log_var), direct, rtol=1e-6)
    # feature-map latents sum over every element
    assert gaussian_kl(tf.ones((2, 4, 4, 3)), tf.zeros((2, 4, 4, 3))).numpy()[0] == pytest.approx(24)


def test_reconstruction_losses():
    x = tf.constant(np.full((1, 2, 2, 1), 0.5, "float32"))
    assert reconstruction_loss(x, x + 0.5).numpy()[0] == pytest.approx(1.0)
    bern = reconstruction_loss(x, x, "bernoulli").numpy()[0]
    assert bern == pytest.approx(4 * math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="reconstruction"):
        reconstruction_loss(x, x, "l1")


def test_tc_terms_analytic():
    zero = tf.zeros((5, 1))
    np.testing.assert_allclose(discriminator_loss(zero, zero), [math.log(2)] * 5, rtol=1e-6)
    np.testing.assert_allclose(tc_estimate(tf.constant([[0.3], [-0.1]])), [0.3, -0.1])
    # a confident, correct discriminator has a small loss
    assert discriminator_loss(tf.fill((1, 1), 10.0), tf.fill((1, 1), -10.0)).numpy()[0] < 1e-4


def test_permute_dims_permutes_each_column_independently():
    z = tf.constant(np.arange(200, dtype="float32").reshape(100, 2) % 100 * [1, 1])
    p = permute_dims(z, seed=1).numpy()
    for j in range(2):
        assert sorted(p[:, j].tolist()) == sorted(z.numpy()[:, j].tolist())
    assert not np.array_equal(p[:, 0], p[:, 1])  # different permutations per dimension
