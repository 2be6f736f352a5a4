"""The Detector base: LogisticDetector and ResistanceDetector through one interface.

Save/load round trips, serving specs whose one ``detect`` graph gives what ``detect`` gives,
and the base's own rules (registration, folder format, not exportable by default).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdefense.detect
from tfdefense import data, export
from tfdefense.detect import (
    Detector,
    LogisticDetector,
    MorphEngine,
    ResistanceDetector,
    register_detector,
    registered_detectors,
)
from tfdefense.models import DGMM, ComboVAE
from tfdefense.nets import small_cnn


# ------------------------------------------------------------------ the base itself
@register_detector
class _Threshold(Detector):
    """Stub: flags images whose mean is above a fitted threshold; reads a Keras model."""

    def __init__(self, net, margin=0.0):
        self.net, self.margin, self.threshold_ = net, margin, None

    def fit(self, x):
        self.threshold_ = float(np.mean(x)) + self.margin
        return self

    def score(self, x):
        return np.asarray(x).reshape(len(x), -1).mean(axis=1)

    def detect(self, x):
        s = self.score(x)
        return {"score": s}, s > self.threshold_

    def get_config(self):
        return {"margin": self.margin}

    def components(self):
        return {"net": self.net}

    def state(self):
        return {"threshold": np.asarray(self.threshold_)}

    @classmethod
    def from_parts(cls, config, components, state):
        det = cls(components["net"], **config)
        det.threshold_ = float(state["threshold"])
        return det


def test_default_folder_save_and_load_rebuild_a_registered_detector(tmp_path):
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    det = _Threshold(net, margin=0.25).fit(np.array([[0.0, 1.0], [1.0, 1.0]]))  # mean 0.75
    path = det.save(str(tmp_path / "det"))
    again = tfdefense.detect.load(path)
    assert isinstance(again, _Threshold) and again.margin == 0.25 and again.threshold_ == 1.0
    np.testing.assert_array_equal(again.net.get_weights()[0], net.get_weights()[0])
    assert _Threshold.load(path).threshold_ == 1.0
    with pytest.raises(ValueError, match="not a ResistanceDetector"):
        ResistanceDetector.load(path)


def test_unregistered_detector_does_not_save_and_base_is_not_exportable(tmp_path):
    class Plain(_Threshold):
        pass

    with pytest.raises(ValueError, match="register_detector"):
        Plain(None).save(str(tmp_path / "p"))
    with pytest.raises(ValueError, match="no exportable signatures"):
        export.for_serving(Plain(None), str(tmp_path / "m"), 1)
    with pytest.raises(NotImplementedError):
        Detector().score(np.zeros((1, 2)))


def test_load_of_a_folder_without_a_detector_or_of_an_npz_raises(tmp_path):
    with pytest.raises(ValueError, match="detector.json"):
        tfdefense.detect.load(str(tmp_path))
    with pytest.raises(ValueError, match=r"LogisticDetector.load\(path, model\)"):
        tfdefense.detect.load(str(tmp_path / "detector.npz"))


def test_the_library_detectors_are_registered_detectors():
    names = registered_detectors()
    assert names["LogisticDetector"] is LogisticDetector
    assert names["ResistanceDetector"] is ResistanceDetector
    assert issubclass(LogisticDetector, Detector) and issubclass(ResistanceDetector, Detector)


# ------------------------------------------------------------------- LogisticDetector
@pytest.fixture(scope="module")
def logistic():
    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_5k", "train")
    clean = x[300:330]
    adv = np.clip(clean + 0.3 * np.sign(np.random.default_rng(0).normal(size=clean.shape)),
                  0, 1).astype("float32")
    det = LogisticDetector(small_cnn(width=4, dense_units=8), features=["kd", "mahalanobis"],
                           md_magnitude=0.002)
    return det.fit(x[:60], y[:60], x_clean=clean, x_adv=adv), np.concatenate([clean[:4], adv[:4]])


def test_logistic_detector_graph_form_equals_its_numpy_scores(logistic):
    det, x = logistic
    features = det.features_tensor(tf.constant(x))
    np.testing.assert_allclose(features.numpy(), det.features_of(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(det.probability_tensor(det.features_of(x)).numpy(), det.score(x),
                               atol=1e-9)
    p = det.regression_parameters()
    z = ((det.features_of(x) - p["mean"]) / p["scale"]) @ p["coef"] + p["intercept"]
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-z)), det.score(x), atol=1e-9)


def test_logistic_detector_serving_spec_is_one_detect_signature(logistic):
    det, x = logistic
    spec = det.serving_spec()
    assert [s.name for s in spec.signatures] == ["detect"]
    assert sorted(spec.signatures[0].outputs) == ["features", "is_adversarial", "score"]
    out = tf.function(spec.signatures[0].fn)(tf.constant(x))
    report, flagged = det.detect(x)
    np.testing.assert_allclose(out["score"].numpy(), report["probability"], atol=1e-4)
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), flagged)
    assert spec.track == [det.model] and spec.input_shape == (28, 28, 1)


def test_unfitted_logistic_detector_is_not_exportable():
    det = LogisticDetector(small_cnn(width=4, dense_units=8), features=["kd"])
    assert not det.fitted
    with pytest.raises(ValueError, match="not fitted"):
        det.serving_spec()


# ----------------------------------------------------------------- ResistanceDetector
@pytest.fixture(scope="module")
def resistance():
    """An untrained tiny combo-VAE and classifier; thresholds fitted on hand-made resistances
    so that both clean and rejected decisions occur (an untrained engine's resistances are
    0 or 1 per image)."""
    keras.utils.set_random_seed(0)
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=4, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=4, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    x = data.load_arrays("mnist_5k", "test")[0][:24]
    engine = MorphEngine(vae, clf, codes=[0, 2, 3], n_morphs=6, samples_per_iteration=4,
                         max_iterations=8, seed=3).fit(x)
    r_val = np.array([[1.0, 1.0, 1.0]] * 9 + [[0.5, 1.0, 1.0]])
    det = ResistanceDetector(engine, rho=0.8, eta=0.9, batch_size=5).fit_resistance(r_val)
    return det, x


def test_resistance_detector_save_load_gives_the_same_report(resistance, tmp_path):
    det, x = resistance
    report, flagged = det.detect(x)
    assert set(report["decision"].tolist()) >= {0, 2}  # both outcomes exercised
    path = det.save(str(tmp_path / "resistance"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loaded detector is fitted: no refit warnings
        again = tfdefense.detect.load(path)
    assert isinstance(again, ResistanceDetector) and again.get_config() == det.get_config()
    np.testing.assert_array_equal(again.theta_r_, det.theta_r_)
    assert again.theta_d_ == det.theta_d_
    np.testing.assert_array_equal(again.engine.low_, det.engine.low_)
    report2, flagged2 = again.detect(x)
    np.testing.assert_array_equal(report2["resistance"], report["resistance"])
    np.testing.assert_array_equal(report2["decision"], report["decision"])
    np.testing.assert_array_equal(flagged2, flagged)


def test_resistance_tensors_equal_detect_and_eq5_by_hand(resistance):
    det, x = resistance
    report, flagged = det.detect(x)
    out = tf.function(det.resistance_tensors)(tf.constant(x))
    np.testing.assert_array_equal(out["resistance"].numpy(), report["resistance"])
    np.testing.assert_array_equal(out["decision"].numpy(), report["decision"])
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), flagged)
    # Eq 5 on a hand case: theta_r = [1, 1, 1] (the fitted 0.8-quantile of r_val)
    assert det.theta_r_.tolist() == [1.0, 1.0, 1.0]
    r = tf.constant([[1.0, 1.0, 1.0], [0.5, 1.0, 0.75], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(det.distance_tensor(r).numpy(), [0.0, 0.75, 3.0])
    # theta_d = 0.5 (the only flagged validation distance): 0 clean, <= 0.5 purified, else rejected
    assert det.theta_d_ == 0.5
    assert det.decision_tensor(tf.constant([0.0, 0.5, 0.75])).numpy().tolist() == [0, 1, 2]


def test_resistance_detector_serving_spec_outputs(resistance):
    det, x = resistance
    spec = det.serving_spec()
    assert [s.name for s in spec.signatures] == ["detect"]
    assert sorted(spec.signatures[0].outputs) == ["decision", "distance", "is_adversarial",
                                                  "resistance", "score"]
    assert spec.metadata["theta_r"] == [1.0, 1.0, 1.0] and spec.metadata["codes"] == [0, 2, 3]
    assert spec.track == [det.engine.combo_vae, det.engine.classifier]


@pytest.mark.slow
def test_exported_resistance_detector_detects_as_the_python_detector(resistance, tmp_path):
    det, x = resistance
    loaded = tf.saved_model.load(export.for_serving(det, str(tmp_path / "resistance"), 1))
    out = loaded.signatures["detect"](images=tf.constant(x))
    report, flagged = det.detect(x)
    np.testing.assert_array_equal(out["resistance"].numpy(), report["resistance"])
    np.testing.assert_array_equal(out["decision"].numpy(), report["decision"])
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), flagged)
    np.testing.assert_allclose(out["score"].numpy(), report["distance"], atol=1e-6)


def test_unfitted_resistance_detector_is_not_exportable(resistance):
    det, _ = resistance
    with pytest.raises(ValueError, match="fit"):
        ResistanceDetector(det.engine).serving_spec()
