"""ComboVAE and its TC discriminator: learning, gradient routing, config and .keras round trips."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.models import DGMM, ComboVAE
from tfdefense.models.combo_vae import discriminator_loss, permute_dims, tc_estimate
from tfdefense.nets import fm_decoder, fm_encoder, tc_discriminator


def _toy_batch(rng, n, rho=0.9):
    z1 = rng.normal(size=n)
    z2 = rho * z1 + math.sqrt(1 - rho**2) * rng.normal(size=n)
    return np.stack([z1, z2], 1).astype("float32")


def test_tc_discriminator_learns_correlated_toy_latent(rng):
    """Density-ratio trick on a correlated Gaussian: D beats chance, its TC ≈ −½ log(1 − ρ²)."""
    disc = tc_discriminator(2, units=64, depth=2)
    opt = keras.optimizers.Adam(1e-3)
    seed = keras.random.SeedGenerator(0)

    @tf.function
    def step(z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(discriminator_loss(disc(z), disc(permute_dims(z, seed))))
        grads = tape.gradient(loss, disc.trainable_variables)
        opt.apply(grads, disc.trainable_variables)
        return loss

    for _ in range(400):
        step(tf.constant(_toy_batch(rng, 256)))
    z = tf.constant(_toy_batch(rng, 4000))
    lq = disc(z).numpy().ravel()
    lp = disc(permute_dims(z, seed)).numpy().ravel()
    accuracy = 0.5 * ((lq > 0).mean() + (lp < 0).mean())
    assert accuracy > 0.6
    tc_true = -0.5 * math.log(1 - 0.9**2)  # 0.830 nats
    assert 0.5 * tc_true < float(tc_estimate(lq).numpy().mean()) < 1.5 * tc_true
    # on independent codes the same recipe stays near chance
    assert float(discriminator_loss(lq, lp).numpy().mean()) < math.log(2)


def _tiny_vae(discriminator=True, **kwargs):
    dgmm = DGMM(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(4)]), num_classes=10, seed=0)
    disc = tc_discriminator(3, units=16, depth=1) if discriminator else None
    return ComboVAE(fm_encoder((28, 28, 1), 3, filters=(4, 4, 4, 4), dense_units=8),
                    fm_decoder(3, 4, (28, 28, 1), filters=(4, 4, 4), dense_units=8,
                               base_filters=4),
                    dgmm, disc, seed=0, **kwargs)


def test_gradient_routing_and_frozen_dgmm(rng):
    x = rng.random((16, 28, 28, 1), dtype="float32")
    vae = _tiny_vae(gamma=40.0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2),
                discriminator_optimizer=keras.optimizers.SGD(0.0))
    dgmm_before = [w.numpy().copy() for w in vae.dgmm.weights]
    disc_before = [w.numpy().copy() for w in vae.discriminator.weights]
    enc_before = [w.numpy().copy() for w in vae.encoder.weights]
    hist = vae.fit(x, epochs=1, batch_size=8, verbose=0).history
    assert set(hist) == {"loss", "reconstruction_loss", "kl_loss", "tc_loss",
                         "discriminator_loss", "discriminator_accuracy"}
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(dgmm_before, vae.dgmm.weights))
    # the discriminator moves only with its own optimizer (here a zero learning rate)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(disc_before,
                                                              vae.discriminator.weights))
    assert not all(np.array_equal(a, b.numpy()) for a, b in zip(enc_before, vae.encoder.weights))
    assert set(vae.evaluate(x, verbose=0, return_dict=True)) == set(hist)


def test_without_discriminator_and_class_mean_mode(rng):
    x = rng.random((8, 28, 28, 1), dtype="float32")
    vae = _tiny_vae(discriminator=False, zu_mode="class_mean")
    vae.compile(optimizer="adam")
    hist = vae.fit(x, epochs=1, batch_size=8, verbose=0).history
    assert hist["tc_loss"] == [0.0]
    z_u = vae.class_unique(x).numpy()
    means = vae.dgmm.means.numpy()
    assert all(any(np.allclose(row, m) for m in means) for row in z_u)


def test_config_and_keras_round_trip(tmp_path, rng):
    x = rng.random((8, 28, 28, 1), dtype="float32")
    vae = _tiny_vae()
    vae.compile(optimizer="adam")
    vae.fit(x, epochs=1, batch_size=8, verbose=0)
    clone = ComboVAE.from_config(vae.get_config())
    assert clone.get_config()["gamma"] == 40.0 and clone.latent_dim == 3
    path = tmp_path / "combo.keras"
    vae.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), vae(x).numpy())
    np.testing.assert_array_equal(loaded.encode(x)[0].numpy(), vae.encode(x)[0].numpy())
    assert len(loaded.discriminator_optimizer.variables) == len(
        vae.discriminator_optimizer.variables)
    loaded.fit(x, epochs=1, batch_size=8, verbose=0)  # trains on after loading


def test_feature_map_latent(rng):
    """The face variant: codes are channels of a feature map (§III-A)."""
    from tfdefense.nets import fm_face_decoder, fm_face_encoder

    dgmm = DGMM(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(4)]), num_classes=2, seed=0)
    enc = fm_face_encoder((16, 16, 3), latent_channels=5, filters=(4, 4, 4),
                          residual_filters=8, residual_blocks=1)
    dec = fm_face_decoder((4, 4, 5), 4, 3, filters=(4, 4), residual_filters=8,
                          residual_blocks=1)
    vae = ComboVAE(enc, dec, dgmm, None, seed=0)
    vae.compile(optimizer="adam")
    x = rng.random((4, 16, 16, 3), dtype="float32")
    vae.fit(x, epochs=1, batch_size=4, verbose=0)
    assert vae.latent_shape == (4, 4, 5) and vae.reconstruct(x).shape == (4, 16, 16, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma": -1.0}, "gamma"), ({"beta": float("nan")}, "beta"),
    ({"reconstruction": "l1"}, "reconstruction"), ({"zu_mode": "labels"}, "zu_mode"),
])
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny_vae(**kwargs)


def test_bad_inputs(rng):
    vae = _tiny_vae()
    vae.compile(optimizer="adam")
    with pytest.raises(ValueError, match="range"):
        vae.fit(rng.random((4, 28, 28, 1)).astype("float32") * 255, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        vae.reconstruct(np.full((2, 28, 28, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match="shape"):
        vae.reconstruct(np.zeros((2, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match="dgmm"):
        ComboVAE(vae.encoder, vae.decoder, "not a dgmm")
