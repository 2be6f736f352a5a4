"""A BatchNormalization that runs TensorFlow's fused kernel under a bfloat16 compute dtype.

Keras 3's ``BatchNormalization`` casts a bfloat16 input to float32, computes the moments
with ``ops.moments`` and normalizes with separate element-wise ops, keeping full-size float32
intermediates for the backward pass. ``FusedBatchNormV3`` takes the bfloat16 input with
float32 statistics in one kernel (one backward kernel too), so a WRN trained under
``mixed_bfloat16`` keeps less memory alive (issue 18: peak RSS of the CD-VAE train step).

``FusedBatchNormalization`` is that layer, a drop-in subclass with the same weights and
config (serialized under its registered name, so loading a model that has it needs ``import
tfdefense``). The nets build it through :func:`batch_normalization`, which gives it only to a
model built under a bfloat16 policy: a float32 model keeps Keras's own layer and loads with
Keras alone, as before. It takes the fused path only where the
result is the same layer's up to bfloat16 rounding: TensorFlow backend, bfloat16 compute
dtype, a rank-4 channels-last input, no mask, renorm or synchronized moments. Everywhere
else, and always in float32, it IS ``keras.layers.BatchNormalization`` (``super().call``),
so float32 models, their numbers and the official-code equivalence are untouched.

The fused kernel's ``batch_variance`` is Bessel-corrected (PyTorch's running-variance
convention); Keras updates ``moving_variance`` with the biased one, so it is scaled back by
(n − 1)/n, n = N·H·W, and the moving statistics follow Keras's rule
``moving = moving · momentum + batch · (1 − momentum)``.

Example:
    >>> import numpy as np, keras
    >>> from tfdefense.nets.fused_batch_norm import FusedBatchNormalization
    >>> layer = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, dtype="mixed_bfloat16")
    >>> x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 3, 2)).astype("float32")
    >>> y = layer(x, training=True)
    >>> keras.backend.standardize_dtype(y.dtype), bool(abs(float(np.asarray(y, "float32").mean())) < 0.05)
    ('bfloat16', True)
    >>> np.round(layer.moving_mean.numpy(), 2).tolist() == np.round(0.1 * x.mean((0, 1, 2)), 2).tolist()
    True
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="tfdefense")
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with TensorFlow's fused kernel under bfloat16
    (module docstring); same arguments, weights and defaults."""

    def _fused_applies(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and self.compute_dtype == "bfloat16"
                and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.bfloat16)
        train = bool(training and self.trainable)
        # training: the batch's statistics (the kernel takes none in); inference: the moving ones
        stats = ((tf.constant([], tf.float32),) * 2 if train else
                 (tf.cast(self.moving_mean, tf.float32), tf.cast(self.moving_variance, tf.float32)))
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
            mean=stats[0], variance=stats[1], epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC", is_training=train)
        if train:
            shape = tf.shape(x)
            n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * tf.maximum(n - 1.0, 0.0) / n  # Bessel's correction undone
            self.moving_mean.assign(self.moving_mean * self.momentum
                                    + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum
                                        + variance * (1.0 - self.momentum))
        return y


def batch_normalization(**kwargs) -> layers.BatchNormalization:
    """A ``FusedBatchNormalization`` when the layer will compute in bfloat16 (its ``dtype=``,
    else the global policy, e.g. ``tfdefense.distribute.precision_scope("mixed_bfloat16")``),
    else Keras's own ``BatchNormalization``: the nets' one constructor of BatchNorm.

    Example:
        >>> type(batch_normalization(epsilon=1e-5)).__name__
        'BatchNormalization'
        >>> type(batch_normalization(epsilon=1e-5, dtype="mixed_bfloat16")).__name__
        'FusedBatchNormalization'
    """
    policy = keras.dtype_policies.get(kwargs.get("dtype") or keras.config.dtype_policy())
    fused = policy.compute_dtype == "bfloat16"
    return (FusedBatchNormalization if fused else layers.BatchNormalization)(**kwargs)
