"""Adversarial detection: KD, LID and Mahalanobis characteristics, a logistic detector, metrics.

CD-VAE Table 4 machinery (CD-VAE §3.3, §4.2): the characteristics read any
classifier's layers, on x or on R(x) = x - G(x) (``FeatureExtractor.for_residual``).
Every detector is a ``Detector`` (``fit``, ``score``, ``detect``, save / ``load``,
``serving_spec``); FM-Defense's ``ResistanceDetector`` reads a ``MorphEngine``.
"""

from tfdefense.detect import metrics
from tfdefense.detect.base import Detector, load, register_detector, registered_detectors
from tfdefense.detect.characteristic import Characteristic
from tfdefense.detect.detector import FEATURES, LogisticDetector, make_noisy
from tfdefense.detect.extractor import FeatureExtractor
from tfdefense.detect.kernel_density import KernelDensity
from tfdefense.detect.lid import LID
from tfdefense.detect.mahalanobis import Mahalanobis

__all__ = [
    "FEATURES",
    "Characteristic",
    "Detector",
    "FeatureExtractor",
    "KernelDensity",
    "LID",
    "LogisticDetector",
    "Mahalanobis",
    "load",
    "make_noisy",
    "metrics",
    "register_detector",
    "registered_detectors",
]
from tfdefense.detect.morphs import MorphEngine  # noqa: E402, I001  (FM-Defense)
from tfdefense.detect.resistance import Decision, ResistanceDetector  # noqa: E402, I001

__all__ += ["Decision", "MorphEngine", "ResistanceDetector"]
