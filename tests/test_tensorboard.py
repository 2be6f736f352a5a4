"""`tfdefense train --tensorboard DIR`: event files with every loss term, the learning rate and a
grid of x / G(x) / R(x), read back with tf.compat.v1.train.summary_iterator; the grid by hand."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tensorboard", reason="tf.summary's scalar and image ops need the tensorboard "
                                          "package, which is not installed")

from tfdefense import data  # noqa: E402
from tfdefense.callbacks import ImageGrid, image_grid, tensorboard_callbacks  # noqa: E402
from tfdefense.cli import main  # noqa: E402

LOSS_TERMS = ("loss", "reconstruction", "kl", "ce", "accuracy", "reconstruction_accuracy")


def read_events(folder):
    """{tag: [(step, value)]} of every event file under ``folder`` (scalars as floats, images
    as decoded uint8 arrays)."""
    out = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":  # [width, height, png...]
                    tensor = tf.io.decode_png(tensor[2]).numpy()
                else:
                    tensor = float(tensor)
                out.setdefault(value.tag, []).append((event.step, tensor))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    logs = root / "logs"
    code = main(["train", "cdvae", "--dataset", "mnist_5k", "--epochs", "1", "--train-limit", "64",
                 "--batch-size", "32", "--latent-dim", "4", "--width", "4", "--out", str(root / "run"),
                 "--tensorboard", str(logs)])
    assert code == 0
    history = json.loads((root / "run" / "history.json").read_text())
    model = keras.saving.load_model(root / "run" / "cdvae.keras")
    return {"train": read_events(logs / "train"), "validation": read_events(logs / "validation"),
            "history": history, "model": model}


def test_every_loss_term_and_the_learning_rate_per_epoch(run):
    train, history = run["train"], run["history"]
    for term in LOSS_TERMS:  # the values fit's history holds, epoch by epoch
        steps, values = zip(*sorted(train[f"epoch_{term}"]), strict=True)
        assert steps == (0,), term
        np.testing.assert_allclose(values, history[term], rtol=1e-6, err_msg=term)
        np.testing.assert_allclose(sorted(run["validation"][f"epoch_{term}"])[-1][1],
                                   history[f"val_{term}"][-1], rtol=1e-6, err_msg=term)
    rate = float(run["model"].optimizer.learning_rate)
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [rate], rtol=1e-6)


def test_the_image_grid_holds_x_g_and_r_of_the_first_test_images(run):
    steps = [s for s, _ in run["train"]["x_G_R"]]
    assert steps == [0]
    grid = run["train"]["x_G_R"][0][1].astype(np.float32) / 255
    assert grid.shape == (3 * 29 + 1, 8 * 29 + 1, 1)  # 3 rows of 8 images of 28x28, 1-px border
    x = data.load_arrays("mnist_5k", "test")[0][:8]
    g, r = (t.numpy() for t in run["model"].decompose(x))  # the saved (final) model
    cells = lambda row: np.stack([grid[1 + 29 * row:29 * (row + 1), 1 + 29 * j:29 * (j + 1)]  # noqa: E731
                                  for j in range(8)])
    # tf.summary.image stores uint8: floor(255.5 v) / 255 is within 1/255 of v
    quantum = 1 / 255 + 1e-5
    np.testing.assert_allclose(cells(0), x, atol=quantum)
    np.testing.assert_allclose(cells(1), np.clip(g, 0, 1), atol=quantum)
    np.testing.assert_allclose(cells(2), (r + 1) / 2, atol=quantum)


def test_image_grid_by_hand():
    # row 0: two 1x2 images [0, 0.2] and [0.4, 0.6]; row 1: [1, 0.8] and [0.5, 0.5]
    rows = [np.array([[[[0.0], [0.2]]], [[[0.4], [0.6]]]]), np.array([[[[1.0], [0.8]]], [[[0.5], [0.5]]]])]
    grid = image_grid(rows, border=1.0)[0, :, :, 0].numpy()
    b = 1.0
    np.testing.assert_allclose(grid, [[b, b, b, b, b, b, b],
                                      [b, 0.0, 0.2, b, 0.4, 0.6, b],
                                      [b, b, b, b, b, b, b],
                                      [b, 1.0, 0.8, b, 0.5, 0.5, b],
                                      [b, b, b, b, b, b, b]], atol=1e-7)
    with pytest.raises(ValueError, match="rows"):
        image_grid([])


def test_a_model_with_reconstruct_gets_x_and_its_reconstruction():
    class Halves:
        def reconstruct(self, x):
            return np.asarray(x) / 2

    x = np.full((2, 2, 2, 1), 0.8, "float32")
    grid = ImageGrid("unused", x)
    grid.set_model(Halves())
    rows = grid.rows()
    assert len(rows) == 2
    np.testing.assert_allclose(rows[1].numpy(), 0.4)


def test_bad_arguments_and_models_without_images_raise(tmp_path):
    with pytest.raises(ValueError, match="images"):
        ImageGrid(str(tmp_path), np.full((2, 4, 4, 1), 2.0, "float32"))
    with pytest.raises(ValueError, match="every"):
        ImageGrid(str(tmp_path), np.zeros((1, 4, 4, 1), "float32"), every=0)
    grid = ImageGrid(str(tmp_path), np.zeros((1, 4, 4, 1), "float32"))
    grid.set_model(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()]))
    with pytest.raises(ValueError, match="decompose"):
        grid.on_train_begin()
    with pytest.raises(ValueError, match="log_dir"):
        tensorboard_callbacks("")
    again = ImageGrid.from_config(grid.get_config())
    assert again.get_config() == grid.get_config()
    kinds = [type(c).__name__ for c in tensorboard_callbacks(str(tmp_path), images=grid.images)]
    assert kinds == ["TensorBoard", "ImageGrid"]
