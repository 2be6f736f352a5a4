"""``MagNet``: two autoencoder detectors and an autoencoder reformer around a classifier.

Meng & Chen 2017 ("MagNet: a Two-Pronged Defense against Adversarial
Examples"), MNIST setting (§5.1, Table 1, official ``test_defense.py``):

* the detectors (``MagNetDetector``): detector I scores an image by the mean
  squared reconstruction error of autoencoder I, detector II by the mean
  absolute error of autoencoder II; each threshold is set on clean validation
  images so that at most ``rejection_rate`` (0.1%) of them are rejected (the
  rule and its ``ceil(1 / rate)`` image minimum: ``tfdefense.baselines.magnet_detector``);
* an image that passes both detectors is reformed by autoencoder I and the
  reformed image is classified; a rejected image gets ``REJECTED`` (−1).

As a ``Defense``:

* ``logits(x)`` = ``classifier(reform(x))``: the reformer is differentiable, so
  this is the exact images -> logits path an adaptive attack differentiates
  (Carlini & Wagner 2017, "MagNet and 'Efficient Defenses...' Are Not Robust");
  no BPDA, no randomness (``stochastic = False``);
* ``detection_margin(x)``: max over the two detectors of (error − threshold),
  > 0 exactly where ``defend`` rejects, differentiable (the detector-aware term);
* ``defend(x)``: REJECTED where the margin is > 0, else ACCEPTED with the label of
  the reformed image. The decision is ACCEPTED, not PURIFIED: MagNet reforms every
  input it classifies, unconditionally, so the reformer is part of its classifier
  (as the grey-box defense's G is) and PURIFIED would carry no information; in the
  library's vocabulary PURIFIED marks an input a detector flagged and a purifier
  then saved (FM-Defense's *salvageable*), which MagNet never does.

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import MagNet, magnet_autoencoder, MNIST_STRUCTURE_II
    >>> from tfdefense.nets import small_cnn
    >>> magnet = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
    ...                 magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=0.01)
    >>> x = np.random.default_rng(0).random((100, 28, 28, 1)).astype("float32")
    >>> thresholds = magnet.fit_thresholds(x)
    >>> labels, decisions = magnet.predict_with_decisions(x)
    >>> int((labels == -1).sum()) <= 2, sorted(set(decisions.tolist()) - {0, 2})  # 1 per detector
    (True, [])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.baselines.magnet_detector import (
    DETECTORS,
    PAPER_REJECTION_RATE,
    MagNetDetector,
    declared_input_shape,
    min_fit_images,
)
from tfdefense.decisions import REJECTED_LABEL, Decision
from tfdefense.defend.base import Defense, register_defense

__all__ = ["DETECTORS", "PAPER_REJECTION_RATE", "MagNet", "min_fit_images"]


@register_defense
class MagNet(Defense):
    """MagNet for MNIST-like data: detectors I and II, reformer autoencoder I, a classifier.

    Args:
        classifier: images in [0, 1] -> logits Keras model.
        autoencoder_i: autoencoder I (detector I, p = 2, and the reformer).
        autoencoder_ii: autoencoder II (detector II, p = 1).
        rejection_rate: largest fraction of clean validation images each
            detector may reject (paper: 0.001).
        batch_size: images per compiled batch in ``scores`` / ``predict``.
    """

    detects = True
    stochastic = False

    def __init__(self, classifier: keras.Model, autoencoder_i: keras.Model,
                 autoencoder_ii: keras.Model, rejection_rate: float = PAPER_REJECTION_RATE,
                 batch_size: int = 256):
        self.classifier = classifier
        #: the two detectors and their thresholds (a ``tfdefense.detect.Detector``)
        self.detector = MagNetDetector(autoencoder_i, autoencoder_ii, rejection_rate, batch_size)
        self.batch_size = self.detector.batch_size
        self.input_shape = self.detector.input_shape or declared_input_shape(classifier)

    # ---------------------------------------------------------------- the parts
    @property
    def autoencoder_i(self) -> keras.Model:
        """Autoencoder I: detector I and the reformer."""
        return self.detector.autoencoder_i

    @property
    def autoencoder_ii(self) -> keras.Model:
        """Autoencoder II: detector II."""
        return self.detector.autoencoder_ii

    @property
    def rejection_rate(self) -> float:
        """Largest fraction of clean validation images each detector may reject."""
        return self.detector.rejection_rate

    @property
    def thresholds(self) -> tf.Variable:
        """(2,) thresholds of detectors I and II (-1 until ``fit_thresholds``)."""
        return self.detector.thresholds

    @property
    def fitted(self) -> bool:
        """True once the thresholds are set."""
        return self.detector.fitted

    # ------------------------------------------------------------- tensors in, out
    def reform(self, x: tf.Tensor) -> tf.Tensor:
        """Autoencoder I's reconstruction clipped to [0, 1] (the reformer)."""
        return tf.clip_by_value(self.autoencoder_i(x, training=False), 0.0, 1.0)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """``classifier(reform(x))``: differentiable logits of the reformed input."""
        return self.classifier(self.reform(tf.convert_to_tensor(x, tf.float32)), training=False)

    def detection_margin(self, x: tf.Tensor) -> tf.Tensor:
        """(N,) max over detectors I, II of (error − threshold): > 0 exactly where rejected."""
        return self.detector.margin(x)

    def detection_outputs(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """``{"scores": (N, 2)}``: the raw errors of detectors I and II."""
        return {"scores": self.detector.reconstruction_errors(x)}

    def defend(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(labels, decisions): REJECTED (−1, code 2) where a detector fires, else ACCEPTED
        (code 0) with the label of the reformed image; autoencoder I runs once for both."""
        x = tf.convert_to_tensor(x, tf.float32)
        rec_i, errors = self.detector.reconstructions_and_errors(x)
        rejected = self.detector.margin_from_errors(errors) > 0.0
        logits = self.classifier(tf.clip_by_value(rec_i, 0.0, 1.0), training=False)
        labels = tf.argmax(logits, axis=-1, output_type=tf.int64)
        labels = tf.where(rejected, tf.constant(REJECTED_LABEL, tf.int64), labels)
        decisions = tf.where(rejected, tf.constant(int(Decision.REJECTED), tf.int32),
                             tf.constant(int(Decision.ACCEPTED), tf.int32))
        return labels, decisions

    # ---------------------------------------------------------- numpy front door
    def fit_thresholds(self, x) -> dict[str, float]:
        """Set both thresholds on clean validation images ``x``; returns ``{"I": .., "II": ..}``.

        Raises ``ValueError`` when ``x`` holds fewer than ``ceil(1 / rejection_rate)``
        images (1,000 at the paper's 0.1%).
        """
        return self.detector.fit(x).threshold_dict()

    def scores(self, x) -> dict[str, np.ndarray]:
        """Detector scores: ``{"I": mean squared error, "II": mean absolute error}``."""
        return self.detector.scores(x)

    def detect(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``(report, is_adversarial)``: per-detector scores and flags, the margin, their union."""
        return self.detector.detect(x)

    # ---------------------------------------------------------------- save and serve
    def components(self) -> dict[str, keras.Model]:
        """The classifier and the two autoencoders."""
        return {"classifier": self.classifier, **self.detector.components()}

    def state(self) -> dict[str, np.ndarray]:
        """``{"thresholds": (2,)}`` (-1 before fitting)."""
        return self.detector.state()

    def get_config(self) -> dict[str, Any]:
        """``rejection_rate`` and ``batch_size``."""
        return self.detector.get_config()

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> MagNet:
        """Rebuild from ``get_config()``, the three models and the thresholds."""
        magnet = cls(components["classifier"], components["autoencoder_i"],
                     components["autoencoder_ii"], **config)
        magnet.detector.load_state(state)
        return magnet

    def serving_spec(self):
        """The base's ``serving_default``, ``detect`` (score = margin, is_adversarial,
        scores) and ``defend``; refused before ``fit_thresholds``."""
        if not self.fitted:
            raise ValueError("magnet: thresholds are not fitted; call fit_thresholds(clean) "
                             "before export")
        spec = super().serving_spec()
        for sig in spec.signatures:
            if sig.name == "detect":
                sig.outputs.update(self.detector.detect_signature_outputs())
        spec.track.append(self.thresholds)
        spec.metadata.update(thresholds=self.detector.threshold_dict(),
                             rejection_rate=self.rejection_rate)
        return spec
