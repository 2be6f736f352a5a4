"""TensorBoard logs of training: every loss term, the learning rate, images of x / G(x) / R(x).

``tensorboard_callbacks(log_dir, images)`` gives the callbacks to pass to ``model.fit``
(``tfdefense train --tensorboard DIR`` passes them; so can a notebook's ``fit``):

* ``keras.callbacks.TensorBoard``: each epoch, every value the model's ``train_step``
  reports (CD-VAE: ``loss``, ``reconstruction``, ``kl``, ``ce``, ``accuracy``,
  ``reconstruction_accuracy``; the combo-VAE its own terms), as ``epoch_<name>`` under
  ``log_dir/train`` (and ``log_dir/validation`` with validation data), and the
  optimizer's learning rate (``epoch_learning_rate``);
* :class:`ImageGrid`: each epoch, one image under ``log_dir/train``: a grid with a row of
  the fixed ``images`` x, a row of G(x) and a row of R(x) = x − G(x) for a model with
  ``decompose`` (``CDVAE`` and its variants), or x and the reconstruction for a model with
  ``reconstruct`` (``ComboVAE``). R(x) lies in [−1, 1] and is shown as (R + 1) / 2, so a
  zero residual is mid-grey in every epoch alike.

The event files are written by ``tf.summary``, whose ``scalar`` and ``image`` ops live in the
``tensorboard`` package in TensorFlow 2.21 (without it they raise ``TBNotInstalledError``), so
it must be installed; ``tensorboard --logdir DIR`` shows the logs and
``tf.compat.v1.train.summary_iterator`` reads them back.

Example:
    >>> import numpy as np
    >>> grid = image_grid([np.zeros((2, 3, 3, 1)), np.ones((2, 3, 3, 1))])
    >>> grid.shape  # 2 rows x 2 images of 3x3, one pixel of border around each
    TensorShape([1, 9, 9, 1])
    >>> grid[0, :, 1, 0].numpy().tolist()  # down the first image's column: border, x, border, 1s
    [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.validation import check_images, check_positive_int

__all__ = ["ImageGrid", "image_grid", "tensorboard_callbacks"]

#: value of the one-pixel border around each image of a grid (white)
BORDER = 1.0


def image_grid(rows: Sequence[Any], border: float = BORDER) -> tf.Tensor:
    """One (1, R·(H+1)+1, N·(W+1)+1, C) image of R rows of N images each, in [0, 1].

    Args:
        rows: R arrays or tensors (N, H, W, C) of the same shape, values in [0, 1].
        border: value of the one-pixel lines between and around the images.
    """
    if not rows:
        raise ValueError("rows: expected at least one row of images, got none")
    stacked = tf.stack([tf.cast(r, tf.float32) for r in rows])  # (R, N, H, W, C)
    if stacked.shape.rank != 5:
        raise ValueError(f"rows: expected arrays (N, H, W, C), got shape {stacked.shape[1:]}")
    padded = tf.pad(stacked, [[0, 0], [0, 0], [1, 0], [1, 0], [0, 0]], constant_values=border)
    r, n, h, w, c = (padded.shape[i] for i in range(5))
    grid = tf.reshape(tf.transpose(padded, [0, 2, 1, 3, 4]), (r * h, n * w, c))
    grid = tf.pad(grid, [[0, 1], [0, 1], [0, 0]], constant_values=border)
    return tf.clip_by_value(grid, 0.0, 1.0)[None]


@keras.saving.register_keras_serializable(package="tfdefense")
class ImageGrid(keras.callbacks.Callback):
    """Each ``every`` epochs, a grid of x / G(x) / R(x) (or x / reconstruction) to TensorBoard.

    Args:
        log_dir: the TensorBoard folder; the image goes to its ``train`` run.
        images: the fixed images x, float32 (N, H, W, C) in [0, 1] (8 are plenty).
        every: log at the end of every ``every``-th epoch (1: each epoch).
        tag: the image's TensorBoard tag.
    """

    def __init__(self, log_dir: str, images, every: int = 1, tag: str = "x_G_R"):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = check_images(images, "images")
        if len(self.images) == 0:
            raise ValueError("images: expected at least one image, got none")
        self.every = check_positive_int(every, "every")
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag: expected a non-empty string, got {tag!r}")
        self.tag = tag
        self._writer = None

    def rows(self) -> list[tf.Tensor]:
        """The grid's rows for the current model: x, G(x), (R(x) + 1) / 2 or x, x̂."""
        x = tf.constant(self.images)
        if callable(getattr(self.model, "decompose", None)):
            g, r = self.model.decompose(self.images)
            return [x, tf.clip_by_value(tf.cast(g, tf.float32), 0.0, 1.0),
                    (tf.cast(r, tf.float32) + 1.0) / 2.0]
        if callable(getattr(self.model, "reconstruct", None)):
            return [x, tf.clip_by_value(tf.cast(self.model.reconstruct(self.images), tf.float32),
                                        0.0, 1.0)]
        raise ValueError(f"model: {type(self.model).__name__} has neither decompose (G, R) nor "
                         "reconstruct; ImageGrid has nothing to show")

    def on_train_begin(self, logs=None) -> None:
        self.rows()  # a model without images to show fails now, not after the first epoch
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if (epoch + 1) % self.every:
            return
        with self._writer.as_default():
            tf.summary.image(self.tag, image_grid(self.rows()), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir, "images": self.images.tolist(), "every": self.every,
                "tag": self.tag}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageGrid:
        return cls(**{**config, "images": np.asarray(config["images"], np.float32)})


def tensorboard_callbacks(log_dir: str, images=None, every: int = 1) -> list[keras.callbacks.Callback]:
    """Keras's ``TensorBoard`` (losses, learning rate) and, given ``images``, an :class:`ImageGrid`.

    Args:
        log_dir: the TensorBoard folder (created).
        images: the fixed images of the grid, float32 (N, H, W, C) in [0, 1]; None: no images.
        every: epochs between two image grids.
    """
    if not isinstance(log_dir, str | os.PathLike) or not str(log_dir):
        raise ValueError(f"log_dir: expected a folder path, got {log_dir!r}")
    if importlib.util.find_spec("tensorboard") is None:
        # TF 2.21's tf.summary.scalar / image are implemented in the tensorboard package
        raise ImportError("tensorboard_callbacks needs the tensorboard package (tf.summary's "
                          "scalar and image ops live in it): pip install tensorboard")
    os.makedirs(log_dir, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TensorBoard(str(log_dir))]
    if images is not None:
        callbacks.append(ImageGrid(str(log_dir), images, every=every))
    return callbacks
