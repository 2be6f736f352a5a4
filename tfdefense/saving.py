"""Folders of parts: a JSON manifest, one ``.keras`` file per Keras model and ``state.npz``.

The save format of objects made of Keras models plus fitted arrays (detectors; the same
layout ``tfdefense.defend.base.Defense.save`` writes): ``write_parts`` stages the folder
beside its target and renames it into place, so a reader never sees half a save;
``read_parts`` returns the manifest, the loaded models and the arrays.

Example:
    >>> import tempfile, numpy as np, keras
    >>> from tfdefense.saving import read_parts, write_parts
    >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = write_parts(tempfile.mkdtemp() + "/thing", "thing.json", {"class": "Thing"},
    ...                    {"net": net}, {"threshold": np.array(0.5)})
    >>> manifest, models, state = read_parts(path, "thing.json")
    >>> manifest["class"], sorted(models), float(state["threshold"])
    ('Thing', ['net'], 0.5)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import keras
import numpy as np

STATE_FILE = "state.npz"


def write_parts(path: str, manifest_file: str, manifest: dict[str, Any],
                components: dict[str, keras.Model], state: dict[str, Any]) -> str:
    """Write ``manifest`` (+ the component names), the models and ``state`` to the folder ``path``.

    An existing folder at ``path`` is replaced whole; a file there is refused. Returns the
    absolute path.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path: {path} is a file; expected a folder (or a new path)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".parts.", dir=parent)
    try:
        for key, model in components.items():
            model.save(os.path.join(staging, f"{key}.keras"))
        np.savez(os.path.join(staging, STATE_FILE), **{k: np.asarray(v) for k, v in state.items()})
        with open(os.path.join(staging, manifest_file), "w", encoding="utf-8") as fh:
            json.dump({**manifest, "components": sorted(components)}, fh, indent=2)
        if os.path.exists(path):
            old = staging + ".old"
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_parts(path: str, manifest_file: str) -> tuple[dict[str, Any], dict[str, keras.Model],
                                                        dict[str, np.ndarray]]:
    """(manifest, name -> loaded model, name -> array) of a folder ``write_parts`` wrote.

    Raises ``ValueError`` when ``path`` holds no ``manifest_file`` or a model does not load.
    Importing ``tfdefense`` registers the library's Keras classes, so its models load here.
    """
    import tfdefense  # noqa: F401  (registers the library's Keras classes)

    path = os.fspath(path)
    manifest_path = os.path.join(path, manifest_file)
    if not os.path.isfile(manifest_path):
        raise ValueError(f"path: {path} holds no saved object ({manifest_file} is missing)")
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    components = {}
    for key in manifest.get("components", []):
        file = os.path.join(path, f"{key}.keras")
        try:
            components[key] = keras.saving.load_model(file, compile=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"path: component {key!r} ({file}) does not load ({exc})") from exc
    state_path = os.path.join(path, STATE_FILE)
    state = {}
    if os.path.isfile(state_path):
        with np.load(state_path, allow_pickle=False) as npz:
            state = {k: npz[k] for k in npz.files}
    return manifest, components, state


class PartsRegistry:
    """Name -> class of one kind of object saved as parts (defenses, detectors), and their I/O.

    ``register`` is the class decorator; ``save(obj, path)`` writes ``obj``'s
    ``get_config()``, ``components()`` and ``state()`` under its class name; ``load(path)``
    rebuilds it with the class's ``from_parts(config, components, state)``.
    """

    def __init__(self, kind: str, manifest_file: str, version: int = 1) -> None:
        self.kind, self.manifest_file, self.version = kind, manifest_file, version
        self._classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: ``load`` rebuilds saved objects of ``cls`` by its name."""
        known = self._classes.get(cls.__name__)
        if known is not None and known is not cls and known.__module__ != cls.__module__:
            raise ValueError(f"register_{self.kind}: a {self.kind} named {cls.__name__!r} is "
                             f"registered already ({known.__module__})")
        self._classes[cls.__name__] = cls
        return cls

    def classes(self) -> dict[str, type]:
        """Name -> class of every registered object of this kind."""
        return dict(self._classes)

    def save(self, obj: Any, path: str) -> str:
        """Write ``obj`` to the folder ``path`` (replaced whole, atomically); returns it."""
        name = type(obj).__name__
        if self._classes.get(name) is not type(obj):
            raise ValueError(f"{name}: not registered; decorate the class with @register_{self.kind} "
                             f"so tfdefense can load it")
        return write_parts(path, self.manifest_file,
                           {"class": name, "format": self.version, "config": obj.get_config()},
                           obj.components(), obj.state())

    def load(self, path: str) -> Any:
        """The object ``save`` wrote to the folder ``path``."""
        manifest, components, state = read_parts(path, self.manifest_file)
        cls = self._classes.get(manifest.get("class"))
        if cls is None:
            raise ValueError(f"path: {path} holds a {manifest.get('class')!r}, which is not a "
                             f"registered {self.kind} (known: {', '.join(sorted(self._classes))}); "
                             "import the module that defines and registers it first (command "
                             "line: tfdefense --import MODULE ...)")
        return cls.from_parts(manifest.get("config", {}), components, state)


class SavedAsParts:
    """Mixin of objects a ``PartsRegistry`` saves: the hooks, ``save`` and ``__repr__``."""

    #: the registry ``save`` writes through (set by the base class of each kind)
    _parts_registry: PartsRegistry

    def components(self) -> dict[str, keras.Model]:
        """Name -> Keras model the object is made of (saved, and tracked for export)."""
        raise NotImplementedError(f"{type(self).__name__}.components")

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays that are not model weights (thresholds, ranges, ...)."""
        return {}

    def get_config(self) -> dict[str, Any]:
        """JSON-able hyperparameters (never models or fitted arrays)."""
        raise NotImplementedError(f"{type(self).__name__}.get_config")

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> Any:
        """Rebuild from ``get_config()``, the loaded ``components()`` and ``state()``."""
        raise NotImplementedError(f"{cls.__name__}.from_parts")

    def save(self, path: str) -> str:
        """Write the object to the folder ``path`` (replaced whole, atomically); returns it."""
        return self._parts_registry.save(self, path)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"
