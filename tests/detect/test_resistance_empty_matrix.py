"""A resistance matrix without images, (0, S), is refused by the shape check with our message
(numpy would otherwise refuse it later, with its own text about a zero-size reduction)."""

import re

import numpy as np
import pytest

from tfdefense.detect.resistance import resistance_distance, resistance_thresholds


def whole(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def test_no_images_is_refused_by_the_thresholds_and_the_distance():
    with whole("r_val: expected resistance vectors of shape (N, S), got (0, 2)"):
        resistance_thresholds(np.zeros((0, 2)), rho=0.5)
    with whole("r: expected resistance vectors of shape (N, S), got (0, 2)"):
        resistance_distance(np.zeros((0, 2)), np.full(2, 0.5))
    # one image is enough: ρ = 0.5, N = 1: k = ⌊0.5⌋ = 0, its own resistances
    np.testing.assert_array_equal(resistance_thresholds(np.array([[0.25, 0.75]]), rho=0.5),
                                  [0.25, 0.75])


def test_a_vector_is_not_a_matrix():
    with whole("r: expected resistance vectors of shape (N, S), got (2,)"):
        resistance_distance(np.full(2, 0.5), np.full(2, 0.5))
