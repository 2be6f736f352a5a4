"""The iterative attack's objective: cross-entropy or the C&W margin, nothing else.

Hand case: logits z = (2, 0) for label y = 1. Cross-entropy = log(1 + e^2) = 2.126928; the
margin min(max_{j≠y} z_j − z_y, κ) = min(2 − 0, κ): 2 for κ = ∞, 1 for κ = 1.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.perturbation import _objective

LOGITS = tf.constant([[2.0, 0.0]])
Y = tf.constant([1], tf.int64)


def test_the_cross_entropy_and_margin_objectives_on_a_hand_case():
    np.testing.assert_allclose(float(_objective(LOGITS, Y, "ce", float("inf"), False)),
                               np.log1p(np.exp(2.0)), rtol=1e-6)
    assert float(_objective(LOGITS, Y, "margin", float("inf"), False)) == pytest.approx(2.0)
    assert float(_objective(LOGITS, Y, "margin", 1.0, False)) == pytest.approx(1.0)


def test_an_unknown_objective_is_refused_instead_of_running_as_the_margin():
    message = "loss: expected 'ce' or 'margin', got 'hinge'"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        _objective(LOGITS, Y, "hinge", float("inf"), False)
