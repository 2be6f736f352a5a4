"""The study's maths against hand-computed values."""

import numpy as np
import pytest

from tfdefense.experiments.cdvae_empirical import (
    cosine_similarity,
    frechet_distance,
    norms,
    pearson_per_dimension,
)


def test_cosine_similarity_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]]).reshape(3, 1, 2, 1)
    b = np.array([[0.0, 1.0], [2.0, 2.0], [-1.0, -2.0]]).reshape(3, 1, 2, 1)
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def test_cosine_similarity_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        cosine_similarity(np.ones((2, 3)), np.ones((3, 3)))


def test_frechet_identical_sets_is_zero():
    f = np.random.default_rng(0).normal(size=(200, 4))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shifted_gaussian_is_squared_shift():
    # same covariance, means 3 apart in one coordinate: distance = 9
    f = np.random.default_rng(0).normal(size=(500, 3))
    assert frechet_distance(f, f + np.array([3.0, 0.0, 0.0])) == pytest.approx(9.0, abs=1e-6)


def test_frechet_scaled_covariance_matches_formula():
    # 1-D: N(0, 1) vs N(0, 4): (1 + 4 - 2 * sqrt(4)) = 1
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(4000, 1))
    f1 = (f1 - f1.mean()) / f1.std(ddof=1)
    assert frechet_distance(f1, 2 * f1) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "f1,f2,match",
    [
        (np.ones((3, 2)), np.ones((3, 3)), "same D"),
        (np.ones((1, 2)), np.ones((3, 2)), "at least 2"),
        (np.full((3, 2), np.nan), np.ones((3, 2)), "NaN"),
    ],
)
def test_frechet_bad_input(f1, f2, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(f1, f2)


def test_norms_known_values():
    t = np.array([[3.0, -4.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    n = norms(t)
    np.testing.assert_allclose(n["l1"], [7.0, 1.0])
    np.testing.assert_allclose(n["l2"], [5.0, 1.0])
    np.testing.assert_allclose(n["linf"], [4.0, 1.0])


def test_pearson_per_dimension():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 3))
    z_adv = np.stack([z[:, 0], -z[:, 1], np.zeros(50)], axis=1)  # r = 1, r = -1, collapsed
    r, p, active = pearson_per_dimension(z, z_adv)
    assert active.tolist() == [True, True, False]
    np.testing.assert_allclose(r, [1.0, -1.0], atol=1e-12)
    assert np.all(p < 1e-10)


def test_pearson_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        pearson_per_dimension(np.ones((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        pearson_per_dimension(np.ones((2, 2)), np.ones((2, 2)))


def test_a_detector_that_cannot_be_fitted_becomes_an_error_cell_not_a_crash(monkeypatch, tmp_path):
    from tfdefense.experiments import cdvae_detection as det_exp
    from tfdefense.experiments import cdvae_models as cm
    from tfdefense.experiments.context import Context

    x = np.zeros((8, 28, 28, 1), np.float32)
    y = np.arange(8) % 2
    fake_set = {"x": x, "y": y, "x_adv": x + 0.1, "keep": np.ones(8, bool)}

    class Unfittable:
        def fit(self, *args, **kwargs):
            raise ValueError("validation_split: needs at least 2 validation images")

    monkeypatch.setattr(cm, "train_arrays", lambda ctx: (x, y))
    monkeypatch.setattr(cm, "reference_classifier", lambda ctx: None)
    monkeypatch.setattr(cm, "cdvae", lambda ctx, **kw: None)
    monkeypatch.setattr(det_exp, "detection_sets", lambda ctx, on, *args: {"pgd_linf": fake_set})
    monkeypatch.setattr(det_exp, "_detector", lambda ctx, model, feature, on: Unfittable())
    ctx = Context("quick", str(tmp_path), {"detection_min_images": 2})
    out = det_exp.evaluate_detectors(ctx)
    cells = [cell for method in out.values() for cell in method.values()]
    assert cells and all(c["error"].startswith("detector not fitted: validation_split") for c in cells)
    assert all("metrics" not in c for c in cells)
