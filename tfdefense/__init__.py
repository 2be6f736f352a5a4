"""tfdefense: detect and defend against adversarial examples with VAEs.

Two papers as one library: CD-VAE (class-disentangled VAE, x = G(x) + R(x))
and FM-Defense (feature-map morphs of a combo-VAE).

``import tfdefense`` imports the modules that register classes (Keras models,
layers, schedules and optimizers; defenses; detectors), so in a fresh process
``keras.saving.load_model("model.keras")``, ``tfdefense.defend.load(path)`` and
``tfdefense.detect.load(path)`` find every class of the library. The other
submodules (``tfdefense.data``, ``tfdefense.experiments``, ...) import on first use.

Example:
    >>> import tfdefense
    >>> tfdefense.__version__
    '0.1.0'
"""

import importlib

from tfdefense._version import __version__

_SUBMODULES = (
    "attacks",
    "augment",
    "baselines",
    "data",
    "defend",
    "detect",
    "distribute",
    "experiments",
    "export",
    "models",
    "nets",
    "optimizers",
    "recipes",
    "report",
    "schedules",
    "tune",
    "validation",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfdefense.{name}")
    raise AttributeError(f"module 'tfdefense' has no attribute {name!r}")


# Registration on import (Keras finds a custom class only if its module was imported:
# ECOSYSTEM_NOTES "Loading saved models"). TensorFlow's own import dominates the cost.
import tfdefense.models  # noqa: E402, F401, I001  (CDVAE, VQ, ComboVAE, DGMM, AdversarialCDVAE, PGD-AT; schedules, optimizers)
import tfdefense.nets  # noqa: E402, F401, I001  (ReverseChannels)
import tfdefense.augment  # noqa: E402, F401, I001  (augmentation layers)
import tfdefense.attacks  # noqa: E402, F401, I001  (attacks a model config may hold)
import tfdefense.baselines  # noqa: E402, F401, I001  (MagNet, Defense-GAN, WGAN-GP, autoencoders)
import tfdefense.defend  # noqa: E402, F401, I001  (registered defenses)
import tfdefense.detect  # noqa: E402, F401, I001  (registered detectors)
