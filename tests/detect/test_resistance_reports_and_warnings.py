"""ResistanceDetector's fitting warnings, its report, and the NaN refusal, on hand resistances:
each warning's whole text and the line it points at (the user's call), when the "no clean
validation image is flagged" warning fires (every distance 0) and when it does not (a distance
in (0, 1]), the report's keys and values, and a resistance matrix holding NaN refused whole.

``fit_resistance`` never touches the engine, so the detectors here have none (``None``).
"""

import re
import warnings

import numpy as np
import pytest

from tfdefense.detect.resistance import (
    ResistanceDetector,
    resistance_distance,
    resistance_thresholds,
)

RHO_WARNING = (
    "rho = 0.75 needs at least 4 clean validation images to resolve its (1 - rho)-quantile, "
    "got 2: each threshold is the minimum clean validation resistance (validation "
    "false-positive rate 0, not 1 - rho).")
UNFLAGGED_WARNING = (
    "no clean validation image is flagged, so the eta-fractile of their distances is "
    "undefined: theta_d = 0, every suspicious input is rejected (pass theta_d= or lower rho "
    "to purify).")


def fit_recording(detector, r_val):
    """fit_resistance(r_val), every warning it raises recorded (none filtered out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit_resistance(np.asarray(r_val, np.float64))
    return caught


def test_too_few_images_for_rho_warns_whole_at_the_users_call():
    # N = 2, ρ = 0.75: N(1 − ρ) = 0.5 < 1, and 1/(1 − ρ) = 4 images are needed;
    # k = ⌊0.5⌋ = 0: θ_r is the per-code minimum, (0.5, 0.25), so no image is below it
    # and every distance is 0: the second warning follows
    detector = ResistanceDetector(None, rho=0.75)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit_resistance(np.array([[0.5, 1.0], [1.0, 0.25]]))  # called here, directly
    assert [str(w.message) for w in caught] == [RHO_WARNING, UNFLAGGED_WARNING]
    assert all(w.category is UserWarning for w in caught)
    # stacklevel 2: this test's call of fit_resistance, not resistance.py (one level more
    # would name pytest's caller of this test)
    assert [w.filename for w in caught] == [__file__, __file__]
    assert detector.theta_r_.tolist() == [0.5, 0.25] and detector.theta_d_ == 0.0


def test_rho_resolved_by_enough_images_does_not_warn():
    # N = 4, ρ = 0.75: N(1 − ρ) = 1, k = 1: θ_r = the second smallest per code, (0.75, 0.5);
    # images 1 and 2 fall below it by 0.25 (code 0, code 1): flagged, so neither warning;
    # θ_d = the η-fractile of (0.25, 0.25) = 0.25
    detector = ResistanceDetector(None, rho=0.75)
    caught = fit_recording(detector, [[0.5, 1.0], [1.0, 0.25], [1.0, 0.5], [0.75, 1.0]])
    assert caught == []
    assert detector.theta_r_.tolist() == [0.75, 0.5] and detector.theta_d_ == 0.25


def test_distances_in_zero_one_do_not_warn_and_all_zero_distances_do():
    # unified θ = 0.5 (no ρ, so no ρ warning). Image 2 has 0.25 on code 0: Eq 5 distance
    # 0.5 − 0.25 = 0.25, in (0, 1]; the others 0. θ_d = the η-fractile of (0.25,) = 0.25
    detector = ResistanceDetector(None, unified_threshold=0.5)
    caught = fit_recording(detector, [[1.0, 1.0], [0.25, 1.0], [1.0, 0.5], [0.5, 1.0]])
    assert caught == []
    assert detector.theta_d_ == 0.25
    # every resistance ≥ 0.5: every distance 0, no flagged image: θ_d = 0 and the warning
    caught = fit_recording(detector, [[1.0, 1.0], [0.5, 1.0], [1.0, 0.5], [0.5, 0.5]])
    assert [str(w.message) for w in caught] == [UNFLAGGED_WARNING]
    assert detector.theta_d_ == 0.0


def test_a_given_theta_d_never_warns_about_unflagged_images():
    detector = ResistanceDetector(None, unified_threshold=0.5, theta_d=0.3)
    assert fit_recording(detector, [[1.0, 1.0], [1.0, 1.0]]) == []
    assert detector.theta_d_ == 0.3


def test_report_holds_the_resistance_distance_decision_and_both_thresholds():
    # θ_r = 0.5 both codes, θ_d = 0.3. Rows: (1, 1) distance 0 -> clean (0);
    # (0.25, 1) 0.25 ≤ 0.3 -> salvageable (1); (0.25, 0) 0.25 + 0.5 = 0.75 -> rejected (2)
    detector = ResistanceDetector(None, unified_threshold=0.5, theta_d=0.3)
    detector.fit_resistance(np.ones((2, 2)))
    r = np.array([[1.0, 1.0], [0.25, 1.0], [0.25, 0.0]])
    report, flagged = detector.report_resistance(r)
    assert sorted(report) == ["decision", "distance", "resistance", "theta_d", "theta_r"]
    np.testing.assert_array_equal(report["resistance"], r)
    np.testing.assert_array_equal(report["distance"], [0.0, 0.25, 0.75])
    assert report["decision"].tolist() == [0, 1, 2]
    assert report["theta_r"].tolist() == [0.5, 0.5] and report["theta_d"] == 0.3
    assert flagged.tolist() == [False, True, True]


def test_a_resistance_matrix_holding_nan_is_refused_whole():
    # the other values are in [0, 1], so only the finiteness check can refuse it
    # (NaN compares False with 0 and 1: min() < 0 and max() > 1 are both False)
    r = np.array([[np.nan, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match="^" + re.escape("r: expected finite resistances in "
                                                         "[0, 1]") + "$"):
        resistance_distance(r, [0.5, 0.5])
    with pytest.raises(ValueError, match="^" + re.escape("r_val: expected finite resistances "
                                                         "in [0, 1]") + "$"):
        resistance_thresholds(r, rho=0.5)


class _FittedEngine:
    """The engine's part ``ResistanceDetector.fit`` uses: fitted ranges and a fixed resistance
    matrix for any validation images."""

    low_ = 0.0

    def resistance(self, x, batch_size):
        return np.array([[0.5, 1.0], [1.0, 0.25]])


def test_warnings_raised_in_fit_point_at_the_users_call_of_fit():
    # the first test's case through fit(x_val): the same two warnings, now at this call of fit
    detector = ResistanceDetector(None, rho=0.75)
    detector.engine = _FittedEngine()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit(np.zeros((2, 2, 2, 1)))  # called here
    assert [str(w.message) for w in caught] == [RHO_WARNING, UNFLAGGED_WARNING]
    assert [w.filename for w in caught] == [__file__, __file__]
