"""ComboVAE (FM-Defense §III-B) at its edges, on hand-set 2x2x1 models: a saturated Bernoulli
decoder, z_u as the class mean of the DGMM's inference-mode prediction, and ``fit`` on a
dataset (the first batch checked, an empty one refused).

Images are flattened row-major as [x00, x01, x10, x11].
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_models import SHAPE, NegatedInTraining, constant_dense, flat_model

from tfdefense.models import DGMM, ComboVAE
from tfdefense.models.combo_vae import reconstruction_loss


def hand_dgmm():
    """z_u = 1.5 for every x at inference (−1.5 in training mode); two classes N(0, 1) and
    N(2, 2²)."""
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [1.5], NegatedInTraining()), num_classes=2)
    dgmm.means.assign([[0.0], [2.0]])
    dgmm.log_scales.assign([[0.0], [math.log(2.0)]])
    return dgmm


def hand_vae(**kwargs):
    """μ = 1 (log σ² = −20); x̂ = z_s·[0, 0.1, 0.2, 0.3] + z_u·[0.2, 0.2, 0.2, 0.2]."""
    z_s, z_u = keras.Input((1,)), keras.Input((1,))
    dense = constant_dense(4, [[0.0, 0.1, 0.2, 0.3], [0.2, 0.2, 0.2, 0.2]], np.zeros(4))
    dec = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(
        dense(keras.layers.Concatenate()([z_s, z_u]))))
    return ComboVAE(flat_model(2, np.zeros((4, 2)), [1.0, -20.0]), dec, hand_dgmm(), None,
                    **kwargs)


X = np.full((2, *SHAPE), 0.5, np.float32)


def test_bernoulli_loss_stays_finite_where_the_decoder_saturates():
    # x = [1, 0, 1, 0], x̂ = [1, 0, 0.5, 0.5]; x̂ is clipped to [1e-6, 1 − 1e-6]:
    #   −[ln(1 − 1e-6) + ln(1 − 1e-6) + ln 0.5 + ln 0.5] = 2·1e-6 + 2 ln 2 = 1.3862964
    x = tf.constant([1.0, 0.0, 1.0, 0.0], shape=(1, *SHAPE))
    x_hat = tf.constant([1.0, 0.0, 0.5, 0.5], shape=(1, *SHAPE))
    loss = float(reconstruction_loss(x, x_hat, "bernoulli")[0])
    assert loss == pytest.approx(2 * math.log(2.0) + 2e-6, abs=1e-5)


def test_class_mean_z_u_follows_the_inference_mode_dgmm():
    # z_u feature 1.5: log N(1.5; 0, 1) = −1.125 − ½ ln 2π = −2.0439385,
    #   log N(1.5; 2, 2²) = −0.03125 − ln 2 − ½ ln 2π = −1.6433357 -> class 1, mean 2.0
    # (in training mode the feature is −1.5: −2.0439385 vs −3.1433357 -> class 0, mean 0.0)
    vae = hand_vae(zu_mode="class_mean")
    np.testing.assert_allclose(vae.class_unique(X).numpy(), [[2.0], [2.0]])
    # x̂ = D([μ, z_u]) = 1·[0, 0.1, 0.2, 0.3] + 2·0.2 = [0.4, 0.5, 0.6, 0.7]
    np.testing.assert_allclose(vae(X).numpy().reshape(2, 4), [[0.4, 0.5, 0.6, 0.7]] * 2,
                               atol=1e-6)
    # the default mode passes the feature itself: 0.3 + [0, 0.1, 0.2, 0.3]
    np.testing.assert_allclose(hand_vae().reconstruct(X).numpy().reshape(2, 4),
                               [[0.3, 0.4, 0.5, 0.6]] * 2, atol=1e-6)


def test_fit_on_a_dataset_checks_its_first_batch_and_refuses_an_empty_one():
    vae = hand_vae()
    vae.compile(optimizer=keras.optimizers.SGD(0.0))
    history = vae.fit(tf.data.Dataset.from_tensor_slices(X).batch(2), epochs=1, verbose=0)
    # L_R = Σ(x − x̂)² with z_s ≈ 1: (0.5 − 0.3)² + 0.1² + 0 + 0.1² = 0.06
    assert history.history["reconstruction_loss"][0] == pytest.approx(0.06, abs=1e-3)
    with pytest.raises(ValueError, match=r"^x: the dataset is empty \(0 batches\)"):
        vae.fit(tf.data.Dataset.from_tensor_slices(X).take(0).batch(2), verbose=0)
    with pytest.raises(ValueError, match="x"):
        vae.fit(tf.data.Dataset.from_tensor_slices(X * 255).batch(2), verbose=0)
