"""A dry run of a preset: every experiment end to end on fake data, and what the real run costs.

``tfdefense reproduce --preset paper --dry-run`` runs the preset's experiments
exactly as the real run would (its architectures, e.g. WRN-28-10, ResNet-50,
the VQ-VAE and Table I's face nets; its datasets' image shapes; its attacks and
report) but on ``tfds.testing.mock_data`` (random images of each dataset's real
shape, ``MOCK_EXAMPLES`` per split) with ``DRY_RUN_SETTINGS``: one or two
epochs, two attack steps, small batches. A wiring bug then shows in minutes on
a CPU instead of after hours on a GPU.

While it runs, every ``keras.Model.fit`` is recorded (model, parameters, the
settings that gave its epochs, images and batch, and the time of its training
steps after the first, which traces), and ``plan`` turns the records into what
the real run will train: per model, the real epochs, images and optimizer
steps, and an estimate of the training time *on the machine that ran the dry
run* (steps × measured seconds per step, scaled linearly from the dry batch to
the real one). Run the dry run on the GPU machine to estimate the GPU run.
Evaluation (attacks) is not estimated; the plan lists the attack budgets.

Example:
    >>> from tfdefense.experiments.dry_run import real_setting, DRY_RUN_SETTINGS
    >>> real_setting("paper", "at_epochs"), DRY_RUN_SETTINGS["at_epochs"]
    (82, 1)
    >>> real_setting("paper", "fm_codes", role="fashion_mnist")
    10
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tfdefense import data
from tfdefense.experiments.context import PRESETS, Context

#: fake examples per split of every dataset (restricted ImageNet keeps ~20% of ImageNet's
#: labels, so it gets more to keep about as many)
MOCK_EXAMPLES = {"default": 24, "imagenet2012": 120}

#: real training-split sizes (the validation split tfdefense carves from it included)
TRAIN_EXAMPLES = {"cifar10": 50_000, "mnist": 60_000, "fashion_mnist": 60_000,
                  "celeb_a": 162_770, "restricted_imagenet": 257_748, "mnist_5k": 3_500}

#: sizes the dry run shrinks (architectures, budgets and losses stay the preset's). Epochs are 1
#: where the batch is a setting (shrunk to 8: several steps per epoch to time), 2 where the
#: batch is fixed in code (the second epoch's step is timed after tracing).
DRY_RUN_SETTINGS: dict[str, Any] = {
    # CD-VAE (cdvae_models, imagenet preset)
    "cdvae_epochs": 1, "classifier_epochs": 1, "sweep_epochs": 1, "batch_size": 8,
    "eval_images": 16, "defense_images": 8, "whitebox_images": 4,
    # class means and covariances need 2+ images of every class: 20 balanced mock labels
    "detection_train_images": 20,
    "pgd_steps": 2, "defense_steps": 2, "eot_samples": 2, "lid_k": (3, 5),
    "gamma_grid": (2e-3, 2.0),
    "detection_min_images": 2,
    # Table 7
    "pretrain_epochs": 1, "clean_epochs": 1, "at_epochs": 1, "at_batch_size": 8,
    "attack_images": 8, "eval_steps": 2, "adaptive_steps": 2, "restarts": 1, "spsa_images": 4,
    "spsa_steps": 2, "spsa_samples": 4, "autoattack_images": 4, "autoattack_steps": 2,
    "autoattack_queries": 10,
    # FM-Defense
    "fm_classifier_epochs": 2, "fm_dgmm_epochs": 2, "fm_vae_epochs": 2, "fm_magnet_epochs": 2,
    "fm_magnet_batch": 8, "fm_gan_epochs": 2, "fm_gan_batch": 8, "fm_morphs": 4,
    "fm_eval_images": 16, "fm_adaptive_images": 4, "fm_dgan_adaptive_images": 2,
    "fm_dgan_iterations": 2, "fm_dgan_restarts": 1, "fm_pgd_steps": 2, "fm_eot_morphs": 2,
    "fm_cw_steps": 2, "fm_deepfool_steps": 2,
    # MagNet's rate r rejects floor(n r) of n clean validation images: 0.001 needs 1,000, the
    # mock split has 24
    "fm_magnet_rejection_rate": 0.05,
    # FM Table II's AutoAttack rows (the standard version under paper, 1,000 images)
    "fm_autoattack_images": 4, "fm_autoattack_dgan_images": 2, "fm_autoattack_steps": 2,
    "fm_autoattack_queries": 10, "fm_autoattack_dgan_queries": 10,
    # certified_l2 (the paper preset certifies 500 images with n = 100,000 draws)
    "certify_images": 2, "certify_n0": 4, "certify_n": 20, "noise_epochs": 1,
    "stability_epochs": 1,
    "verbose": 0, "fm_verbose": 0,
}

#: settings that cap a model's training images
IMAGE_KEYS = ("train_images", "fm_train_images", "sweep_train_images")

#: settings the plan reports as the real run's attack budgets
BUDGET_KEYS = ("eval_images", "attack_images", "defense_images", "autoattack_images",
               "fm_eval_images", "eval_steps", "adaptive_steps", "restarts", "pgd_steps",
               "fm_pgd_steps", "fm_morphs", "autoattack_version")


def _settings_tables(preset: str, role: str | None) -> list[dict[str, Any]]:
    """Where a setting's value comes from, in lookup order (as the experiments' ``setting``)."""
    from tfdefense.experiments import cdvae_models, cdvae_table7, fm_models

    tables = [PRESETS[preset]]
    if role is not None:
        tables.append(fm_models.DATASET_SETTINGS.get(preset, {}).get(role, {}))
    for module in (cdvae_table7, fm_models, cdvae_models):
        tables.append(module.SETTINGS.get(preset, module.SETTINGS["paper"]))
    return tables


def real_setting(preset: str, key: str, role: str | None = None) -> Any:
    """The value ``key`` has in the real run of ``preset`` (for dataset ``role``), or None."""
    for table in _settings_tables(preset, role):
        if key in table:
            return table[key]
    return None


class SettingsReadLog(dict):
    """The context's settings, recording which keys experiments read (``record_fits``
    attributes each fit to the epochs and batch settings read before it).

    Example:
        >>> settings = SettingsReadLog({"cdvae_epochs": 2, "batch_size": 8})
        >>> settings["cdvae_epochs"], settings.get("batch_size"), settings.get("missing")
        (2, 8, None)
        >>> settings.reads
        ['cdvae_epochs', 'batch_size']
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[str] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            self.reads.append(key)
        return super().get(key, default)


@dataclass
class Fit:
    """One ``model.fit`` of the dry run and the settings behind it."""

    experiment: str | None
    role: str | None
    model: str
    params: int
    samples: int | None
    batch: int | None
    epochs: int
    steps: int
    step_seconds: float
    seconds: float
    epochs_key: str | None = None
    images_key: str | None = None
    batch_key: str | None = None
    #: whether the fit had a ``BackupAndRestore`` (``Context.backup``): a preempted real run
    #: resumes it from its last epoch instead of from the start
    resumable: bool = False
    #: the ``training_recipes.MODELS`` key of a fit run by ``training_recipes.fit``: the real
    #: run's epochs and batch are then that model's recipe under the preset
    recipe_model: str | None = None


class _StepTimer:
    """A Keras callback timing each training step (``on_train_batch_begin`` / ``_end``)."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.durations: list[float] = []
                self._t = 0.0

            def on_train_batch_begin(self, batch, logs=None):
                self._t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.durations.append(time.perf_counter() - self._t)

        return Timer()


def _model_name(model) -> str:
    """The class of a subclassed model, the name of a functional one (``wide_resnet``...)."""
    kind = type(model).__name__
    return model.name if kind in ("Functional", "Sequential") else kind


@contextlib.contextmanager
def record_fits(ctx: Context) -> Iterator[list[Fit]]:
    """Record every ``keras.Model.fit`` while inside, attributed to ``ctx``'s experiment.

    Patches ``keras.Model.fit`` for the duration: the experiments call ``fit``
    directly and the dry run must see every training without changing them.
    """
    import keras
    import tensorflow as tf

    from tfdefense.experiments import training_recipes

    fits: list[Fit] = []
    original = keras.Model.fit
    mark = [0]
    settings_of: dict[tuple, tuple] = {}  # (experiment, role, model) -> its last fit's setting keys

    def last(reads: list[str], test) -> str | None:
        return next((k for k in reversed(reads) if test(k)), None)

    def fit(model, x=None, y=None, *args, **kwargs):
        reads = ctx.settings.reads[mark[0]:] if isinstance(ctx.settings, SettingsReadLog) else []
        mark[0] += len(reads)
        timer = _StepTimer()
        callbacks = list(kwargs.get("callbacks") or [])
        resumable = any(isinstance(c, keras.callbacks.BackupAndRestore) for c in callbacks)
        kwargs["callbacks"] = [*callbacks, timer]
        start = time.perf_counter()
        history = original(model, x, y, *args, **kwargs)
        seconds = time.perf_counter() - start
        durations = timer.durations[1:] or timer.durations
        # an augmented fit passes a tf.data pipeline, whose len() counts batches; the
        # pipeline of training_recipes.training_dataset carries its images as num_examples
        samples = getattr(x, "num_examples", None)
        if samples is None and hasattr(x, "__len__") and not isinstance(x, (dict, tf.data.Dataset)):
            samples = len(x)
        experiment = ctx._experiment[0] if ctx._experiment else None
        current = training_recipes.fitting()
        keys = (last(reads, lambda k: k.endswith("epochs")),
                last(reads, lambda k: k.endswith("train_images")),
                last(reads, lambda k: "batch" in k))
        same = (experiment, ctx.role, _model_name(model))
        if keys == (None, None, None):
            # no setting read since the last fit: a repeat of it with the same settings (the
            # trials of a keras-tuner search read them once, before the search)
            keys = settings_of.get(same, keys)
        settings_of[same] = keys
        fits.append(Fit(
            experiment=experiment, role=ctx.role,
            model=_model_name(model), params=int(model.count_params()), samples=samples,
            batch=kwargs.get("batch_size"), epochs=int(kwargs.get("epochs", 1)),
            steps=len(timer.durations), step_seconds=float(np.median(durations or [0.0])),
            seconds=seconds, epochs_key=keys[0], images_key=keys[1], batch_key=keys[2],
            resumable=resumable, recipe_model=current[0] if current else None))
        return history

    keras.Model.fit = fit
    try:
        yield fits
    finally:
        keras.Model.fit = original


def _restricted_imagenet_archives() -> contextlib.AbstractContextManager:
    """A temporary manual dir holding (empty) ImageNet archives, which the mock never reads."""
    from tfdefense import data_imagenet

    @contextlib.contextmanager
    def manual_dir():
        with tempfile.TemporaryDirectory() as tmp:
            for name in data_imagenet.ARCHIVES:
                open(os.path.join(tmp, name), "wb").close()
            previous = os.environ.get(data_imagenet.MANUAL_DIR_ENV)
            os.environ[data_imagenet.MANUAL_DIR_ENV] = tmp
            try:
                yield tmp
            finally:
                if previous is None:
                    os.environ.pop(data_imagenet.MANUAL_DIR_ENV)
                else:
                    os.environ[data_imagenet.MANUAL_DIR_ENV] = previous

    return manual_dir()


@contextlib.contextmanager
def mock_datasets(preset: str) -> Iterator[int]:
    """``tfds.testing.mock_data`` for every dataset ``preset`` reads; yields examples per split."""
    import tensorflow_datasets as tfds

    imagenet = PRESETS[preset]["datasets"].get("restricted_imagenet") is not None
    n = MOCK_EXAMPLES["imagenet2012" if imagenet else "default"]
    with contextlib.ExitStack() as stack:
        if imagenet:
            stack.enter_context(_restricted_imagenet_archives())
        stack.enter_context(tfds.testing.mock_data(num_examples=n))
        yield n


class MockContext(Context):
    """The dry run's ``Context``: labels cycle through the classes (``i % num_classes``).

    tfds' mock labels are random and few (CIFAR-10's 24 mock examples have no class 8),
    while every real split holds each class many times; an experiment that fits per-class
    statistics (Mahalanobis means and covariances, DGMM components) would fail on the mock
    for a reason the real run does not have.
    """

    def arrays(self, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, y = super().arrays(split, limit)
        classes = data.spec(self.dataset).num_classes
        return x, (np.arange(len(y)) % classes).astype(y.dtype)


@dataclass
class DryRun:
    """What ``dry_run`` did: the reproduction of fake data, the fits, the real run's plan."""

    preset: str
    reproduction: Any
    fits: list[Fit]
    plan: list[dict] = field(default_factory=list)
    mock_examples: int = 0

    def to_json(self) -> dict:
        return {"preset": self.preset, "mock_examples": self.mock_examples,
                "failed": self.reproduction.failed, "seconds": self.reproduction.seconds,
                "fits": [asdict(f) for f in self.fits], "plan": self.plan,
                "estimated_training_hours": total_hours(self.plan)}


def real_recipe(preset: str, model: str):
    """The recipe ``model`` (a ``training_recipes.MODELS`` key) trains with in the real run of
    ``preset``: its recipe with the fields the preset's own settings bind (``recipe_for`` on
    the preset's settings, without the dry run's)."""
    from types import SimpleNamespace

    from tfdefense.experiments.training_recipes import recipe_for

    return recipe_for(SimpleNamespace(preset=preset, settings=dict(PRESETS[preset])), model)


def plan(preset: str, fits: Sequence[Fit], mock_examples: int) -> list[dict]:
    """Per recorded fit, what the real run of ``preset`` trains and its estimated time.

    Real images: the fit's share of the dry split (``samples / min(limit, mock)``)
    times ``min(limit, real split)``, ``limit`` the real value of the images
    setting the experiment read (None: the whole split). Epochs and batch: the
    model's recipe (``real_recipe``) for a fit run by ``training_recipes.fit``,
    else the real values of the settings the fit read. Steps: real epochs ×
    ⌈images / batch⌉. Seconds: steps × the dry run's median step time × real
    batch / dry batch (linear in the batch: a CPU approximation).
    """
    rows = []
    for f in fits:
        dataset = PRESETS[preset]["datasets"].get(f.role) if f.role else None
        split = TRAIN_EXAMPLES.get(dataset)
        limit = real_setting(preset, f.images_key, f.role) if f.images_key else None
        epochs = real_setting(preset, f.epochs_key, f.role) if f.epochs_key else f.epochs
        batch = (real_setting(preset, f.batch_key, f.role) if f.batch_key else f.batch) or f.batch
        if f.recipe_model:  # trained by its recipe: the real run's epochs and batch are the recipe's
            real = real_recipe(preset, f.recipe_model)
            epochs, batch = real.epochs, real.batch_size
        row = {"experiment": f.experiment, "dataset": dataset, "model": f.model,
               "params": f.params, "epochs": epochs, "epochs_setting": f.epochs_key,
               "batch": batch, "images": None, "steps": None, "hours": None,
               "resumable": f.resumable}
        if split and f.samples and batch and epochs is not None:
            dry_pool = min(limit or math.inf, mock_examples)
            images = round(f.samples / dry_pool * min(limit or math.inf, split))
            steps = int(epochs) * math.ceil(images / batch)
            scale = batch / f.batch if f.batch else 1.0
            row.update(images=images, steps=steps,
                       hours=steps * f.step_seconds * scale / 3600)
        rows.append(row)
    return rows


def total_hours(rows: Sequence[dict]) -> float:
    """Estimated training hours over the plan's rows that have an estimate."""
    return float(sum(r["hours"] for r in rows if r["hours"] is not None))


def format_plan(preset: str, rows: Sequence[dict]) -> str:
    """The plan as a plain-text table, with the attack budgets and the total."""
    lines = [f"What `--preset {preset}` trains (estimated on this machine from the dry run's "
             "step times):",
             f"{'experiment':<22}{'dataset':<20}{'model':<22}{'params':>12}{'epochs':>8}"
             f"{'images':>9}{'batch':>7}{'steps':>10}{'hours':>9}  resumes"]
    for r in rows:
        hours = "?" if r["hours"] is None else f"{r['hours']:.2f}"
        lines.append(f"{(r['experiment'] or '-'):<22}{(r['dataset'] or '-'):<20}{r['model']:<22}"
                     f"{r['params']:>12,}{str(r['epochs']):>8}{str(r['images'] or '?'):>9}"
                     f"{str(r['batch']):>7}{str(r['steps'] or '?'):>10}{hours:>9}  "
                     f"{'epoch' if r.get('resumable') else 'NO'}")
    budgets = {k: real_setting(preset, k) for k in BUDGET_KEYS}
    lines.append("Attack budgets of the real run (not estimated): " + ", ".join(
        f"{k}={v}" for k, v in budgets.items() if v is not None))
    shrunk = [f"{k} ({len(v)} values here, {len(real_setting(preset, k))} in the real run)"
              for k, v in DRY_RUN_SETTINGS.items() if isinstance(v, tuple)
              and real_setting(preset, k) is not None and len(real_setting(preset, k)) > len(v)]
    if shrunk:
        lines.append("Grids shrunk for the dry run (the real run trains or scores one per value): "
                     + ", ".join(shrunk))
    lines.append(f"Estimated training: {total_hours(rows):.1f} h on this machine "
                 "(one device; models shared by experiments train once).")
    fragile = sorted({f"{r['experiment']}:{r['model']}" for r in rows if not r.get("resumable")})
    lines.append("A preempted run resumes every training from its last finished epoch "
                 "(cache/backup/)." if not fragile else
                 "Trainings without a backup (a preempted run restarts them from epoch 0): "
                 + ", ".join(fragile))
    return "\n".join(lines)


def dry_run(preset: str, out: str, only: Sequence[str] | None = None,
            overrides: dict[str, Any] | None = None, log=print) -> DryRun:
    """Run ``preset``'s experiments on mock data with ``DRY_RUN_SETTINGS``; report and plan.

    Writes the usual report into ``out`` (its results are of random images:
    meaningless numbers, checked wiring) and ``out/dry_run.json`` (fits, plan).
    """
    from tfdefense.report import reproduce

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    # the training-image limits at their real values: read through the context, so each fit
    # knows its limit (the mock split is smaller than any of them anyway)
    limits = {k: real_setting(preset, k) for k in IMAGE_KEYS}
    settings = {**limits, **DRY_RUN_SETTINGS, **(overrides or {})}
    with mock_datasets(preset) as n:
        ctx = MockContext(preset, out, settings)
        ctx.settings = SettingsReadLog(ctx.settings)
        with record_fits(ctx) as fits:
            run = reproduce(preset, out, only=only, log=log, context=ctx)
    result = DryRun(preset, run, list(fits), plan(preset, fits, n), n)
    with open(os.path.join(out, "dry_run.json"), "w") as f:
        json.dump(result.to_json(), f, indent=1, default=str)
    log(format_plan(preset, result.plan))
    return result
