"""The models' fit / evaluate / predict front doors on arrays and on datasets: a bad batch is
refused before Keras runs, with the argument named (``x``, ``validation_data``, their first
batch) and the whole message; a dataset is accepted where an array would be."""

import re

import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import classifier
from hand_models import SHAPE, flat_model

from tfdefense.models import DGMM, PGDAdversarialTraining

GOOD = np.full((2, *SHAPE), 0.5, np.float32)
WRONG = np.zeros((1, 3, 3, 1), np.float32)
LABELS = np.array([0, 1])


def whole(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def pgd_model():
    model = PGDAdversarialTraining(classifier(), eps=0.25, attack_steps=1, seed=0)
    model.compile()
    return model


def dgmm():
    model = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    model.compile(optimizer="sgd")
    return model


@pytest.mark.parametrize("build", [pgd_model, dgmm])
def test_fit_names_bad_validation_arrays(build):
    with whole("validation_data: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        build().fit(GOOD, LABELS, epochs=1, verbose=0, validation_data=(WRONG, [0]))
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        build().fit(WRONG, [0], epochs=1, verbose=0)


def test_checked_fit_names_the_first_batch_of_a_validation_dataset():
    bad = tf.data.Dataset.from_tensor_slices((WRONG, np.array([0]))).batch(1)
    with whole("validation_data (first batch): expected images of shape (N, 2, 2, 1), "
               "got (1, 3, 3, 1)"):
        pgd_model().fit(GOOD, LABELS, epochs=1, verbose=0, validation_data=bad)


@pytest.mark.parametrize("build", [pgd_model, dgmm])
def test_fit_accepts_a_validation_dataset(build):
    valid = tf.data.Dataset.from_tensor_slices((GOOD, LABELS)).batch(2)
    history = build().fit(GOOD, LABELS, epochs=1, verbose=0, validation_data=valid).history
    assert "val_loss" in history and len(history["val_loss"]) == 1


def test_evaluate_and_predict_name_x_and_predict_takes_a_dataset():
    model = pgd_model()
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        model.evaluate(WRONG, [0], verbose=0)
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        model.predict(WRONG, verbose=0)
    # the zero classifier: logits (0, 0) for every image, from arrays and from a dataset
    np.testing.assert_array_equal(model.predict(GOOD, verbose=0), np.zeros((2, 2)))
    dataset = tf.data.Dataset.from_tensor_slices(GOOD).batch(2)
    np.testing.assert_array_equal(model.predict(dataset, verbose=0), np.zeros((2, 2)))
