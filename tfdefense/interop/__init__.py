"""Bridges from tfdefense's objects to other toolkits' interfaces.

* ``tfdefense.interop.art``: every ``Defense`` as an ART classifier
  (``as_art_classifier``) and every ``Detector`` as an ART evasion detector
  (``as_art_detector``). It needs the Adversarial Robustness Toolbox, which
  ``import tfdefense`` and ``import tfdefense.interop`` never import: the names
  below load it on first use.

Example:
    >>> import tfdefense.interop
    >>> sorted(tfdefense.interop.__all__)
    ['as_art_classifier', 'as_art_detector']
"""

import importlib

__all__ = ["as_art_classifier", "as_art_detector"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("tfdefense.interop.art"), name)
    raise AttributeError(f"module 'tfdefense.interop' has no attribute {name!r}")
