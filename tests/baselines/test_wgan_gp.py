"""WGAN-GP: the custom train_step, its metrics, saving."""

import keras
import numpy as np
import pytest

from tfdefense import data
from tfdefense.baselines import WGANGP, defense_gan_critic, defense_gan_generator

KEYS = {"critic_loss", "generator_loss", "gradient_penalty", "wasserstein_distance"}


def _gan(**kwargs):
    return WGANGP(defense_gan_generator(latent_dim=8, width=4), defense_gan_critic(width=4),
                  seed=0, **kwargs)


def test_nets_follow_the_official_mnist_architecture():
    gen = defense_gan_generator()
    assert gen.input_shape == (None, 128) and gen.output_shape == (None, 28, 28, 1)
    deconvs = [lyr for lyr in gen.layers if isinstance(lyr, keras.layers.Conv2DTranspose)]
    assert [d.filters for d in deconvs] == [128, 64, 1]
    assert all(d.kernel_size == (5, 5) and d.strides == (2, 2) for d in deconvs)
    critic = defense_gan_critic()
    convs = [lyr for lyr in critic.layers if isinstance(lyr, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 256]
    assert critic.output_shape == (None, 1)


@pytest.mark.parametrize("shape", [(32, 32, 1), (28, 28, 0)])
def test_nets_reject_unsupported_shapes_naming_the_argument(shape):
    with pytest.raises(ValueError, match="output_shape"):
        defense_gan_generator(output_shape=shape)
    with pytest.raises(ValueError, match="input_shape"):
        defense_gan_critic(input_shape=shape)


def test_train_step_updates_both_networks_and_the_critic_learns():
    x = data.load_arrays("mnist_5k", "train")[0][:64]
    gan = _gan(critic_steps=5)
    gan.compile(critic_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9))
    gen_before = [w.numpy().copy() for w in gan.generator.trainable_weights]
    critic_before = [w.numpy().copy() for w in gan.critic.trainable_weights]
    before = gan.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    history = gan.fit(x, batch_size=32, epochs=2, verbose=0, validation_data=(x,))
    assert set(history.history) == KEYS | {f"val_{k}" for k in KEYS}
    for values in history.history.values():
        assert np.all(np.isfinite(values))
    assert all(v >= 0 for v in history.history["gradient_penalty"])
    changed = [not np.allclose(a, b.numpy()) for a, b in
               zip(gen_before, gan.generator.trainable_weights, strict=True)]
    assert all(changed)
    changed = [not np.allclose(a, b.numpy()) for a, b in
               zip(critic_before, gan.critic.trainable_weights, strict=True)]
    # the output bias cancels in D(G(z)) - D(x) and has no input gradient: it never moves
    assert all(changed[:-1]) and not changed[-1]
    # the critic learns to score real images above generated ones
    after = history.history["val_wasserstein_distance"][-1]
    assert after > max(0.0, before["wasserstein_distance"]) + 0.1, (before, after)


def test_training_closes_the_wasserstein_gap_on_toy_data():
    # toy data: one bright square, a little noise. The critic first opens a large gap between
    # real and generated scores; the generator then moves onto the square and the gap closes
    rng = np.random.default_rng(0)
    square = np.zeros((28, 28, 1), "float32")
    square[8:20, 8:20] = 1.0
    x = np.clip(square + 0.05 * rng.normal(size=(256, 28, 28, 1)), 0, 1).astype("float32")
    keras.utils.set_random_seed(0)
    gan = _gan()
    gan.compile(optimizer=keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.9),
                critic_optimizer=keras.optimizers.Adam(3e-3, beta_1=0.5, beta_2=0.9))
    z = rng.normal(size=(64, 8)).astype("float32")
    before = float(np.mean((gan(z).numpy() - square) ** 2))
    gap = gan.fit(x, batch_size=5 * 16, epochs=30, verbose=0).history["wasserstein_distance"]
    after = float(np.mean((gan(z).numpy() - square) ** 2))
    assert max(gap) > 5.0 and gap[-1] < 0.2 * max(gap), gap
    assert after < 0.1 * before, (before, after)


def test_each_critic_update_gets_its_own_real_images():
    # a batch of critic_steps * B images feeds B to each critic update: with B = 1 and a
    # constant generator, the critic's last update saw only the last image of the batch
    seen = []

    class Spy(keras.Model):
        def __init__(self, critic):
            super().__init__()
            self.inner = critic

        def call(self, images, training=False):
            seen.append(images)
            return self.inner(images, training=training)

    gan = WGANGP(defense_gan_generator(latent_dim=8, width=4), Spy(defense_gan_critic(width=4)),
                 critic_steps=3, seed=0)
    gan.compile()
    x = np.stack([np.full((28, 28, 1), v, "float32") for v in (0.1, 0.5, 0.9)])
    gan.train_step(x)
    # per critic update: real, fake, interpolates (penalty); then the generator's fakes
    reals = [float(np.mean(seen[3 * i])) for i in range(3)]
    np.testing.assert_allclose(reals, [0.1, 0.5, 0.9], rtol=1e-6)
    assert seen[-1].shape[0] == 1


def test_evaluate_reports_the_train_keys():
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    gan = _gan()
    gan.compile()
    assert set(gan.evaluate(x, batch_size=8, verbose=0, return_dict=True)) == KEYS


def test_same_seed_same_training():
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    outs = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        gan = _gan(critic_steps=1)
        gan.compile()
        gan.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
        outs.append(gan(np.ones((2, 8), "float32")).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_bad_critic_steps(value):
    with pytest.raises(ValueError, match="critic_steps"):
        _gan(critic_steps=value)


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_bad_gp_weight(value):
    with pytest.raises(ValueError, match="gp_weight"):
        _gan(gp_weight=value)


def test_keras_round_trip(tmp_path):
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    gan = _gan(critic_steps=3, gp_weight=5.0)
    gan.compile(critic_optimizer=keras.optimizers.Adam(3e-4))
    path = str(tmp_path / "gan.keras")
    gan.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, WGANGP)
    assert (loaded.critic_steps, loaded.gp_weight, loaded.seed) == (3, 5.0, 0)
    z = np.random.default_rng(1).normal(size=(4, 8)).astype("float32")
    np.testing.assert_array_equal(loaded(z).numpy(), gan(z).numpy())
    np.testing.assert_array_equal(loaded.critic(x).numpy(), gan.critic(x).numpy())
    assert loaded.compiled  # compiled again on load, with both optimizers
    assert float(loaded.critic_optimizer.learning_rate) == pytest.approx(3e-4)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(1e-4)


def test_config_round_trip():
    gan = _gan(critic_steps=4)
    clone = WGANGP.from_config(gan.get_config())
    assert (clone.critic_steps, clone.gp_weight, clone.latent_dim) == (4, 10.0, 8)
