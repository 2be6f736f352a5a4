"""FMDefense: detect with resistance, purify the salvageable by reconstruction, reject the rest.

FM-Defense §III-A (3) and §III-D as one ``Defense`` (``tfdefense.defend.base``). For each
input the ``ResistanceDetector`` decides accepted (the paper's *clean*), purified
(*salvageable*) or rejected; accepted inputs get C(x), purified ones
C(D([μ(x), z_u(x)])) — the combo-VAE reconstruction, the purifier — and rejected ones
``REJECTED`` (−1). ``defend(x)`` is that whole path as TensorFlow ops in one graph:
morphs → resistance vector → per-code thresholds θ_r → Eq 5 distance → θ_d → decision →
label; ``predict_with_decisions`` runs it batch by batch, and the exported ``defend``
signature is the same graph. The morphs of an image are seeded by its pixels and the
engine's ``seed`` (``tfdefense.detect.morphs.image_seeds``), so ``defend`` is
deterministic, whatever the batch, and gives the labels and decisions of
``ResistanceDetector.resistance`` + ``decide`` + the classifier.

``defense_accuracy`` scores a mixed set the paper's way (§IV-B (2), Table II):
final accuracy = (TruePositive + TrueNegative + Recovered) / all, where, per
input (our reading, so that no input counts twice):

* an adversarial input that is rejected is a true positive;
* a clean input accepted is a true negative (detection-wise, as in the paper;
  ``strict`` below also asks for the right label);
* a purified input (clean or adversarial) counts if purification gives its
  true label (Recovered);
* an adversarial input accepted counts for nothing.

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

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.decisions import Decision
from tfdefense.defend.base import REJECTED, Defense, register_defense
from tfdefense.detect.morphs import image_seeds
from tfdefense.detect.resistance import ResistanceDetector
from tfdefense.validation import check_images, check_positive_int


def _labels_of(logits: tf.Tensor) -> tf.Tensor:
    return tf.argmax(logits, axis=-1, output_type=tf.int64)


@register_defense
class FMDefense(Defense):
    """FM-Defense as a whole: ``defend``, ``logits`` (EOT), ``detection_margin``, save, serve.

    Args:
        detector: a fitted ``ResistanceDetector`` (its engine holds the combo-VAE, the
            classifier to protect, the selected codes, the normal ranges and the morph
            ``seed``; the detector holds θ_r and θ_d). Fit it before wrapping it: the
            graphs read the fitted arrays when they are first traced.
        eot_morphs: random morphs per input in ``logits`` (the adaptive attacker's EOT); default
            8, our choice (the paper has no adaptive attack; the quick preset uses 8, the paper
            preset 16).
        eot_seed: seed of the random generator of ``logits``.

    Surfaces:

    * ``defend(x)``: labels and decisions (deterministic; see the module docstring).
    * ``serving_logits(x)``: the logits behind ``defend``'s label, without rejection:
      C(x) where accepted, C(purify(x)) where purified or rejected.
    * ``logits(x)`` (``stochastic = True``): the adaptive attacker's path, the log of
      the mean softmax of C over x, its purification D([μ(x), z_u(x)]) and
      ``eot_morphs`` random morphs D([μ(x) with one selected code moved, z_u(x)]), each
      one of the engine's own morphs (``MorphEngine.sample_morph_latents``: the
      engine's search, a fresh seed per call). Gradients flow through the encoder and
      the DGMM (z_u is not stopped; with ``zu_mode="class_mean"`` z_u is the DGMM's
      class mean of the argmax class, which has no gradient), so an attack on these
      logits fools C, the morphs and the purifier together, which is what keeps the
      resistance high (accepted) with a wrong label.
    * ``detection_margin(x)``: Dis(r, θ_r) − θ_d, > 0 exactly where ``defend`` rejects.
      The resistance counts unchanged argmax labels, which has no gradient, so the
      margin has a surrogate gradient: the forward value is exact, the backward pass
      goes through Σ_i [r_i < θ_r,i]·(θ_r,i − r̃_i), where r̃_i, the smooth
      resistance of code i, is the mean over its morphs (the same morphs as the
      forward pass) of C's softmax probability of the original label C(x); the
      indicator holds the codes that count in the forward distance. Pushing the
      margin down raises the smooth resistance of exactly the codes that make the
      input suspicious. An input without such a code (accepted) gets a zero gradient.
      It runs every morph with gradients: as costly as S·n classifications per image.
    * ``serving_spec()``: ``serving_default`` (``serving_logits``), ``detect``
      (``score`` = the margin, ``is_adversarial`` = rejected, ``resistance`` (N, S),
      ``distance`` (N,)) and ``defend``, each one graph. ``is_adversarial`` here means
      "rejected" (margin > 0), as for every defense; the detector alone
      (``ResistanceDetector.detect``) flags every suspicious input (distance > 0),
      some of which the defense purifies.
    * ``save(path)`` / ``tfdefense.defend.load``: the combo-VAE and the classifier as
      components, the engine's and the detector's parameters as config, the normal
      ranges, θ_r and θ_d as state.

    Example:
        >>> import numpy as np
        >>> from tfdefense.defend import FMDefense
        >>> from tfdefense.detect import MorphEngine, ResistanceDetector
        >>> from tfdefense.models import DGMM, ComboVAE
        >>> from tfdefense.nets import small_cnn
        >>> dgmm = DGMM.for_dataset("mnist_5k", feature_dim=4)
        >>> vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=4, discriminator_units=8,
        ...                            discriminator_depth=1)
        >>> clf = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
        >>> engine = MorphEngine(vae, clf, codes=[0, 1], n_morphs=4, samples_per_iteration=2,
        ...                      max_iterations=4).set_ranges([-1, -1], [1, 1])
        >>> detector = ResistanceDetector(engine, unified_threshold=0.5, theta_d=0.3)
        >>> detector = detector.fit_resistance(np.ones((4, 2)))
        >>> defense = FMDefense(detector, eot_morphs=3)
        >>> x = np.random.default_rng(0).random((5, 28, 28, 1), dtype="float32")
        >>> labels, decisions = defense.predict_with_decisions(x)
        >>> bool(np.all((labels == -1) == (decisions == 2)))
        True
        >>> margin = defense.detection_margin(x).numpy()
        >>> bool(np.all((margin > 0) == (decisions == 2)))
        True
        >>> defense.logits(x).shape
        TensorShape([5, 10])
    """

    detects = True
    stochastic = True

    def __init__(self, detector: ResistanceDetector, eot_morphs: int = 8,
                 eot_seed: int = 0) -> None:
        if not isinstance(detector, ResistanceDetector):
            raise ValueError(f"detector: expected a ResistanceDetector, "
                             f"got {type(detector).__name__}")
        if detector.theta_r_ is None or detector.engine.low_ is None:
            raise ValueError("detector: not fitted; call detector.fit(x_val) (or "
                             "fit_resistance) before building the defense")
        self.detector = detector
        self.engine = detector.engine
        self.combo_vae = detector.engine.combo_vae
        self.classifier = detector.engine.classifier
        self.input_shape = tuple(self.combo_vae.input_shape_)
        self.batch_size = detector.batch_size
        self.eot_morphs = check_positive_int(eot_morphs, "eot_morphs")
        self.eot_seed = check_positive_int(eot_seed, "eot_seed", minimum=0)
        self._generator = tf.random.Generator.from_seed(self.eot_seed)
        self._labels_fn = None

    # ------------------------------------------------------------------ graph parts
    def _class_unique(self, x: tf.Tensor, differentiable: bool) -> tf.Tensor:
        """z_u(x); with ``differentiable`` the DGMM's features without the stop-gradient of
        ``ComboVAE.class_unique`` (the same values)."""
        if differentiable and self.combo_vae.zu_mode == "features":
            return self.combo_vae.dgmm.encode(x, training=False)
        return self.combo_vae.class_unique(x)

    def _resistance(self, x: tf.Tensor, soft: bool = False) -> dict[str, tf.Tensor]:
        """One pass: C(x), μ(x), z_u(x), the resistance (and its smooth version), Eq 5."""
        x = tf.convert_to_tensor(x, tf.float32)
        logits_x = self.classifier(x, training=False)
        original = tf.stop_gradient(_labels_of(logits_x))
        mean, _ = self.combo_vae.encode(x)
        z_u = self._class_unique(x, differentiable=soft)
        parts = self.engine.resistance_of(mean, z_u, original, image_seeds(x, self.engine.seed),
                                          soft=soft)
        distance = self.detector.distance_tensor(parts[0])
        out = {"logits_x": logits_x, "original": original, "mean": mean, "z_u": z_u,
               "resistance": parts[0], "distance": distance,
               "decision": tf.cast(self.detector.decision_tensor(distance), tf.int32)}
        if soft:
            out["soft_resistance"] = parts[2]
        return out

    def _purified_logits(self, mean: tf.Tensor, z_u: tf.Tensor) -> tf.Tensor:
        """C(D([μ(x), z_u(x)])): the classifier on the purifier's reconstruction (§III-D)."""
        return self.classifier(self.combo_vae.decode(mean, z_u), training=False)

    @staticmethod
    def _select_labels(decision: tf.Tensor, labels_x: tf.Tensor,
                       labels_purified: tf.Tensor) -> tf.Tensor:
        """C(x) where accepted, C(purify(x)) where purified, ``REJECTED`` where rejected."""
        rejected = tf.fill(tf.shape(labels_x), tf.constant(REJECTED, tf.int64))
        return tf.where(decision == int(Decision.ACCEPTED), labels_x,
                        tf.where(decision == int(Decision.PURIFIED), labels_purified, rejected))

    def _margin(self, distance: tf.Tensor) -> tf.Tensor:
        """float32 Dis − θ_d (computed in float64: its sign is the decision's)."""
        return tf.cast(distance - tf.constant(float(self.detector.theta_d_), tf.float64),
                       tf.float32)

    # -------------------------------------------------------------- Defense surfaces
    def defend(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(labels int64 (N,), decisions int32 (N,)): morphs → resistance → θ_r → distance
        → θ_d → accept C(x) / purify C(purify(x)) / reject (−1), as TensorFlow ops."""
        out = self._resistance(x)
        labels_p = _labels_of(self._purified_logits(out["mean"], out["z_u"]))
        return self._select_labels(out["decision"], out["original"], labels_p), out["decision"]

    def serving_logits(self, x: tf.Tensor) -> tf.Tensor:
        """The logits behind ``defend``'s label without rejection: C(x) where accepted,
        C(purify(x)) where purified or rejected (deterministic)."""
        out = self._resistance(x)
        logits_p = self._purified_logits(out["mean"], out["z_u"])
        accepted = (out["decision"] == int(Decision.ACCEPTED))[:, None]
        return tf.where(accepted, out["logits_x"], logits_p)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """The adaptive attacker's logits (N, K): log of the mean softmax of C over x, its
        purification and ``eot_morphs`` random morphs of the engine (a fresh draw per call;
        see the class docstring)."""
        x = tf.convert_to_tensor(x, tf.float32)
        n = tf.shape(x)[0]
        k = self.eot_morphs
        mean, _ = self.combo_vae.encode(x)
        z_u = self._class_unique(x, differentiable=True)
        seed = self._generator.uniform_full_int([2], tf.int32)
        morphs = self.engine.sample_morph_latents(mean, k, seed)  # (N, k, *latent)
        z = tf.concat([mean[:, None], morphs], 1)  # the purifier's latent first
        decoded = self.combo_vae.decode(tf.reshape(z, tf.concat([[-1], tf.shape(mean)[1:]], 0)),
                                        tf.repeat(z_u, k + 1, axis=0))
        out_x = self.classifier(x, training=False)
        out_d = tf.reshape(self.classifier(decoded, training=False), [n, k + 1, -1])
        out = tf.concat([out_x[:, None], out_d], 1)  # (N, k + 2, K)
        return tf.reduce_logsumexp(tf.nn.log_softmax(out), 1) - math.log(k + 2.0)

    def restart_eot(self) -> None:
        """Restart the random generator of ``logits`` from ``eot_seed``: the draws after this
        do not depend on any drawn before (e.g. by attacks a rerun reads from a cache)."""
        self._generator.reset_from_seed(self.eot_seed)

    def detection_margin(self, x: tf.Tensor) -> tf.Tensor:
        """float32 (N,) Dis(r, θ_r) − θ_d: > 0 exactly where ``defend`` rejects; forward
        exact, gradient through the smooth resistance (see the class docstring)."""
        out = self._resistance(x, soft=True)
        theta = np.asarray(self.detector.theta_r_, np.float64)
        below = tf.cast(out["resistance"], tf.float64) < tf.constant(theta)  # Eq 5's codes
        smooth = tf.reduce_sum(tf.where(below, tf.constant(theta, tf.float32)
                                        - out["soft_resistance"], 0.0), axis=1)
        return self._margin(out["distance"]) + (smooth - tf.stop_gradient(smooth))

    def detection_outputs(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """``resistance`` (N, S) and ``distance`` (N,) float32 beside the margin."""
        out = self._resistance(x)
        return {"resistance": out["resistance"], "distance": tf.cast(out["distance"], tf.float32)}

    def purify(self, x: tf.Tensor) -> tf.Tensor:
        """The combo-VAE reconstruction D([μ(x), z_u(x)]) of a batch (§III-D), float32 images in
        [0, 1]: what C classifies where ``defend`` purifies."""
        return self.combo_vae(tf.cast(x, tf.float32), training=False)

    # ------------------------------------------------------------------ numpy helpers
    def _labels_graph(self):
        if self._labels_fn is None:
            def labels(x, decision):
                mean, _ = self.combo_vae.encode(x)
                labels_p = _labels_of(self._purified_logits(mean, self.combo_vae.class_unique(x)))
                return self._select_labels(decision, _labels_of(self.classifier(x, training=False)),
                                           labels_p)

            self._labels_fn = tf.function(labels, input_signature=[
                tf.TensorSpec((None, *self.input_shape), tf.float32),
                tf.TensorSpec((None,), tf.int32)])
        return self._labels_fn

    def predict_resistance(self, x, r) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, decisions int32) for images x with precomputed resistances r
        (N, S), e.g. cached ones; the labels and decisions ``defend`` gives when r is the
        engine's resistance of x."""
        x = check_images(x, "x", shape=self.input_shape, allow_empty=True)
        if len(x) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        decisions = self.detector.decide_resistance(r).astype(np.int32)
        if len(decisions) != len(x):
            raise ValueError(f"r: expected {len(x)} resistance vectors, got {len(decisions)}")
        graph = self._labels_graph()
        labels = [graph(tf.constant(x[i: i + self.batch_size]),
                        tf.constant(decisions[i: i + self.batch_size])).numpy()
                  for i in range(0, len(x), self.batch_size)]
        return np.concatenate(labels).astype(np.int64), decisions

    # ------------------------------------------------------------------------ serving
    def serving_spec(self):
        """``serving_default``, ``detect`` and ``defend`` (the base's), with a ``detect`` that
        runs the morphs once for the margin, the resistance and the distance."""
        from tfdefense.serving import DETECT_OUTPUTS, Signature

        spec = super().serving_spec()

        def detect_fn(x):
            out = self._resistance(x)
            margin = self._margin(out["distance"])
            return {"score": margin, "is_adversarial": margin > 0.0,
                    "resistance": out["resistance"],
                    "distance": tf.cast(out["distance"], tf.float32)}

        outputs = dict(
            DETECT_OUTPUTS,
            score="float32 (N,) detection margin Dis(r, theta_r) - theta_d; > 0 = rejected",
            is_adversarial="bool (N,) rejected by FM-Defense (score > 0)",
            resistance=f"float32 (N, {len(self.engine.codes)}) share of morphs keeping C(x), "
                       "per selected code",
            distance="float32 (N,) Eq 5 distance Dis(r, theta_r); > 0 = suspicious")
        spec.signatures = [Signature("detect", detect_fn, outputs) if s.name == "detect" else s
                           for s in spec.signatures]
        spec.metadata["codes"] = list(self.engine.codes)
        return spec

    # ------------------------------------------------------------------- save and load
    def components(self) -> dict[str, keras.Model]:
        """The combo-VAE (with its DGMM) and the classifier."""
        return self.detector.components()

    def state(self) -> dict[str, np.ndarray]:
        """The engine's normal ranges (``low``, ``high``), ``theta_r`` and ``theta_d``."""
        return self.detector.state()

    def get_config(self) -> dict[str, Any]:
        """The detector's and the engine's parameters, ``eot_morphs`` and ``eot_seed``."""
        return {"detector": self.detector.get_config(), "eot_morphs": self.eot_morphs,
                "eot_seed": self.eot_seed}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> FMDefense:
        """Rebuild the fitted detector, then the defense."""
        detector = ResistanceDetector.from_parts(config["detector"], components, state)
        return cls(detector, eot_morphs=config.get("eot_morphs", 8),
                   eot_seed=config.get("eot_seed", 0))


def defense_accuracy(y_true, is_adversarial, labels, decisions) -> dict[str, float | int]:
    """Final accuracy (TP + TN + Recovered) / all (§IV-B (2)) and the strict accuracy.

    ``decisions`` are ``tfdefense.decisions.Decision`` codes: a rejected adversarial input
    is a true positive, an accepted clean one a true negative, a purified one with its true
    label recovered.
    """
    y_true = np.asarray(y_true).reshape(-1)
    adv = np.asarray(is_adversarial, bool).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    decisions = np.asarray(decisions).reshape(-1)
    n = len(y_true)
    if not (len(adv) == len(labels) == len(decisions) == n) or n == 0:
        raise ValueError("y_true, is_adversarial, labels, decisions: expected equal non-zero "
                         f"lengths, got {len(y_true)}, {len(adv)}, {len(labels)}, {len(decisions)}")
    tp = int(np.sum(adv & (decisions == Decision.REJECTED)))
    tn = int(np.sum(~adv & (decisions == Decision.ACCEPTED)))
    purified = decisions == Decision.PURIFIED
    recovered = int(np.sum(purified & (labels == y_true)))
    strict = np.where(labels == REJECTED, adv, labels == y_true)
    return {
        "final_accuracy": (tp + tn + recovered) / n,
        "strict_accuracy": float(np.mean(strict)),
        "true_positive": tp,
        "true_negative": tn,
        "recovered": recovered,
        "salvageable": int(purified.sum()),
        "detected_adversarial": float(np.mean(decisions[adv] != Decision.ACCEPTED)) if adv.any()
        else float("nan"),
        "clean_false_positive": float(np.mean(decisions[~adv] != Decision.ACCEPTED))
        if (~adv).any() else float("nan"),
        "n": n,
    }
