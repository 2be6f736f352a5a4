"""Adaptive-attack wrappers: BPDA for non-differentiable steps, EOT for random ones.

With them a whole defense becomes one differentiable callable that any
gradient attack can run against (Athalye, Carlini & Wagner 2018):

* ``bpda(fn, approximation)``: forward pass ``fn(x)`` exactly, backward pass
  the gradient of ``approximation(x)`` (default: identity, the straight-through
  estimator, right for purifiers whose output is close to their input).
* ``eot(fn, n)``: the expectation over ``n`` draws of a stochastic ``fn``
  (e.g. a VAE that samples its posterior), evaluated as one batch of
  ``n * N`` images; its gradient is the average of the ``n`` gradients.

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

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfdefense.validation import check_positive_int


def _identity(x):
    return x


def bpda(fn: Callable, approximation: Callable | None = None) -> Callable:
    """Backward-pass differentiable approximation of ``fn``.

    Args:
        fn: any callable on a tensor (may be non-differentiable, e.g. rounding,
            JPEG through ``tf.numpy_function``, a sampling step).
        approximation: a differentiable callable with the same output shape
            whose gradient stands in for ``fn``'s; default identity (needs
            ``fn`` to map images to images).

    Returns:
        A callable with ``fn``'s outputs and ``approximation``'s gradients.
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {fn!r}")
    if approximation is not None and not callable(approximation):
        raise ValueError(f"approximation: expected a callable or None, got {approximation!r}")
    approx = _identity if approximation is None else approximation

    def wrapped(x):
        x = tf.convert_to_tensor(x)

        @tf.custom_gradient
        def inner(x):
            out = fn(x)

            def grad(dy, variables=None):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    a = approx(x)
                dx = tape.gradient(a, x, output_gradients=dy)
                if dx is None:
                    dx = tf.zeros_like(x)
                return (dx, [tf.zeros_like(v) for v in variables]) if variables else dx

            return tf.identity(out), grad

        return inner(x)

    wrapped.__name__ = f"bpda_{getattr(fn, '__name__', 'fn')}"
    return wrapped


def eot(fn: Callable, n: int = 10, average: str = "probs") -> Callable:
    """Expectation over transformation of a stochastic ``fn`` (images -> logits).

    The batch is repeated ``n`` times and run through ``fn`` once (each copy
    gets its own random draw); the result is averaged per image.

    Args:
        fn: a stochastic callable images -> logits.
        n: number of draws; Athalye et al. 2018 use tens (their §5: 10-30 per step).
        average: "probs" returns log of the mean softmax (logits of the
            expected prediction, Athalye et al. 2018 §4); "logits" returns the
            mean logits.

    Returns:
        A callable images -> logits.
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {fn!r}")
    n = check_positive_int(n, "n")
    if average not in ("probs", "logits"):
        raise ValueError(f"average: expected 'probs' or 'logits', got {average!r}")

    def wrapped(x):
        x = tf.convert_to_tensor(x)
        batch = tf.shape(x)[0]
        logits = fn(tf.tile(x, tf.concat([[n], tf.ones_like(tf.shape(x)[1:])], 0)))
        logits = tf.reshape(logits, tf.stack([n, batch, -1]))
        if average == "logits":
            return tf.reduce_mean(logits, 0)
        return tf.reduce_logsumexp(tf.nn.log_softmax(logits), 0) - tf.math.log(float(n))

    wrapped.__name__ = f"eot_{getattr(fn, '__name__', 'fn')}"
    return wrapped
