"""FusedBatchNormalization: Keras's BatchNormalization, through TensorFlow's fused kernel under
bfloat16 only (float32 stays Keras's own path, bit for bit)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.distribute import precision_scope
from tfdefense.nets import wide_resnet
from tfdefense.nets.fused_batch_norm import FusedBatchNormalization

#: one bfloat16 step at 1.0 (8 significand bits): outputs of size ~3 agree within two steps
BF16_ATOL = 2 * 2.0 ** -7 * 4


def _pair(dtype: str, momentum: float = 0.9):
    """A fused layer and a Keras one with the same random gamma/beta and moving statistics."""
    rng = np.random.default_rng(1)
    fused = FusedBatchNormalization(epsilon=1e-5, momentum=momentum, dtype=dtype)
    plain = keras.layers.BatchNormalization(epsilon=1e-5, momentum=momentum, dtype=dtype)
    for layer in (fused, plain):
        layer.build((None, 5, 4, 3))
    weights = [rng.uniform(0.5, 1.5, 3), rng.normal(0, 0.5, 3), rng.normal(0, 1, 3),
               rng.uniform(0.5, 2.0, 3)]
    for layer in (fused, plain):
        layer.set_weights([w.astype("float32") for w in weights])
    x = rng.normal(1.5, 2.0, (6, 5, 4, 3)).astype("float32")
    return fused, plain, x


@pytest.mark.parametrize("training", [True, False])
def test_float32_is_kerass_batch_norm_bit_for_bit(training):
    fused, plain, x = _pair("float32")
    np.testing.assert_array_equal(fused(x, training=training).numpy(),
                                  plain(x, training=training).numpy())
    np.testing.assert_array_equal(fused.moving_variance.numpy(), plain.moving_variance.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_bfloat16_agrees_with_kerass_batch_norm_to_bfloat16_rounding(training):
    fused, plain, x = _pair("mixed_bfloat16")
    with tf.GradientTape(persistent=True) as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        yf, yp = fused(xt, training=training), plain(xt, training=training)
        lf = tf.reduce_sum(tf.cast(yf, tf.float32) * tf.range(3, dtype=tf.float32))
        lp = tf.reduce_sum(tf.cast(yp, tf.float32) * tf.range(3, dtype=tf.float32))
    assert yf.dtype == yp.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(yf, tf.float32), tf.cast(yp, tf.float32), atol=BF16_ATOL)
    for a, b in ((tape.gradient(lf, xt), tape.gradient(lp, xt)),
                 (tape.gradient(lf, fused.gamma), tape.gradient(lp, plain.gamma)),
                 (tape.gradient(lf, fused.beta), tape.gradient(lp, plain.beta))):
        np.testing.assert_allclose(a, b, rtol=0.03, atol=0.05)
    # the moving statistics are float32 on both sides: the same up to float32 rounding
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)


def test_moving_variance_takes_the_biased_batch_variance_by_hand():
    # batch [0, 4]: mean 2, biased variance 4 (Keras), unbiased 8 (the fused kernel's output);
    # from moving (0, 1) at momentum 0.9: mean 0.9·0 + 0.1·2 = 0.2, variance 0.9·1 + 0.1·4 = 1.3
    # (with the unbiased 8 it would be 1.7)
    layer = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, dtype="mixed_bfloat16")
    x = np.array([0.0, 4.0], "float32").reshape(2, 1, 1, 1)
    y = layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [0.2], rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [1.3], rtol=1e-6)
    # normalized with the biased variance: (0 - 2)/sqrt(4 + 1e-5) = -1 and +1, exact in bfloat16
    np.testing.assert_array_equal(tf.cast(y, tf.float32).numpy().ravel(), [-1.0, 1.0])


def test_the_wide_resnet_uses_it_and_a_saved_bfloat16_model_loads_to_the_same_logits(tmp_path):
    with precision_scope("mixed_bfloat16"):
        model = wide_resnet((8, 8, 3), 3, depth=10, width=1)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is FusedBatchNormalization for layer in bns)
    # a float32 model keeps Keras's own layer (it loads with Keras alone, as before)
    plain = wide_resnet((8, 8, 3), 3, depth=10, width=1)
    assert {type(layer) for layer in plain.layers if "bn" in layer.name} == {keras.layers.BatchNormalization}
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    assert not np.allclose(bns[0].moving_mean.numpy(), 0.0)  # the fused train step updated it
    path = tmp_path / "wrn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer(bns[0].name)) is FusedBatchNormalization
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False), "float32"),
                                  np.asarray(model(x, training=False), "float32"))
