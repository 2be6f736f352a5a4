"""Loss maths of the CD-VAE objective (Eq. 1–3) as pure functions.

Each returns one value per example; the model averages over the batch (and
over replicas under ``tf.distribute``). Reductions follow the official code
(kai-wen-yang/CD-VAE ``tools/disentangle_cifar.py``): the reconstruction term
is the mean squared error over pixels of the normalised images, and the KL is
averaged over latent dimensions (the official code divides its sum by
3·latent_dim; the constant is absorbed by β).

Example:
    >>> import tensorflow as tf
    >>> import tensorflow_probability as tfp
    >>> from tfdefense.models.vae_losses import kl_to_standard_normal
    >>> q = tfp.distributions.Normal(tf.zeros((2, 3)), tf.ones((2, 3)))
    >>> kl_to_standard_normal(q).numpy().tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def gaussian_posterior(mu: tf.Tensor, log_var: tf.Tensor) -> tfd.Normal:
    """q(z|x) = N(μ, exp(log σ²)), the VAE posterior of Eq. 2 (reparameterised)."""
    return tfd.Normal(loc=mu, scale=tf.exp(0.5 * log_var))


def kl_to_standard_normal(posterior: tfd.Distribution) -> tf.Tensor:
    """D_KL(q(z|x) ‖ N(0, I)) averaged over latent dimensions; shape (N,). Eq. 2."""
    prior = tfd.Normal(tf.zeros_like(posterior.loc), tf.ones_like(posterior.scale))
    kl = tfd.kl_divergence(posterior, prior)
    return tf.reduce_mean(tf.reshape(kl, (tf.shape(kl)[0], -1)), axis=-1)


def reconstruction_error(x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Mean squared error over pixels, per example; shape (N,). The −log p(x|z) of Eq. 2
    for a Gaussian likelihood up to scale and constant."""
    return tf.reduce_mean(tf.square(x - g), axis=[1, 2, 3])


def reconstruction_accuracy(x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """1 − ‖x − G(x)‖² / ‖x‖² per example (CD-VAE §4's reconstruction accuracy)."""
    num = tf.reduce_sum(tf.square(x - g), axis=[1, 2, 3])
    den = tf.reduce_sum(tf.square(x), axis=[1, 2, 3])
    return 1.0 - num / tf.maximum(den, 1e-12)


def mixup_cross_entropy(
    labels_a: tf.Tensor, labels_b: tf.Tensor, logits: tf.Tensor, lam: tf.Tensor
) -> tf.Tensor:
    """λ·CE(y_a) + (1 − λ)·CE(y_b) per example (mixup, Zhang et al. 2018); λ = 1 is plain CE."""
    ce_a = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels_a, logits=logits)
    ce_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels_b, logits=logits)
    return lam * ce_a + (1.0 - lam) * ce_b
