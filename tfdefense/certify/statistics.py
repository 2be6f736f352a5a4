"""The statistics of randomized smoothing: confidence bounds, the abstain test, radii, curves.

Cohen, Rosenfeld & Kolter 2019 (*Certified Adversarial Robustness via Randomized
Smoothing*) certify an l2 radius from Monte Carlo counts of the base classifier's labels
under Gaussian noise:

* CERTIFY lower-bounds p_A, the probability of the selected class, by the one-sided
  (1 − α) Clopper–Pearson bound (``lower_confidence_bound``) and certifies
  R = σ Φ⁻¹(p_A_lower) (Theorem 1 with p_B = 1 − p_A; ``certified_radius``); it abstains
  when p_A_lower < 1/2;
* PREDICT returns the top class when a two-sided binomial test of n_A against n_B at
  p = 1/2 rejects at level α (``abstain_p_value``), else abstains.

``certified_accuracy`` reads the certified-accuracy curve of Cohen et al.'s figures and
tables: the fraction of images classified correctly with a radius of at least r.

Everything here works on NumPy arrays of counts (one entry per image, vectorized through
``scipy.stats``): the heavy work, counting labels under noise, is
``tfdefense.certify.SmoothedClassifier``'s.

Example:
    >>> import numpy as np
    >>> from tfdefense.certify.statistics import certified_radius, lower_confidence_bound
    >>> # 100 of 100 draws: the bound is the p with p^100 = alpha, 0.001^(1/100) = 0.93325
    >>> p = lower_confidence_bound(np.array([100]), 100, alpha=0.001)
    >>> round(float(p[0]), 5), round(float(certified_radius(p, sigma=0.25)[0]), 4)
    (0.93325, 0.3751)
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from tfdefense.validation import check_number, check_positive_int

__all__ = ["abstain_p_value", "certified_accuracy", "certified_radius", "lower_confidence_bound"]


def _counts(counts, n: int, name: str = "counts") -> np.ndarray:
    arr = np.asarray(counts)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer counts, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > n):
        raise ValueError(f"{name}: expected counts in [0, {n}], got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def lower_confidence_bound(counts, n: int, alpha: float = 0.001) -> np.ndarray:
    """The one-sided (1 − ``alpha``) Clopper–Pearson lower bound on a binomial proportion.

    ``counts`` of n draws each (an array, one per image). For k > 0 the bound is the
    α quantile of Beta(k, n − k + 1); for k = 0 it is 0. This is Cohen et al.'s
    ``LowerConfBound`` (their code: ``proportion_confint(k, n, alpha=2 * alpha,
    method="beta")[0]``), the same number ART computes.
    """
    n = check_positive_int(n, "n")
    alpha = check_number(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    k = _counts(counts, n)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, bound, 0.0)


def abstain_p_value(top_counts, second_counts) -> np.ndarray:
    """Two-sided binomial-test p-value of n_A successes in n_A + n_B draws at p = 1/2.

    PREDICT (Cohen et al. Algorithm, left) abstains unless this is at most α. The
    top count is the larger, so the test is symmetric: p = min(1, 2 P[X ≥ n_A]) with
    X ~ Binomial(n_A + n_B, 1/2), which is ``scipy.stats.binomtest(n_A, n_A + n_B).pvalue``
    vectorized (1 when there are no draws of either class).
    """
    top = np.asarray(top_counts, dtype=np.int64)
    second = np.asarray(second_counts, dtype=np.int64)
    if np.any(top < second):
        raise ValueError("abstain_p_value: the top count must be at least the second count")
    total = top + second
    tail = stats.binom.sf(top - 1, total, 0.5)  # P[X >= n_A]
    return np.where(total > 0, np.minimum(1.0, 2.0 * tail), 1.0)


def certified_radius(p_lower, sigma: float) -> np.ndarray:
    """σ Φ⁻¹(p_A_lower) where p_A_lower ≥ 1/2, else 0 (Cohen et al. Theorem 1, p_B = 1 − p_A)."""
    sigma = check_number(sigma, "sigma", low=0.0, low_inclusive=False)
    p = np.asarray(p_lower, dtype=np.float64)
    return np.where(p >= 0.5, sigma * stats.norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


def certified_accuracy(radii, correct, radii_grid) -> np.ndarray:
    """Certified accuracy at each radius r of ``radii_grid``: the fraction of images whose
    certified label is right (``correct``) and whose radius is at least r.

    Example:
        >>> certified_accuracy([0.0, 0.3, 0.6], [True, True, False], [0.0, 0.25, 0.5]).tolist()
        [0.6666666666666666, 0.3333333333333333, 0.0]
    """
    radii = np.asarray(radii, dtype=np.float64)
    correct = np.asarray(correct)
    if radii.ndim != 1 or correct.shape != radii.shape:
        raise ValueError(f"certified_accuracy: expected radii and correct of one shape (N,), got "
                         f"{radii.shape} and {correct.shape}")
    if correct.dtype != np.bool_:
        raise ValueError(f"correct: expected booleans (label == truth), got dtype {correct.dtype}")
    if radii.size == 0:
        raise ValueError("certified_accuracy: expected at least one image")
    grid = np.asarray(radii_grid, dtype=np.float64)
    return np.mean(correct[None, :] & (radii[None, :] >= grid[:, None]), axis=1)
