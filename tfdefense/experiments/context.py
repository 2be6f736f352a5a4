"""Shared state of one reproduction run: preset, output folder, cached models and arrays.

Experiments ask the context for what they need; what is trained or computed
once is saved under ``out/cache/`` and reused, so an interrupted ``reproduce``
resumes without losing finished work, and two experiments that need the same
CD-VAE train it once. Each cached file has a ``<file>.settings.json`` beside
it recording the library version, the preset and the settings it depends on
(all of them unless the experiment declares which); a file made under other
settings (``--set at_epochs=12`` into the folder of an earlier run) is
recomputed, never silently reused. Training inside an experiment passes
``ctx.backup()`` to ``fit``: a ``BackupAndRestore`` under
``out/cache/backup/``, so a preempted paper-scale run resumes from its last
finished epoch, not from the start of the model (the folder is keyed by the
same fingerprint, so a backup made under other settings is never resumed, and
it is deleted when the training ends).

Presets: ``quick`` runs on the embedded ``mnist_5k`` in CPU minutes;
``paper`` uses the papers' datasets and hyperparameters (GPU hours). Common
settings live in ``PRESETS``; an experiment keeps its own per-preset
settings next to its code and reads ``context.preset``.

Datasets: each experiment declares the datasets it reproduces by their roles
(``register(..., datasets=("cifar10", "restricted_imagenet"))``: the paper's
dataset names), and a preset maps each role onto the data it runs on
(``quick`` runs CIFAR-10's experiments on ``mnist_5k``) or onto ``None``
(not run under that preset). Inside an experiment ``ctx.dataset`` is the data
of the active role and ``ctx.arrays`` refuses a role the experiment did not
declare or the preset does not name, so no experiment can quietly read other
data. Overrides: ``{"dataset": name}`` puts every role the preset names on
``name``; ``{"dataset.celeb_a": "celeb_a"}`` sets one role (``"none"``: off).

Example:
    >>> import tempfile
    >>> from tfdefense.experiments.context import Context
    >>> ctx = Context("quick", tempfile.mkdtemp())
    >>> ctx.datasets["cifar10"], ctx.datasets["celeb_a"]
    ('mnist_5k', None)
    >>> with ctx.on_dataset("mnist"):
    ...     ctx.dataset
    'mnist_5k'
    >>> ctx.cached_arrays("squares", lambda: {"a": __import__("numpy").arange(3) ** 2})["a"].tolist()
    [0, 1, 4]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tfdefense import data, profiling
from tfdefense._version import __version__
from tfdefense.distribute import CheckedBackupAndRestore
from tfdefense.experiments.imagenet_preset import PAPER_IMAGENET

#: settings that change how a run prints, not what it computes (left out of cache fingerprints)
COSMETIC_SETTINGS = ("verbose",)

#: the papers' datasets, as experiments name them (CD-VAE: CIFAR-10, restricted ImageNet;
#: FM-Defense: MNIST, Fashion-MNIST, CelebA)
ROLES = ("cifar10", "restricted_imagenet", "mnist", "fashion_mnist", "celeb_a")
#: the roles of FM-Defense's experiments (their caches depend on FM-Defense's recipes)
FM_ROLES = ("mnist", "fashion_mnist", "celeb_a")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        # every CPU-minutes run is on the embedded digits; the other datasets need downloads
        "datasets": {"cifar10": "mnist_5k", "restricted_imagenet": None, "mnist": "mnist_5k",
                     "fashion_mnist": None, "celeb_a": None},
        "cdvae_epochs": 6,
        "classifier_epochs": 4,
        "batch_size": 64,
        "eval_images": 500,  # test images attacked / scored per experiment
        "seed": 0,
    },
    "paper": {
        # the papers' own data through tfds (restricted ImageNet: preset paper_imagenet)
        "datasets": {"cifar10": "cifar10", "restricted_imagenet": None, "mnist": "mnist",
                     "fashion_mnist": "fashion_mnist", "celeb_a": "celeb_a"},
        "cdvae_epochs": 300,  # CD-VAE §5 (CIFAR-10)
        "classifier_epochs": 200,
        "batch_size": 256,
        "eval_images": 10000,
        "seed": 0,
    },
    "paper_imagenet": PAPER_IMAGENET,  # restricted ImageNet, VQ-VAE G + ResNet-50 D (CD-VAE §4)
}


def resolve_datasets(preset: str, overrides: dict[str, Any]) -> dict[str, str | None]:
    """role -> data name of ``preset`` after ``overrides`` (see the module docstring)."""
    datasets = dict(PRESETS[preset]["datasets"])
    if "datasets" in overrides:
        datasets.update(overrides["datasets"])
    if "dataset" in overrides:  # one dataset for every role the preset runs
        datasets = {r: overrides["dataset"] if n is not None else None for r, n in datasets.items()}
    for key, name in overrides.items():
        if key.startswith("dataset."):
            datasets[key.split(".", 1)[1]] = None if name in (None, "none", "None") else name
    unknown = sorted(set(datasets) - set(ROLES))
    if unknown:
        raise ValueError(f"datasets: unknown role(s) {unknown}; expected some of {', '.join(ROLES)}")
    for role, name in datasets.items():
        if name is not None and name not in data.NAMES:
            raise ValueError(f"datasets: role {role!r} names unknown dataset {name!r}; expected one "
                             f"of {', '.join(data.NAMES)}")
    return datasets


def preset_setting(ctx, table: dict[str, dict[str, Any]], key: str,
                   fallback: str = "paper") -> Any:
    """``ctx.settings[key]`` if the run sets it, else ``table[ctx.preset][key]`` (presets
    missing from ``table``, e.g. ``paper_imagenet``, take ``table[fallback]``); an unknown
    key is a ``ValueError`` naming the known ones. An experiment module's ``setting``."""
    if key in ctx.settings:
        return ctx.settings[key]
    preset = table.get(ctx.preset, table[fallback])
    if key not in preset:
        raise ValueError(f"setting: unknown key {key!r}; expected one of {sorted(preset)}")
    return preset[key]


def ported_nets_fingerprint() -> dict[str, Any]:
    """The construction choices of the nets and optimizers ported from the official CD-VAE code
    that no setting names (BatchNorm epsilon and momentum, the WRN's stride-2 padding, the AdamW
    and PGD-AT Adam epsilons): part of every CD-VAE cache's fingerprint, so that a model cached
    before one of them changed is retrained instead of loaded with the old configuration. The
    FM-Defense nets have no official code and are not in it (their caches keep their keys)."""
    import importlib

    # module objects (tfdefense.nets re-exports functions under some of these names)
    cdvae, pgd_training, cdvae_nets, resnet50, vq_nets, wide_resnet = (
        importlib.import_module(f"tfdefense.{name}") for name in (
            "models.cdvae", "models.pgd_training", "nets.cdvae_nets", "nets.resnet50",
            "nets.vq_nets", "nets.wide_resnet"))
    return {"cdvae_bn": [cdvae_nets.BN_EPSILON, cdvae_nets.BN_MOMENTUM],
            "wrn_bn": [wide_resnet.BN_EPSILON, wide_resnet.BN_MOMENTUM,
                       wide_resnet.FINAL_BN_MOMENTUM],
            "wrn_stride2_padding": "explicit (1, 1)",
            "vq_bn": [vq_nets.BN_EPSILON, vq_nets.BN_MOMENTUM],
            "resnet50_bn": [resnet50.BN_EPSILON, resnet50.BN_MOMENTUM],
            "adamw_epsilon": cdvae.ADAMW_EPSILON, "pgd_at_adam_epsilon": pgd_training.ADAM_EPSILON}


@contextlib.contextmanager
def cache_lock(cache_dir: str, key: str) -> Iterator[None]:
    """Hold the inter-process lock of cached file ``key`` (``cache_dir/.locks/<key>.lock``,
    an exclusive ``flock``) inside the block, so two processes sharing a cache
    (``reproduce --jobs N``) never make the same file twice or write it at once: the second
    waits, then finds the first one's file. Locks of different keys nest freely (a trainer
    that loads another cached model); the kernel drops a lock when its process dies. Where
    ``fcntl`` is missing (Windows) it only serves one process at a time, as before.

    Example:
        >>> import tempfile
        >>> with cache_lock(tempfile.mkdtemp(), "cdvae/model"):
        ...     pass
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: a one-process run needs no lock
        yield
        return
    folder = os.path.join(cache_dir, ".locks")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, key.replace("/", "__") + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Context:
    """One run's preset, folder and caches.

    Args:
        preset: ``quick``, ``paper`` or ``paper_imagenet``.
        out: output folder; ``out/cache`` holds models and arrays between runs.
        overrides: settings that replace the preset's (e.g. ``{"eval_images": 100}``);
            ``dataset`` / ``dataset.<role>`` change the data (module docstring).
    """

    def __init__(self, preset: str, out: str, overrides: dict[str, Any] | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
        overrides = dict(overrides or {})
        self.preset = preset
        self.out = out
        self.datasets = resolve_datasets(preset, overrides)
        settings = {k: v for k, v in overrides.items()
                    if k not in ("dataset", "datasets") and not k.startswith("dataset.")}
        self.settings = {**PRESETS[preset], **settings, "datasets": self.datasets}
        self.cache_dir = os.path.join(out, "cache")
        self.figures_dir = os.path.join(out, "figures")
        os.makedirs(self.cache_dir, exist_ok=True)
        os.makedirs(self.figures_dir, exist_ok=True)
        self._memory: dict[str, Any] = {}
        self._experiment: tuple[str, tuple[str, ...]] | None = None  # (name, declared roles)
        self._role: str | None = None
        self._training: list[tuple[str, Any]] = []  # (key, depends_on) of cached_model trainers
        #: label -> {"model", "recipe", "overridden"} of every recipe this run trained or loaded
        #: a model by (``training_recipes.recipe_for``), for the report's recipe tables
        self.recipes: dict[str, dict[str, Any]] = {}
        #: name -> folder of every defense this run saved (``save_defense``)
        self.saved_defenses: dict[str, str] = {}

    # ------------------------------------------------------------------ datasets
    def named_roles(self, roles: Sequence[str] | None = None) -> list[str]:
        """The roles among ``roles`` (default: the running experiment's, else all) that this
        preset runs, i.e. maps onto data."""
        if roles is None:
            roles = self._experiment[1] if self._experiment else ROLES
        return [r for r in roles if self.datasets.get(r) is not None]

    @property
    def role(self) -> str | None:
        """The active role: set by ``on_dataset``, else the first role the preset runs."""
        if self._role is not None:
            return self._role
        named = self.named_roles()
        return named[0] if named else None

    @property
    def dataset(self) -> str | None:
        """The data of the active role (``None`` when the preset runs none of them)."""
        role = self.role
        return None if role is None else self.datasets[role]

    @contextlib.contextmanager
    def on_dataset(self, role: str) -> Iterator[str]:
        """Make ``role`` the active dataset inside the block; yields its data name.

        Raises ``ValueError`` if the running experiment did not declare ``role`` or
        the preset does not name data for it.
        """
        self._check_role(role)
        previous, self._role = self._role, role
        try:
            yield self.datasets[role]
        finally:
            self._role = previous

    @contextlib.contextmanager
    def experiment(self, name: str, roles: Sequence[str]) -> Iterator[None]:
        """Run experiment ``name`` that declared ``roles``: only those may be read."""
        previous = (self._experiment, self._role)
        self._experiment, self._role = (name, tuple(roles)), None
        try:
            yield
        finally:
            self._experiment, self._role = previous

    def _check_role(self, role: str | None) -> None:
        if role not in ROLES:
            raise ValueError(f"dataset role {role!r}: expected one of {', '.join(ROLES)}")
        if self._experiment and role not in self._experiment[1]:
            name, declared = self._experiment
            raise ValueError(f"experiment {name!r} read dataset {role!r}, which it does not "
                             f"declare (it declares {', '.join(declared)})")
        if self.datasets.get(role) is None:
            raise ValueError(f"preset {self.preset!r} names no data for dataset {role!r}; set "
                             f"one with --set dataset.{role}=NAME")

    def arrays(self, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of a split of the active dataset (the first ``limit`` if given),
        loaded once per run."""
        self._check_role(self.role)
        name = self.dataset
        key = f"data/{name}/{split}/{limit}"
        if key not in self._memory:
            full = self._memory.get(f"data/{name}/{split}/None")
            self._memory[key] = ((full[0][:limit], full[1][:limit]) if full is not None
                                 else data.load_arrays(name, split, limit=limit))
        return self._memory[key]

    def figure_path(self, name: str) -> str:
        return os.path.join(self.figures_dir, f"{name}.png")

    def save_defense(self, name: str, defense: Any) -> str:
        """Save ``defense`` (a ``tfdefense.defend.Defense``) to ``out/defenses/<name>``, where
        ``tfdefense evaluate --defense`` and ``tfdefense export`` read it; returns the folder.

        The folder is rewritten whole on every run (the models come from the cache), so it
        always holds the defense the report's numbers were measured on.
        """
        path = os.path.join(self.out, "defenses", name)
        with profiling.phase("write"):
            self.saved_defenses[name] = defense.save(path)
        return path

    def fingerprint(self, depends_on: Any = None) -> str:
        """What a cached file was made from: library version, preset and either
        ``depends_on`` (what the experiment declares the file depends on, e.g. the
        settings its training reads) or, if ``None``, every setting but ``verbose`` and,
        under presets other than ``quick``, the training recipes of the active dataset's
        paper (``training_recipes.recipes_fingerprint``): a changed recipe retrains the
        models and recomputes what was made from them. ``quick``'s recipes are pinned by
        tests to its training before the recipes existed, so its caches keep their
        fingerprints."""
        if depends_on is None:
            depends_on = {k: v for k, v in self.settings.items() if k not in COSMETIC_SETTINGS}
            if self.preset != "quick":
                from tfdefense.experiments import training_recipes

                family = "fm" if self.role in FM_ROLES else "cdvae"
                depends_on = {"settings": depends_on,
                              "recipes": training_recipes.recipes_fingerprint(self.preset, family)}
        made_from = {"tfdefense": __version__, "preset": self.preset, "dataset": self.dataset,
                     "depends_on": depends_on}
        if self.role not in FM_ROLES:
            made_from["ported_nets"] = ported_nets_fingerprint()
        return json.dumps(made_from, sort_keys=True, default=repr)

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
        with cache_lock(self.cache_dir, key):  # another process making it: wait, then load
            if self._is_current(path, fingerprint):
                value = load(path)
            else:
                value = make()
                with profiling.phase("write"):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    root, ext = os.path.splitext(path)
                    tmp = f"{root}{ext}.partial{ext}"
                    save(value, tmp)
                    os.replace(tmp, path)
                    self._record(path, fingerprint)
        self._memory[key] = value
        return value

    def backup(self, stage: str | None = None) -> keras.callbacks.Callback:
        """A ``BackupAndRestore`` for one ``fit`` of the model ``cached_model`` is training.

        Pass it in ``callbacks=`` of every ``fit`` inside a ``cached_model`` trainer; it
        takes the trainer's key and ``depends_on`` from the cache, so a trainer cannot
        name a mismatched one (a model trained in several fits names each ``stage``).
        The folder, ``cache/backup/<key>[__stage]-<fingerprint hash>``, is written after
        every epoch and deleted at the end of training; an interrupted run resumes from
        it (the model must be built before ``fit``). ``verbose`` and other cosmetic
        settings do not change the folder, other settings do.

        Raises:
            RuntimeError: outside a ``cached_model`` trainer (nothing would own the folder).
        """
        if not self._training:
            raise RuntimeError("Context.backup() is for a fit inside a cached_model trainer")
        key, depends_on = self._training[-1]
        name = key if stage is None else f"{key}/{stage}"
        digest = hashlib.sha256(self.fingerprint(depends_on).encode()).hexdigest()[:12]
        folder = os.path.join(self.cache_dir, "backup", f"{name.replace('/', '__')}-{digest}")
        return CheckedBackupAndRestore(folder)

    def cached_model(self, key: str, build_and_train: Callable[[], keras.Model],
                     depends_on: Any = None) -> keras.Model:
        """Load ``cache/<key>.keras`` if it was made with the same ``fingerprint(depends_on)``
        (``depends_on``: any JSON-able value), else build, train, save and return it.
        While ``build_and_train`` runs, ``backup()`` is this model's (trainers nest)."""

        def train() -> keras.Model:
            self._training.append((key, depends_on))
            try:
                with profiling.phase("train"):
                    return build_and_train()
            finally:
                self._training.pop()

        return self._cached(key, os.path.join(self.cache_dir, f"{key}.keras"), depends_on,
                            keras.models.load_model, train, lambda model, tmp: model.save(tmp))

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
