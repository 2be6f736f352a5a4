"""Hand-built Keras pieces for the hand-computed test cases: layers whose weights are given
numbers, so a test can derive every output by hand (importable from any test: pytest puts
``tests/`` on the path for its conftest)."""

from __future__ import annotations

import keras
import numpy as np

#: the per-image shape of the hand cases: 2x2 pixels, one channel
SHAPE = (2, 2, 1)


def constant_dense(units: int, kernel, bias, name: str | None = None) -> keras.layers.Dense:
    """A Dense layer whose kernel and bias are the given numbers (built on first call)."""
    return keras.layers.Dense(
        units, name=name,
        kernel_initializer=keras.initializers.Constant(np.asarray(kernel, np.float32)),
        bias_initializer=keras.initializers.Constant(np.asarray(bias, np.float32)))


def flat_model(units: int, kernel, bias, *extra: keras.layers.Layer,
               shape: tuple[int, ...] = SHAPE) -> keras.Model:
    """Flatten -> ``constant_dense(units, kernel, bias)`` -> ``extra`` layers."""
    x = keras.Input(shape)
    out = constant_dense(units, kernel, bias)(keras.layers.Flatten()(x))
    for layer in extra:
        out = layer(out)
    return keras.Model(x, out)


class NegatedInTraining(keras.layers.Layer):
    """x at inference, −x in training mode (a stand-in for dropout / batch statistics)."""

    def call(self, x, training=None):
        return -x if training else x


class ShiftedInTraining(keras.layers.Layer):
    """x at inference, x + 1 in training mode."""

    def call(self, x, training=None):
        return x + 1.0 if training else x


def hand_combo_vae(*decoder_tail):
    """The smallest ComboVAE: μ(x) = (x00, x01), log σ² = 0; z_u = 0.5 (a DGMM with a zero
    kernel, two classes); the decoder maps [z_s0, z_s1, z_u] to the image (z_s0, z_s1, 0, 0),
    then through the ``decoder_tail`` layers (e.g. ``ShiftedInTraining()``)."""
    from tfdefense.models import DGMM, ComboVAE

    pick = np.zeros((4, 4))
    pick[0, 0] = pick[1, 1] = 1.0
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    z_s, z_u = keras.Input((2,)), keras.Input((1,))
    dense = constant_dense(4, [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]], np.zeros(4))
    out = dense(keras.layers.Concatenate()([z_s, z_u]))
    for layer in decoder_tail:
        out = layer(out)
    dec = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(out))
    return ComboVAE(flat_model(4, pick, np.zeros(4)), dec, dgmm)
