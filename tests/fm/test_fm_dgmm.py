"""DGMM: honest accuracy on mnist_5k, the TFP mixture, parameters, bad input, round trips."""

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

from tfdefense.models import DGMM


def _tiny_dgmm(**kwargs):
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    return DGMM(net, num_classes=10, seed=0, **kwargs)


def test_dgmm_learns_mnist_5k(fm_dgmm, mnist):
    """Stage 1 after 4 epochs on 3,500 images: the GM posterior classifies held-out digits."""
    xt, yt = mnist["test"]
    dgmm = fm_dgmm
    accuracy = float(np.mean(dgmm.predict_labels(xt) == yt))
    assert accuracy > 0.9, accuracy
    # L_lkd pulls features towards their class mean: own-class mean closer than others
    z = dgmm.encode(xt[:200]).numpy()
    d = np.linalg.norm(z[:, None] - dgmm.means.numpy()[None], axis=-1)
    own = d[np.arange(200), yt[:200]]
    assert np.mean(own < np.median(d, axis=1)) > 0.9


def test_mixture_is_tfp_mixture_same_family():
    dgmm = _tiny_dgmm(identity_covariance=True)
    mix = dgmm.mixture()
    assert isinstance(mix, tfp.distributions.MixtureSameFamily)
    assert mix.event_shape == (3,)
    assert np.allclose(mix.components_distribution.stddev().numpy(), 1.0)
    assert dgmm.log_scales.trainable is False
    assert np.isfinite(mix.log_prob(mix.sample(4, seed=0)).numpy()).all()


def test_train_and_test_step_report_the_same_keys(rng):
    dgmm = _tiny_dgmm(margin=0.2)
    dgmm.compile(optimizer="adam")
    x = rng.random((16, 28, 28, 1), dtype="float32")
    y = np.arange(16) % 10
    hist = dgmm.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_data=(x, y)).history
    assert set(hist) == {"loss", "cls_loss", "lkd_loss", "accuracy", "val_loss",
                         "val_cls_loss", "val_lkd_loss", "val_accuracy"}


def test_keras_round_trip_identical_outputs(tmp_path, rng):
    dgmm = _tiny_dgmm(lambda_lkd=0.3, margin=0.1)
    dgmm.compile(optimizer="adam")
    x = rng.random((8, 28, 28, 1), dtype="float32")
    dgmm.fit(x, np.arange(8), epochs=1, verbose=0)
    config = DGMM.from_config(dgmm.get_config()).get_config()
    assert config["lambda_lkd"] == 0.3 and config["margin"] == 0.1 and config["seed"] == 0
    dgmm.save(tmp_path / "dgmm.keras")
    loaded = keras.models.load_model(tmp_path / "dgmm.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), dgmm(x).numpy())
    np.testing.assert_array_equal(loaded.means.numpy(), dgmm.means.numpy())


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 1}, "num_classes"), ({"lambda_lkd": -0.1}, "lambda_lkd"),
    ({"margin": -1.0}, "margin"), ({"identity_covariance": "yes"}, "identity_covariance"),
])
def test_bad_params(kwargs, match):
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=match):
        DGMM(net, **{"num_classes": 10, **kwargs})


def test_bad_inputs(rng):
    dgmm = _tiny_dgmm()
    dgmm.compile(optimizer="adam")
    x = rng.random((4, 28, 28, 1), dtype="float32")
    with pytest.raises(ValueError, match="range"):
        dgmm.fit(x * 255, np.arange(4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="class ids"):
        dgmm.fit(x, np.array([0, 1, 2, 10]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        dgmm.predict_labels(np.full((1, 28, 28, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match="network"):
        DGMM("not a model")
