"""Input checks shared by every public entry point.

Each check raises ``ValueError`` that names what was expected and what came,
so a wrong input never turns into a silently wrong loss (DESIGN: conventions).
The checks run eagerly on concrete arrays; compiled graphs downstream assume
their inputs passed here.

Example:
    >>> import numpy as np
    >>> from tfdefense.validation import check_images
    >>> check_images(np.zeros((2, 28, 28, 1), "float32")).shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name}: expected an array, got None")
    if hasattr(x, "numpy"):
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from exc


def check_images(
    x: Any,
    name: str = "images",
    shape: Sequence[int | None] | None = None,
    allow_empty: bool = False,
) -> np.ndarray:
    """Return ``x`` as float32 NHWC in [0, 1], or raise ``ValueError``.

    Args:
        x: a batch of images, NHWC, floating point in [0, 1].
        name: what to call ``x`` in the error message.
        shape: the expected per-image shape (H, W, C); ``None`` entries match
            anything.
        allow_empty: accept a batch of zero images.
    """
    arr = _to_numpy(x, name)
    if arr.ndim != 4:
        raise ValueError(
            f"{name}: expected a batch of images of rank 4 (N, H, W, C), "
            f"got shape {tuple(arr.shape)} (rank {arr.ndim})"
        )
    if shape is not None:
        expected = tuple(shape)
        got = tuple(arr.shape[1:])
        if len(expected) != 3 or any(e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"{name}: expected images of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(arr.shape)}"
            )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least one image, got an empty batch")
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        raise ValueError(
            f"{name}: expected floating-point images in [0, 1], got dtype {arr.dtype}; "
            "convert with images.astype('float32') / 255"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point images in [0, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.size:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (0-255 pixel values? divide by 255)" if hi > 1.0 and hi <= 255.0 else ""
            raise ValueError(
                f"{name}: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]{hint}"
            )
    return arr


def check_labels(
    y: Any,
    num_classes: int,
    name: str = "labels",
    n: int | None = None,
) -> np.ndarray:
    """Return ``y`` as int64 class ids in [0, num_classes), or raise ``ValueError``.

    Args:
        y: integer class ids, shape (N,).
        num_classes: number of classes.
        name: what to call ``y`` in the error message.
        n: the expected number of labels (the batch size of the images).
    """
    arr = _to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a vector of class ids (N,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per image), got {arr.shape[0]}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer class ids, got non-integer floats")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name}: expected class ids in [0, {num_classes - 1}], "
            f"got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float inside the given bounds or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    lo_ok = low is None or (v >= low if low_inclusive else v > low)
    hi_ok = high is None or (v <= high if high_inclusive else v < high)
    if not (lo_ok and hi_ok):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(
            f"{name}: expected a value in {left}{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}{right}, got {v}"
        )
    return v
