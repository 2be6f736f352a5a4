"""Tiny FM-Defense models trained once per test session on mnist_5k (CPU, about a minute)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import data
from tfdefense.models import DGMM, ComboVAE
from tfdefense.nets import small_cnn


def fgsm(classifier, x, y, eps=0.3):
    """A tiny inline FGSM (Goodfellow et al. 2015) so these tests need no attacks layer."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.sparse_categorical_crossentropy(y, classifier(x), from_logits=True)
    return tf.clip_by_value(x + eps * tf.sign(tape.gradient(loss, x)), 0.0, 1.0).numpy()


@pytest.fixture(scope="session")
def mnist():
    return {split: data.load_arrays("mnist_5k", split) for split in ("train", "validation", "test")}


@pytest.fixture(scope="session")
def fm_dgmm(mnist):
    """FM-Defense stage 1 alone: the DGMM, 4 epochs on mnist_5k's training split (seconds)."""
    keras.utils.set_random_seed(0)
    x, y = mnist["train"]
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    dgmm.compile(optimizer=keras.optimizers.Adam(1e-3))
    dgmm.fit(x, y, epochs=4, batch_size=64, verbose=0)
    return dgmm


@pytest.fixture(scope="session")
def fm_models(mnist, fm_dgmm):
    """The classifier and the combo-VAE on top of ``fm_dgmm`` (the minute of this file)."""
    keras.utils.set_random_seed(0)
    x, y = mnist["train"]
    clf = small_cnn((28, 28, 1), 10, width=16, dense_units=64)
    clf.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x, y, epochs=3, batch_size=64, verbose=0)
    dgmm = fm_dgmm
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=128,
                               discriminator_depth=2, reconstruction="bernoulli", seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3),
                discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9))
    history = vae.fit(x, epochs=8, batch_size=64, verbose=0)
    return {"classifier": clf, "dgmm": dgmm, "vae": vae, "history": history.history}


@pytest.fixture(scope="session")
def fgsm_test(mnist, fm_models):
    xt, yt = mnist["test"]
    x, y = xt[:200], yt[:200]
    return x, y, fgsm(fm_models["classifier"], x, y, 0.3)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
