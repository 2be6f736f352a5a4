"""``MagNet``: two autoencoder detectors and an autoencoder reformer.

Meng & Chen 2017 ("MagNet: a Two-Pronged Defense against Adversarial
Examples"), MNIST setting (§5.1, Table 1, official ``test_defense.py``):

* detector I scores an image by the mean squared reconstruction error of
  autoencoder I (p = 2), detector II by the mean absolute error of
  autoencoder II (p = 1);
* each detector's threshold is set on clean validation images so that at most
  ``rejection_rate`` = 0.1% of them are rejected (paper: "false positive rate
  0.001" per detector on MNIST);
* an image that passes both detectors is reformed by autoencoder I and the
  reformed image is classified; a rejected image gets ``REJECTED``.

Thresholds: with n validation images a detector may reject
k = floor(n * rejection_rate) of them; the threshold is the largest score it
accepts, and a score strictly above it is rejected, so at most k validation
images are rejected (fewer on ties). A rate of r cannot be set from fewer than
ceil(1 / r) images (there k = 0 and the rate is not measured at all), so
``fit_thresholds`` refuses them; on mnist_5k's 500 validation images use
``rejection_rate=0.002`` (one image per detector) and say so.

The reformer is differentiable, so ``reformed_logits`` (also ``call``) is the
exact images -> logits path an adaptive attack differentiates (Carlini &
Wagner 2017, "MagNet and 'Efficient Defenses...' Are Not Robust").

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import MagNet, magnet_autoencoder, MNIST_STRUCTURE_II
    >>> from tfdefense.nets import small_cnn
    >>> magnet = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
    ...                 magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=0.01)
    >>> x = np.random.default_rng(0).random((100, 28, 28, 1)).astype("float32")
    >>> thresholds = magnet.fit_thresholds(x)
    >>> int((magnet.predict(x) == -1).sum()) <= 2  # at most 1 per detector
    True
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfdefense.baselines.losses import reconstruction_error
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.validation import check_images, check_number, check_positive_int

#: MagNet's per-detector false-positive rate on MNIST (Meng & Chen 2017, §5.1)
PAPER_REJECTION_RATE = 0.001

DETECTORS = ("I", "II")


def min_fit_images(rejection_rate: float) -> int:
    """Fewest clean images that can set a threshold at ``rejection_rate``: ceil(1 / rate)."""
    return int(math.ceil(1.0 / rejection_rate - 1e-9))


def _image_shape(*models):
    """(H, W, C) of the first model that declares a rank-4 input, else None (any)."""
    for model in models:
        try:
            shape = model.input_shape
        except (AttributeError, ValueError):
            continue
        if isinstance(shape, tuple) and len(shape) == 4:
            return tuple(shape[1:])
    return None


@keras.saving.register_keras_serializable(package="tfdefense")
class MagNet(Defense, keras.Model):
    """MagNet for MNIST-like data; ``predict(x)`` gives labels or ``REJECTED``.

    Args:
        classifier: images in [0, 1] -> logits Keras model.
        autoencoder_i: autoencoder I (detector I, p = 2, and the reformer).
        autoencoder_ii: autoencoder II (detector II, p = 1).
        rejection_rate: largest fraction of clean validation images each
            detector may reject (paper: 0.001).
        batch_size: images per compiled batch in ``scores`` / ``predict``.
    """

    def __init__(self, classifier, autoencoder_i, autoencoder_ii,
                 rejection_rate: float = PAPER_REJECTION_RATE, batch_size: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.autoencoder_i = autoencoder_i
        self.autoencoder_ii = autoencoder_ii
        self.rejection_rate = rejection_rate
        self.batch_size = batch_size
        # -1 marks "not fitted"; scores are >= 0
        self.thresholds = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(-1.0),
                                          trainable=False, name="thresholds")
        self._check_params()
        self.built = True  # the networks come built; the thresholds exist already

    def _check_params(self):
        self.rejection_rate = check_number(self.rejection_rate, "rejection_rate", low=0.0,
                                           high=1.0, low_inclusive=False, high_inclusive=False)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        object.__setattr__(self, "input_shape", _image_shape(
            self.autoencoder_i, getattr(self.autoencoder_i, "autoencoder", None),
            self.classifier))

    # -- compiled forward passes -------------------------------------------------
    def reform(self, x):
        """Autoencoder I's reconstruction clipped to [0, 1] (the reformer); tensors in, out."""
        return tf.clip_by_value(self.autoencoder_i(x, training=False), 0.0, 1.0)

    def reformed_logits(self, x):
        """Differentiable logits of the reformed input, ``classifier(reform(x))``."""
        return self.classifier(self.reform(x), training=False)

    def call(self, x):
        return self.reformed_logits(x)

    @tf.function(reduce_retracing=True)
    def _forward(self, x):
        rec_i = self.autoencoder_i(x, training=False)
        rec_ii = self.autoencoder_ii(x, training=False)
        scores = tf.stack([reconstruction_error(x, rec_i, p=2),
                           reconstruction_error(x, rec_ii, p=1)], axis=1)
        logits = self.classifier(tf.clip_by_value(rec_i, 0.0, 1.0), training=False)
        return scores, logits

    def _run(self, x):
        scores, logits = [], []
        for i in range(0, len(x), self.batch_size):
            s, lg = self._forward(tf.constant(x[i : i + self.batch_size]))
            scores.append(s.numpy())
            logits.append(lg.numpy())
        return np.concatenate(scores), np.concatenate(logits)

    # -- detection ------------------------------------------------------------------
    def scores(self, x) -> dict[str, np.ndarray]:
        """Detector scores: ``{"I": mean squared error, "II": mean absolute error}``."""
        x = check_images(x, "x", shape=self.input_shape)
        s, _ = self._run(x)
        return dict(zip(DETECTORS, s.T, strict=True))

    def fit_thresholds(self, x) -> dict[str, float]:
        """Set both thresholds on clean validation images ``x``; returns them.

        Raises ``ValueError`` when ``x`` holds fewer than ``ceil(1 / rejection_rate)``
        images (1,000 at the paper's 0.1%).
        """
        x = check_images(x, "x", shape=self.input_shape)
        need = min_fit_images(self.rejection_rate)
        if len(x) < need:
            raise ValueError(
                f"x: a rejection_rate of {self.rejection_rate:g} needs at least {need} clean "
                f"images to fit thresholds, got {len(x)}; pass more images or a larger "
                f"rejection_rate (at least {1.0 / len(x):.4g})"
            )
        s, _ = self._run(x)
        k = int(math.floor(len(x) * self.rejection_rate + 1e-9))
        ordered = np.sort(s, axis=0)
        thresholds = ordered[len(x) - 1 - k]
        self.thresholds.assign(thresholds.astype("float32"))
        return dict(zip(DETECTORS, map(float, thresholds), strict=True))

    @property
    def fitted(self) -> bool:
        return bool(np.all(self.thresholds.numpy() >= 0.0))

    def _check_fitted(self):
        if not self.fitted:
            raise ValueError("thresholds: not fitted; call fit_thresholds(clean_validation) first")

    def detect(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``(report, is_adversarial)``: per-detector scores and flags, and their union."""
        self._check_fitted()
        x = check_images(x, "x", shape=self.input_shape)
        s, _ = self._run(x)
        flags = s > self.thresholds.numpy()[None, :]
        report = {f"score_{d}": s[:, i] for i, d in enumerate(DETECTORS)}
        report.update({f"rejected_{d}": flags[:, i] for i, d in enumerate(DETECTORS)})
        return report, flags.any(axis=1)

    def _predict(self, x):
        self._check_fitted()
        s, logits = self._run(x)
        labels = np.argmax(logits, axis=1).astype(np.int64)
        labels[(s > self.thresholds.numpy()[None, :]).any(axis=1)] = REJECTED
        return labels

    # -- serialization ----------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            classifier=keras.saving.serialize_keras_object(self.classifier),
            autoencoder_i=keras.saving.serialize_keras_object(self.autoencoder_i),
            autoencoder_ii=keras.saving.serialize_keras_object(self.autoencoder_ii),
            rejection_rate=self.rejection_rate,
            batch_size=self.batch_size,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("classifier", "autoencoder_i", "autoencoder_ii"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
