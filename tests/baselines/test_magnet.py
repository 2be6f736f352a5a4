"""MagNet on real MNIST (mnist_5k) and on hand-made stubs: detectors, thresholds, margin,
reformer, the Defense interface, saving and serving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdefense.defend
import tfdefense.detect
from tfdefense import data, export
from tfdefense.baselines import (
    MNIST_STRUCTURE_I,
    MNIST_STRUCTURE_II,
    DenoisingAutoEncoder,
    MagNet,
    MagNetDetector,
    magnet_autoencoder,
)
from tfdefense.decisions import Decision
from tfdefense.defend import REJECTED, Defense
from tfdefense.detect import Detector
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


def test_predict_agrees_with_detect_margin_and_logits(magnet, mnist):
    # real digits plus noisy ones, so both outcomes occur
    x = mnist["test"][0][:300].copy()
    x[:40] = np.clip(x[:40] + np.random.default_rng(2).normal(0, 0.3, x[:40].shape), 0, 1)
    labels, decisions = magnet.predict_with_decisions(x)
    report, flagged = magnet.detect(x)
    assert 0 < flagged.sum() < len(x)
    np.testing.assert_array_equal(labels == REJECTED, flagged)
    np.testing.assert_array_equal(decisions, np.where(flagged, Decision.REJECTED, Decision.ACCEPTED))
    margin = magnet.detection_margin(tf.constant(x)).numpy()
    np.testing.assert_array_equal(margin > 0, flagged)
    np.testing.assert_allclose(margin, report["score"], rtol=1e-6, atol=1e-7)
    direct = np.argmax(magnet.logits(x).numpy(), axis=1)
    np.testing.assert_array_equal(labels[~flagged], direct[~flagged])
    assert labels.dtype == np.int64 and decisions.dtype == np.int32


def test_magnet_is_a_defense_holding_its_models_not_a_keras_model(magnet):
    assert isinstance(magnet, Defense) and not isinstance(magnet, keras.Model)
    assert isinstance(magnet.detector, Detector) and isinstance(magnet.detector, MagNetDetector)
    assert magnet.detects and not magnet.stochastic
    assert set(magnet.components()) == {"classifier", "autoencoder_i", "autoencoder_ii"}
    assert magnet.autoencoder_i is magnet.detector.autoencoder_i


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
            loss = loss_fn(y, magnet.logits(adv))
        grad = tape.gradient(loss, adv)
        adv = tf.clip_by_value(adv + 0.05 * tf.sign(grad), x - 0.3, x + 0.3)
        adv = tf.clip_by_value(adv, 0.0, 1.0)
    clean_acc = np.mean(np.argmax(magnet.logits(x), 1) == y.numpy())
    adv_acc = np.mean(np.argmax(magnet.logits(adv), 1) == y.numpy())
    assert clean_acc > 0.8 and adv_acc < 0.3, (clean_acc, adv_acc)


def test_fit_thresholds_refuses_too_few_images(magnet, mnist):
    with pytest.raises(ValueError, match="at least 500"):
        magnet.fit_thresholds(mnist["validation"][0][:499])


@pytest.mark.parametrize("method", ["predict", "detect", "score", "detection_margin"])
def test_use_before_fitting_raises(method):
    model = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
                   magnet_autoencoder(MNIST_STRUCTURE_II))
    owner = model.detector if method == "score" else model
    with pytest.raises(ValueError, match="fit_thresholds"):
        getattr(owner, method)(np.zeros((2, 28, 28, 1), "float32"))


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
    if method == "predict" and name == "empty":
        return  # Defense.predict answers an empty batch with no labels (next test)
    with pytest.raises(ValueError, match="x"):
        getattr(magnet, method)(BAD_IMAGES[name])


def test_predict_on_an_empty_batch_gives_no_labels(magnet):
    labels, decisions = magnet.predict_with_decisions(BAD_IMAGES["empty"])
    assert labels.shape == decisions.shape == (0,)


def test_save_and_load_round_trip(magnet, mnist, tmp_path):
    x = mnist["test"][0][:200].copy()
    x[:30] = np.clip(x[:30] + np.random.default_rng(3).normal(0, 0.3, x[:30].shape), 0, 1)
    path = magnet.save(str(tmp_path / "magnet"))
    assert sorted(os.listdir(path)) == ["autoencoder_i.keras", "autoencoder_ii.keras",
                                        "classifier.keras", "defense.json", "state.npz"]
    loaded = tfdefense.defend.load(path)
    assert isinstance(loaded, MagNet) and loaded.fitted
    np.testing.assert_array_equal(loaded.thresholds.numpy(), magnet.thresholds.numpy())
    labels, decisions = magnet.predict_with_decisions(x)
    assert (labels == REJECTED).any() and (labels != REJECTED).any()
    for got, want in zip(loaded.predict_with_decisions(x), (labels, decisions), strict=True):
        np.testing.assert_array_equal(got, want)
    for d in ("I", "II"):
        np.testing.assert_array_equal(loaded.scores(x)[d], magnet.scores(x)[d])
    np.testing.assert_array_equal(loaded.logits(x[:5]).numpy(), magnet.logits(x[:5]).numpy())
    assert (loaded.rejection_rate, loaded.batch_size) == (RATE, magnet.batch_size)


def test_parts_without_thresholds_rebuild_an_unfitted_magnet(magnet):
    clone = MagNet.from_parts(magnet.get_config(), magnet.components(), {})
    assert (clone.rejection_rate, clone.batch_size) == (magnet.rejection_rate, magnet.batch_size)
    assert not clone.fitted  # thresholds are state, not config


# ------------------------------------------------- hand cases on stub autoencoders
SIDE = 4  # 4x4x1 images: 16 pixels


def _stub_magnet(rate=0.1):
    """Autoencoder I outputs 0, autoencoder II halves its input; the classifier says 1 on 0s.

    On a constant image of value v: error I (MSE against 0) = v², error II (MAE against
    v / 2) = v / 2, and the reformed image is all 0.
    """
    ae_i = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Rescaling(0.0)])
    ae_ii = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Rescaling(0.5)])
    clf = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3, kernel_initializer="ones",
                                               bias_initializer=keras.initializers.Constant(
                                                   [0.0, 1.0, 0.0]))])
    return MagNet(clf, ae_i, ae_ii, rejection_rate=rate)


def _constant_images(values):
    return np.stack([np.full((SIDE, SIDE, 1), v, np.float32) for v in values])


@pytest.fixture(scope="module")
def stub():
    model = _stub_magnet()
    # ten images 0.1 ... 1.0 at a 10% rate: k = 1 rejected, the threshold is the second largest
    model.fit_thresholds(_constant_images(np.arange(1, 11) / 10))
    return model


def test_thresholds_are_the_largest_accepted_validation_scores(stub):
    np.testing.assert_allclose(stub.thresholds.numpy(), [0.9**2, 0.9 / 2], rtol=1e-6)


def test_detection_margin_is_the_largest_error_over_its_threshold(stub):
    x = _constant_images([0.5, 0.95, 1.0, 0.9])
    margin = stub.detection_margin(tf.constant(x)).numpy()
    # 0.5: max(0.25 - 0.81, 0.25 - 0.45) = -0.2 (detector II closest); 0.95: max(0.9025 - 0.81,
    # 0.475 - 0.45) = 0.0925; 1.0: max(0.19, 0.05); 0.9: both errors equal their thresholds
    np.testing.assert_allclose(margin, [-0.2, 0.0925, 0.19, 0.0], atol=1e-6)
    assert margin[3] == 0.0  # a score equal to its threshold is accepted, not rejected


def test_detection_margin_gradient_follows_the_detector_that_is_closest(stub):
    x = tf.constant(_constant_images([0.5, 0.95]))
    with tf.GradientTape() as tape:
        tape.watch(x)
        margin = stub.detection_margin(x)
    grad = tape.gradient(margin, x).numpy()
    # 0.5: d/dx mean|x - x/2| = 0.5 / 16 per pixel (detector II); 0.95: d/dx mean(x²) = 2 x / 16
    np.testing.assert_allclose(grad[0], 0.5 / 16, rtol=1e-5)
    np.testing.assert_allclose(grad[1], 2 * 0.95 / 16, rtol=1e-5)


def test_defend_rejects_with_label_minus_one_and_decision_two(stub):
    x = _constant_images([0.5, 0.95, 1.0, 0.9])
    labels, decisions = (t.numpy() for t in stub.defend(tf.constant(x)))
    np.testing.assert_array_equal(labels, [1, -1, -1, 1])  # the reformed image is 0: label 1
    np.testing.assert_array_equal(decisions, [0, 2, 2, 0])
    assert labels.dtype == np.int64 and decisions.dtype == np.int32
    np.testing.assert_array_equal(stub.predict(x), labels)


def test_detect_reports_each_detector_and_the_margin(stub):
    report, flagged = stub.detect(_constant_images([0.5, 0.95, 1.0]))
    np.testing.assert_allclose(report["score_I"], [0.25, 0.9025, 1.0], rtol=1e-6)
    np.testing.assert_allclose(report["score_II"], [0.25, 0.475, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(report["rejected_I"], [False, True, True])
    np.testing.assert_array_equal(report["rejected_II"], [False, True, True])
    np.testing.assert_allclose(report["score"], [-0.2, 0.0925, 0.19], atol=1e-6)
    np.testing.assert_array_equal(flagged, [False, True, True])
    np.testing.assert_allclose(stub.detector.score(_constant_images([0.95])), [0.0925], atol=1e-6)


def test_detector_saves_and_loads_through_the_detector_base(stub, tmp_path):
    path = stub.detector.save(str(tmp_path / "det"))
    loaded = tfdefense.detect.load(path)
    assert isinstance(loaded, MagNetDetector) and loaded.get_config() == stub.detector.get_config()
    x = _constant_images([0.5, 0.95, 1.0])
    for got, want in zip(loaded.detect(x), stub.detector.detect(x), strict=True):
        if isinstance(got, dict):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
        else:
            np.testing.assert_array_equal(got, want)
    assert MagNetDetector.load(path).fitted


def test_detector_exports_a_detect_signature_equal_to_detect(stub, tmp_path):
    path = export.for_serving(stub.detector, str(tmp_path / "det"), 1)
    loaded = tf.saved_model.load(path)
    x = _constant_images([0.5, 0.95, 1.0, 0.2])
    out = loaded.signatures["detect"](images=tf.constant(x))
    report, flagged = stub.detector.detect(x)
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), flagged)
    np.testing.assert_allclose(out["score"].numpy(), report["score"], atol=1e-7)
    np.testing.assert_allclose(out["scores"].numpy()[:, 1], report["score_II"], rtol=1e-6)
    assert sorted(export.read_metadata(path)["signatures"]) == ["detect"]


def test_cli_exports_a_saved_magnet_folder(stub, tmp_path):
    from tfdefense.cli import main

    stub.save(str(tmp_path / "magnet"))
    assert main(["export", str(tmp_path / "magnet"), "--name", "mag", "--version", "1",
                 "--base-dir", str(tmp_path / "sm")]) == 0
    path = str(tmp_path / "sm" / "mag" / "1")
    assert sorted(export.read_metadata(path)["signatures"]) == ["defend", "detect",
                                                                "serving_default"]
    x = _constant_images([0.5, 0.95])
    out = tf.saved_model.load(path).signatures["defend"](images=tf.constant(x))
    np.testing.assert_array_equal(out["label"].numpy(), [1, -1])


def test_unfitted_detector_is_not_exported(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        export.for_serving(_stub_magnet().detector, str(tmp_path / "det"), 1)


@pytest.mark.parametrize("thresholds", [[0.1], [0.1, -0.2], [0.1, float("nan")], [1, 2, 3]])
def test_bad_thresholds(thresholds):
    with pytest.raises(ValueError, match="thresholds"):
        _stub_magnet().detector.set_thresholds(thresholds)


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
