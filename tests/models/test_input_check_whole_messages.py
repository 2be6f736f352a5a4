"""The in-graph input assertions of models.input_checks, translated to ValueError, matched
whole: our text from the start, then exactly the detail TensorFlow's assertion appends
(" : Tensor had NaN values" after assert_all_finite; "] [Condition x ... y did not hold
element-wise:] [x ...] ..." after the comparisons), so nothing may be added to our text."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.models.input_checks import checked_batch, translate_input_errors

SHAPE = (2, 2, 1)
X = np.full((3, *SHAPE), 0.5, np.float32)
Y = np.array([0, 1, 2])


@tf.function
def _checked(x, y):
    return checked_batch(x, y, SHAPE, 3)


COMPARISON = r"\] \[Condition x (>=|<=|<) y did not hold element-wise:\] \[x .*"


def test_the_nan_check_reads_exactly_its_message_and_tensorflows_reason():
    with pytest.raises(ValueError) as info, translate_input_errors():
        _checked(tf.constant(X * np.nan), tf.constant(Y, tf.int64))
    assert str(info.value) == "images contain NaN or infinite values : Tensor had NaN values"


@pytest.mark.parametrize("x, y, message", [
    (X - 1.0, Y, "images must be in [0, 1]; got values < 0"),
    (X * 255.0, Y, "images must be in [0, 1]; got values > 1 (0-255 pixels? divide by 255)"),
    (X, np.array([-1, 0, 1]), "labels must be >= 0"),
    (X, np.array([0, 1, 3]), "labels must be < num_classes = 3"),
])
def test_each_range_check_reads_exactly_its_message_then_the_condition(x, y, message):
    with pytest.raises(ValueError) as info, translate_input_errors():
        _checked(tf.constant(x, tf.float32), tf.constant(y, tf.int64))
    assert re.fullmatch(re.escape(message) + COMPARISON, str(info.value)), str(info.value)
