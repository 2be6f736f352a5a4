import numpy as np
import pytest
import sklearn.neighbors
import tensorflow as tf
from detect_test_helpers import separation_auc

from tfdefense.detect import FeatureExtractor, KernelDensity
from tfdefense.detect.kernel_density import bandwidth_for

W = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")


def _linear_extractor():
    """Features: the 4 pixels of 2x2 images; logits: a fixed linear map (3 classes)."""
    flat = lambda x: tf.reshape(x, (-1, 4))  # noqa: E731
    return FeatureExtractor(flat, logits_fn=lambda x: flat(x) @ W)


def test_log_density_equals_sklearn_kernel_density_of_predicted_class():
    rng = np.random.default_rng(0)
    x_train = rng.uniform(size=(60, 2, 2, 1)).astype("float32")
    y_train = np.arange(60) % 3
    x = rng.uniform(size=(25, 2, 2, 1)).astype("float32")
    kd = KernelDensity(_linear_extractor(), bandwidth=0.3, batch_size=7).fit(x_train, y_train)
    got = kd.score(x)[:, 0]
    pred = np.argmax(x.reshape(-1, 4) @ W, axis=1)
    feats = x_train.reshape(-1, 4).astype(np.float64)
    want = [
        sklearn.neighbors.KernelDensity(bandwidth=0.3)
        .fit(feats[y_train == c])
        .score_samples(x[i].reshape(1, 4).astype(np.float64))[0]
        for i, c in enumerate(pred)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_kd_separates_fgsm_from_clean_and_noisy_mnist(mnist_cnn):
    kd = KernelDensity(FeatureExtractor(mnist_cnn.model), bandwidth=bandwidth_for("mnist"))
    kd.fit(mnist_cnn.x_train, mnist_cnn.y_train)
    (auc,) = separation_auc(kd, mnist_cnn)
    assert auc > 0.75  # measured 0.84 with this 2-epoch CNN and FGSM eps 0.2


def test_kd_needs_logits():
    with pytest.raises(ValueError, match="logits"):
        KernelDensity(FeatureExtractor(lambda x: tf.reshape(x, (-1, 4))))


def test_kd_rejects_non_positive_bandwidth():
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensity(_linear_extractor(), bandwidth=0.0)


def test_kd_rejects_training_set_missing_a_class():
    x = np.random.default_rng(0).uniform(size=(6, 2, 2, 1)).astype("float32")
    with pytest.raises(ValueError, match="classes \\[2\\] have none"):
        KernelDensity(_linear_extractor()).fit(x, np.array([0, 1, 0, 1, 0, 1]))


def test_kd_score_before_fit_raises():
    with pytest.raises(ValueError, match="fit"):
        KernelDensity(_linear_extractor()).score(np.zeros((1, 2, 2, 1), "float32"))


def test_unknown_dataset_bandwidth_raises():
    with pytest.raises(ValueError, match="published bandwidth"):
        bandwidth_for("imagenet")


def test_kd_config_round_trip():
    kd = KernelDensity(_linear_extractor(), bandwidth=0.26, batch_size=32)
    again = KernelDensity.from_config(kd.get_config(), _linear_extractor())
    assert again.get_config() == {"bandwidth": 0.26, "batch_size": 32}
