"""tfdefense: detect and defend against adversarial examples with VAEs.

Two papers as one library: CD-VAE (class-disentangled VAE, x = G(x) + R(x))
and FM-Defense (feature-map morphs of a combo-VAE). Submodules load lazily so
``import tfdefense`` stays cheap; ``tfdefense.data`` etc. import on first use.

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
