"""A small CNN trained briefly on mnist_5k, with FGSM and noisy twins, for the detect tests."""

import types

import keras
import numpy as np
import pytest
from detect_test_helpers import N_DETECT, fgsm

from tfdefense import data
from tfdefense.detect import make_noisy
from tfdefense.nets import small_cnn

FGSM_EPS = 0.2


@pytest.fixture(scope="session")
def mnist_cnn():
    keras.utils.set_random_seed(0)
    x_train, y_train = data.load_arrays("mnist_5k", "train")
    x_test, y_test = data.load_arrays("mnist_5k", "test")
    model = small_cnn((28, 28, 1), 10, width=16, dense_units=64)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    x = x_test[: 2 * N_DETECT]
    y = y_test[: 2 * N_DETECT]
    x_adv = fgsm(model, x, y, FGSM_EPS)
    x_noisy = make_noisy(x, x_adv, seed=0)
    return types.SimpleNamespace(
        model=model,
        x_train=x_train[:1000],
        y_train=y_train[:1000],
        x=x,
        y=y,
        x_adv=x_adv,
        x_noisy=x_noisy,
        clean_accuracy=float(np.mean(model.predict(x, verbose=0).argmax(1) == y)),
        adv_accuracy=float(np.mean(model.predict(x_adv, verbose=0).argmax(1) == y)),
    )
