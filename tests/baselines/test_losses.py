"""Loss maths of the baselines against analytic values."""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.baselines.losses import (
    critic_loss,
    generator_loss,
    gradient_penalty,
    reconstruction_error,
)


def test_reconstruction_error_analytic():
    x = np.zeros((2, 2, 2, 1), "float32")
    rec = np.stack([np.full((2, 2, 1), 0.5), np.array([[[1.0], [0.0]], [[0.0], [0.0]]])])
    np.testing.assert_allclose(reconstruction_error(x, rec, p=2), [0.25, 0.25])
    np.testing.assert_allclose(reconstruction_error(x, rec, p=1), [0.5, 0.25])
    np.testing.assert_allclose(reconstruction_error(x, x, p=1), [0.0, 0.0])


@pytest.mark.parametrize("p", [0, 3, 1.5])
def test_reconstruction_error_rejects_p(p):
    with pytest.raises(ValueError, match="p"):
        reconstruction_error(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), p=p)


def test_wgan_losses_analytic():
    real, fake = tf.constant([[3.0], [1.0]]), tf.constant([[0.5], [2.0]])
    np.testing.assert_allclose(critic_loss(real, fake), [-2.5, 1.0])
    np.testing.assert_allclose(generator_loss(fake), [-0.5, -2.0])


@pytest.mark.parametrize("norm", [0.25, 1.0, 3.0])
def test_gradient_penalty_on_linear_critic(norm):
    # D(x) = <w, x> + b has gradient w everywhere: penalty = (||w|| - 1)^2
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4 * 4 * 1,)).astype("float32")
    w *= norm / np.linalg.norm(w)

    def critic(x):
        return tf.reduce_sum(tf.reshape(x, [-1, 16]) * w, axis=1, keepdims=True) + 0.7

    real = rng.random((5, 4, 4, 1)).astype("float32")
    fake = rng.random((5, 4, 4, 1)).astype("float32")
    alpha = rng.random((5, 1, 1, 1)).astype("float32")
    gp = gradient_penalty(critic, real, fake, alpha).numpy()
    np.testing.assert_allclose(gp, np.full(5, (norm - 1.0) ** 2), rtol=1e-5, atol=1e-6)


def test_gradient_penalty_on_quadratic_critic_uses_the_interpolate():
    # D(x) = 0.5 ||x||^2 has gradient x: penalty = (||a·real + (1 - a)·fake|| - 1)^2
    real = np.full((2, 2, 2, 1), 1.0, "float32")
    fake = np.zeros((2, 2, 2, 1), "float32")
    alpha = np.array([0.5, 1.0], "float32").reshape(2, 1, 1, 1)

    def critic(x):
        return 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])

    # interpolates: all 0.5 (norm 1) and all 1.0 (norm 2)
    np.testing.assert_allclose(gradient_penalty(critic, real, fake, alpha), [0.0, 1.0],
                               atol=1e-6)
