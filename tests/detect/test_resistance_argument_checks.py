"""The argument checks of detect/resistance.py at their bounds: how many codes a resistance
matrix may have, which ρ the θ_r quantile accepts and which row it picks at small N, and the
whole message of each refusal (the message is the user's only hint: it names the argument).
"""

import re

import numpy as np
import pytest

from tfdefense.detect.resistance import (
    ResistanceDetector,
    resistance_distance,
    resistance_thresholds,
)


def whole(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def test_one_code_is_a_valid_resistance_matrix_and_zero_codes_are_refused():
    # one code, four images 0.25, 0.5, 0.75, 1.0; ρ = 0.5: k = ⌊0.5·4⌋ = 2 -> 0.75
    r = np.array([[0.25], [0.5], [0.75], [1.0]])
    np.testing.assert_array_equal(resistance_thresholds(r, rho=0.5), [0.75])
    # Eq 5 with θ = 0.75: only the rows below it count, by 0.5 and 0.25
    np.testing.assert_array_equal(resistance_distance(r, [0.75]), [0.5, 0.25, 0.0, 0.0])
    with whole("r_val: expected resistance vectors of shape (N, S), got (4, 0)"):
        resistance_thresholds(np.zeros((4, 0)), rho=0.5)
    with whole("r: expected resistance vectors of shape (N, S), got (4, 0)"):
        resistance_distance(np.zeros((4, 0)), np.zeros(0))


def test_rho_at_or_below_one_over_n_gives_the_largest_validation_resistance():
    # N = 4, ρ = 0.25: k = ⌊(1 − 0.25)·4⌋ = 3, the 4th smallest = the largest, per code
    r = np.array([[0.5, 0.125], [0.25, 1.0], [1.0, 0.5], [0.75, 0.25]])
    np.testing.assert_array_equal(resistance_thresholds(r, rho=0.25), [1.0, 1.0])
    # ρ = 0.1 < 1/N: k = ⌊3.6⌋ = 3 as well
    np.testing.assert_array_equal(resistance_thresholds(r, rho=0.1), [1.0, 1.0])
    # unified: the per-image minima 0.125, 0.25, 0.5, 0.25 -> the largest, 0.5, for both codes
    np.testing.assert_array_equal(resistance_thresholds(r, rho=0.25, mode="unified"),
                                  [0.5, 0.5])


@pytest.mark.parametrize("rho", [1.0, 1.5, 0.0])
def test_rho_outside_the_open_unit_interval_is_refused_by_the_quantile(rho):
    with whole(f"rho: expected a value in (0.0, 1.0), got {rho}"):
        resistance_thresholds(np.full((4, 2), 0.5), rho=rho)


@pytest.mark.parametrize("value", [1.5, -0.5])
def test_a_unified_threshold_outside_the_unit_interval_is_named_in_the_message(value):
    # the engine is not read by the parameter checks
    with whole(f"unified_threshold: expected a value in [0.0, 1.0], got {value}"):
        ResistanceDetector(None, unified_threshold=value)
    assert ResistanceDetector(None, unified_threshold=1.0).unified_threshold == 1.0
