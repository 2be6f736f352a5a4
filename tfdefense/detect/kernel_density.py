"""Kernel density of a sample's features under its predicted class (Feinman et al. 2017).

Feinman et al., "Detecting adversarial samples from artifacts", §3.1: fit a
Gaussian kernel density estimate on the last-hidden-layer features of the
clean training images of each class, and score an input by the log density of
its features under the class the classifier predicts for it. Adversarial
inputs sit off the class manifold, so their density is *lower*
(``adversarial_sign = -1``). CD-VAE §3.3 applies the same on R(x) with the
CD-VAE's classifier D.

The kernel is sklearn's Gaussian ``KernelDensity`` (as in the authors' code),
``exp(-||z - z_i||^2 / (2 h^2))``, and the score equals
``KernelDensity(bandwidth=h).fit(Z_c).score_samples(z)``; distances are
computed in float64, batched in a compiled function.

Bandwidths from Feinman et al.'s code (tuned by cross-validation on their
models): MNIST 1.20, CIFAR-10 0.26, SVHN 1.00. They suit their networks'
feature scales; re-tune for another model.

Example:
    >>> import numpy as np
    >>> from tfdefense.nets import small_cnn
    >>> from tfdefense.detect import FeatureExtractor, KernelDensity
    >>> x = np.random.default_rng(0).uniform(size=(20, 28, 28, 1)).astype("float32")
    >>> y = np.arange(20) % 10
    >>> kd = KernelDensity(FeatureExtractor(small_cnn()), bandwidth=1.20).fit(x, y)
    >>> kd.score(x[:3]).shape
    (3, 1)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdefense.detect.characteristic import Characteristic, minibatches
from tfdefense.validation import check_labels, check_number, check_positive_int

#: Feinman et al.'s bandwidths (their detect_adv_samples.py, "determined from CV tuning")
BANDWIDTHS = {"mnist": 1.20, "mnist_5k": 1.20, "cifar10": 0.26, "svhn": 1.00}


def bandwidth_for(dataset: str) -> float:
    """Feinman et al.'s bandwidth for ``dataset`` (mnist 1.20, cifar10 0.26, svhn 1.00)."""
    if dataset not in BANDWIDTHS:
        raise ValueError(
            f"dataset: expected one of {sorted(BANDWIDTHS)} for a published "
            f"bandwidth, got {dataset!r}; pass bandwidth= yourself"
        )
    return BANDWIDTHS[dataset]


@tf.function(reduce_retracing=True)
def class_log_density(query, pred, train, train_labels, log_norm, inv_two_h2):
    """log KDE density of each query row under the training rows of its class.

    Args:
        query: (B, D) float64 features; pred: (B,) int class per query row.
        train: (N, D) float64; train_labels: (N,) int.
        log_norm: (C,) float64, log(n_c) + D/2 log(2 pi h^2).
        inv_two_h2: scalar 1 / (2 h^2).
    """
    d2 = (
        tf.reduce_sum(query**2, 1, keepdims=True)
        - 2.0 * tf.matmul(query, train, transpose_b=True)
        + tf.reduce_sum(train**2, 1)[None, :]
    )
    d2 = tf.maximum(d2, 0.0)
    same = tf.equal(pred[:, None], train_labels[None, :])
    logk = tf.where(same, -d2 * inv_two_h2, tf.constant(-np.inf, tf.float64))
    return tf.reduce_logsumexp(logk, axis=1) - tf.gather(log_norm, pred)


class KernelDensity(Characteristic):
    """Class-conditional Gaussian kernel density, one column per extractor layer.

    Args:
        extractor: a ``FeatureExtractor`` with logits (or a Keras model); Feinman
            et al. read the last hidden layer (the extractor's default).
        bandwidth: kernel bandwidth h; 1.20 is Feinman et al.'s MNIST value
            (``bandwidth_for`` has the others).
        batch_size: query rows per compiled call.
    """

    name = "kd"
    adversarial_sign = -1

    def __init__(self, extractor, bandwidth: float = 1.20, batch_size: int = 256):
        super().__init__(extractor)
        self.bandwidth = bandwidth
        self.batch_size = batch_size
        self._check_params()

    def _check_params(self):
        self.bandwidth = check_number(self.bandwidth, "bandwidth", low=0.0, low_inclusive=False)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        if not self.extractor.has_logits:
            raise ValueError(
                "extractor: kernel density needs the classifier's logits (its "
                "predicted class); pass a Keras model or logits_fn="
            )

    def get_config(self) -> dict:
        return {"bandwidth": self.bandwidth, "batch_size": self.batch_size}

    def fit(self, x, y) -> KernelDensity:
        """Store the clean training features of every class."""
        x = self.extractor.check(x, "x")
        acts, logits = self.extractor.extract(x, reduce=self.reduce)
        num_classes = logits.shape[-1]
        y = check_labels(y, num_classes, "y", n=len(x))
        counts = np.bincount(y, minlength=num_classes)
        if np.any(counts == 0):
            raise ValueError(
                f"y: kernel density needs training samples of every class, "
                f"classes {np.flatnonzero(counts == 0).tolist()} have none"
            )
        self._train = [tf.constant(a, tf.float64) for a in acts]
        self._labels = tf.constant(y)
        h2 = self.bandwidth**2
        self._log_norm = [
            tf.constant(np.log(counts) + 0.5 * a.shape[1] * math.log(2 * math.pi * h2)) for a in acts
        ]
        self._columns = len(acts)
        self._fitted = True
        return self

    def score(self, x) -> np.ndarray:
        """(N, L) log densities; low values flag adversarial inputs."""
        self._require_fitted()
        acts, logits = self.extractor.extract(x, reduce=self.reduce)
        return self.score_features(acts, np.argmax(logits, axis=1))

    def score_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """(N, L) float64 log densities of a batch as TensorFlow ops (one exported graph)."""
        self._require_fitted()
        acts, logits = self.extractor.activations(x, reduce=self.reduce)
        pred = tf.cast(tf.argmax(logits, axis=-1), self._labels.dtype)
        inv = tf.constant(1.0 / (2.0 * self.bandwidth**2), tf.float64)
        cols = [class_log_density(tf.reshape(tf.cast(a, tf.float64), [tf.shape(a)[0], -1]), pred,
                                  train, self._labels, log_norm, inv)
                for a, train, log_norm in zip(acts, self._train, self._log_norm, strict=True)]
        return tf.stack(cols, axis=1)

    def score_features(self, acts, pred) -> np.ndarray:
        """Log densities of precomputed activations ``acts`` under classes ``pred``."""
        self._require_fitted()
        inv = tf.constant(1.0 / (2.0 * self.bandwidth**2), tf.float64)
        cols = []
        for a, train, log_norm in zip(acts, self._train, self._log_norm, strict=True):
            a = np.asarray(a, np.float64).reshape(len(a), -1)
            if a.shape[1] != train.shape[1]:
                raise ValueError(f"features: expected {train.shape[1]} dimensions, got {a.shape[1]}")
            out = [
                class_log_density(
                    tf.constant(a[i:j]),
                    tf.constant(pred[i:j], tf.int64),
                    train,
                    self._labels,
                    log_norm,
                    inv,
                )
                for i, j in minibatches(len(a), self.batch_size)
            ]
            cols.append(np.concatenate([o.numpy() for o in out]))
        return np.stack(cols, axis=1)
