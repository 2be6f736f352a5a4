"""Mahalanobis confidence score with input pre-processing (Lee et al. 2018).

Lee et al., "A simple unified framework for detecting out-of-distribution
samples and adversarial attacks": per layer l, class-conditional Gaussians
with class means mu_c and one *tied* covariance Sigma (Eq. 1, fitted on the
clean training features, spatially averaged for conv layers); the confidence
score (Eq. 2) is

    M_l(x) = max_c  -1/2 (f_l(x) - mu_c)^T Sigma^-1 (f_l(x) - mu_c),

evaluated after input pre-processing (Eq. 3)

    x^ = x - eps * sign(grad_x  1/2 (f_l(x) - mu_c*)^T Sigma^-1 (f_l(x) - mu_c*)),

c* the closest class, which moves clean inputs towards their class more than
adversarial ones. Adversarial inputs score *lower* (``adversarial_sign = -1``).
As in the authors' code: sign(0) counts as +1, the step is in pixel units and
x^ is not clipped, the precision is the pseudo-inverse of the empirical
covariance, and every layer gets its own pre-processing gradient (the L
pre-processed batches go through the network as one batch). When the
extractor has a ``transform`` (CD-VAE on R(x) = x - G(x)) the gradient flows
through it, as CD-VAE's official detection code differentiates through the VAE.

Magnitudes: Lee et al. (and CD-VAE's code) select eps on validation from
``MAGNITUDES`` = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005).

Example:
    >>> import numpy as np
    >>> from tfdefense.nets import small_cnn
    >>> from tfdefense.detect import Mahalanobis
    >>> x = np.random.default_rng(0).uniform(size=(30, 28, 28, 1)).astype("float32")
    >>> md = Mahalanobis(small_cnn(), magnitude=0.001).fit(x, np.arange(30) % 10)
    >>> md.score(x[:4]).shape
    (4, 1)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.detect.characteristic import Characteristic, minibatches
from tfdefense.validation import check_labels, check_number, check_positive_int

#: noise magnitudes Lee et al.'s and CD-VAE's code select from on validation
MAGNITUDES = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)


def class_gaussian_scores(features: tf.Tensor, means: tf.Tensor, precision: tf.Tensor) -> tf.Tensor:
    """(B, C) values -1/2 (f - mu_c)^T P (f - mu_c) (Lee et al. Eq. 2 before the max)."""
    diff = features[:, None, :] - means[None, :, :]
    return -0.5 * tf.einsum("bcd,de,bce->bc", diff, precision, diff)


def tied_gaussian(features: np.ndarray, labels: np.ndarray, num_classes: int):
    """Class means (C, D) and the precision (pseudo-inverse) of the tied covariance (Eq. 1)."""
    features = np.asarray(features, np.float64)
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts < 2):
        raise ValueError(
            f"y: a class covariance needs at least 2 samples per class, classes "
            f"{np.flatnonzero(counts < 2).tolist()} have {counts[counts < 2].tolist()}"
        )
    means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
    centred = features - means[labels]
    cov = centred.T @ centred / len(features)
    return means, np.linalg.pinv(cov, hermitian=True)


class Mahalanobis(Characteristic):
    """Mahalanobis confidence score per extractor layer (spatially averaged activations).

    Args:
        extractor: a ``FeatureExtractor`` or model; Lee et al. use the output of
            every block (``layers="all"``); its reduction is overridden by "mean".
        magnitude: pre-processing step eps in pixel units; 0 disables it.
        num_classes: classes of the training labels; default: the logits' width
            (or the largest label + 1 without logits).
        batch_size: images per compiled call (Lee et al.: 100).
    """

    name = "mahalanobis"
    adversarial_sign = -1
    reduce = "mean"

    def __init__(
        self,
        extractor,
        magnitude: float = 0.0,
        num_classes: int | None = None,
        batch_size: int = 100,
    ):
        super().__init__(extractor)
        self.magnitude = magnitude
        self.num_classes = num_classes
        self.batch_size = batch_size
        self._check_params()

    def _check_params(self):
        self.magnitude = check_number(self.magnitude, "magnitude", low=0.0)
        if self.num_classes is not None:
            self.num_classes = check_positive_int(self.num_classes, "num_classes", minimum=2)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")

    def get_config(self) -> dict:
        return {
            "magnitude": self.magnitude,
            "num_classes": self.num_classes,
            "batch_size": self.batch_size,
        }

    def fit(self, x, y) -> Mahalanobis:
        """Class means and tied precision of every layer from clean training images."""
        x = self.extractor.check(x, "x")
        acts, logits = self.extractor.extract(x, reduce=self.reduce)
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = logits.shape[-1] if logits is not None else int(np.max(y)) + 1
        y = check_labels(y, num_classes, "y", n=len(x))
        stats = [tied_gaussian(a, y, num_classes) for a in acts]
        self.means_ = [m.astype(np.float32) for m, _ in stats]
        self.precisions_ = [p.astype(np.float32) for _, p in stats]
        self._means_t = [tf.constant(m) for m in self.means_]
        self._prec_t = [tf.constant(p) for p in self.precisions_]
        self._columns = len(acts)
        self._compiled = None
        self._fitted = True
        return self

    def score(self, x) -> np.ndarray:
        """(N, L) confidence scores at ``magnitude``; low values flag adversarial inputs."""
        return self.score_grid(x, [self.magnitude])[self.magnitude]

    def score_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """(N, L) float64 confidence scores at ``magnitude`` as TensorFlow ops (one graph)."""
        self._require_fitted()
        return tf.cast(self._batch_fn()(x, (self.magnitude,))[0], tf.float64)

    def score_grid(self, x, magnitudes) -> dict[float, np.ndarray]:
        """{eps: (N, L)} for several magnitudes, sharing the pre-processing gradients."""
        self._require_fitted()
        x = self.extractor.check(x, "x")
        mags = tuple(sorted({check_number(m, "magnitude", low=0.0) for m in magnitudes}))
        fn = self._batch_fn()
        out = {m: [] for m in mags}
        for i, j in minibatches(len(x), self.batch_size):
            scores = fn(tf.constant(x[i:j]), mags)
            for m, value in zip(mags, scores, strict=True):
                out[m].append(value.numpy())
        return {m: np.concatenate(v) for m, v in out.items()}

    def _batch_fn(self):
        fn = getattr(self, "_compiled", None)
        if fn is not None:
            return fn
        extractor, reduce = self.extractor, self.reduce
        means, precs = self._means_t, self._prec_t

        def layer_scores(acts):
            return [class_gaussian_scores(a, m, p) for a, m, p in zip(acts, means, precs, strict=True)]

        @tf.function(reduce_retracing=True)
        def fn(x, mags):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                acts, _ = extractor.activations(x, reduce=reduce)
                scores = layer_scores(acts)
                # distance to the closest class mean, summed over the batch (Eq. 3)
                losses = [-tf.reduce_sum(tf.reduce_max(s, axis=1)) for s in scores]
            steps = [tf.where(tape.gradient(loss, x) >= 0, 1.0, -1.0) for loss in losses]
            del tape
            results = []
            for m in mags:
                if m == 0.0:
                    cols = [tf.reduce_max(s, axis=1) for s in scores]
                else:
                    # every layer's pre-processed batch in one forward pass (L * B images)
                    n = tf.shape(x)[0]
                    noisy_acts, _ = extractor.activations(
                        tf.concat([x - m * step for step in steps], axis=0), reduce=reduce
                    )
                    cols = []
                    for layer in range(len(steps)):
                        a = noisy_acts[layer][layer * n : (layer + 1) * n]
                        s = class_gaussian_scores(a, means[layer], precs[layer])
                        cols.append(tf.reduce_max(s, axis=1))
                results.append(tf.stack(cols, axis=1))
            return results

        self._compiled = fn
        return fn
