"""The iterative attack's objective: cross-entropy or the C&W margin, nothing else.

Hand case, through ``objective_gradient`` with the identity as the model (the logits are the
input): z = (2, 0), label y = 1.
- Cross-entropy: ∂/∂z = softmax(z) − onehot(y) = (e²/(e² + 1), 1/(e² + 1) − 1)
  = (0.880797, −0.880797).
- Margin min(z_0 − z_1, κ): ∂/∂z = (1, −1) for κ = ∞; 0 for κ = 1 (2 > κ: the cap is active).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.perturbation import objective_gradient

Z = tf.constant([[2.0, 0.0]])
Y = tf.constant([1], tf.int64)


def identity(x):
    return x


def test_the_cross_entropy_and_margin_gradients_on_a_hand_case():
    p = np.exp(2.0) / (np.exp(2.0) + 1.0)
    np.testing.assert_allclose(objective_gradient(identity, Z, Y, "ce", float("inf"), False),
                               [[p, -p]], rtol=1e-6)
    np.testing.assert_allclose(objective_gradient(identity, Z, Y, "margin", float("inf"), False),
                               [[1.0, -1.0]])
    np.testing.assert_allclose(objective_gradient(identity, Z, Y, "margin", 1.0, False),
                               [[0.0, 0.0]])


def test_an_unknown_objective_is_refused_instead_of_running_as_the_margin():
    message = "loss: expected 'ce' or 'margin', got 'hinge'"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        objective_gradient(identity, Z, Y, "hinge", float("inf"), False)
