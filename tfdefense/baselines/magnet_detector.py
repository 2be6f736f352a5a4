"""``MagNetDetector``: MagNet's two reconstruction-error detectors as one ``Detector``.

Meng & Chen 2017 ("MagNet: a Two-Pronged Defense against Adversarial Examples"),
MNIST setting (§5.1, Table 1, official ``test_defense.py``):

* detector I scores an image by the mean squared reconstruction error of
  autoencoder I (p = 2), detector II by the mean absolute error of
  autoencoder II (p = 1);
* each detector's threshold is set on clean validation images so that at most
  ``rejection_rate`` = 0.1% of them are rejected (paper: "false positive rate
  0.001" per detector on MNIST); an image is adversarial when either detector
  rejects it.

Thresholds: with n validation images a detector may reject
k = floor(n * rejection_rate) of them; the threshold is the largest score it
accepts, and a score strictly above it is rejected, so at most k validation
images are rejected (fewer on ties). A rate of r cannot be set from fewer than
ceil(1 / r) images (there k = 0 and the rate is not measured at all), so
``fit`` refuses them; on mnist_5k's 500 validation images use
``rejection_rate=0.002`` (one image per detector) and say so.

``score(x)`` is the detection margin, max over the two detectors of
(reconstruction error − threshold): > 0 exactly where the image is rejected.
``margin(x)`` is the same as a differentiable TensorFlow op, what a
detector-aware attack pushes below 0.

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import MNIST_STRUCTURE_II, MagNetDetector, magnet_autoencoder
    >>> det = MagNetDetector(magnet_autoencoder(), magnet_autoencoder(MNIST_STRUCTURE_II),
    ...                      rejection_rate=0.01)
    >>> x = np.random.default_rng(0).random((100, 28, 28, 1)).astype("float32")
    >>> report, flagged = det.fit(x).detect(x)
    >>> int(flagged.sum()) <= 2, sorted(report)[:2]  # at most 1 per detector
    (True, ['rejected_I', 'rejected_II'])
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.baselines.losses import reconstruction_error
from tfdefense.detect.base import Detector, register_detector
from tfdefense.validation import check_images, check_number, check_positive_int

__all__ = ["DETECTORS", "PAPER_REJECTION_RATE", "MagNetDetector", "declared_input_shape",
           "min_fit_images"]

#: MagNet's per-detector false-positive rate on MNIST (Meng & Chen 2017, §5.1)
PAPER_REJECTION_RATE = 0.001

#: names of the two detectors: I (autoencoder I, MSE), II (autoencoder II, MAE)
DETECTORS = ("I", "II")

#: what ``MagNetDetector.thresholds`` holds before ``fit`` (scores are >= 0)
UNFITTED = -1.0


def min_fit_images(rejection_rate: float) -> int:
    """Fewest clean images that can set a threshold at ``rejection_rate``: ceil(1 / rate)."""
    return int(math.ceil(1.0 / rejection_rate - 1e-9))


def declared_input_shape(*models) -> tuple[int, int, int] | None:
    """The ``input_shape`` (H, W, C) of the first model that declares a rank-4 input, else
    None (any).

    Example:
        >>> import keras
        >>> from tfdefense.baselines import magnet_autoencoder
        >>> flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> declared_input_shape(flat, magnet_autoencoder()), declared_input_shape(flat)
        ((28, 28, 1), None)
    """
    for model in models:
        try:
            shape = model.input_shape
        except (AttributeError, ValueError):
            continue
        if isinstance(shape, tuple) and len(shape) == 4:
            return tuple(shape[1:])
    return None


@register_detector
class MagNetDetector(Detector):
    """MagNet's detectors I (MSE of autoencoder I) and II (MAE of autoencoder II).

    Args:
        autoencoder_i: images in [0, 1] -> reconstructions (detector I, p = 2).
        autoencoder_ii: images in [0, 1] -> reconstructions (detector II, p = 1).
        rejection_rate: largest fraction of clean validation images each detector may
            reject (paper: 0.001).
        batch_size: images per compiled batch of the numpy methods.
    """

    def __init__(self, autoencoder_i: keras.Model, autoencoder_ii: keras.Model,
                 rejection_rate: float = PAPER_REJECTION_RATE, batch_size: int = 256):
        self.autoencoder_i = autoencoder_i
        self.autoencoder_ii = autoencoder_ii
        self.rejection_rate = check_number(rejection_rate, "rejection_rate", low=0.0, high=1.0,
                                           low_inclusive=False, high_inclusive=False)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        # a DenoisingAutoEncoder declares its shape through the autoencoder it trains
        self.input_shape = declared_input_shape(*(m for ae in (autoencoder_i, autoencoder_ii)
                                                   for m in (ae, getattr(ae, "autoencoder", None))))
        #: (2,) thresholds of detectors I and II; -1 until ``fit``
        self.thresholds = tf.Variable(tf.fill([len(DETECTORS)], UNFITTED), trainable=False,
                                      name="magnet_thresholds")
        self._fitted = False

    # -------------------------------------------------------------- tensors in, out
    def reconstructions_and_errors(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(autoencoder I's reconstruction, (N, 2) errors of detectors I and II).

        Differentiable; MagNet reforms with the same reconstruction, so it asks once.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        rec_i = self.autoencoder_i(x, training=False)
        rec_ii = self.autoencoder_ii(x, training=False)
        errors = tf.stack([reconstruction_error(x, rec_i, p=2),
                           reconstruction_error(x, rec_ii, p=1)], axis=1)
        return rec_i, errors

    def reconstruction_errors(self, x: tf.Tensor) -> tf.Tensor:
        """(N, 2) float32: detector I's mean squared and detector II's mean absolute error."""
        return self.reconstructions_and_errors(x)[1]

    def margin_from_errors(self, errors: tf.Tensor) -> tf.Tensor:
        """(N,) max over the detectors of (error − threshold): > 0 exactly where rejected."""
        self._check_fitted()
        return tf.reduce_max(errors - self.thresholds[None, :], axis=1)

    def margin(self, x: tf.Tensor) -> tf.Tensor:
        """(N,) detection margin of ``x`` (differentiable; > 0 exactly where rejected)."""
        return self.margin_from_errors(self.reconstruction_errors(x))

    # -------------------------------------------------------------- numpy front door
    @tf.function(reduce_retracing=True)
    def _errors_graph(self, x):
        return self.reconstruction_errors(x)

    def _errors(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._errors_graph(tf.constant(x[i : i + self.batch_size])).numpy()
                               for i in range(0, len(x), self.batch_size)])

    def scores(self, x) -> dict[str, np.ndarray]:
        """Raw detector scores: ``{"I": mean squared error, "II": mean absolute error}``."""
        x = check_images(x, "x", shape=self.input_shape)
        return dict(zip(DETECTORS, self._errors(x).T, strict=True))

    def fit(self, x) -> MagNetDetector:
        """Set both thresholds on clean validation images ``x``; returns the detector.

        Raises ``ValueError`` when ``x`` holds fewer than ``ceil(1 / rejection_rate)``
        images (1,000 at the paper's 0.1%).
        """
        x = check_images(x, "x", shape=self.input_shape)
        need = min_fit_images(self.rejection_rate)
        if len(x) < need:
            raise ValueError(
                f"x: a rejection_rate of {self.rejection_rate:g} needs at least {need} clean "
                f"images to fit thresholds, got {len(x)}; pass more images or a larger "
                f"rejection_rate (at least {1.0 / len(x):.4g})")
        errors = self._errors(x)
        k = int(math.floor(len(x) * self.rejection_rate + 1e-9))
        self.set_thresholds(np.sort(errors, axis=0)[len(x) - 1 - k])
        return self

    def set_thresholds(self, thresholds) -> None:
        """Use ``thresholds`` (detectors I and II, each >= 0) instead of fitted ones."""
        values = np.asarray(thresholds, dtype=np.float32).reshape(-1)
        if values.shape != (len(DETECTORS),) or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"thresholds: expected {len(DETECTORS)} finite values >= 0, got "
                             f"{np.asarray(thresholds).tolist()}")
        self.thresholds.assign(values)
        self._fitted = True

    @property
    def fitted(self) -> bool:
        """True once the thresholds are set."""
        return self._fitted

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ValueError("thresholds: not fitted; call fit_thresholds(clean_validation) "
                             "(or MagNetDetector.fit) first")

    def threshold_dict(self) -> dict[str, float]:
        """``{"I": threshold I, "II": threshold II}`` (-1 before fitting)."""
        return dict(zip(DETECTORS, map(float, self.thresholds.numpy()), strict=True))

    def score(self, x) -> np.ndarray:
        """(N,) detection margin: max over the detectors of (error − threshold)."""
        report, _ = self.detect(x)
        return report["score"]

    def detect(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``(report, is_adversarial)``: per-detector scores and flags, the margin, their union.

        ``report`` holds ``score_I``, ``score_II`` (raw errors), ``rejected_I``,
        ``rejected_II`` and ``score`` (the margin); an image is adversarial when either
        detector rejects it.
        """
        self._check_fitted()
        x = check_images(x, "x", shape=self.input_shape)
        errors = self._errors(x)
        over = errors - self.thresholds.numpy()[None, :]
        flags = over > 0.0
        report = {f"score_{d}": errors[:, i] for i, d in enumerate(DETECTORS)}
        report.update({f"rejected_{d}": flags[:, i] for i, d in enumerate(DETECTORS)})
        report["score"] = over.max(axis=1)
        return report, flags.any(axis=1)

    # ---------------------------------------------------------------- save and serve
    def get_config(self) -> dict[str, Any]:
        """``rejection_rate`` and ``batch_size`` (the thresholds are ``state()``)."""
        return {"rejection_rate": self.rejection_rate, "batch_size": self.batch_size}

    def components(self) -> dict[str, keras.Model]:
        """The two autoencoders."""
        return {"autoencoder_i": self.autoencoder_i, "autoencoder_ii": self.autoencoder_ii}

    def state(self) -> dict[str, np.ndarray]:
        """``{"thresholds": (2,)}`` (-1 before fitting)."""
        return {"thresholds": self.thresholds.numpy()}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> MagNetDetector:
        """Rebuild from ``get_config()``, the two autoencoders and the thresholds."""
        detector = cls(components["autoencoder_i"], components["autoencoder_ii"], **config)
        detector.load_state(state)
        return detector

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()`` (thresholds; a saved unfitted detector stays unfitted)."""
        thresholds = np.asarray(state.get("thresholds", [UNFITTED] * len(DETECTORS)), np.float32)
        if np.all(thresholds >= 0.0):
            self.set_thresholds(thresholds)

    def detect_signature_outputs(self) -> dict[str, str]:
        """Descriptions of the ``detect`` signature's outputs (score is the margin)."""
        return {"score": "float32 (N,) largest detector score minus its threshold; > 0 = rejected",
                "is_adversarial": "bool (N,) a detector rejects the input (score > 0)",
                "scores": "float32 (N, 2) detector I (MSE) and II (MAE) reconstruction errors"}

    def serving_spec(self):
        """A ``detect`` signature: ``score`` (the margin), ``is_adversarial``, ``scores``."""
        from tfdefense.serving import ServingSpec, Signature

        self._check_fitted()
        if self.input_shape is None or None in self.input_shape:
            raise ValueError(f"MagNetDetector: export needs a fixed input_shape, got {self.input_shape}")

        def detect_fn(x):
            errors = self.reconstruction_errors(x)
            margin = self.margin_from_errors(errors)
            return {"score": margin, "is_adversarial": margin > 0.0, "scores": errors}

        return ServingSpec(tuple(self.input_shape),
                           [Signature("detect", detect_fn, self.detect_signature_outputs())],
                           [self.autoencoder_i, self.autoencoder_ii, self.thresholds],
                           {"model": "MagNetDetector", "thresholds": self.threshold_dict(),
                            **self.get_config()})
