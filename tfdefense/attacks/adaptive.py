"""Adaptive-attack wrappers: BPDA for non-differentiable steps, EOT for random ones.

With them a whole defense becomes one differentiable callable that any
gradient attack can run against (Athalye, Carlini & Wagner 2018):

* ``bpda(fn, approximation)``: forward pass ``fn(x)`` exactly, backward pass
  the gradient of ``approximation(x)`` (default: identity, the straight-through
  estimator, right for purifiers whose output is close to their input).
* ``eot(fn, n)``: the expectation over ``n`` draws of a stochastic ``fn``
  (e.g. a VAE that samples its posterior), evaluated as one batch of
  ``n * N`` images; its gradient is the average of the ``n`` gradients.

Both are generic gradient tools and live in ``tfdefense.perturbation`` (Defense-GAN uses
``bpda`` without the attacks); this module and ``tfdefense.attacks`` re-export them.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from tfdefense.attacks import bpda
    >>> quantize = bpda(lambda x: tf.round(x * 4) / 4)
    >>> x = tf.constant(np.full((1, 2, 2, 1), 0.3, "float32"))
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(quantize(x))
    >>> tape.gradient(y, x).numpy().ravel().tolist(), float(y)
    ([1.0, 1.0, 1.0, 1.0], 1.0)
"""

from tfdefense.perturbation import bpda, eot

__all__ = ["bpda", "eot"]
