"""A tiny MNIST classifier trained once for every attack test (about 20 s on CPU)."""

import keras
import numpy as np
import pytest

from tfdefense import data
from tfdefense.nets import small_cnn

N_TEST = 100


@pytest.fixture(scope="session")
def trained():
    """(model, x_test, y_test, clean accuracy) on the first 100 mnist_5k test images."""
    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_5k", "train")
    model = small_cnn((28, 28, 1), 10, width=16, dense_units=64)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=64, epochs=4, verbose=0, shuffle=True)  # 220 steps
    xt, yt = data.load_arrays("mnist_5k", "test")
    xt, yt = xt[:N_TEST], yt[:N_TEST]
    clean = float(np.mean(np.argmax(np.asarray(model(xt)), 1) == yt))
    assert clean > 0.9, f"the fixture model should be accurate, got {clean}"
    return model, xt, yt, clean


@pytest.fixture(scope="session")
def accuracy():
    """accuracy(model, x, y) -> float."""

    def acc(model, x, y) -> float:
        return float(np.mean(np.argmax(np.asarray(model(x)), 1) == y))

    return acc
