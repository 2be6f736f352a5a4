"""Randomized smoothing: Cohen et al.'s PREDICT and CERTIFY for any Keras classifier.

The smoothed classifier g(x) = argmax_c P[f(x + δ) = c], δ ~ N(0, σ² I), of a base
classifier f (images in [0, 1] → logits) is certifiably robust in l2 (Cohen, Rosenfeld &
Kolter 2019, Theorem 1). ``SmoothedClassifier`` estimates it by Monte Carlo:

* ``certify(x)``: CERTIFY (Cohen et al. §3.2, the pseudocode's right column): n0
  selection draws pick ĉ_A, n further draws count it, the one-sided Clopper–Pearson
  bound at α lower-bounds p_A, and the radius is σ Φ⁻¹(p_A_lower), or the image is
  abstained on (label ``REJECTED_LABEL`` = −1, radius 0) when p_A_lower < 1/2;
* ``predict(x)``: PREDICT (left column): n draws, abstain unless the binomial test of
  the top two counts rejects at α.

Denoised smoothing (Salman et al. 2020, *Denoised Smoothing: A Provable Defense for
Pretrained Classifiers*): with a ``denoiser`` G the base classifier is f(clip(G(x + δ))):
the noise is added in pixel space *before* G. G is a CD-VAE (its ``generate``: G(x) of
``tfdefense.models.CDVAE``, as ``tfdefense.defend.GreyBoxDefense`` reads it) or any Keras
model images → images. ``tfdefense.certify.StabilityTraining`` fine-tunes G for noise.

The counting runs compiled: one ``tf.function`` takes a group of images and a number of
draws, adds stateless Gaussian noise to all of their copies as one batch, classifies them
and sums one-hot votes per image. Python only walks the groups and the chunks of draws
(``batch_size`` noisy images per pass). The noise of each pass comes from a seed derived
from (``seed``, stage, group, chunk), so a result is reproducible for the same ``seed``,
``batch_size`` and images; the selection, estimation and prediction draws are independent.

Defaults are Cohen et al.'s (§4, *Experiments*): n0 = 100, n = 100,000, α = 0.001; they
certify CIFAR-10 at σ ∈ {0.12, 0.25, 0.5, 1.0} and ImageNet at σ ∈ {0.25, 0.5, 1.0};
σ = 0.25 is the default here.

Example:
    >>> import keras, numpy as np
    >>> from tfdefense.certify import SmoothedClassifier
    >>> # logits (x̄ - 0.5, 0.5 - x̄): class 0 iff the mean pixel exceeds 1/2
    >>> base = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                          keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
    ...                              np.tile([[1 / 16, -1 / 16]], (16, 1))),
    ...                              bias_initializer=keras.initializers.Constant([-0.5, 0.5]))])
    >>> smoothed = SmoothedClassifier(base, sigma=0.25, n0=100, n=1000, seed=0)
    >>> result = smoothed.certify(np.full((2, 4, 4, 1), [[[[0.9]]], [[[0.1]]]], "float32"))
    >>> result.labels.tolist(), bool(np.all(result.radii > 0.5))
    ([0, 1], True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.certify import statistics
from tfdefense.decisions import REJECTED_LABEL
from tfdefense.validation import check_images, check_number, check_positive_int

__all__ = ["CertifyResult", "SmoothedClassifier"]

#: Cohen et al. 2019 §4: selection draws n0, estimation draws n, failure probability α
PAPER_N0 = 100
PAPER_N = 100_000
PAPER_ALPHA = 0.001
#: the noise level certified by default (Cohen et al. §4 use 0.12-1.0 on CIFAR-10)
DEFAULT_SIGMA = 0.25

#: independent noise streams of the three Monte Carlo stages
_SELECT, _ESTIMATE, _PREDICT = 0, 1, 2


@dataclass(frozen=True)
class CertifyResult:
    """CERTIFY's answer per image.

    Attributes:
        labels: (N,) certified class, ``REJECTED_LABEL`` (−1) where it abstained.
        radii: (N,) certified l2 radius σ Φ⁻¹(p_A_lower), 0 where it abstained.
        p_lower: (N,) the Clopper–Pearson lower bound on p_A.
        counts: (N,) how many of the n estimation draws the base classifier gave ĉ_A.
        sigma, n0, n, alpha: the settings the result was certified with.
    """

    labels: np.ndarray
    radii: np.ndarray
    p_lower: np.ndarray
    counts: np.ndarray
    sigma: float
    n0: int
    n: int
    alpha: float

    def certified_accuracy(self, y, radii_grid) -> np.ndarray:
        """Fraction of images certified with the true label ``y`` at radius ≥ r, per r."""
        y = np.asarray(y)
        if y.shape != self.labels.shape:
            raise ValueError(f"y: expected {len(self.labels)} labels (one per image), got shape {y.shape}")
        return statistics.certified_accuracy(self.radii, self.labels == y, radii_grid)

    def records(self, y=None) -> list[dict[str, Any]]:
        """One JSON-able dict per image (label, radius, p_lower, count and, given ``y``, the
        true label and whether the certified label is right)."""
        rows = []
        for i in range(len(self.labels)):
            row = {"index": i, "label": int(self.labels[i]), "radius": float(self.radii[i]),
                   "p_lower": float(self.p_lower[i]), "count": int(self.counts[i])}
            if y is not None:
                row["true_label"] = int(y[i])
                row["correct"] = bool(self.labels[i] == y[i])
            rows.append(row)
        return rows


class SmoothedClassifier:
    """The Gaussian-smoothed version of a classifier (optionally behind a denoiser G).

    Args:
        base: images in [0, 1] → logits: a Keras classifier (called with ``training=False``)
            or any callable (e.g. a ``Defense``'s ``logits``).
        sigma: the noise level σ > 0, in pixel units of [0, 1] images.
        denoiser: ``None``, a CD-VAE (anything with ``generate(x, training=...)``), or a
            Keras model images → images; the base classifier then reads clip(G(x + δ)).
        num_classes: the classifier's classes; ``None`` reads them from ``base``'s output.
        n0, n, alpha: CERTIFY's defaults (Cohen et al. §4: 100, 100,000, 0.001).
        batch_size: noisy images per compiled pass (memory bound; all draws of
            ``batch_size // min(n, batch_size)`` images share a pass).
        seed: seed of the noise (results repeat for the same seed, batch size and images).
        clip_denoised: clip G's output to [0, 1] before the classifier reads it.
        verbose: a tqdm bar over the compiled passes.
    """

    def __init__(self, base: Callable, sigma: float = DEFAULT_SIGMA, *, denoiser: Any = None,
                 num_classes: int | None = None, n0: int = PAPER_N0, n: int = PAPER_N,
                 alpha: float = PAPER_ALPHA, batch_size: int = 1000, seed: int = 0,
                 clip_denoised: bool = True, verbose: bool = False):
        if not callable(base):
            raise ValueError(f"base: expected a callable images -> logits, got {base!r}")
        if denoiser is not None and not (hasattr(denoiser, "generate") or callable(denoiser)):
            raise ValueError(f"denoiser: expected a CD-VAE or a Keras model images -> images, "
                             f"got {denoiser!r}")
        self.base = base
        self.denoiser = denoiser
        self.sigma = check_number(sigma, "sigma", low=0.0, low_inclusive=False)
        self.n0 = check_positive_int(n0, "n0")
        self.n = check_positive_int(n, "n")
        self.alpha = self._alpha(alpha)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes", 2)
        if not isinstance(clip_denoised, bool):
            raise ValueError(f"clip_denoised: expected True or False, got {clip_denoised!r}")
        self.clip_denoised = clip_denoised
        self.verbose = bool(verbose)
        self._counter: Callable | None = None
        self._image_shape: tuple[int, ...] | None = None

    @staticmethod
    def _alpha(alpha: float) -> float:
        return check_number(alpha, "alpha", low=0.0, high=0.5, low_inclusive=False, high_inclusive=False)

    # ------------------------------------------------------------------ the base classifier
    def classify(self, x: tf.Tensor) -> tf.Tensor:
        """Logits of the base classifier (behind the denoiser, if any) on noisy images."""
        if self.denoiser is not None:
            if hasattr(self.denoiser, "generate"):
                x = self.denoiser.generate(x, training=False)
            else:
                x = self.denoiser(x, training=False)
            x = tf.cast(x, tf.float32)
            if self.clip_denoised:
                x = tf.clip_by_value(x, 0.0, 1.0)
        if isinstance(self.base, keras.layers.Layer):
            return tf.cast(self.base(x, training=False), tf.float32)
        return tf.cast(self.base(x), tf.float32)

    def _check(self, x) -> np.ndarray:
        shape = getattr(self.base, "input_shape", None) if self.denoiser is None else None
        shape = tuple(shape[1:]) if isinstance(shape, tuple) and len(shape) == 4 else None
        x = check_images(x, "x", shape=shape)
        if self._image_shape is not None and x.shape[1:] != self._image_shape:
            raise ValueError(f"x: expected images of shape (N, {', '.join(map(str, self._image_shape))}) "
                             f"as before, got {x.shape}")
        if self.num_classes is None:
            logits = self.classify(tf.constant(x[:1]))
            if logits.shape.rank != 2 or logits.shape[-1] < 2:
                raise ValueError(f"base: expected logits of shape (N, classes >= 2), got {logits.shape}")
            self.num_classes = int(logits.shape[-1])
        return x

    def _count_graph(self, image_shape: tuple[int, ...]) -> Callable:
        if self._counter is None:
            self._image_shape = image_shape
            classes = self.num_classes

            @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.float32),
                                          tf.TensorSpec((), tf.int32), tf.TensorSpec((2,), tf.int64)],
                         reduce_retracing=True)
            def count(x, draws, seed):
                images = tf.shape(x)[0]
                copies = tf.repeat(x, draws, axis=0)  # image-major: draws of image i are adjacent
                noise = tf.random.stateless_normal(tf.shape(copies), seed=seed, dtype=tf.float32)
                logits = self.classify(copies + self.sigma * noise)
                votes = tf.one_hot(tf.argmax(logits, axis=-1, output_type=tf.int32), classes,
                                   dtype=tf.int32)
                return tf.reduce_sum(tf.reshape(votes, (images, draws, classes)), axis=1)

            self._counter = count
        return self._counter

    # ------------------------------------------------------------------ Monte Carlo counts
    def sample_counts(self, x, n: int, stage: int = _ESTIMATE) -> np.ndarray:
        """(N, classes) int64: how often the base classifier chose each class in ``n`` noisy
        draws of each image (``stage`` picks an independent noise stream: 0 selection,
        1 estimation, 2 prediction)."""
        x = self._check(x)
        n = check_positive_int(n, "n")
        count = self._count_graph(tuple(x.shape[1:]))
        per_pass = min(n, self.batch_size)
        group = max(1, self.batch_size // per_pass)
        chunks = -(-n // per_pass)
        starts = range(0, len(x), group)
        counts = np.zeros((len(x), self.num_classes), np.int64)
        with tqdm(total=len(starts) * chunks, desc=f"smoothing σ={self.sigma:g}", unit="pass",
                  disable=not self.verbose) as bar:
            for g, start in enumerate(starts):
                images = tf.constant(x[start:start + group])
                for c in range(chunks):
                    draws = min(per_pass, n - c * per_pass)
                    seed = np.random.SeedSequence((self.seed, stage, g, c)).generate_state(2)
                    counts[start:start + group] += count(images, tf.constant(draws, tf.int32),
                                                         tf.constant(seed.astype(np.int64))).numpy()
                    bar.update()
        return counts

    # ------------------------------------------------------------------ PREDICT and CERTIFY
    def predict(self, x, n: int | None = None, alpha: float | None = None) -> np.ndarray:
        """PREDICT: the smoothed label per image, ``REJECTED_LABEL`` (−1) where the two-sided
        binomial test of the top two counts does not reject at ``alpha`` (then the top
        class is not the smoothed classifier's with probability ≥ 1 − α)."""
        n = self.n if n is None else check_positive_int(n, "n")
        alpha = self.alpha if alpha is None else self._alpha(alpha)
        counts = self.sample_counts(x, n, _PREDICT)
        order = np.argsort(-counts, axis=1, kind="stable")
        rows = np.arange(len(counts))
        top, second = counts[rows, order[:, 0]], counts[rows, order[:, 1]]
        p = statistics.abstain_p_value(top, second)
        return np.where(p <= alpha, order[:, 0], REJECTED_LABEL).astype(np.int64)

    def certify(self, x, n0: int | None = None, n: int | None = None,
                alpha: float | None = None) -> CertifyResult:
        """CERTIFY: per image the class ĉ_A of the most votes in ``n0`` draws, the lower bound
        p_A_lower on its probability from ``n`` other draws, and the radius σ Φ⁻¹(p_A_lower)
        (abstain, label −1 and radius 0, when p_A_lower < 1/2)."""
        n0 = self.n0 if n0 is None else check_positive_int(n0, "n0")
        n = self.n if n is None else check_positive_int(n, "n")
        alpha = self.alpha if alpha is None else self._alpha(alpha)
        selected = np.argmax(self.sample_counts(x, n0, _SELECT), axis=1)
        counts = self.sample_counts(x, n, _ESTIMATE)[np.arange(len(selected)), selected]
        p_lower = statistics.lower_confidence_bound(counts, n, alpha)
        certified = p_lower >= 0.5
        return CertifyResult(labels=np.where(certified, selected, REJECTED_LABEL).astype(np.int64),
                             radii=statistics.certified_radius(p_lower, self.sigma),
                             p_lower=p_lower, counts=counts, sigma=self.sigma, n0=n0, n=n,
                             alpha=alpha)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """The settings (not the models): ``from_config(config, base, denoiser)`` rebuilds it."""
        return {"sigma": self.sigma, "num_classes": self.num_classes, "n0": self.n0, "n": self.n,
                "alpha": self.alpha, "batch_size": self.batch_size, "seed": self.seed,
                "clip_denoised": self.clip_denoised}

    @classmethod
    def from_config(cls, config: dict[str, Any], base: Callable,
                    denoiser: Any = None) -> SmoothedClassifier:
        return cls(base, denoiser=denoiser, **config)
