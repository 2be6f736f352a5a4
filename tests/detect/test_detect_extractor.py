import numpy as np
import pytest
import tensorflow as tf

from tfdefense.detect import FeatureExtractor
from tfdefense.nets import small_cnn


@pytest.fixture(scope="module")
def cnn():
    return small_cnn((28, 28, 1), 10, width=4, dense_units=8)


def _images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype("float32")


def test_default_layer_is_penultimate_and_logits_come_along(cnn):
    acts, logits = FeatureExtractor(cnn).extract(_images())
    assert [a.shape for a in acts] == [(3, 8)]
    np.testing.assert_allclose(logits, cnn.predict(_images(), verbose=0), rtol=1e-5, atol=1e-5)


def test_all_layers_skip_flatten_and_keep_logits(cnn):
    fx = FeatureExtractor(cnn, layers="all")
    kinds = [type(cnn.get_layer(n)).__name__ for n in fx.layers]
    assert "Flatten" not in kinds and "InputLayer" not in kinds
    assert fx.layers[-1] == "logits" and "penultimate" in fx.layers


def test_mean_reduction_averages_conv_maps_over_space(cnn):
    conv = cnn.layers[1].name
    flat, _ = FeatureExtractor(cnn, layers=[conv]).extract(_images())
    mean, _ = FeatureExtractor(cnn, layers=[conv], reduce="mean").extract(_images())
    np.testing.assert_allclose(mean[0], flat[0].reshape(3, 28 * 28, 4).mean(1), rtol=1e-5)


def test_transform_is_applied_before_the_model(cnn):
    # everything mapped to the same image -> identical activations for different inputs
    fx = FeatureExtractor(cnn, transform=lambda x: tf.zeros_like(x) + 0.5)
    acts, _ = fx.extract(_images(4))
    np.testing.assert_allclose(acts[0], np.repeat(acts[0][:1], 4, axis=0), rtol=1e-6)


def test_callable_returning_dict_gives_sorted_columns_without_logits():
    fx = FeatureExtractor(lambda x: {"b": 2.0 * x, "a": x[:, :1]})
    acts, logits = fx.extract(_images(2))
    assert [a.shape for a in acts] == [(2, 28), (2, 784)] and logits is None
    assert not fx.has_logits


def test_unknown_layer_name_raises(cnn):
    with pytest.raises(ValueError, match="unknown layer names \\['nope'\\]"):
        FeatureExtractor(cnn, layers=["nope"])


def test_unknown_reduction_raises(cnn):
    with pytest.raises(ValueError, match="reduce"):
        FeatureExtractor(cnn, reduce="max")


def test_images_out_of_range_raise(cnn):
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        FeatureExtractor(cnn).extract(_images() * 255)


def test_images_of_wrong_shape_raise(cnn):
    with pytest.raises(ValueError, match="shape"):
        FeatureExtractor(cnn).extract(np.zeros((2, 32, 32, 3), "float32"))
