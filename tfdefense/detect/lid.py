"""Local intrinsic dimensionality of layer activations (Ma et al. 2018).

Ma et al., "Characterizing adversarial subspaces using local intrinsic
dimensionality", Eq. 4: the maximum-likelihood estimate from the distances
r_1 <= ... <= r_k of a point to its k nearest neighbours,

    LID(x) = -( (1/k) * sum_i log(r_i / r_k) )^-1,

computed on every layer's activations, the neighbours drawn from a *random
minibatch of clean images* (their §5.1: minibatch 100). Adversarial regions
have a higher LID (``adversarial_sign = +1``). CD-VAE §3.3 applies it on R(x).

``fit`` stores the clean reference images (not their activations, which for
conv layers would not fit in memory); ``score`` pairs every query minibatch
with a random (seeded) clean reference minibatch, runs both through the
extractor in one call and takes pairwise distances and top-k in a compiled
function. A reference point at distance zero from the query (the query
itself) is skipped, as Ma et al.'s code drops the first neighbour.

k: Ma et al. select k per dataset from 10..90 on validation; Lee et al.'s
code sweeps [10, 20, ..., 90] with minibatch 100 (``K_GRID``) and
``LogisticDetector`` selects from that grid on validation. Default 20.

Example:
    >>> import numpy as np
    >>> from tfdefense.nets import small_cnn
    >>> from tfdefense.detect import LID
    >>> x = np.random.default_rng(0).uniform(size=(40, 28, 28, 1)).astype("float32")
    >>> lid = LID(small_cnn(), k=10, batch_size=30).fit(x)
    >>> lid.score(x[:5]).shape  # one column per layer: the penultimate by default
    (5, 1)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.detect.characteristic import Characteristic, minibatches
from tfdefense.validation import check_positive_int

#: why a LID score has no single-graph (exportable) form
LID_REASON = (
    "LID scores each query batch against a minibatch of clean training activations drawn by "
    "numpy's RNG per call (Ma et al.'s protocol), so its value depends on the batch it comes in "
    "and on host-side sampling; a graph with a fixed reference set would compute a different "
    "characteristic than the one the regression was fitted on")

#: k values Lee et al.'s code sweeps for LID (minibatch 100)
K_GRID = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def lid_from_sorted(dist: tf.Tensor, k: int) -> tf.Tensor:
    """MLE LID (Ma et al. Eq. 4) from ascending neighbour distances (B, >=k)."""
    r = dist[:, :k]
    log_ratio = tf.math.log(r / r[:, k - 1 : k])
    total = tf.minimum(tf.reduce_sum(log_ratio, axis=1), -1e-12)  # all-equal distances
    return -float(k) / total


@tf.function(reduce_retracing=True)
def knn_distances(query: tf.Tensor, reference: tf.Tensor, k: int) -> tf.Tensor:
    """Ascending distances (B, k) from each query row to its k nearest reference rows.

    Reference rows at (numerically) zero distance are skipped.
    """
    qq = tf.reduce_sum(query**2, 1, keepdims=True)
    rr = tf.reduce_sum(reference**2, 1)[None, :]
    d2 = tf.maximum(qq - 2.0 * tf.matmul(query, reference, transpose_b=True) + rr, 0.0)
    same = d2 <= 1e-7 * (qq + rr) + 1e-30
    d2 = tf.where(same, tf.constant(np.inf, d2.dtype), d2)
    neg, _ = tf.math.top_k(-d2, k=k, sorted=True)
    return tf.sqrt(-neg)


class LID(Characteristic):
    """LID of the query batch against a random clean minibatch, one column per layer.

    Args:
        extractor: a ``FeatureExtractor`` or model; Ma et al. use every layer
            (``FeatureExtractor(model, layers="all")``).
        k: nearest neighbours (Ma et al.: 20 for MNIST); must be < batch_size.
        batch_size: clean reference images per minibatch, and query images per
            minibatch (Ma et al.: 100).
        seed: seeds the choice of reference minibatches.
    """

    name = "lid"
    adversarial_sign = 1

    def __init__(self, extractor, k: int = 20, batch_size: int = 100, seed: int = 0):
        super().__init__(extractor)
        self.k = k
        self.batch_size = batch_size
        self.seed = seed
        self._check_params()

    def _check_params(self):
        self.k = check_positive_int(self.k, "k")
        self.batch_size = check_positive_int(self.batch_size, "batch_size", minimum=2)
        self.seed = check_positive_int(self.seed, "seed", minimum=0)
        if self.k >= self.batch_size:
            raise ValueError(
                f"k: expected fewer neighbours than the minibatch size "
                f"batch_size={self.batch_size}, got k={self.k}"
            )

    def get_config(self) -> dict:
        return {"k": self.k, "batch_size": self.batch_size, "seed": self.seed}

    def fit(self, x, y=None) -> LID:
        """Keep the clean reference images (labels are not used)."""
        x = self.extractor.check(x, "x")
        if len(x) <= self.k:
            raise ValueError(
                f"x: LID with k={self.k} needs more than {self.k} clean reference images, got {len(x)}"
            )
        self._reference = x
        self._columns = len(self.extractor.extract(x[:2])[0])
        self._fitted = True
        return self

    def score(self, x) -> np.ndarray:
        """(N, L) LID estimates; high values flag adversarial inputs."""
        return self.score_grid(x, [self.k])[self.k]

    def score_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """Not available: raises ``ValueError`` with ``LID_REASON``."""
        raise ValueError(f"LID has no single-graph form: {LID_REASON}")

    def score_grid(self, x, ks) -> dict[int, np.ndarray]:
        """LID for several k from one pass: {k: (N, L)} (for selecting k on validation)."""
        self._require_fitted()
        x = self.extractor.check(x, "x")
        ks = sorted({check_positive_int(k, "k") for k in ks})
        ref_size = min(self.batch_size, len(self._reference))
        if ks[-1] >= ref_size:
            raise ValueError(f"k: expected k < {ref_size} (the reference minibatch size), got k={ks[-1]}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(self._reference))
        fn = self._batch_fn()
        out = {k: [] for k in ks}
        for b, (i, j) in enumerate(minibatches(len(x), self.batch_size)):
            start = (b * ref_size) % len(self._reference)
            idx = np.take(order, np.arange(start, start + ref_size), mode="wrap")
            batch = np.concatenate([x[i:j], self._reference[idx]])
            lids = fn(tf.constant(batch), j - i, tuple(ks))
            for k, value in zip(ks, lids, strict=True):
                out[k].append(value.numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def _batch_fn(self):
        fn = getattr(self, "_compiled", None)
        if fn is None:
            extractor, reduce = self.extractor, self.reduce

            @tf.function(reduce_retracing=True)
            def fn(batch, num_query, ks):
                acts, _ = extractor.activations(batch, reduce=reduce)
                per_k = [[] for _ in ks]
                for a in acts:
                    dist = knn_distances(a[:num_query], a[num_query:], ks[-1])
                    for n, k in enumerate(ks):
                        per_k[n].append(lid_from_sorted(dist, k))
                return [tf.stack(cols, axis=1) for cols in per_k]

            self._compiled = fn
        return fn
