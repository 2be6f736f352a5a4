"""tfdefense.validation: each bad input gets a ValueError that says what came."""

import numpy as np
import pytest

from tfdefense.validation import check_images, check_labels, check_number, check_positive_int

GOOD = np.zeros((2, 28, 28, 1), np.float32)


def test_good_images_pass_and_come_back_float32():
    out = check_images(GOOD.astype(np.float64))
    assert out.dtype == np.float32 and out.shape == GOOD.shape


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match="rank 4"):
        check_images(np.zeros((28, 28, 1), np.float32))


def test_wrong_channels_are_rejected():
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28, 1\)"):
        check_images(np.zeros((2, 28, 28, 3), np.float32), shape=(28, 28, 1))


def test_uint8_images_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match="dtype uint8.*255"):
        check_images(np.zeros((2, 28, 28, 1), np.uint8))


def test_0_255_floats_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match="divide by 255"):
        check_images(np.full((2, 28, 28, 1), 200.0, np.float32))


def test_nan_is_rejected():
    x = GOOD.copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_images(x)


def test_empty_batch_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        check_images(np.zeros((0, 28, 28, 1), np.float32))


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        check_labels(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="non-integer"):
        check_labels(np.array([0.5]), 10)
    with pytest.raises(ValueError, match="expected 3 labels"):
        check_labels(np.array([0, 1]), 10, n=3)


def test_numbers_and_ints_name_the_parameter():
    with pytest.raises(ValueError, match="steps"):
        check_positive_int(0, "steps")
    with pytest.raises(ValueError, match="eps"):
        check_number(-1.0, "eps", low=0.0)
    with pytest.raises(ValueError, match="eps"):
        check_number(float("nan"), "eps")
