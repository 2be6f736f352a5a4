"""ResistanceDetector: FM-Defense's thresholds on the resistance vector (§III-A, §III-C, Eq 5).

Given resistance vectors r (N, S) from a ``MorphEngine``:

* θ_r, per code: the largest value such that at most a fraction 1 − ρ of the
  clean validation images have r_i < θ_r,i (ρ = 99.9%, §IV-A). With
  ``threshold_mode="unified"`` one θ for all codes, chosen the same way on
  min_i r_i (so the detector, not each code, keeps FPR ≤ 1 − ρ); with a fixed
  ``unified_threshold`` (Fig 4's x-axis) no fitting is done.
* an input is clean when r_i ≥ θ_r,i for every code, suspicious otherwise
  (§III-A says "r > θ is normal" and Eq 5 sums over r < θ; the two disagree
  at r = θ, and with ρ-quantile thresholds on discrete resistances the strict
  rule would flag most clean images, so equality counts as clean);
* Dis(r, θ_r) = Σ_i |r_i − θ_r,i| over codes with r_i < θ_r,i (Eq 5);
* θ_d: the η-fractile (η = 90%, §IV-A) of the distances of the clean
  validation images that the detector flags (the paper: "set at the fractile
  of η% … how many salvageable instances are purified"; the distances of the
  unflagged ones are all 0). If no validation image is flagged, θ_d = 0 and a
  warning says that every suspicious input will be rejected; ``theta_d``
  overrides it.
* decision: 0 clean (Dis = 0), 1 salvageable (0 < Dis ≤ θ_d), 2 rejected.

ρ needs enough validation images: the (1 − ρ)-quantile of N values is the
minimum when N(1 − ρ) < 1 (ρ = 99.9% needs N ≥ 1,000); then a warning says
that θ_r is the minimum clean resistance and the validation FPR is 0.

Per code, FPR ≤ 1 − ρ on validation; over S codes the detector's FPR is at
most S(1 − ρ) (the paper states it per code).

Example:
    >>> import numpy as np
    >>> from tfdefense.detect.resistance import resistance_distance, resistance_thresholds
    >>> r_val = np.array([[1.0, 0.9], [0.8, 1.0], [1.0, 1.0], [0.9, 0.7]])
    >>> resistance_thresholds(r_val, rho=0.75).tolist()
    [0.9, 0.9]
    >>> resistance_distance(np.array([[0.5, 1.0]]), np.array([0.9, 0.9])).round(3).tolist()
    [0.4]
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.decisions import Decision
from tfdefense.detect.base import Detector, register_detector
from tfdefense.validation import check_number

THRESHOLD_MODES = ("per_code", "unified")


def _check_r(r: Any, name: str = "r") -> np.ndarray:
    arr = np.asarray(r, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected resistance vectors of shape (N, S), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name}: expected finite resistances in [0, 1]")
    return arr


def _quantile_threshold(values: np.ndarray, rho: float) -> np.ndarray:
    """Largest θ with #{v < θ} ≤ (1 − ρ)·N, per column: the k-th smallest, k = ⌊(1 − ρ)N⌋."""
    n = values.shape[0]
    k = int(np.floor((1.0 - rho) * n + 1e-9))
    return np.sort(values, axis=0)[min(k, n - 1)]


def resistance_thresholds(r_val, rho: float = 0.999, mode: str = "per_code") -> np.ndarray:
    """θ_r (S,) from clean validation resistances (§III-C threshold selection)."""
    r_val = _check_r(r_val, "r_val")
    check_number(rho, "rho", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    if mode == "per_code":
        return _quantile_threshold(r_val, rho)
    if mode == "unified":
        theta = _quantile_threshold(r_val.min(axis=1, keepdims=True), rho)[0]
        return np.full(r_val.shape[1], theta)
    raise ValueError(f"threshold_mode: expected one of {THRESHOLD_MODES}, got {mode!r}")


def resistance_distance(r, theta) -> np.ndarray:
    """Dis(r, θ_r) = Σ_i |r_i − θ_i| over r_i < θ_i (Eq 5), (N,)."""
    r = _check_r(r)
    theta = np.asarray(theta, np.float64).reshape(-1)
    if theta.shape != (r.shape[1],):
        raise ValueError(f"theta: expected {r.shape[1]} thresholds, got {theta.shape}")
    return np.where(r < theta, theta - r, 0.0).sum(axis=1)


def distance_threshold(distances, eta: float = 0.9) -> float:
    """θ_d: the η-fractile of the positive distances (flagged clean images); 0 if none."""
    check_number(eta, "eta", low=0.0, high=1.0)
    d = np.asarray(distances, np.float64).reshape(-1)
    d = d[d > 0]
    if d.size == 0:
        return 0.0
    return float(np.quantile(d, eta, method="higher"))


def decide(distances, theta_d: float) -> np.ndarray:
    """Decision per input (0 clean, 1 salvageable, 2 rejected) from Eq 5 distances and θ_d."""
    d = np.asarray(distances, np.float64)
    out = np.where(d <= 0, Decision.CLEAN, np.where(d <= theta_d, Decision.SALVAGEABLE,
                                                     Decision.REJECTED))
    return out.astype(np.int64)


@register_detector
class ResistanceDetector(Detector):
    """FM-Defense's detector: ``fit``, ``score``, ``detect -> (report, is_adv)``, save, serve.

    ``save(path)`` / ``tfdefense.detect.load(path)`` keep the engine's combo-VAE and
    classifier, both configs and the fitted arrays (θ_r, θ_d, the normal ranges). The
    engine's parameters, its ``compute_dtype`` among them (``MorphEngine``: float32, or
    bfloat16 morphs), are ``get_config()["engine"]``: they survive save / load and travel
    into an export's metadata; a config saved without ``compute_dtype`` loads as float32.
    The resistances stay float32 counts whatever the engine's precision, and θ_r, θ_d
    compare them in float64.
    ``serving_spec()`` exports one ``detect`` graph (morphs → resistance → Eq 5 distance →
    decision); ``resistance_tensors(x)`` is the same as TensorFlow ops.

    Args:
        engine: a ``MorphEngine`` (its ranges are fitted by ``fit`` if not yet).
        rho: ρ (99.9%, §IV-A).
        eta: η (90%, §IV-A).
        threshold_mode: ``"per_code"`` (the paper's default) or ``"unified"``.
        unified_threshold: a fixed θ in [0, 1] for all codes (Fig 4, first row);
            overrides ρ.
        theta_d: a fixed distance threshold; overrides η.
        batch_size: images per compiled engine call.
    """

    def __init__(
        self,
        engine,
        rho: float = 0.999,
        eta: float = 0.9,
        threshold_mode: str = "per_code",
        unified_threshold: float | None = None,
        theta_d: float | None = None,
        batch_size: int = 32,
    ) -> None:
        self.engine = engine
        self.rho = rho
        self.eta = eta
        self.threshold_mode = threshold_mode
        self.unified_threshold = unified_threshold
        self.theta_d = theta_d
        self.batch_size = batch_size
        self._check_params()
        self.theta_r_: np.ndarray | None = None
        self.theta_d_: float | None = None
        self.val_resistance_: np.ndarray | None = None

    def _check_params(self) -> None:
        check_number(self.rho, "rho", low=0.0, high=1.0, low_inclusive=False,
                     high_inclusive=False)
        check_number(self.eta, "eta", low=0.0, high=1.0)
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode: expected one of {THRESHOLD_MODES}, "
                             f"got {self.threshold_mode!r}")
        if self.unified_threshold is not None:
            check_number(self.unified_threshold, "unified_threshold", low=0.0, high=1.0)
        if self.theta_d is not None:
            check_number(self.theta_d, "theta_d", low=0.0)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {self.batch_size!r}")

    # -- fitting ----------------------------------------------------------------------

    def fit(self, x_val) -> ResistanceDetector:
        """Fit the engine's normal ranges (if needed) and θ_r, θ_d on clean validation images."""
        if self.engine.low_ is None:
            self.engine.fit(x_val)
        return self.fit_resistance(self.engine.resistance(x_val, self.batch_size), _stacklevel=3)

    def fit_resistance(self, r_val, *, _stacklevel: int = 2) -> ResistanceDetector:
        """Fit θ_r and θ_d from precomputed clean validation resistances (N, S).

        ``_stacklevel`` (private): where its warnings point, the user's call of this method or
        (from ``fit``) of ``fit``.
        """
        r_val = _check_r(r_val, "r_val")
        n = r_val.shape[0]
        if self.unified_threshold is not None:
            self.theta_r_ = np.full(r_val.shape[1], float(self.unified_threshold))
        else:
            if n * (1.0 - self.rho) < 1.0:
                warnings.warn(
                    f"rho = {self.rho} needs at least {int(np.ceil(1 / (1 - self.rho)))} clean "
                    f"validation images to resolve its (1 - rho)-quantile, got {n}: each "
                    "threshold is the minimum clean validation resistance (validation "
                    "false-positive rate 0, not 1 - rho).", UserWarning, stacklevel=_stacklevel)
            self.theta_r_ = resistance_thresholds(r_val, self.rho, self.threshold_mode)
        self.val_resistance_ = r_val
        dist = resistance_distance(r_val, self.theta_r_)
        if self.theta_d is not None:
            self.theta_d_ = float(self.theta_d)
        else:
            self.theta_d_ = distance_threshold(dist, self.eta)
            if not np.any(dist > 0):
                warnings.warn(
                    "no clean validation image is flagged, so the eta-fractile of their "
                    "distances is undefined: theta_d = 0, every suspicious input is rejected "
                    "(pass theta_d= or lower rho to purify).", UserWarning, stacklevel=_stacklevel)
        return self

    def _require_fit(self) -> None:
        if self.theta_r_ is None:
            raise ValueError("ResistanceDetector: call fit(x_val) on clean validation images first")

    # -- scoring ----------------------------------------------------------------------

    def resistance(self, x) -> np.ndarray:
        """The engine's resistance vectors (N, S)."""
        return self.engine.resistance(x, self.batch_size)

    def score_resistance(self, r) -> np.ndarray:
        """Eq 5 distances for precomputed resistances; higher = more adversarial."""
        self._require_fit()
        return resistance_distance(r, self.theta_r_)

    def score(self, x) -> np.ndarray:
        """Dis(r(x), θ_r) (Eq 5), (N,); 0 for inputs judged clean."""
        self._require_fit()
        return self.score_resistance(self.resistance(x))

    def decide_resistance(self, r) -> np.ndarray:
        """0 clean / 1 salvageable / 2 rejected for precomputed resistances."""
        return decide(self.score_resistance(r), self.theta_d_)

    def report_resistance(self, r) -> tuple[dict[str, np.ndarray], np.ndarray]:
        r = _check_r(r)
        dist = self.score_resistance(r)
        decision = decide(dist, self.theta_d_)
        report = {"resistance": r, "distance": dist, "decision": decision,
                  "theta_r": self.theta_r_, "theta_d": self.theta_d_}
        return report, decision != Decision.CLEAN

    def detect(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(report, is_adversarial): report has resistance, distance, decision, θ_r, θ_d."""
        self._require_fit()
        return self.report_resistance(self.resistance(x))

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rho", "eta", "threshold_mode",
                                              "unified_threshold", "theta_d", "batch_size")}

    # -- graph form (serving, a defense's graph) ----------------------------------------

    def distance_tensor(self, r: tf.Tensor) -> tf.Tensor:
        """Eq 5 distances (N,) float64 of resistances r (N, S) as TensorFlow ops (``score_resistance``)."""
        self._require_fit()
        r = tf.cast(r, tf.float64)
        theta = tf.constant(np.asarray(self.theta_r_, np.float64))
        return tf.reduce_sum(tf.where(r < theta, theta - r, tf.zeros_like(r)), axis=1)

    def decision_tensor(self, distance: tf.Tensor) -> tf.Tensor:
        """Decision codes int32 (N,) of Eq 5 distances as TensorFlow ops (``decide``)."""
        self._require_fit()
        d = tf.cast(distance, tf.float64)
        theta_d = tf.constant(float(self.theta_d_), tf.float64)
        return tf.where(d <= 0.0, int(Decision.CLEAN),
                        tf.where(d <= theta_d, int(Decision.SALVAGEABLE), int(Decision.REJECTED)))

    def resistance_tensors(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """``resistance`` (N, S), ``distance`` (N,) float64, ``decision`` int32 and
        ``is_adversarial`` bool for images x, as TensorFlow ops in one graph (the engine's
        ``resistance_graph``; the same values as ``detect``)."""
        self._require_fit()
        r, _ = self.engine.resistance_graph(x)
        distance = self.distance_tensor(r)
        decision = tf.cast(self.decision_tensor(distance), tf.int32)
        return {"resistance": r, "distance": distance, "decision": decision,
                "is_adversarial": decision != int(Decision.CLEAN)}

    def serving_spec(self):
        """One ``detect`` signature: ``score`` (= distance), ``is_adversarial``, ``resistance``,
        ``distance`` and ``decision``, all from one graph through the morph engine."""
        from tfdefense.serving import DETECT_OUTPUTS, ServingSpec, Signature

        self._require_fit()

        def detect_fn(x):
            out = self.resistance_tensors(x)
            distance = tf.cast(out["distance"], tf.float32)
            return {"score": distance, "is_adversarial": out["is_adversarial"],
                    "resistance": tf.cast(out["resistance"], tf.float32), "distance": distance,
                    "decision": out["decision"]}

        outputs = dict(
            DETECT_OUTPUTS,
            score="float32 (N,) Eq 5 distance Dis(r, theta_r); > 0 = suspicious",
            is_adversarial="bool (N,) suspicious: some code's resistance below its threshold",
            resistance=f"float32 (N, {len(self.theta_r_)}) share of morphs keeping C(x), per code",
            distance="float32 (N,) Eq 5 distance (the same as score)",
            decision="int32 (N,) 0 clean (accepted), 1 salvageable (purified), 2 rejected")
        return ServingSpec(tuple(self.engine.input_shape), [Signature("detect", detect_fn, outputs)],
                           list(self.components().values()), {
                               "model": "ResistanceDetector", "codes": list(self.engine.codes),
                               "theta_r": np.asarray(self.theta_r_).tolist(),
                               "theta_d": float(self.theta_d_), "detector_config": self.get_config()})

    # -- save and load ----------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """``{"detector": get_params(), "engine": engine.get_params()}`` (JSON-able)."""
        engine = {k: (list(v) if isinstance(v, tuple | list) else v)
                  for k, v in self.engine.get_params().items()}
        return {"detector": self.get_params(), "engine": engine}

    def components(self) -> dict[str, keras.Model]:
        """The engine's combo-VAE and classifier (Keras models)."""
        if not isinstance(self.engine.classifier, keras.Model):
            raise ValueError("classifier: a plain callable cannot be saved or exported; "
                             "build the engine with a Keras model")
        return {"combo_vae": self.engine.combo_vae, "classifier": self.engine.classifier}

    def state(self) -> dict[str, np.ndarray]:
        """θ_r, θ_d and the engine's normal ranges (those fitted so far)."""
        out = {}
        if self.engine.low_ is not None:
            out["low"], out["high"] = np.asarray(self.engine.low_), np.asarray(self.engine.high_)
        if self.theta_r_ is not None:
            out["theta_r"] = np.asarray(self.theta_r_, np.float64)
            out["theta_d"] = np.asarray(self.theta_d_, np.float64)
        return out

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> ResistanceDetector:
        from tfdefense.detect.morphs import MorphEngine

        engine = MorphEngine(components["combo_vae"], components["classifier"],
                             **config.get("engine", {}))
        if "low" in state:
            engine.set_ranges(state["low"], state["high"])
        detector = cls(engine, **config.get("detector", {}))
        if "theta_r" in state:
            detector.theta_r_ = np.asarray(state["theta_r"], np.float64)
            detector.theta_d_ = float(state["theta_d"])
        return detector
