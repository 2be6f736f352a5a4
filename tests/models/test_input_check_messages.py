"""models.input_checks on hand-made batches: which input raises, and the whole message.

The messages are the user's only hint (they name the argument and the fix), so each one is
matched from its start. The in-graph checks run inside a tf.function, as in a train step.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.models.input_checks import (
    MARKER,
    check_fit_inputs,
    checked_batch,
    translate_input_errors,
    unpack,
)

SHAPE = (2, 2, 1)
X = np.full((3, *SHAPE), 0.5, np.float32)
Y = np.array([0, 1, 2])


def raises(message):
    return pytest.raises(ValueError, match="^" + re.escape(message))


def test_arrays_name_the_labels_y_and_count_them_against_the_images():
    check_fit_inputs(X, Y, SHAPE, 3)  # valid: nothing raised
    with raises("y: expected 3 labels (one per image), got 2"):
        check_fit_inputs(X, Y[:2], SHAPE, 3)
    with raises("y: expected class ids in [0, 2], got range [0, 3]"):
        check_fit_inputs(X, np.array([0, 1, 3]), SHAPE, 3)
    with raises("x: labels are required (y=None)"):
        check_fit_inputs(X, None, SHAPE, 3)
    with raises("x: expected images or a tf.data.Dataset, got None"):
        check_fit_inputs(None, Y, SHAPE, 3)


def test_a_dataset_is_checked_on_its_first_batch():
    check_fit_inputs(tf.data.Dataset.from_tensor_slices((X, Y)).batch(2), None, SHAPE, 3)
    with raises("validation_data: the dataset is empty (0 batches)"):
        check_fit_inputs(tf.data.Dataset.from_tensor_slices((X, Y)).take(0), None, SHAPE, 3,
                         name="validation_data")
    with raises("x: expected batched images (N, H, W, C), got (2, 2, 1); call dataset.batch"):
        check_fit_inputs(tf.data.Dataset.from_tensor_slices((X, Y)), None, SHAPE, 3)
    with raises("x: expected a dataset of (images, labels) pairs"):
        check_fit_inputs(tf.data.Dataset.from_tensor_slices(X).batch(2), None, SHAPE, 3)
    with raises("labels of x (first batch): expected class ids in [0, 1]"):
        check_fit_inputs(tf.data.Dataset.from_tensor_slices((X, Y)).batch(3), None, SHAPE, 2)


def test_a_filtered_dataset_of_unknown_size_that_is_empty_is_refused():
    # cardinality is unknown (-2) after filter, so only the peek finds it empty
    empty = tf.data.Dataset.from_tensor_slices((X, Y)).filter(lambda x, y: y > 5).batch(2)
    with raises("x: the dataset is empty (0 batches)"):
        check_fit_inputs(empty, None, SHAPE, 3)


@tf.function
def _checked(x, y):
    return checked_batch(x, y, SHAPE, 3)


@pytest.mark.parametrize("x, y, message", [
    (X * np.nan, Y, "images contain NaN or infinite values"),
    (X - 1.0, Y, "images must be in [0, 1]; got values < 0"),
    (X * 255.0, Y, "images must be in [0, 1]; got values > 1 (0-255 pixels? divide by 255)"),
    (X, np.array([-1, 0, 1]), "labels must be >= 0"),
    (X, np.array([0, 1, 3]), "labels must be < num_classes = 3"),
])
def test_in_graph_checks_become_value_errors_with_the_marker_stripped(x, y, message):
    with raises(message), translate_input_errors():
        _checked(tf.constant(x, tf.float32), tf.constant(y, tf.int64))


def test_in_graph_checks_pass_valid_batches_unchanged():
    x, y = _checked(tf.constant(X), tf.constant(Y, tf.int32))
    assert x.dtype == tf.float32 and y.dtype == tf.int64
    np.testing.assert_array_equal(x.numpy(), X)
    assert y.numpy().tolist() == [0, 1, 2]


def test_static_checks_raise_while_tracing():
    with raises("images: expected floating-point images in [0, 1], got dtype uint8; "
                "convert with tf.cast(x, tf.float32) / 255"):
        checked_batch(tf.zeros((3, *SHAPE), tf.uint8), tf.constant(Y), SHAPE, 3)
    with raises("images: expected shape (N, 2, 2, 1), got (3, 2, 2, 3)"):
        checked_batch(tf.zeros((3, 2, 2, 3)), tf.constant(Y), SHAPE, 3)
    with raises("labels: expected a vector of class ids (N,), got shape (3, 1)"):
        checked_batch(tf.constant(X), tf.constant(Y[:, None]), SHAPE, 3)


def test_other_graph_errors_pass_through_untranslated():
    with pytest.raises(tf.errors.InvalidArgumentError), translate_input_errors():
        tf.debugging.assert_equal(1, 2, message="something else")
    assert MARKER == "tfdefense input check"


def test_unpack_needs_labels_and_refuses_sample_weights():
    x, y = unpack((X, Y))
    assert x is X and y is Y
    with raises("labels are required: expected batches of (images, labels)"):
        unpack(X)
    with raises("sample weights are not supported by this model's joint loss"):
        unpack((X, Y, np.ones(3)))
