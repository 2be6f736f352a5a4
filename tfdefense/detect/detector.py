"""LogisticDetector: logistic regression over KD, LID and Mahalanobis characteristics.

The protocol of Feinman et al., Ma et al. and Lee et al. (whose code CD-VAE's
Table 4 uses): characteristics of clean, *noisy* (Gaussian noise of the
adversarial perturbation's size, labelled clean) and adversarial images are
fed to sklearn's ``LogisticRegressionCV`` (after standard scaling, as Feinman
et al. and Ma et al. z-score them); the detector outputs the probability that
an input is adversarial. Hyperparameters given as a grid (LID's k,
Mahalanobis' noise magnitude) are selected per characteristic by the ROC AUC
of a single-characteristic regression on a held-out validation part of the
detection data (Lee et al.'s ADV_Regression), then the final regression is
fitted on all of it. A ``Detector``: ``fit``, ``score(x)``,
``detect(x) -> (report, is_adversarial)``, ``save`` / ``load`` (an ``.npz``; the
classifier is passed back to ``load``) and ``serving_spec()`` (one ``detect`` graph:
KD and Mahalanobis in TensorFlow, the fitted scaler and regression as constants; LID
has no single-graph form, ``lid.LID_REASON``).

Example:
    >>> import numpy as np
    >>> from tfdefense.nets import small_cnn
    >>> from tfdefense.detect import LogisticDetector
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(60, 28, 28, 1)).astype("float32")
    >>> y = np.arange(60) % 10
    >>> x_adv = np.clip(x + 0.3 * np.sign(rng.normal(size=x.shape)), 0, 1).astype("float32")
    >>> det = LogisticDetector(small_cnn(), features=["mahalanobis"], md_magnitude=0.0)
    >>> det = det.fit(x, y, x_clean=x[:30], x_adv=x_adv[:30])
    >>> report, flagged = det.detect(x_adv[30:])
    >>> flagged.shape, sorted(report)
    ((30,), ['feature_names', 'features', 'probability', 'threshold'])
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tfdefense.detect import metrics
from tfdefense.detect.base import Detector, register_detector
from tfdefense.detect.extractor import FeatureExtractor
from tfdefense.detect.kernel_density import KernelDensity
from tfdefense.detect.lid import K_GRID, LID, LID_REASON
from tfdefense.detect.mahalanobis import MAGNITUDES, Mahalanobis
from tfdefense.validation import check_images, check_number, check_positive_int

#: characteristic names LogisticDetector accepts
FEATURES = ("kd", "lid", "mahalanobis")
#: layers each characteristic reads by default: Feinman et al. the last hidden
#: layer, Ma et al. and Lee et al. every layer
DEFAULT_LAYERS = {"kd": None, "lid": "all", "mahalanobis": "all"}
ON = ("input", "residual")


def make_noisy(x_clean, x_adv=None, std: float | None = None, seed: int = 0) -> np.ndarray:
    """Gaussian-noise copies of ``x_clean`` clipped to [0, 1], the protocols' "noisy" class.

    Ma et al. tune the noise so its L2 size matches the adversarial
    perturbation; with ``std=None`` it is set from ``x_adv``: the mean
    ||x_adv - x_clean||_2 over images, divided by sqrt(pixels) (before clipping).
    """
    x_clean = check_images(x_clean, "x_clean")
    if std is None:
        if x_adv is None:
            raise ValueError("std: expected a noise std or x_adv to match its perturbation size")
        x_adv = check_images(x_adv, "x_adv", shape=x_clean.shape[1:])
        if len(x_adv) != len(x_clean):
            raise ValueError(
                f"x_adv: expected one adversarial image per clean image ({len(x_clean)}), got {len(x_adv)}"
            )
        l2 = np.linalg.norm((x_adv - x_clean).reshape(len(x_clean), -1), axis=1).mean()
        std = float(l2 / np.sqrt(x_clean[0].size))
    std = check_number(std, "std", low=0.0)
    noise = np.random.default_rng(seed).normal(0.0, std, size=x_clean.shape)
    return np.clip(x_clean + noise, 0.0, 1.0).astype(np.float32)


def _check_features(features, labels=None):
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        raise ValueError(f"features: expected a non-empty matrix (N, F), got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        bad = np.unique(np.nonzero(~np.isfinite(f))[1]).tolist()
        raise ValueError(f"features: contains NaN or infinite values (columns {bad})")
    if labels is None:
        return f
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(f):
        raise ValueError(f"labels: expected one label per feature row ({len(f)}), got shape {y.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels: expected 0 (clean) or 1 (adversarial), got {np.unique(y)[:10]}")
    counts = np.bincount(y.astype(np.int64), minlength=2)
    if np.any(counts < 2):
        raise ValueError(
            f"labels: expected at least 2 clean (0) and 2 adversarial (1) examples, "
            f"got {counts[0]} clean and {counts[1]} adversarial"
        )
    return f, y.astype(np.int64)


@register_detector
class LogisticDetector(Detector):
    """Adversarial-example detector: characteristics -> scaled logistic regression.

    Args:
        model: the classifier whose layers are read: a Keras model, a callable
            (see ``FeatureExtractor``), a ``FeatureExtractor`` (used for every
            characteristic), or, with ``on="residual"``, a CD-VAE
            (``decompose`` and ``classifier``).
        features: names from ``FEATURES``.
        on: "input" (x) or "residual" (R(x) = x - G(x) with the CD-VAE's D, CD-VAE §3.3).
        layers: {feature: layers} overriding ``DEFAULT_LAYERS`` (see ``resolve_layers``).
        kd_bandwidth: Feinman et al.'s MNIST bandwidth 1.20 by default.
        lid_k: k, or a grid to select from (Lee et al.'s 10..90 by default).
        lid_batch_size: LID minibatch (Ma et al.: 100).
        md_magnitude: eps, or a grid to select from (Lee et al.'s ``MAGNITUDES``).
        validation_split: fraction of the detection data held out to select
            grid hyperparameters (images, with their noisy and adversarial twins).
        noise_std: std of the noisy class; None matches the adversarial L2 size.
        threshold: probability at which ``detect`` flags an input.
        seed: seeds the split, the noise and LID's reference minibatches.
    """

    def __init__(
        self,
        model,
        features: Sequence[str] = FEATURES,
        on: str = "input",
        layers: dict | None = None,
        kd_bandwidth: float = 1.20,
        lid_k: int | Sequence[int] = K_GRID,
        lid_batch_size: int = 100,
        md_magnitude: float | Sequence[float] = MAGNITUDES,
        validation_split: float = 0.3,
        noise_std: float | None = None,
        threshold: float = 0.5,
        seed: int = 0,
    ):
        self.model = model
        self.features = [features] if isinstance(features, str) else list(features)
        self.on = on
        self.layers = dict(layers or {})
        self.kd_bandwidth = kd_bandwidth
        self.lid_k = lid_k
        self.lid_batch_size = lid_batch_size
        self.md_magnitude = md_magnitude
        self.validation_split = validation_split
        self.noise_std = noise_std
        self.threshold = threshold
        self.seed = seed
        self._check_params()
        self.characteristics = {name: self._build(name) for name in self.features}
        self._pipeline = None

    def _check_params(self):
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features or len(set(self.features)) != len(self.features):
            raise ValueError(f"features: expected distinct names from {FEATURES}, got {self.features}")
        if self.on not in ON:
            raise ValueError(f"on: expected one of {ON}, got {self.on!r}")
        if self.on == "residual" and not (
            hasattr(self.model, "decompose") and hasattr(self.model, "classifier")
        ):
            raise ValueError("model: on='residual' needs a CD-VAE with decompose(x) and classifier")
        bad = [k for k in self.layers if k not in FEATURES]
        if bad:
            raise ValueError(f"layers: expected keys from {FEATURES}, got {bad}")
        self.kd_bandwidth = check_number(self.kd_bandwidth, "kd_bandwidth", 0.0, low_inclusive=False)
        self.lid_k = _grid(self.lid_k, "lid_k", lambda v, n: check_positive_int(v, n))
        self.lid_batch_size = check_positive_int(self.lid_batch_size, "lid_batch_size", minimum=2)
        if max(self.lid_k) >= self.lid_batch_size:
            raise ValueError(
                f"lid_k: expected k < lid_batch_size={self.lid_batch_size}, got {max(self.lid_k)}"
            )
        self.md_magnitude = _grid(self.md_magnitude, "md_magnitude", lambda v, n: check_number(v, n, low=0.0))
        self.validation_split = check_number(self.validation_split, "validation_split", 0.0, 0.9)
        if self.noise_std is not None:
            self.noise_std = check_number(self.noise_std, "noise_std", low=0.0)
        self.threshold = check_number(self.threshold, "threshold", 0.0, 1.0)
        self.seed = check_positive_int(self.seed, "seed", minimum=0)

    def _extractor(self, name: str) -> FeatureExtractor:
        if isinstance(self.model, FeatureExtractor):
            return self.model
        layers = self.layers.get(name, DEFAULT_LAYERS[name])
        if self.on == "residual":
            return FeatureExtractor.for_residual(self.model, layers=layers)
        return FeatureExtractor(self.model, layers=layers)

    def _build(self, name: str):
        fx = self._extractor(name)
        if name == "kd":
            return KernelDensity(fx, bandwidth=self.kd_bandwidth)
        if name == "lid":
            return LID(fx, k=self.lid_k[0], batch_size=self.lid_batch_size, seed=self.seed)
        return Mahalanobis(fx, magnitude=self.md_magnitude[0])

    def get_config(self) -> dict:
        """Constructor arguments except ``model`` (rebuild with ``from_config(config, model)``)."""
        return {
            "features": list(self.features),
            "on": self.on,
            "layers": dict(self.layers),
            "kd_bandwidth": self.kd_bandwidth,
            "lid_k": list(self.lid_k),
            "lid_batch_size": self.lid_batch_size,
            "md_magnitude": list(self.md_magnitude),
            "validation_split": self.validation_split,
            "noise_std": self.noise_std,
            "threshold": self.threshold,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict, model) -> LogisticDetector:
        """A new (unfitted) detector with ``config`` around ``model``."""
        return cls(model, **config)

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self, x_train, y_train, x_clean, x_adv, x_noisy=None, refit_characteristics: bool = True
    ) -> LogisticDetector:
        """Fit the characteristics on clean training data, then the regression.

        Args:
            x_train, y_train: clean training images and labels (KD densities,
                Mahalanobis Gaussians, LID reference minibatches).
            x_clean, x_adv: detection data, the i-th adversarial image made from
                the i-th clean one; held apart from the evaluation data.
            x_noisy: the noisy twins; default ``make_noisy(x_clean, x_adv, noise_std)``.
            refit_characteristics: False keeps the class densities / Gaussians
                of an earlier ``fit`` on the same training data (they do not
                depend on the attack), so one detector re-fits its regression
                per attack without recomputing them or retracing its graphs.
        """
        x_train = check_images(x_train, "x_train")
        x_clean = check_images(x_clean, "x_clean", shape=x_train.shape[1:])
        x_adv = check_images(x_adv, "x_adv", shape=x_train.shape[1:])
        if len(x_adv) != len(x_clean):
            raise ValueError(
                f"x_adv: expected one adversarial image per clean image ({len(x_clean)}), got {len(x_adv)}"
            )
        if x_noisy is None:
            x_noisy = make_noisy(x_clean, x_adv, self.noise_std, seed=self.seed)
        x_noisy = check_images(x_noisy, "x_noisy", shape=x_train.shape[1:])
        if len(x_noisy) != len(x_clean):
            raise ValueError(f"x_noisy: expected {len(x_clean)} images, got {len(x_noisy)}")
        if refit_characteristics or not getattr(self, "_characteristics_fitted", False):
            for c in self.characteristics.values():
                c.fit(x_train, y_train)
            self._characteristics_fitted = True
            self._train = (x_train, np.asarray(y_train))  # kept for save(): fitting is deterministic
        n = len(x_clean)
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = int(round(n * self.validation_split))
        val, tr = order[:n_val], order[n_val:]
        labels = np.repeat([0, 0, 1], n)
        self.selection_ = {}
        columns = []
        for name, c in self.characteristics.items():
            grids = self._grid_scores(name, c, (x_clean, x_noisy, x_adv))
            best = next(iter(grids))
            if len(grids) > 1:
                if n_val < 2 or len(tr) < 2:
                    raise ValueError(
                        f"validation_split: selecting {name} hyperparameters needs "
                        f"at least 2 training and 2 validation images, got {len(tr)} "
                        f"and {n_val} of {n}"
                    )
                aucs = {p: _validation_auc(f, n, tr, val) for p, f in grids.items()}
                best = max(aucs, key=aucs.get)
                self.selection_[name] = {"selected": best, "validation_auc": aucs}
            self._set_param(name, best)
            columns.append(grids[best])
        self.fit_features(np.concatenate(columns, axis=1), labels)
        self.feature_names_ = [fn for c in self.characteristics.values() for fn in c.feature_names()]
        return self

    def _grid_scores(self, name, c, sets) -> dict:
        if name == "lid":
            parts = [c.score_grid(x, self.lid_k) for x in sets]
            return {k: np.concatenate([p[k] for p in parts]) for k in self.lid_k}
        if name == "mahalanobis":
            parts = [c.score_grid(x, self.md_magnitude) for x in sets]
            return {m: np.concatenate([p[m] for p in parts]) for m in self.md_magnitude}
        return {self.kd_bandwidth: np.concatenate([c.score(x) for x in sets])}

    def _set_param(self, name, value):
        if name == "lid":
            self.characteristics[name].k = value
        elif name == "mahalanobis":
            self.characteristics[name].magnitude = value

    def fit_features(self, features, labels) -> LogisticDetector:
        """Fit only the regression on precomputed characteristics (labels 1 = adversarial)."""
        self._pipeline = _fit_regression(features, labels)
        self.num_features_ = self._pipeline.n_features_in_
        return self

    # -- persistence -----------------------------------------------------------------------

    def save(self, path: str) -> str:
        """Write the fitted detector to ``path`` (``.npz``; no pickle, so loading runs no code).

        Stores the configuration, the selected hyperparameters, the clean
        training images the characteristics were fitted on (their statistics
        are recomputed on ``load``: KD's densities, Mahalanobis' Gaussians and
        LID's reference batches are deterministic functions of them) and the
        scaler and logistic-regression parameters. The model is not stored:
        pass the same trained model to ``load``.
        """
        if self._pipeline is None or not hasattr(self, "_train"):
            raise ValueError("LogisticDetector.save: call fit(...) first")
        if not path.endswith(".npz"):
            path += ".npz"
        scaler, regression = self._pipeline[0], self._pipeline[-1]
        selected = {"lid": getattr(self.characteristics.get("lid"), "k", None),
                    "mahalanobis": getattr(self.characteristics.get("mahalanobis"), "magnitude", None)}
        tmp = path + ".partial.npz"
        np.savez(tmp, config=json.dumps(self.get_config()), selected=json.dumps(selected),
                 feature_names=json.dumps(self.feature_names_), x_train=self._train[0],
                 y_train=self._train[1], scaler_mean=scaler.mean_, scaler_scale=scaler.scale_,
                 coef=regression.coef_, intercept=regression.intercept_, classes=regression.classes_)
        os.replace(tmp, path)  # never a half-written detector
        return path

    @classmethod
    def load(cls, path: str, model) -> LogisticDetector:
        """Rebuild a detector written by ``save`` around ``model`` (the one it was fitted on).

        Example:
            >>> import tempfile, numpy as np
            >>> from tfdefense.nets import small_cnn
            >>> rng = np.random.default_rng(0)
            >>> x = rng.uniform(size=(40, 28, 28, 1)).astype("float32")
            >>> x_adv = np.clip(x + 0.3, 0, 1).astype("float32")
            >>> net = small_cnn()
            >>> det = LogisticDetector(net, features=["mahalanobis"], md_magnitude=0.0)
            >>> det = det.fit(x, np.arange(40) % 10, x[:20], x_adv[:20])
            >>> path = det.save(tempfile.mkdtemp() + "/detector.npz")
            >>> again = LogisticDetector.load(path, net)
            >>> bool(np.allclose(again.score(x_adv[20:]), det.score(x_adv[20:]), atol=1e-5))
            True
        """
        if not os.path.isfile(path):
            raise ValueError(f"path: no saved detector at {path!r}")
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
        missing = {"config", "x_train", "coef"} - set(stored)
        if missing:
            raise ValueError(f"path: {path!r} is not a saved LogisticDetector (missing {sorted(missing)})")
        det = cls.from_config(json.loads(str(stored["config"])), model)
        x_train, y_train = stored["x_train"], stored["y_train"]
        for c in det.characteristics.values():
            c.fit(x_train, y_train)
        det._characteristics_fitted, det._train = True, (x_train, y_train)
        for name, value in json.loads(str(stored["selected"])).items():
            if value is not None and name in det.characteristics:
                det._set_param(name, value)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = stored["scaler_mean"], stored["scaler_scale"]
        scaler.var_, scaler.n_features_in_ = scaler.scale_**2, len(scaler.mean_)
        scaler.n_samples_seen_ = 0
        regression = LogisticRegression()
        regression.coef_, regression.intercept_ = stored["coef"], stored["intercept"]
        regression.classes_, regression.n_features_in_ = stored["classes"], stored["coef"].shape[1]
        det._pipeline = make_pipeline(scaler, regression)
        det.num_features_ = regression.n_features_in_
        det.feature_names_ = json.loads(str(stored["feature_names"]))
        return det

    # -- inference -------------------------------------------------------------------------

    def features_of(self, x) -> np.ndarray:
        """(N, F) characteristics of ``x`` with the selected hyperparameters."""
        if self._pipeline is None:
            raise ValueError("LogisticDetector: call fit(...) before score/detect")
        return np.concatenate([c.score(x) for c in self.characteristics.values()], axis=1)

    def score_features(self, features) -> np.ndarray:
        """Probability of being adversarial for precomputed characteristics."""
        if self._pipeline is None:
            raise ValueError("LogisticDetector: call fit(...) or fit_features(...) first")
        f = _check_features(features)
        if f.shape[1] != self.num_features_:
            raise ValueError(f"features: expected {self.num_features_} columns, got {f.shape[1]}")
        return self._pipeline.predict_proba(f)[:, 1]

    def score(self, x) -> np.ndarray:
        """(N,) probability that each image is adversarial."""
        return self.score_features(self.features_of(x))

    # -- graph form (export) ---------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        """True once the regression is fitted (``fit`` or ``fit_features``)."""
        return self._pipeline is not None

    def regression_parameters(self) -> dict[str, np.ndarray]:
        """The fitted scaler and regression: ``mean``, ``scale``, ``coef`` (F,) and ``intercept``.

        ``probability = sigmoid(sum((features - mean) / scale * coef) + intercept)``, what
        ``score_features`` computes (a binary logistic regression).
        """
        if self._pipeline is None:
            raise ValueError("LogisticDetector: call fit(...) or fit_features(...) first")
        scaler, regression = self._pipeline[0], self._pipeline[-1]
        return {"mean": np.asarray(scaler.mean_, np.float64),
                "scale": np.asarray(scaler.scale_, np.float64),
                "coef": np.ravel(regression.coef_).astype(np.float64),
                "intercept": np.asarray(float(np.ravel(regression.intercept_)[0]), np.float64)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-image shape (H, W, C) the characteristics read."""
        return tuple(self.characteristics[self.features[0]].extractor.input_shape)

    def models(self) -> list:
        """The Keras models the characteristics read (the classifier; the CD-VAE on R(x))."""
        found = [self.model]
        for c in self.characteristics.values():
            if all(c.extractor.model is not m for m in found):
                found.append(c.extractor.model)
        return found

    def features_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """(N, F) float64 characteristics of a batch as TensorFlow ops (no LID: ``LID_REASON``)."""
        if self._pipeline is None:
            raise ValueError("LogisticDetector: call fit(...) before score/detect")
        return tf.concat([c.score_tensor(x) for c in self.characteristics.values()], axis=1)

    def probability_tensor(self, features: tf.Tensor) -> tf.Tensor:
        """(N,) float64 probability of being adversarial for (N, F) characteristics, as TF ops."""
        p = self.regression_parameters()
        z = tf.reduce_sum((tf.cast(features, tf.float64) - p["mean"]) / p["scale"] * p["coef"],
                          axis=1)
        return tf.sigmoid(z + p["intercept"])

    def serving_spec(self):
        """One ``detect`` signature: ``score`` (probability), ``is_adversarial``, ``features``."""
        from tfdefense.serving import DETECT_OUTPUTS, ServingSpec, Signature

        if self._pipeline is None:
            raise ValueError("detector: not fitted; call fit(...) before export")
        if "lid" in self.features:
            raise ValueError(f"detector: a LogisticDetector with 'lid' is not exportable: "
                             f"{LID_REASON}; export one fitted on ['kd', 'mahalanobis']")

        def detect_fn(x):
            features = self.features_tensor(x)
            prob = self.probability_tensor(features)
            return {"score": tf.cast(prob, tf.float32), "is_adversarial": prob >= self.threshold,
                    "features": tf.cast(features, tf.float32)}

        outputs = dict(DETECT_OUTPUTS, score="float32 (N,) probability that the input is adversarial",
                       features=f"float32 (N, F) characteristics {list(self.feature_names_)}")
        return ServingSpec(self.input_shape, [Signature("detect", detect_fn, outputs)], self.models(), {
            "model": "LogisticDetector", "features": list(self.feature_names_), "on": self.on,
            "threshold": self.threshold})

    def detect(self, x) -> tuple[dict, np.ndarray]:
        """(report, is_adversarial): report has probability, features, names, threshold."""
        feats = self.features_of(x)
        prob = self.score_features(feats)
        report = {
            "probability": prob,
            "features": feats,
            "feature_names": list(self.feature_names_),
            "threshold": self.threshold,
        }
        return report, prob >= self.threshold

    def evaluate(self, x_clean, x_adv, x_noisy=None) -> metrics.DetectionMetrics:
        """TNR at 95% TPR, AUC, detection accuracy on held-out clean (+ noisy) vs adversarial."""
        negatives = [x_clean] if x_noisy is None else [x_clean, x_noisy]
        scores = [self.score(x) for x in negatives]
        adv = self.score(x_adv)
        labels = np.concatenate([np.zeros(sum(len(s) for s in scores)), np.ones(len(adv))])
        return metrics.evaluate(labels, np.concatenate([*scores, adv]))


def _grid(value, name, check) -> list:
    values = [value] if np.isscalar(value) else list(value)
    if not values:
        raise ValueError(f"{name}: expected a value or a non-empty grid, got {value!r}")
    return [check(v, name) for v in values]


def _validation_auc(features: np.ndarray, n: int, tr: np.ndarray, val: np.ndarray) -> float:
    """AUC on the validation images of a regression fitted on the training images."""
    rows = lambda idx: np.concatenate([idx, idx + n, idx + 2 * n])  # noqa: E731
    labels = np.repeat([0, 0, 1], n)
    pipeline = _fit_regression(features[rows(tr)], labels[rows(tr)])
    return metrics.roc_auc(labels[rows(val)], pipeline.predict_proba(features[rows(val)])[:, 1])


def _fit_regression(features, labels):
    """StandardScaler + L2 LogisticRegressionCV (5-fold, fewer if a class is smaller).

    C is chosen by log-loss (sklearn's coming default; the papers' code used accuracy).
    """
    f, y = _check_features(features, labels)
    cv = int(min(5, np.bincount(y).min()))
    pipeline = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            cv=cv,
            l1_ratios=(0.0,),
            scoring="neg_log_loss",
            max_iter=1000,
            use_legacy_attributes=False,
        ),
    )
    # One BLAS thread: these regressions are tiny (features x a few hundred images), and
    # OpenBLAS's threads cost more than they save there; on 2 cores under load a fit took 8x
    # longer with 2 threads (2.4 s vs 0.30 s; the coefficients are identical). TensorFlow's own
    # thread pools are not affected.
    with threadpool_limits(1, user_api="blas"):
        return pipeline.fit(f, y)
