"""tfdefense: detect and defend against adversarial examples with VAEs.

Two papers as one library: CD-VAE (class-disentangled VAE, x = G(x) + R(x))
and FM-Defense (feature-map morphs of a combo-VAE).

``import tfdefense`` imports the modules that register classes (Keras models,
layers, schedules and optimizers; defenses; detectors), so in a fresh process
``keras.saving.load_model("model.keras")``, ``tfdefense.defend.load(path)`` and
``tfdefense.detect.load(path)`` find every class of the library. The other
submodules (``tfdefense.data``, ``tfdefense.experiments``, ...) import on first use. The
``tfdefense`` command registers only once a command runs, so its ``--help`` needs no
TensorFlow.

Example:
    >>> import tfdefense
    >>> tfdefense.__version__
    '0.1.0'
"""

import importlib
import os
import sys

from tfdefense._version import __version__

_SUBMODULES = (
    "attacks",
    "augment",
    "baselines",
    "callbacks",
    "certify",
    "data",
    "defend",
    "detect",
    "distribute",
    "experiments",
    "export",
    "interop",
    "models",
    "nets",
    "optimizers",
    "perturbation",
    "profiling",
    "recipes",
    "report",
    "schedules",
    "tune",
    "validation",
)

__all__ = ["__version__", "register_all", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tfdefense.{name}")
    raise AttributeError(f"module 'tfdefense' has no attribute {name!r}")


def register_all() -> None:
    """Import every module that registers classes (Keras models, layers, schedules and
    optimizers; defenses; detectors). Keras finds a custom class only if its module was
    imported (ECOSYSTEM_NOTES "Loading saved models"); TensorFlow's own import is the cost."""
    for name in ("models", "nets", "augment", "attacks", "baselines", "defend", "detect",
                 "certify"):
        importlib.import_module(f"tfdefense.{name}")


def _command_line_process() -> bool:
    """True in the ``tfdefense`` command (console script or ``python -m tfdefense.cli``): it
    answers ``--help`` without TensorFlow and calls :func:`register_all` before a command."""
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1] in ("tfdefense.cli", "tfdefense")
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "tfdefense"


if not _command_line_process():
    register_all()
