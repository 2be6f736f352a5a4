import numpy as np
import pytest
import tensorflow as tf
from detect_test_helpers import separation_auc

from tfdefense.detect import FeatureExtractor, Mahalanobis
from tfdefense.nets import small_cnn


def _flat(transform=None):
    return FeatureExtractor(lambda x: tf.reshape(x, (-1, 4)), transform=transform)


def _data(seed=0, n=90):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[0.2, 0.3, 0.5, 0.5], [0.7, 0.6, 0.4, 0.5], [0.4, 0.8, 0.6, 0.3]])
    x = np.clip(centres[y] + 0.08 * rng.normal(size=(n, 4)), 0, 1)
    return x.reshape(n, 2, 2, 1).astype("float32"), y


def _numpy_score(f, means, precision):
    d = f[:, None, :] - means[None]
    return np.max(-0.5 * np.einsum("bcd,de,bce->bc", d, precision, d), axis=1)


def _numpy_fit(f, y):
    means = np.stack([f[y == c].mean(0) for c in range(3)])
    centred = f - means[y]
    return means, np.linalg.inv(centred.T @ centred / len(f))


def test_tied_covariance_score_equals_direct_numpy_computation():
    x, y = _data()
    query, _ = _data(seed=1, n=17)
    md = Mahalanobis(_flat(), num_classes=3, batch_size=5).fit(x, y)
    means, precision = _numpy_fit(x.reshape(-1, 4).astype(np.float64), y)
    want = _numpy_score(query.reshape(-1, 4).astype(np.float64), means, precision)
    np.testing.assert_allclose(md.score(query)[:, 0], want, rtol=1e-4, atol=1e-4)


def test_preprocessing_takes_the_gradient_through_the_transform():
    # transform 1 - x flips the gradient's sign: ignoring the transform would step the wrong way
    x, y = _data()
    query, _ = _data(seed=1, n=12)
    eps = 0.01
    md = Mahalanobis(_flat(transform=lambda v: 1.0 - v), magnitude=eps, num_classes=3).fit(x, y)
    means, precision = _numpy_fit(1.0 - x.reshape(-1, 4).astype(np.float64), y)
    f = 1.0 - query.reshape(-1, 4).astype(np.float64)
    d = f[:, None, :] - means[None]
    closest = np.argmax(-np.einsum("bcd,de,bce->bc", d, precision, d), axis=1)
    # loss 1/2 (f - mu)^T P (f - mu), f = 1 - x  ->  grad_x = -P (f - mu)
    grad = -(f - means[closest]) @ precision
    x_hat = query.reshape(-1, 4) - eps * np.where(grad >= 0, 1.0, -1.0)
    want = _numpy_score(1.0 - x_hat, means, precision)
    np.testing.assert_allclose(md.score(query)[:, 0], want, rtol=1e-4, atol=1e-4)


def test_preprocessing_raises_the_confidence_of_clean_inputs():
    x, y = _data()
    scores = Mahalanobis(_flat(), num_classes=3).fit(x, y).score_grid(x, [0.0, 0.005])
    assert np.all(scores[0.005] > scores[0.0])


def test_each_layer_gets_its_own_preprocessing_as_if_scored_alone():
    cnn = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 28, 28, 1)).astype("float32")
    y = np.arange(40) % 10
    conv = cnn.layers[2].name
    both = Mahalanobis(FeatureExtractor(cnn, layers=[conv, "penultimate"]), batch_size=16)
    grid = both.fit(x, y).score_grid(x[:20], [0.0, 0.01])
    for column, layer in enumerate([conv, "penultimate"]):
        alone = Mahalanobis(FeatureExtractor(cnn, layers=[layer]), magnitude=0.01).fit(x, y)
        np.testing.assert_allclose(grid[0.01][:, column], alone.score(x[:20])[:, 0], rtol=1e-4)
    assert not np.allclose(grid[0.01], grid[0.0])


def test_mahalanobis_separates_fgsm_from_clean_and_noisy_mnist(mnist_cnn):
    last_conv = [lyr.name for lyr in mnist_cnn.model.layers if "conv" in lyr.name][-1]
    fx = FeatureExtractor(mnist_cnn.model, layers=[last_conv, "penultimate"])
    md = Mahalanobis(fx, magnitude=0.002).fit(mnist_cnn.x_train, mnist_cnn.y_train)
    auc_conv, auc_penultimate = separation_auc(md, mnist_cnn)
    assert auc_conv > 0.9  # measured 0.99
    assert auc_penultimate > 0.7  # measured 0.78


def test_class_with_one_sample_is_too_few_for_a_covariance():
    x, y = _data(n=7)  # class 0 gets 3 samples, class 1 and 2 get 2
    y = np.array([0, 0, 0, 0, 0, 1, 2])
    with pytest.raises(ValueError, match="at least 2 samples per class"):
        Mahalanobis(_flat(), num_classes=3).fit(x, y)


def test_negative_magnitude_raises():
    with pytest.raises(ValueError, match="magnitude"):
        Mahalanobis(_flat(), magnitude=-0.001)


def test_labels_out_of_range_raise():
    x, y = _data()
    with pytest.raises(ValueError, match="class ids"):
        Mahalanobis(_flat(), num_classes=2).fit(x, y)


def test_mahalanobis_config_round_trip():
    md = Mahalanobis(_flat(), magnitude=0.0014, num_classes=3, batch_size=50)
    assert Mahalanobis.from_config(md.get_config(), _flat()).get_config() == md.get_config()
