import numpy as np
import pytest
import tensorflow as tf
from detect_test_helpers import N_DETECT

from tfdefense.detect import LogisticDetector, make_noisy
from tfdefense.nets import small_cnn

FIT, HELD_OUT = slice(0, N_DETECT), slice(N_DETECT, 2 * N_DETECT)


@pytest.fixture(scope="module")
def fitted(mnist_cnn):
    det = LogisticDetector(mnist_cnn.model, lid_k=(10, 20, 40), md_magnitude=(0.0, 0.002, 0.01))
    ns = mnist_cnn
    return det.fit(ns.x_train, ns.y_train, ns.x[FIT], ns.x_adv[FIT], ns.x_noisy[FIT])


def test_detector_separates_held_out_fgsm_from_clean_and_noisy_mnist(fitted, mnist_cnn):
    ns = mnist_cnn
    m = fitted.evaluate(ns.x[HELD_OUT], ns.x_adv[HELD_OUT], ns.x_noisy[HELD_OUT])
    assert m.auc > 0.95  # measured 0.9996 (KD + LID + Mahalanobis, all layers)
    assert m.tnr_at_tpr95 > 0.8  # measured 1.0
    assert (m.num_clean, m.num_adversarial) == (2 * N_DETECT, N_DETECT)


def test_grid_hyperparameters_are_selected_on_validation(fitted):
    assert fitted.selection_["lid"]["selected"] in (10, 20, 40)
    assert set(fitted.selection_["mahalanobis"]["validation_auc"]) == {0.0, 0.002, 0.01}
    aucs = fitted.selection_["lid"]["validation_auc"]
    assert fitted.characteristics["lid"].k == max(aucs, key=aucs.get)


def test_detect_returns_report_and_flags_more_adversarial_than_clean(fitted, mnist_cnn):
    report, flagged = fitted.detect(mnist_cnn.x_adv[HELD_OUT][:50])
    _, flagged_clean = fitted.detect(mnist_cnn.x[HELD_OUT][:50])
    assert flagged.dtype == bool and flagged.shape == (50,)
    assert flagged.mean() > 0.8 and flagged_clean.mean() < 0.2
    assert report["features"].shape == (50, len(fitted.feature_names_))
    assert fitted.feature_names_[0] == "kd/penultimate"
    np.testing.assert_array_equal(flagged, report["probability"] >= 0.5)


def test_refit_without_characteristics_keeps_class_statistics_and_refits_regression(mnist_cnn):
    ns = mnist_cnn
    det = LogisticDetector(ns.model, features=["mahalanobis"], md_magnitude=0.0)
    det.fit(ns.x_train, ns.y_train, ns.x[FIT], ns.x_adv[FIT], ns.x_noisy[FIT])
    md = det.characteristics["mahalanobis"]
    means = [np.array(m) for m in md.means_]
    before = det.score(ns.x_adv[HELD_OUT][:20])
    # class statistics stay even when the "training" images given are others ...
    det.fit(ns.x_train[:50] * 0.5, ns.y_train[:50], ns.x[FIT], ns.x_noisy[FIT], ns.x_adv[FIT],
            refit_characteristics=False)
    for a, b in zip(means, md.means_):
        np.testing.assert_array_equal(a, np.array(b))
    # ... while the regression is re-fitted: adversarial and noisy swapped roles, so scores flip
    after = det.score(ns.x_adv[HELD_OUT][:20])
    assert after.mean() < before.mean()


def test_config_round_trip_rebuilds_the_same_detector(mnist_cnn):
    det = LogisticDetector(mnist_cnn.model, features=["lid"], lid_k=30, md_magnitude=0.001)
    again = LogisticDetector.from_config(det.get_config(), mnist_cnn.model)
    assert again.get_config() == det.get_config()
    assert det.get_config()["lid_k"] == [30]


def test_residual_detection_reads_the_classifier_on_x_minus_g(mnist_cnn):
    class StubCDVAE:  # decompose/classifier as models.CDVAE offers them
        classifier = mnist_cnn.model

        def decompose(self, x):
            g = tf.nn.avg_pool2d(x, 3, 1, "SAME")
            return g, x - g

    det = LogisticDetector(StubCDVAE(), features=["mahalanobis"], on="residual")
    fx = det.characteristics["mahalanobis"].extractor
    x = mnist_cnn.x[:4]
    got, _ = fx.extract(x)
    r = x - tf.nn.avg_pool2d(x, 3, 1, "SAME")  # R(x) has negative pixels: not an image
    assert fx.layers[-1] == "logits"
    np.testing.assert_allclose(got[-1], mnist_cnn.model(r).numpy(), rtol=1e-4, atol=1e-4)


def test_noisy_twins_match_the_adversarial_l2_size_before_clipping():
    x = np.full((200, 8, 8, 1), 0.5, "float32")
    x_adv = x + 0.1 * np.sign(np.random.default_rng(0).normal(size=x.shape)).astype("float32")
    noisy = make_noisy(x, x_adv, seed=0)
    l2 = np.linalg.norm((noisy - x).reshape(200, -1), axis=1).mean()
    assert l2 == pytest.approx(0.1 * 8, rel=0.05)


# -- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return small_cnn((28, 28, 1), 10, width=4, dense_units=8)


def test_unknown_feature_name_raises(tiny):
    with pytest.raises(ValueError, match="features: expected distinct names"):
        LogisticDetector(tiny, features=["kd", "odin"])


def test_lid_k_not_below_batch_size_raises(tiny):
    with pytest.raises(ValueError, match="lid_k"):
        LogisticDetector(tiny, lid_k=(10, 100), lid_batch_size=100)


def test_residual_without_a_cdvae_raises(tiny):
    with pytest.raises(ValueError, match="decompose"):
        LogisticDetector(tiny, on="residual")


def test_fit_on_one_class_only_raises(tiny):
    with pytest.raises(ValueError, match="at least 2 clean .* and 2 adversarial"):
        LogisticDetector(tiny).fit_features(np.ones((6, 2)), np.zeros(6))


def test_features_and_labels_of_different_lengths_raise(tiny):
    with pytest.raises(ValueError, match="one label per feature row \\(6\\)"):
        LogisticDetector(tiny).fit_features(np.ones((6, 2)), np.array([0, 1, 0, 1]))


def test_nan_features_raise(tiny):
    f = np.random.default_rng(0).normal(size=(8, 3))
    f[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values \\(columns \\[1\\]\\)"):
        LogisticDetector(tiny).fit_features(f, np.arange(8) % 2)


def test_adversarial_set_of_other_length_raises(tiny):
    x = np.zeros((10, 28, 28, 1), "float32")
    with pytest.raises(ValueError, match="one adversarial image per clean image"):
        LogisticDetector(tiny).fit(x, np.arange(10), x, x[:5])


def test_score_before_fit_raises(tiny):
    with pytest.raises(ValueError, match="fit"):
        LogisticDetector(tiny).score(np.zeros((2, 28, 28, 1), "float32"))


def test_saved_detector_reloads_with_the_same_scores_and_selection(fitted, mnist_cnn, tmp_path):
    path = fitted.save(str(tmp_path / "det"))
    assert path.endswith(".npz")
    again = LogisticDetector.load(path, mnist_cnn.model)
    x = np.concatenate([mnist_cnn.x[HELD_OUT][:30], mnist_cnn.x_adv[HELD_OUT][:30]])
    np.testing.assert_allclose(again.score(x), fitted.score(x), atol=1e-4)
    assert again.characteristics["lid"].k == fitted.characteristics["lid"].k
    assert again.characteristics["mahalanobis"].magnitude == fitted.characteristics["mahalanobis"].magnitude
    assert again.feature_names_ == fitted.feature_names_


def test_save_before_fit_and_load_of_a_missing_or_foreign_file_raise(tiny, tmp_path):
    with pytest.raises(ValueError, match="fit"):
        LogisticDetector(tiny, features=["kd"]).save(str(tmp_path / "d.npz"))
    with pytest.raises(ValueError, match="no saved detector"):
        LogisticDetector.load(str(tmp_path / "absent.npz"), tiny)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a saved LogisticDetector"):
        LogisticDetector.load(str(tmp_path / "other.npz"), tiny)
