"""Eq 5 and the threshold rules of the ResistanceDetector on hand-made resistance vectors."""

import warnings

import numpy as np
import pytest

from tfdefense.detect.resistance import (
    Decision,
    ResistanceDetector,
    decide,
    distance_threshold,
    resistance_distance,
    resistance_thresholds,
)


class _Engine:  # stands in for a MorphEngine; fit_resistance never calls it
    low_ = np.zeros(3)


def test_eq5_distance_by_hand():
    theta = np.array([0.9, 0.8, 1.0])
    r = np.array([[1.0, 0.9, 1.0],    # above every threshold: 0
                  [0.5, 0.8, 1.0],    # one code below by 0.4 (equality counts as clean)
                  [0.0, 0.0, 0.5]])   # 0.9 + 0.8 + 0.5
    np.testing.assert_allclose(resistance_distance(r, theta), [0.0, 0.4, 2.2])
    with pytest.raises(ValueError, match="theta"):
        resistance_distance(r, theta[:2])
    with pytest.raises(ValueError, match="r"):
        resistance_distance(r * 2, theta)


def test_per_code_threshold_keeps_fpr_below_one_minus_rho():
    rng = np.random.default_rng(0)
    r_val = np.round(rng.beta(8, 1, size=(2000, 4)), 2)
    theta = resistance_thresholds(r_val, rho=0.99)
    fpr_per_code = (r_val < theta).mean(axis=0)
    assert np.all(fpr_per_code <= 0.01)
    # the largest such threshold: the next distinct value above would exceed 1 - rho
    for i in range(4):
        higher = np.unique(r_val[:, i])
        nxt = higher[higher > theta[i]][0]
        assert (r_val[:, i] < nxt).mean() > 0.01


def test_thresholds_by_hand_and_unified():
    r_val = np.array([[1.0, 0.9], [0.8, 1.0], [1.0, 1.0], [0.9, 0.7]])
    assert resistance_thresholds(r_val, rho=0.75).tolist() == [0.9, 0.9]
    assert resistance_thresholds(r_val, rho=0.5).tolist() == [1.0, 1.0]
    # unified: quantile of the per-image minimum [0.9, 0.8, 1.0, 0.7]
    assert resistance_thresholds(r_val, rho=0.75, mode="unified").tolist() == [0.8, 0.8]
    with pytest.raises(ValueError, match="threshold_mode"):
        resistance_thresholds(r_val, mode="global")


def test_distance_threshold_and_decisions():
    d = np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert distance_threshold(d, eta=0.9) == pytest.approx(1.0)
    assert distance_threshold(d, eta=0.5) == pytest.approx(0.6)
    assert distance_threshold(np.zeros(5), eta=0.9) == 0.0
    assert decide([0.0, 0.3, 0.7], theta_d=0.5).tolist() == [
        Decision.CLEAN, Decision.SALVAGEABLE, Decision.REJECTED]


def test_detector_fit_resistance_and_report():
    r_val = np.array([[1.0, 1.0, 1.0]] * 8 + [[0.9, 1.0, 1.0], [1.0, 0.6, 1.0]])
    det = ResistanceDetector(_Engine(), rho=0.8, eta=0.9).fit_resistance(r_val)
    assert det.theta_r_.tolist() == [1.0, 1.0, 1.0]
    assert det.theta_d_ == pytest.approx(0.4)  # flagged distances {0.1, 0.4}
    report, is_adv = det.report_resistance(np.array([[1.0, 1.0, 1.0], [0.8, 1.0, 1.0],
                                                     [0.2, 0.2, 0.2]]))
    assert is_adv.tolist() == [False, True, True]
    assert report["decision"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(report["distance"], [0.0, 0.2, 2.4])


def test_detector_warns_when_rho_cannot_be_resolved():
    r_val = np.ones((50, 3))
    r_val[0, 0] = 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = ResistanceDetector(_Engine(), rho=0.999).fit_resistance(r_val)
    messages = " ".join(str(w.message) for w in caught)
    assert "at least 1000" in messages and "minimum" in messages
    assert "theta_d = 0" in messages
    assert det.theta_r_.tolist() == [0.5, 1.0, 1.0] and det.theta_d_ == 0.0


def test_detector_fixed_thresholds():
    det = ResistanceDetector(_Engine(), unified_threshold=0.7, theta_d=0.5)
    det.fit_resistance(np.ones((10, 3)))
    assert det.theta_r_.tolist() == [0.7] * 3 and det.theta_d_ == 0.5


@pytest.mark.parametrize("kwargs", [
    {"rho": 1.0}, {"rho": 0.0}, {"rho": "high"}, {"eta": 1.5}, {"eta": -0.1},
    {"threshold_mode": "global"}, {"unified_threshold": 2.0}, {"theta_d": -1.0},
    {"batch_size": 0},
])
def test_detector_bad_params(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ResistanceDetector(_Engine(), **kwargs)


def test_detector_requires_fit():
    with pytest.raises(ValueError, match="fit"):
        ResistanceDetector(_Engine()).score_resistance(np.ones((1, 3)))
