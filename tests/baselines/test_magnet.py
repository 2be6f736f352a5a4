"""MagNet on real MNIST (mnist_5k): detectors, thresholds, reformer, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import data
from tfdefense.baselines import (
    MNIST_STRUCTURE_I,
    MNIST_STRUCTURE_II,
    DenoisingAutoEncoder,
    MagNet,
    magnet_autoencoder,
)
from tfdefense.defend import REJECTED, Defense
from tfdefense.nets import small_cnn

RATE = 0.002  # 1 / 500: mnist_5k has 500 validation images


def _train_ae(structure, x):
    keras.utils.set_random_seed(0)
    dae = DenoisingAutoEncoder(magnet_autoencoder(structure), noise_std=0.1, seed=0)
    dae.compile(optimizer=keras.optimizers.Adam(3e-2))
    dae.fit(x, batch_size=16, epochs=4, verbose=0)
    return dae


@pytest.fixture(scope="module")
def mnist():
    return {split: data.load_arrays("mnist_5k", split) for split in ("train", "validation", "test")}


@pytest.fixture(scope="module")
def magnet(mnist):
    x, y = mnist["train"]
    x, y = x[:2000], y[:2000]
    ae_i = _train_ae(MNIST_STRUCTURE_I, x)
    ae_ii = _train_ae(MNIST_STRUCTURE_II, x)
    keras.utils.set_random_seed(0)
    clf = small_cnn(width=8, dense_units=32)
    clf.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x, y, batch_size=32, epochs=2, verbose=0)
    model = MagNet(clf, ae_i, ae_ii, rejection_rate=RATE)
    model.fit_thresholds(mnist["validation"][0])
    return model


def test_autoencoders_follow_the_paper_table():
    ae_i = magnet_autoencoder(MNIST_STRUCTURE_I)
    kinds = [type(layer).__name__ for layer in ae_i.layers[1:]]
    assert kinds == ["Conv2D", "AveragePooling2D", "Conv2D", "Conv2D", "UpSampling2D",
                     "Conv2D", "Conv2D"]
    convs = [layer for layer in ae_i.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [3, 3, 3, 3, 1]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert all(c.activation.__name__ == "sigmoid" for c in convs)
    ae_ii = magnet_autoencoder(MNIST_STRUCTURE_II)
    assert [c.filters for c in ae_ii.layers if isinstance(c, keras.layers.Conv2D)] == [3, 3, 1]


@pytest.mark.parametrize("structure", [(), (0,), (3, "median"), "3", (3, True)])
def test_autoencoder_rejects_bad_structure(structure):
    with pytest.raises(ValueError, match="structure"):
        magnet_autoencoder(structure)


def test_autoencoder_rejects_indivisible_shape():
    with pytest.raises(ValueError, match="input_shape"):
        magnet_autoencoder((3, "average", 3, "average"), input_shape=(30, 30, 1))


def test_reformer_output_close_to_clean_input(magnet, mnist):
    x = mnist["test"][0]
    reformed = magnet.reform(x).numpy()
    mse = float(np.mean((reformed - x) ** 2))
    baseline = float(np.mean((x - x.mean(axis=0)) ** 2))  # predicting the mean image
    assert mse < 0.15 * baseline, (mse, baseline)


def test_thresholds_reject_at_most_the_rate_on_clean_validation(magnet, mnist):
    xv = mnist["validation"][0]
    report, flagged = magnet.detect(xv)
    for d in ("I", "II"):
        assert report[f"rejected_{d}"].mean() <= RATE
    assert flagged.mean() <= 2 * RATE
    assert (magnet.predict(xv) == REJECTED).mean() <= 2 * RATE


def test_detectors_reject_noise_and_pass_clean_test(magnet, mnist):
    x, y = mnist["test"]
    labels = magnet.predict(x)
    assert (labels == REJECTED).mean() < 0.05
    kept = labels != REJECTED
    assert (labels[kept] == y[kept]).mean() > 0.8
    noise = np.random.default_rng(0).random((200, 28, 28, 1)).astype("float32")
    assert (magnet.predict(noise) == REJECTED).mean() > 0.95
    # a large perturbation of digits is caught too
    noisy = np.clip(x[:200] + np.random.default_rng(1).normal(0, 0.3, x[:200].shape), 0, 1)
    assert (magnet.predict(noisy.astype("float32")) == REJECTED).mean() > 0.5


def test_predict_agrees_with_detect_and_reformed_logits(magnet, mnist):
    x = mnist["test"][0][:300]
    labels = magnet.predict(x)
    _, flagged = magnet.detect(x)
    np.testing.assert_array_equal(labels == REJECTED, flagged)
    direct = np.argmax(magnet.reformed_logits(x).numpy(), axis=1)
    np.testing.assert_array_equal(labels[~flagged], direct[~flagged])
    assert isinstance(magnet, Defense) and labels.dtype == np.int64


def test_adaptive_attack_through_the_reformer(magnet, mnist):
    # white-box PGD (eps 0.3, 10 steps) on classifier(reformer(x)): the reformer is
    # differentiable, which is how Carlini & Wagner (2017) broke MagNet
    x, y = mnist["test"]
    x, y = tf.constant(x[:200]), tf.constant(y[:200])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    adv = x
    for _ in range(10):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            loss = loss_fn(y, magnet.reformed_logits(adv))
        grad = tape.gradient(loss, adv)
        adv = tf.clip_by_value(adv + 0.05 * tf.sign(grad), x - 0.3, x + 0.3)
        adv = tf.clip_by_value(adv, 0.0, 1.0)
    clean_acc = np.mean(np.argmax(magnet.reformed_logits(x), 1) == y.numpy())
    adv_acc = np.mean(np.argmax(magnet.reformed_logits(adv), 1) == y.numpy())
    assert clean_acc > 0.8 and adv_acc < 0.3, (clean_acc, adv_acc)


def test_fit_thresholds_refuses_too_few_images(magnet, mnist):
    with pytest.raises(ValueError, match="at least 500"):
        magnet.fit_thresholds(mnist["validation"][0][:499])


def test_predict_before_fitting_raises():
    model = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
                   magnet_autoencoder(MNIST_STRUCTURE_II))
    with pytest.raises(ValueError, match="fit_thresholds"):
        model.predict(np.zeros((2, 28, 28, 1), "float32"))


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, float("nan"), "0.1"])
def test_bad_rejection_rate(rate):
    with pytest.raises(ValueError, match="rejection_rate"):
        MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
               magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=rate)


@pytest.mark.parametrize("noise_std", [-0.1, float("inf")])
def test_bad_noise_std(noise_std):
    with pytest.raises(ValueError, match="noise_std"):
        DenoisingAutoEncoder(magnet_autoencoder(), noise_std=noise_std)


BAD_IMAGES = {
    "rank": np.zeros((2, 28, 28), "float32"),
    "shape": np.zeros((2, 32, 32, 1), "float32"),
    "range": np.full((2, 28, 28, 1), 2.0, "float32"),
    "negative": np.full((2, 28, 28, 1), -0.5, "float32"),
    "nan": np.full((2, 28, 28, 1), np.nan, "float32"),
    "uint8": np.zeros((2, 28, 28, 1), "uint8"),
    "empty": np.zeros((0, 28, 28, 1), "float32"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
@pytest.mark.parametrize("method", ["predict", "fit_thresholds", "scores", "detect"])
def test_bad_images(magnet, method, name):
    with pytest.raises(ValueError, match="x"):
        getattr(magnet, method)(BAD_IMAGES[name])


def test_keras_round_trip(magnet, mnist, tmp_path):
    x = mnist["test"][0][:200]
    path = str(tmp_path / "magnet.keras")
    magnet.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MagNet)
    np.testing.assert_array_equal(loaded.thresholds.numpy(), magnet.thresholds.numpy())
    np.testing.assert_array_equal(loaded.predict(x), magnet.predict(x))
    for d in ("I", "II"):
        np.testing.assert_array_equal(loaded.scores(x)[d], magnet.scores(x)[d])
    np.testing.assert_array_equal(loaded(x[:5]).numpy(), magnet(x[:5]).numpy())
    assert loaded.rejection_rate == RATE


def test_config_round_trip(magnet):
    clone = MagNet.from_config(magnet.get_config())
    assert clone.rejection_rate == magnet.rejection_rate
    assert clone.batch_size == magnet.batch_size
    assert not clone.fitted  # thresholds are weights, not config


def test_denoising_autoencoder_round_trip(tmp_path):
    dae = DenoisingAutoEncoder(magnet_autoencoder(MNIST_STRUCTURE_II), noise_std=0.2, seed=3)
    dae.compile(optimizer="adam")
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    history = dae.fit(x, batch_size=8, epochs=1, verbose=0, validation_data=(x,))
    assert set(history.history) == {"loss", "reconstruction_loss", "val_loss",
                                    "val_reconstruction_loss"}
    path = str(tmp_path / "dae.keras")
    dae.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.noise_std == 0.2 and loaded.seed == 3
    np.testing.assert_array_equal(loaded(x).numpy(), dae(x).numpy())
