"""FMDefense: detect with resistance, purify the salvageable by reconstruction, reject the rest.

FM-Defense §III-A (3) and §III-D. For each input the ``ResistanceDetector``
decides clean / salvageable / rejected; clean inputs get C(x), salvageable
ones C(D([μ(x), z_u(x)])) — the combo-VAE reconstruction, the purifier —
and rejected ones ``REJECTED`` (−1).

``defense_accuracy`` scores a mixed set the paper's way (§IV-B (2), Table II):
final accuracy = (TruePositive + TrueNegative + Recovered) / all, where, per
input (our reading, so that no input counts twice):

* an adversarial input that is rejected is a true positive;
* a clean input judged clean is a true negative (detection-wise, as in the
  paper; ``strict`` below also asks for the right label);
* a salvageable input (clean or adversarial) counts if purification gives its
  true label (Recovered);
* an adversarial input judged clean counts for nothing.

``strict_accuracy`` is the plain classification accuracy under defense:
output label = true label, or REJECTED for an adversarial input.

Example:
    >>> import numpy as np
    >>> from tfdefense.defend.fm_defense import defense_accuracy
    >>> acc = defense_accuracy(y_true=np.array([1, 2, 3, 4]),
    ...                        is_adversarial=np.array([False, False, True, True]),
    ...                        labels=np.array([1, 2, -1, 4]), decisions=np.array([0, 1, 2, 1]))
    >>> acc["final_accuracy"], acc["true_positive"], acc["recovered"]
    (1.0, 1, 2)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.defend.base import REJECTED, Defense
from tfdefense.detect.resistance import Decision, ResistanceDetector


class FMDefense(Defense):
    """Detect → purify or reject. ``predict(x)`` → labels, ``REJECTED`` (−1) where refused.

    Args:
        detector: a fitted ``ResistanceDetector`` (its engine holds the combo-VAE
            and the classifier to protect).
    """

    def __init__(self, detector: ResistanceDetector) -> None:
        if not isinstance(detector, ResistanceDetector):
            raise ValueError(f"detector: expected a ResistanceDetector, "
                             f"got {type(detector).__name__}")
        self.detector = detector
        self.combo_vae = detector.engine.combo_vae
        self.classifier = detector.engine.classifier
        self.input_shape = tuple(self.combo_vae.input_shape_)

    def _labels(self, x) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.int64)
        return np.argmax(np.asarray(self.classifier(tf.constant(x), training=False)), -1)

    def purify(self, x) -> np.ndarray:
        """The combo-VAE reconstruction of x (§III-D), images in [0, 1]."""
        return self.combo_vae.reconstruct(x).numpy()

    def predict_resistance(self, x, r) -> tuple[np.ndarray, np.ndarray]:
        """(labels, decisions) for images x with precomputed resistance vectors r."""
        decisions = self.detector.decide_resistance(r)
        labels = np.full(len(x), REJECTED, np.int64)
        clean = decisions == Decision.CLEAN
        salv = decisions == Decision.SALVAGEABLE
        labels[clean] = self._labels(x[clean])
        if salv.any():
            labels[salv] = self._labels(self.purify(x[salv]))
        return labels, decisions

    def predict_with_decisions(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(labels, decisions 0 clean / 1 salvageable / 2 rejected) for images in [0, 1]."""
        from tfdefense.validation import check_images

        x = check_images(x, "x", shape=self.input_shape)
        return self.predict_resistance(x, self.detector.resistance(x))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_resistance(x, self.detector.resistance(x))[0]


def defense_accuracy(y_true, is_adversarial, labels, decisions) -> dict[str, float | int]:
    """Final accuracy (TP + TN + Recovered) / all (§IV-B (2)) and the strict accuracy."""
    y_true = np.asarray(y_true).reshape(-1)
    adv = np.asarray(is_adversarial, bool).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    decisions = np.asarray(decisions).reshape(-1)
    n = len(y_true)
    if not (len(adv) == len(labels) == len(decisions) == n) or n == 0:
        raise ValueError("y_true, is_adversarial, labels, decisions: expected equal non-zero "
                         f"lengths, got {len(y_true)}, {len(adv)}, {len(labels)}, {len(decisions)}")
    tp = int(np.sum(adv & (decisions == Decision.REJECTED)))
    tn = int(np.sum(~adv & (decisions == Decision.CLEAN)))
    salv = decisions == Decision.SALVAGEABLE
    recovered = int(np.sum(salv & (labels == y_true)))
    strict = np.where(labels == REJECTED, adv, labels == y_true)
    return {
        "final_accuracy": (tp + tn + recovered) / n,
        "strict_accuracy": float(np.mean(strict)),
        "true_positive": tp,
        "true_negative": tn,
        "recovered": recovered,
        "salvageable": int(salv.sum()),
        "detected_adversarial": float(np.mean(decisions[adv] != Decision.CLEAN)) if adv.any()
        else float("nan"),
        "clean_false_positive": float(np.mean(decisions[~adv] != Decision.CLEAN)) if (~adv).any()
        else float("nan"),
        "n": n,
    }
