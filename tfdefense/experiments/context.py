"""Shared state of one reproduction run: preset, output folder, cached models and arrays.

Experiments ask the context for what they need; what is trained or computed
once is saved under ``out/cache/`` and reused, so an interrupted ``reproduce``
resumes without losing finished work, and two experiments that need the same
CD-VAE train it once. Each cached file has a ``<file>.settings.json`` beside
it recording the library version, the preset and the settings it depends on
(all of them unless the experiment declares which); a file made under other
settings (``--set at_epochs=12`` into the folder of an earlier run) is
recomputed, never silently reused.

Presets: ``quick`` runs on the embedded ``mnist_5k`` in CPU minutes;
``paper`` uses the papers' datasets and hyperparameters (GPU hours). Common
settings live in ``PRESETS``; an experiment keeps its own per-preset
settings next to its code and reads ``context.preset``.

Example:
    >>> import tempfile
    >>> from tfdefense.experiments.context import Context
    >>> ctx = Context("quick", tempfile.mkdtemp())
    >>> ctx.settings["dataset"]
    'mnist_5k'
    >>> ctx.cached_arrays("squares", lambda: {"a": __import__("numpy").arange(3) ** 2})["a"].tolist()
    [0, 1, 4]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfdefense import data
from tfdefense._version import __version__
from tfdefense.experiments.imagenet_preset import PAPER_IMAGENET

#: settings that change how a run prints, not what it computes (left out of cache fingerprints)
COSMETIC_SETTINGS = ("verbose",)

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "dataset": "mnist_5k",
        "cdvae_epochs": 6,
        "classifier_epochs": 4,
        "batch_size": 64,
        "eval_images": 500,  # test images attacked / scored per experiment
        "seed": 0,
    },
    "paper": {
        "dataset": "cifar10",
        "cdvae_epochs": 300,  # CD-VAE §5 (CIFAR-10)
        "classifier_epochs": 200,
        "batch_size": 256,
        "eval_images": 10000,
        "seed": 0,
    },
    "paper_imagenet": PAPER_IMAGENET,  # restricted ImageNet, VQ-VAE G + ResNet-50 D (CD-VAE §4)
}


class Context:
    """One run's preset, folder and caches.

    Args:
        preset: ``quick`` or ``paper``.
        out: output folder; ``out/cache`` holds models and arrays between runs.
        overrides: settings that replace the preset's (e.g. ``{"eval_images": 100}``).
    """

    def __init__(self, preset: str, out: str, overrides: dict[str, Any] | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        self.preset = preset
        self.out = out
        self.settings = {**PRESETS[preset], **(overrides or {})}
        self.cache_dir = os.path.join(out, "cache")
        self.figures_dir = os.path.join(out, "figures")
        os.makedirs(self.cache_dir, exist_ok=True)
        os.makedirs(self.figures_dir, exist_ok=True)
        self._memory: dict[str, Any] = {}

    @property
    def dataset(self) -> str:
        return self.settings["dataset"]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of a split of the preset's dataset, loaded once."""
        key = f"data/{split}"
        if key not in self._memory:
            self._memory[key] = data.load_arrays(self.dataset, split)
        return self._memory[key]

    def figure_path(self, name: str) -> str:
        return os.path.join(self.figures_dir, f"{name}.png")

    def fingerprint(self, depends_on: Any = None) -> str:
        """What a cached file was made from: library version, preset and either
        ``depends_on`` (what the experiment declares the file depends on, e.g. the
        settings its training reads) or, if ``None``, every setting but ``verbose``."""
        if depends_on is None:
            depends_on = {k: v for k, v in self.settings.items() if k not in COSMETIC_SETTINGS}
        return json.dumps({"tfdefense": __version__, "preset": self.preset,
                           "depends_on": depends_on}, sort_keys=True, default=repr)

    def _is_current(self, path: str, fingerprint: str) -> bool:
        if not os.path.exists(path):
            return False
        try:
            with open(path + ".settings.json") as f:
                if f.read() == fingerprint:
                    return True
        except FileNotFoundError:
            pass
        print(f"cache: {os.path.relpath(path, self.cache_dir)} was made with other settings "
              "(or before they were recorded); recomputing it", file=sys.stderr)
        return False

    @staticmethod
    def _record(path: str, fingerprint: str) -> None:
        tmp = path + ".settings.json.partial"
        with open(tmp, "w") as f:
            f.write(fingerprint)
        os.replace(tmp, path + ".settings.json")

    def _cached(self, key: str, path: str, depends_on: Any, load: Callable[[str], Any],
                make: Callable[[], Any], save: Callable[[Any, str], None]) -> Any:
        """The one cache path: memory, else ``path`` if its fingerprint matches, else ``make``,
        written through a temporary file (a half-written file never looks finished)."""
        if key in self._memory:
            return self._memory[key]
        fingerprint = self.fingerprint(depends_on)
        if self._is_current(path, fingerprint):
            value = load(path)
        else:
            value = make()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            root, ext = os.path.splitext(path)
            tmp = f"{root}{ext}.partial{ext}"
            save(value, tmp)
            os.replace(tmp, path)
            self._record(path, fingerprint)
        self._memory[key] = value
        return value

    def cached_model(self, key: str, build_and_train: Callable[[], keras.Model],
                     depends_on: Any = None) -> keras.Model:
        """Load ``cache/<key>.keras`` if it was made with the same ``fingerprint(depends_on)``
        (``depends_on``: any JSON-able value), else build, train, save and return it."""
        return self._cached(key, os.path.join(self.cache_dir, f"{key}.keras"), depends_on,
                            keras.models.load_model, build_and_train,
                            lambda model, tmp: model.save(tmp))

    def cached_arrays(self, key: str, compute: Callable[[], dict[str, np.ndarray]],
                      depends_on: Any = None) -> dict[str, np.ndarray]:
        """Load ``cache/<key>.npz`` if it was made with the same ``fingerprint(depends_on)``,
        else compute, save and return the arrays."""

        def load(path):
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}

        return self._cached(key, os.path.join(self.cache_dir, f"{key}.npz"), depends_on, load,
                            lambda: {k: np.asarray(v) for k, v in compute().items()},
                            lambda arrays, tmp: np.savez(tmp, **arrays))
