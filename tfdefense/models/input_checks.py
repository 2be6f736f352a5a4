"""Input checks for models trained with ``fit``: eager on the first batch, in-graph on every batch.

``fit`` feeds a compiled ``train_step``, where a Python ``ValueError`` cannot be
raised on values. So a model checks twice:

* ``check_fit_inputs`` peeks at the first batch eagerly (and rejects an empty
  dataset) with ``tfdefense.validation`` — the usual mistakes (0–255 pixels,
  wrong rank or channels, labels out of range) raise ``ValueError`` before any
  training;
* ``checked_batch`` runs inside the step: dtype, rank and channels are static
  (``ValueError`` while tracing); range, NaN and label bounds are ``tf.debugging``
  assertions whose messages start with ``MARKER``;
* ``translate_input_errors`` turns such an assertion into a ``ValueError``
  with the same message, so every bad input surfaces as ``ValueError``.

Example:
    >>> import numpy as np
    >>> from tfdefense.models.input_checks import check_fit_inputs
    >>> check_fit_inputs(np.zeros((2, 28, 28, 1), "float32"), np.zeros(2, "int64"),
    ...                  (28, 28, 1), 10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.validation import check_images, check_labels

MARKER = "tfdefense input check"


def check_fit_inputs(x: Any, y: Any, input_shape, num_classes: int, name: str = "x") -> None:
    """Validate what ``fit``/``evaluate`` received (arrays or a dataset of (x, y[, w]))."""
    if isinstance(x, tf.data.Dataset):
        card = int(x.cardinality())
        if card == 0:
            raise ValueError(f"{name}: the dataset is empty (0 batches)")
        first = next(iter(x.take(1)), None)
        if first is None:
            raise ValueError(f"{name}: the dataset is empty (0 batches)")
        if not isinstance(first, tuple | list) or len(first) < 2:
            raise ValueError(f"{name}: expected a dataset of (images, labels) pairs, got {type(first)}")
        images, labels = first[0], first[1]
        if len(images.shape) == 3:
            raise ValueError(
                f"{name}: expected batched images (N, H, W, C), got {tuple(images.shape)}; "
                "call dataset.batch(...) first"
            )
        check_images(images, f"{name} (first batch)", shape=input_shape)
        check_labels(labels, num_classes, f"labels of {name} (first batch)", n=images.shape[0])
        return
    if x is None:
        raise ValueError(f"{name}: expected images or a tf.data.Dataset, got None")
    if y is None:
        raise ValueError(f"{name}: labels are required (y=None)")
    images = check_images(x, name, shape=input_shape)
    check_labels(y, num_classes, "y", n=len(images))


def checked_batch(
    x: tf.Tensor, y: tf.Tensor, input_shape, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Static checks at trace time, value checks as in-graph assertions; returns (x, y)."""
    if not (x.dtype.is_floating):
        raise ValueError(
            f"images: expected floating-point images in [0, 1], got dtype {x.dtype.name}; "
            "convert with tf.cast(x, tf.float32) / 255"
        )
    if x.shape.rank != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"images: expected shape (N, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )
    if y.shape.rank != 1:
        raise ValueError(f"labels: expected a vector of class ids (N,), got shape {tuple(y.shape)}")
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.int64)
    checks = [
        tf.debugging.assert_all_finite(x, f"{MARKER}: images contain NaN or infinite values"),
        tf.debugging.assert_greater_equal(
            tf.reduce_min(x), 0.0, message=f"{MARKER}: images must be in [0, 1]; got values < 0"
        ),
        tf.debugging.assert_less_equal(
            tf.reduce_max(x), 1.0,
            message=f"{MARKER}: images must be in [0, 1]; got values > 1 (0-255 pixels? divide by 255)",
        ),
        tf.debugging.assert_greater_equal(
            tf.reduce_min(y), tf.constant(0, tf.int64), message=f"{MARKER}: labels must be >= 0"
        ),
        tf.debugging.assert_less(
            tf.reduce_max(y), tf.constant(num_classes, tf.int64),
            message=f"{MARKER}: labels must be < num_classes = {num_classes}",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(x), tf.identity(y)


@contextlib.contextmanager
def translate_input_errors() -> Iterator[None]:
    """Re-raise our in-graph input assertions as ``ValueError``."""
    try:
        yield
    except tf.errors.InvalidArgumentError as exc:
        if MARKER in str(exc):
            line = next(ln for ln in str(exc).splitlines() if MARKER in ln)
            message = line[line.index(MARKER) + len(MARKER) + 2 :].strip()
            raise ValueError(message) from exc
        raise


def unpack(data) -> tuple[tf.Tensor, tf.Tensor]:
    """(x, y) of a batch; sample weights are not supported by the joint losses."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
        raise ValueError("labels are required: expected batches of (images, labels)")
    if sample_weight is not None:
        raise ValueError("sample weights are not supported by this model's joint loss")
    return x, y




class CheckedInputs:
    """Mixin for a ``keras.Model`` with ``input_shape_`` and ``num_classes``: ``fit``,
    ``evaluate`` and ``predict`` validate their input first (``ValueError`` for bad images,
    labels or validation data) and turn Keras' own input errors into ``ValueError``.
    Put it before ``keras.Model`` in the bases."""

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """``keras.Model.fit`` with input checks (``ValueError`` for bad images or labels)."""
        check_fit_inputs(x, y, self.input_shape_, self.num_classes)
        if validation_data is not None:
            vx, vy = (validation_data, None) if isinstance(validation_data, tf.data.Dataset) \
                else validation_data[:2]
            check_fit_inputs(vx, vy, self.input_shape_, self.num_classes, name="validation_data")
        with translate_input_errors():
            return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` with the same input checks as ``fit``."""
        check_fit_inputs(x, y, self.input_shape_, self.num_classes)
        with translate_input_errors():
            return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs) -> np.ndarray:
        """The model's logits for images (array or dataset); arrays are validated first."""
        if not isinstance(x, tf.data.Dataset):
            x = check_images(x, "x", shape=self.input_shape_)
        return super().predict(x, *args, **kwargs)
