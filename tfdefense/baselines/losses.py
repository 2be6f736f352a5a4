"""Loss maths of the two baselines, as pure functions over tensors.

Each returns one value per example so that the caller picks the reduction
(``tf.nn.compute_average_loss`` under ``tf.distribute``, a mean otherwise).

* ``reconstruction_error``: MagNet's detector score, the mean over pixels of
  ``|x - AE(x)|^p`` (Meng & Chen 2017, §3.1 and Eq. 1; p = 2 for detector I,
  p = 1 for detector II in the MNIST setting).
* ``critic_loss``, ``generator_loss``, ``gradient_penalty``: WGAN-GP
  (Gulrajani et al. 2017, Algorithm 1; the GAN Defense-GAN trains,
  Samangouei et al. 2018 §3.2): critic ``D(G(z)) - D(x) + λ (||∇D(x̂)||₂ - 1)²``
  with ``x̂ = α x + (1 - α) G(z)``, generator ``-D(G(z))``.

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines.losses import reconstruction_error
    >>> x = np.zeros((1, 2, 2, 1), "float32")
    >>> r = np.full((1, 2, 2, 1), 0.5, "float32")
    >>> float(reconstruction_error(x, r, p=2)[0]), float(reconstruction_error(x, r, p=1)[0])
    (0.25, 0.5)
"""

from __future__ import annotations

import tensorflow as tf


def reconstruction_error(x, reconstruction, p: int = 2) -> tf.Tensor:
    """Per-example mean of ``|x - reconstruction|^p`` over all non-batch axes.

    MagNet's detector score (Meng & Chen 2017, §3.1): p = 2 for detector I,
    p = 1 for detector II (MNIST setting, official code ``AEDetector.mark``).
    """
    if p not in (1, 2):
        raise ValueError(f"p: expected 1 or 2, got {p!r}")
    diff = tf.abs(tf.convert_to_tensor(x, tf.float32) - tf.cast(reconstruction, tf.float32))
    if p == 2:
        diff = tf.square(diff)
    return tf.reduce_mean(tf.reshape(diff, [tf.shape(diff)[0], -1]), axis=1)


def critic_loss(real_scores, fake_scores) -> tf.Tensor:
    """Per-example WGAN critic loss ``D(G(z)) - D(x)`` (Gulrajani et al. 2017, Alg. 1)."""
    return tf.reshape(fake_scores, [-1]) - tf.reshape(real_scores, [-1])


def generator_loss(fake_scores) -> tf.Tensor:
    """Per-example WGAN generator loss ``-D(G(z))`` (Gulrajani et al. 2017, Alg. 1)."""
    return -tf.reshape(fake_scores, [-1])


def gradient_penalty(critic, real, fake, alpha) -> tf.Tensor:
    """Per-example ``(||∇_x̂ D(x̂)||₂ - 1)²`` at ``x̂ = α·real + (1 - α)·fake``.

    Gulrajani et al. 2017, Eq. 3 (the penalty before its weight λ = 10).

    Args:
        critic: images -> scores (N,) or (N, 1) callable.
        real, fake: image batches of the same shape (N, ...).
        alpha: interpolation weights broadcastable to the images, e.g. (N, 1, 1, 1).
    """
    real = tf.convert_to_tensor(real, tf.float32)
    fake = tf.cast(fake, tf.float32)
    interpolates = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(interpolates)
        scores = critic(interpolates)
    grads = tape.gradient(scores, interpolates)
    grads = tf.reshape(grads, [tf.shape(grads)[0], -1])
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-12)
    return tf.square(norms - 1.0)
