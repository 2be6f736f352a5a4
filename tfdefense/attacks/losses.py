"""Per-example attack objectives, written to be *maximized* by the attacker.

Pure functions of (logits, labels) so they can be tested against hand values
and reused inside compiled graphs.

Example:
    >>> import tensorflow as tf
    >>> from tfdefense.attacks.losses import margin
    >>> logits = tf.constant([[3.0, 1.0, 0.0]])
    >>> float(margin(logits, tf.constant([0]), kappa=10.0)[0])  # 1 - 3
    -2.0
"""

from __future__ import annotations

import tensorflow as tf


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, targeted: bool = False) -> tf.Tensor:
    """Softmax cross-entropy of ``labels``; negated when ``targeted`` (move towards them)."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return -ce if targeted else ce


def margin(
    logits: tf.Tensor, labels: tf.Tensor, kappa: float = float("inf"), targeted: bool = False
) -> tf.Tensor:
    """Carlini-Wagner f6 margin, capped at ``kappa``.

    Untargeted: ``min(max_{j != y} Z_j - Z_y, kappa)``; targeted (y = target):
    ``min(Z_y - max_{j != y} Z_j, kappa)`` (Carlini & Wagner 2017, Eq. f6;
    the ``MarginLoss`` of the CD-VAE code's ``advex/attacks.py``).
    """
    num_classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    z_y = tf.reduce_sum(onehot * logits, axis=-1)
    z_other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
    value = z_y - z_other if targeted else z_other - z_y
    return tf.minimum(value, tf.cast(kappa, logits.dtype))
