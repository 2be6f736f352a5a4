"""Certified l2 robustness by randomized smoothing, plain and denoised (issue 22).

* ``SmoothedClassifier(base, sigma, denoiser=None)``: Cohen et al. 2019's PREDICT and
  CERTIFY for any Keras classifier, or for "G, then a classifier" (denoised smoothing,
  Salman et al. 2020, with CD-VAE's G), compiled and batched over images and noise draws;
* ``CertifyResult``: per image the certified label (−1: abstained), radius, p_A lower bound;
* ``StabilityTraining``: fine-tunes G on noisy inputs by Salman et al.'s stability objective;
* ``certified_accuracy(radii, correct, radii_grid)`` and the bounds in
  ``tfdefense.certify.statistics``.

Example:
    >>> from tfdefense.certify import certified_accuracy
    >>> certified_accuracy([0.1, 0.7], [True, True], [0.0, 0.5]).tolist()
    [1.0, 0.5]
"""

from tfdefense.certify.smoothing import CertifyResult, SmoothedClassifier
from tfdefense.certify.stability import StabilityTraining
from tfdefense.certify.statistics import (
    abstain_p_value,
    certified_accuracy,
    certified_radius,
    lower_confidence_bound,
)

__all__ = ["CertifyResult", "SmoothedClassifier", "StabilityTraining", "abstain_p_value",
           "certified_accuracy", "certified_radius", "lower_confidence_bound"]
