"""How every model the experiments train is trained, per preset: ``RECIPES[preset][model]``.

A :class:`tfdefense.recipes.Recipe` per (preset, model) is the one place that says what a
model trains with (augmentation, mixup, loss weights and their curriculum, optimizer,
learning-rate schedule and warm-up, clipping, batch, epochs); the experiments build their
optimizers, callbacks and input pipelines from it (:func:`recipe_for`, :func:`fit`).
Each model (:data:`MODELS`) is held against a reference recipe
(``reference_recipes.REFERENCES``: the official CD-VAE code, or the named source of a
baseline, or FM-Defense's paper), and every difference of ``paper`` from its reference
carries a reason in :data:`DEVIATIONS` (``recipe_deviations``;
``tests/experiments/test_training_recipes.py`` fails on an unexplained one).

* ``quick`` trains as before the recipes existed (no augmentation, no mixup, no
  schedules; the same optimizers, batches, epochs and seeds), except that CD-VAE-AT
  takes the official script's objective as ``paper`` does; its differences share one
  reason, :data:`QUICK_WHY`.
* ``paper`` follows the official recipes for the CD-VAE and CD-VAE-AT (augmentation in the
  ``tf.data`` pipeline, mixup α = 2, the reconstruction-weight curriculum, AdamW with
  PyTorch's cosine annealing; TorchSGD with warm-up and step decay and the official
  script's objective, ``AdversarialCDVAE(objective="official")``, for adversarial
  training), bmsookim/wide-resnet.pytorch for the WRN
  classifiers, Laidlaw et al.'s ``adv_train.py`` for PGD-AT and fm-defense.txt (with its
  sources) for FM-Defense's models.
* ``paper_imagenet`` trains the restricted-ImageNet CD-VAE as before (the paper states
  only AdamW, weight decay 1e-6 and 60 epochs).

Epochs, batch and a few other fields stay settings (``--set at_epochs=12``, the dry run's
one epoch of batch 8): a field's setting (``MODELS[model].keys(preset)``) replaces the
recipe's value when the run's ``Context.settings`` holds it. Augmentation runs in the input
pipeline on the CPU (:func:`training_dataset`), never inside a model.

Example:
    >>> r = RECIPES["paper"]["cdvae"]
    >>> r.mixup_alpha, r.lr_schedule, r.curricula["re"].for_keras_epoch(99)
    (2.0, 'torch_cosine', 5.0)
    >>> RECIPES["quick"]["cdvae"].augmentation is None
    True
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.augment import augment_dataset
from tfdefense.experiments.recipe_deviations import DEVIATIONS, QUICK_WHY
from tfdefense.experiments.reference_recipes import REFERENCES, SOURCES, TITLES, UNSTATED
from tfdefense.models.cdvae import ADAMW_EPSILON
from tfdefense.models.pgd_training import ADAM_EPSILON as PGD_AT_ADAM_EPSILON
from tfdefense.recipes import NO_AUGMENTATION, OFFICIAL, Recipe, RecipeRow, recipe_fields, recipe_table

__all__ = ["MODELS", "RECIPES", "DEVIATIONS", "QUICK_WHY", "TrainedModel", "recipe", "recipe_for",
           "deviations", "table", "recipes_fingerprint", "reference_title", "steps_per_epoch",
           "training_dataset", "fit", "fitting", "optimizer"]


@dataclass(frozen=True)
class TrainedModel:
    """A model the experiments train: where, against which reference, bound to which settings.

    ``bindings`` maps a recipe field (``"epochs"``, ``"optimizer_kwargs.beta_1"``) to the
    setting that replaces it when a run sets it; ``preset_bindings`` changes them per preset;
    ``references`` per preset overrides ``reference``.
    """

    title: str
    reference: str
    family: str  # "cdvae" or "fm": whose caches a change of the recipe invalidates
    bindings: Mapping[str, str] = field(default_factory=dict)
    preset_bindings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    references: Mapping[str, str] = field(default_factory=dict)

    def keys(self, preset: str) -> dict[str, str]:
        """Recipe field -> setting, for ``preset``."""
        return {**self.bindings, **self.preset_bindings.get(preset, {})}

    def reference_for(self, preset: str) -> str:
        return self.references.get(preset, self.reference)


_CLASSIFIER_BINDINGS = {"epochs": "classifier_epochs", "batch_size": "batch_size"}
_TABLE7 = {"batch_size": "at_batch_size"}
_IMAGENET = {"paper_imagenet": "resnet50_restricted_imagenet"}

MODELS: dict[str, TrainedModel] = {
    "classifier": TrainedModel(
        "D̂, the classifier pre-trained on clean x (cdvae_models.reference_classifier)", "wrn_cifar10",
        "cdvae", _CLASSIFIER_BINDINGS, {"paper": {"batch_size": "classifier_batch_size"}}, _IMAGENET),
    "part_classifier": TrainedModel(
        "Classifiers on R(x) or G(x) of a CD-VAE, Tables 3 and 6 (cdvae_models.part_classifier)",
        "wrn_cifar10", "cdvae", _CLASSIFIER_BINDINGS, {"paper": {"batch_size": "classifier_batch_size"}},
        _IMAGENET),
    "cdvae": TrainedModel(
        "CD-VAE (cdvae_models.cdvae)", "cdvae_cifar10", "cdvae",
        {"epochs": "cdvae_epochs", "batch_size": "batch_size"},
        references={"paper_imagenet": "cdvae_restricted_imagenet"}),
    "table7_normal": TrainedModel(
        "Table 7 Normal: the clean classifier (the start of PGD-AT in quick, and of D_G)", "wrn_cifar10",
        "cdvae", {"epochs": "clean_epochs", **_TABLE7}),
    "table7_cdvae": TrainedModel(
        "Table 7: the pre-trained CD-VAE that CD-VAE-AT starts from", "cdvae_cifar10", "cdvae",
        {"epochs": "pretrain_epochs", **_TABLE7}),
    "table7_d_g": TrainedModel(
        "Table 7: D_G fine-tuned on G(x) before adversarial training (quick only)", "wrn_cifar10",
        "cdvae", {"epochs": "d_g_epochs", **_TABLE7}),
    "table7_cdvae_at": TrainedModel(
        "Table 7 CD-VAE-AT: white-box adversarial training, Eq. 7-10", "cdvae_at_cifar10", "cdvae",
        {"epochs": "at_epochs", "model.objective": "at_objective", **_TABLE7}),
    "table7_pgd_at": TrainedModel(
        "Table 7 PGD-AT: the adversarially trained baseline", "pgd_at_cifar10", "cdvae",
        {"epochs": "at_epochs", **_TABLE7}),
    "fm_classifier": TrainedModel(
        "FM-Defense: the protected classifier C (fm_models.classifier)", "cw_mnist_classifier", "fm",
        {"epochs": "fm_classifier_epochs", "batch_size": "fm_classifier_batch"}),
    "fm_dgmm": TrainedModel("FM-Defense: DGMM, stage 1 (fm_models.combo_vae)", "fm_dgmm", "fm",
                            {"epochs": "fm_dgmm_epochs"}),
    "fm_combo_vae": TrainedModel("FM-Defense: combo-VAE, stage 2 (fm_models.combo_vae)", "fm_combo_vae",
                                 "fm", {"epochs": "fm_vae_epochs"}),
    "fm_magnet": TrainedModel(
        "MagNet's denoising autoencoders I and II (fm_models.magnet)", "magnet_mnist", "fm",
        {"epochs": "fm_magnet_epochs", "batch_size": "fm_magnet_batch", "learning_rate": "fm_magnet_lr"}),
    "fm_wgan_gp": TrainedModel(
        "Defense-GAN's WGAN-GP generator (fm_models.defense_gan)", "wgan_gp_mnist", "fm",
        {"epochs": "fm_gan_epochs", "batch_size": "fm_gan_batch", "learning_rate": "fm_gan_lr",
         "optimizer_kwargs.beta_1": "fm_gan_beta_1", "model.width": "fm_gan_width"}),
}  # fmt: skip

# ----------------------------------------------------------------------------- quick
_ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}  # Keras defaults: Adam(1e-3) as before
#: CDVAE.compile()'s cdvae_optimizer(): the official AdamW epsilon 1e-8 (utils/set.py)
_ADAMW = {**_ADAM, "epsilon": ADAMW_EPSILON, "weight_decay": 1e-6}
#: PGDAdversarialTraining.compile()'s Adam: epsilon 1e-8 (Madry et al.'s TF1 AdamOptimizer)
_PGD_AT_ADAM = {**_ADAM, "epsilon": PGD_AT_ADAM_EPSILON}
_CDVAE_REDUCTIONS = {"re": "mean over pixels and batch", "ce": "mean over batch, mixed with lambda",
                     "kl": "mean over latent units and batch"}
#: objective="official" (both presets): the script's reductions, with our per-latent mean KL
_AT_OFFICIAL_REDUCTIONS = {**OFFICIAL["cdvae_at_cifar10"].loss_reductions,
                           "kl": "mean over latent units and every sample"}
_CDVAE_AT_ATTACK = dict(OFFICIAL["cdvae_at_cifar10"].attack)
_MNIST_NORMALIZATION = ((0.1307,), (0.3081,))


def _adam(lr: float, batch: int, epochs: int, kwargs: Mapping[str, float] = _ADAM,
          **kw: Any) -> Recipe:
    return Recipe(optimizer="adam", optimizer_kwargs=dict(kwargs), learning_rate=lr,
                  batch_size=batch, epochs=epochs, **kw)


_QUICK_CDVAE = Recipe(
    normalization=_MNIST_NORMALIZATION, loss_weights={"re": 1.0, "ce": 2.0, "kl": 0.2},
    loss_reductions=_CDVAE_REDUCTIONS, optimizer="adamw", optimizer_kwargs=_ADAMW, learning_rate=1e-3,
    batch_size=64, epochs=6, model={"latent_dim": 64, "feature_width": 32})
_QUICK_CLASSIFIER = _adam(1e-3, 64, 4, model={"architecture": "small_cnn (width 32, dense 128)"})

RECIPES: dict[str, dict[str, Recipe]] = {"quick": {
    "classifier": _QUICK_CLASSIFIER,
    "part_classifier": _QUICK_CLASSIFIER,
    "cdvae": _QUICK_CDVAE,
    "table7_normal": _adam(1e-3, 64, 2, model={"architecture": "small_cnn (width 16, dense 64)"}),
    "table7_cdvae": dataclasses.replace(
        _QUICK_CDVAE, loss_weights={"re": 1.0, "ce": 2e-3, "kl": 0.2}, epochs=10,
        model={"latent_dim": 128, "feature_width": 32}),
    "table7_d_g": _adam(1e-3, 64, 1, model={"architecture": "small_cnn (width 16, dense 64)",
                                            "init": "Normal"}),
    "table7_cdvae_at": Recipe(
        normalization=_MNIST_NORMALIZATION,
        loss_weights={"re": 1.0, "kl": 0.01 / 3, "cr": 0.1, "cg": 0.1},
        loss_reductions=_AT_OFFICIAL_REDUCTIONS, optimizer="adamw", optimizer_kwargs=_ADAMW,
        learning_rate=1e-3, batch_size=64, epochs=8,
        model={"latent_dim": 128, "feature_width": 32, "classifiers": "small_cnn (width 16, dense 64)",
               "objective": "official"},
        attack={**_CDVAE_AT_ATTACK, "eps": 0.3, "steps": 5}),
    "table7_pgd_at": _adam(
        1e-3, 64, 8, _PGD_AT_ADAM, model={"architecture": "small_cnn (width 16, dense 64)", "init": "Normal"},
        attack={"norm": "linf", "eps": 0.3, "steps": 5, "step_size": "eps / sqrt(steps)", "loss": "ce",
                "random_init": True}),
    "fm_classifier": _adam(1e-3, 64, 5, model={"architecture": "small_cnn (width 16, dense 64)",
                                               "validation_split": 0.0}),
    "fm_dgmm": _adam(1e-3, 64, 10, loss_weights={"lkd": 0.1}, model={"train_images": 3500}),
    "fm_combo_vae": _adam(
        1e-3, 64, 15, loss_weights={"tc": 40.0, "kl": 1.0},
        model={"train_images": 3500, "latent_codes": 20, "reconstruction": "bernoulli",
               "discriminator": "2 x 256, Adam 1e-4 (0.5, 0.9)"}),
    "fm_magnet": _adam(1e-2, 64, 20,
                       model={"noise_std": 0.1, "activity_l2": 0.0, "noise_draws": "per batch"}),
    "fm_wgan_gp": Recipe(
        optimizer="adam", optimizer_kwargs={"beta_1": 0.0, "beta_2": 0.9}, learning_rate=1e-3,
        loss_weights={"gp": 10.0}, batch_size=32, epochs=15,
        model={"critic_steps": 5, "width": 32, "latent_dim": 128}),
}}  # fmt: skip

# ----------------------------------------------------------------------------- paper
_WRN = "Wide_ResNet(28, 10, dropout 0.3)"
_PAPER_WRN = dataclasses.replace(REFERENCES["wrn_cifar10"], normalization=None)
_PAPER_CDVAE = dataclasses.replace(
    OFFICIAL["cdvae_cifar10"], loss_weights={"re": 1.0, "ce": 2.0, "kl": 0.2 / 3},
    loss_reductions=_CDVAE_REDUCTIONS)
_FM_ADAM = {"optimizer": "adam", "optimizer_kwargs": _ADAM, "learning_rate": 1e-3}

RECIPES["paper"] = {
    "classifier": _PAPER_WRN,
    "part_classifier": dataclasses.replace(_PAPER_WRN, augmentation=None),
    "cdvae": _PAPER_CDVAE,
    "table7_normal": _PAPER_WRN,
    "table7_cdvae": dataclasses.replace(_PAPER_CDVAE, loss_weights={"re": 1.0, "ce": 2e-3, "kl": 0.2 / 3}),
    # not trained under paper (d_g_epochs 0: D_G starts from Normal, as the official code);
    # the recipe of `--set d_g_epochs=N`
    "table7_d_g": dataclasses.replace(_PAPER_WRN, epochs=1, model={"architecture": _WRN, "init": "Normal"}),
    "table7_cdvae_at": dataclasses.replace(
        OFFICIAL["cdvae_at_cifar10"],
        loss_weights={"re": 1.0, "kl": 0.01 / 3, "cr": 0.1, "cg": 0.1},
        loss_reductions=_AT_OFFICIAL_REDUCTIONS, epochs=82,
        model={"latent_dim": 2048, "feature_width": 32, "classifiers": _WRN, "objective": "official"}),
    "table7_pgd_at": dataclasses.replace(
        REFERENCES["pgd_at_cifar10"], normalization=None, model={"architecture": _WRN, "init": "random"}),
    "fm_classifier": dataclasses.replace(
        REFERENCES["cw_mnist_classifier"],
        model={"architecture": "small_cnn (width 32, dense 128)", "validation_split": 0.0}),
    "fm_dgmm": Recipe(**_FM_ADAM, loss_weights={"lkd": 0.1}, batch_size=64, epochs=50,
                      model={"train_images": 20000}),
    "fm_combo_vae": Recipe(
        **_FM_ADAM, loss_weights={"tc": 40.0, "kl": 1.0}, batch_size=64, epochs=100,
        model={"train_images": 20000, "latent_codes": 20, "reconstruction": "l2",
               "discriminator": "6 x 1000, Adam 1e-4 (0.5, 0.9)"}),
    "fm_magnet": Recipe(**_FM_ADAM, batch_size=256, epochs=100,
                        model={"noise_std": 0.1, "activity_l2": 0.0, "noise_draws": "per batch"}),
    "fm_wgan_gp": dataclasses.replace(REFERENCES["wgan_gp_mnist"], epochs=900),
}  # fmt: skip

_VQ_CDVAE = Recipe(
    loss_weights={"re": 1.0, "ce": 2.0, "kl": 0.1},
    loss_reductions={**_CDVAE_REDUCTIONS, "kl": "VQ codebook + 0.5 commitment, mean"}, optimizer="adamw",
    optimizer_kwargs=_ADAMW, learning_rate=1e-3, batch_size=128, epochs=60,
    model={"generator": "VQ-VAE", "classifier": "ResNet-50"})
_RESNET = _adam(1e-3, 128, 60, model={"architecture": "ResNet-50"})
RECIPES["paper_imagenet"] = {"classifier": _RESNET, "part_classifier": _RESNET, "cdvae": _VQ_CDVAE}

# --------------------------------------------------------------------------- lookups
def recipe(preset: str, model: str) -> Recipe:
    """The preset's recipe of ``model`` (presets without their own take ``paper``'s)."""
    if model not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {model!r}")
    table_ = RECIPES.get(preset, {})
    return table_[model] if model in table_ else RECIPES["paper"][model]


def deviations(preset: str, model: str) -> dict[str, str]:
    """Why each field of ``preset``'s recipe differs from the reference (quick: :data:`QUICK_WHY`
    for every field without a reason of its own)."""
    marked = dict(DEVIATIONS.get(preset, {}).get(model, {}))
    if preset == "quick":
        ref = MODELS[model].reference_for(preset)
        ours, official = recipe_fields(recipe(preset, model)), recipe_fields(REFERENCES[ref])
        for key in set(ours) | set(official):
            if ours.get(key) != official.get(key) or _unstated(ref, key):
                marked.setdefault(key, QUICK_WHY)
    return marked


def _unstated(reference: str, key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:n]) in UNSTATED.get(reference, ()) for n in range(1, len(parts) + 1))


def _get(recipe_: Recipe, path: str) -> Any:
    head, _, key = path.partition(".")
    value = getattr(recipe_, head)
    return value.get(key) if key else value


def _set(recipe_: Recipe, path: str, value: Any) -> Recipe:
    head, _, key = path.partition(".")
    if key:
        value = {**getattr(recipe_, head), key: value}
    return dataclasses.replace(recipe_, **{head: value})


def recipe_for(ctx, model: str, label: str | None = None, *,
               fields: Mapping[str, tuple[Any, str]] | None = None, **loss_weights: float) -> Recipe:
    """The recipe ``model`` trains with in this run: the preset's, with the fields whose
    setting the run sets (``MODELS[model].keys``) taken from ``ctx.settings`` and
    ``loss_weights`` replaced (e.g. ``ce=gamma``). ``fields`` replaces more fields, each with
    the reason the report's recipe table gives (``{"mixup_alpha": (0.2, "why")}``: an
    experiment's variant of the recipe, e.g. the mixup ablation's). Recorded in
    ``ctx.recipes[label or model]`` for the report.

    Example:
        >>> import tempfile
        >>> from tfdefense.experiments import Context
        >>> ctx = Context("paper", tempfile.mkdtemp(), {"at_epochs": 1})
        >>> r = recipe_for(ctx, "table7_cdvae_at")
        >>> r.epochs, r.batch_size, r.optimizer
        (1, 100, 'torch_sgd')
    """
    out = recipe(ctx.preset, model)
    overridden: dict[str, Any] = {}
    for path, key in MODELS[model].keys(ctx.preset).items():
        if key in ctx.settings:
            value = ctx.settings[key]
            if value is not None and value != _get(out, path):
                overridden[path] = (key, value, _get(out, path))
                out = _set(out, path, value)
    if loss_weights:
        unknown = set(loss_weights) - set(out.loss_weights)
        if unknown:
            raise ValueError(f"loss_weights: {model} has no loss weight named {sorted(unknown)}")
        out = dataclasses.replace(out, loss_weights={**out.loss_weights, **loss_weights})
    reasons: dict[str, str] = {}
    for path, (value, why) in (fields or {}).items():
        if value != _get(out, path):
            out = _set(out, path, value)
            reasons[path] = why
    recorded = getattr(ctx, "recipes", None)
    if recorded is not None:
        recorded[label or model] = {"model": model, "recipe": out, "overridden": overridden,
                                    "reasons": reasons}
    return out


def table(preset: str, model: str, ours: Recipe | None = None,
          overridden: Mapping[str, tuple] | None = None,
          reasons: Mapping[str, str] | None = None) -> list[RecipeRow]:
    """The recipe table of ``model`` (``ours`` default: the preset's recipe): field, reference
    value, source, ours, why. Fields a run's settings replaced say so; ``reasons`` (path ->
    why, from ``recipe_for(fields=...)``) explain fields an experiment replaced."""
    ref = MODELS[model].reference_for(preset)
    why = deviations(preset, model)
    for path, (key, value, preset_value) in (overridden or {}).items():
        why[path] = f"`{key}={value}` set for this run (the {preset} recipe: {preset_value!r})"
    why.update(reasons or {})
    return recipe_table(recipe(preset, model) if ours is None else ours, REFERENCES[ref], why,
                        SOURCES[ref], UNSTATED.get(ref, ()))


def recipes_fingerprint(preset: str, family: str) -> dict[str, Any]:
    """The preset's recipes of one family ("cdvae" or "fm") as JSON-able data, for cache
    fingerprints: any change of one of them changes the fingerprint."""
    return {m: json.loads(json.dumps(recipe_fields(recipe(preset, m)), default=repr, sort_keys=True))
            for m, spec in sorted(MODELS.items()) if spec.family == family}


def reference_title(preset: str, model: str) -> str:
    """What ``model``'s reference is, in one line (``reference_recipes.TITLES``)."""
    return TITLES[MODELS[model].reference_for(preset)]


# -------------------------------------------------------------------------- training
def steps_per_epoch(n: int, recipe_: Recipe, batch_size: int | None = None) -> int:
    """Optimizer steps per epoch: ⌈n / batch⌉ (the last batch is partial, as Keras and PyTorch);
    ``batch_size`` replaces the recipe's (a WGAN-GP batch feeds several critic updates)."""
    batch = recipe_.batch_size if batch_size is None else batch_size
    return max(1, math.ceil(int(n) / batch))


def optimizer(recipe_: Recipe, n: int, batch_size: int | None = None) -> keras.optimizers.Optimizer:
    """``recipe_``'s optimizer for a training on ``n`` images (its schedule counts epochs in
    :func:`steps_per_epoch` steps)."""
    return recipe_.build_optimizer(steps_per_epoch(n, recipe_, batch_size))


def training_dataset(
    x: np.ndarray, y: np.ndarray | None, recipe_: Recipe, seed: int | None
) -> tf.data.Dataset:
    """The augmented training pipeline: shuffle each epoch, batch, augment (CPU), prefetch;
    ``num_examples`` holds the number of images.

    Example:
        >>> x = np.random.default_rng(0).uniform(size=(10, 32, 32, 3)).astype("float32")
        >>> ds = training_dataset(x, np.arange(10), RECIPES["paper"]["cdvae"], seed=0)
        >>> [tuple(b[0].shape) for b in ds][-1]
        (10, 32, 32, 3)
    """
    spec = recipe_.augmentation if recipe_.augmentation is not None else NO_AUGMENTATION
    with tf.device("/CPU:0"):  # the augmentation layers' seed state lives with the pipeline
        ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(recipe_.batch_size)
        ds = augment_dataset(ds, spec, seed=seed)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.num_examples = len(x)  # len(ds) counts batches; a recorder of fits (the dry run) wants images
    return ds


_FITTING: contextvars.ContextVar[tuple[str, Recipe] | None] = contextvars.ContextVar(
    "training_recipes_fitting", default=None)


def fitting() -> tuple[str, Recipe] | None:
    """``(model, recipe)`` of the :func:`fit` running now (``None`` outside one): a recorder of
    ``keras.Model.fit`` (the dry run) can read which model of :data:`MODELS` a fit trains, so
    the real run's epochs and batch are ``recipe(preset, model)``'s.

    Example:
        >>> fitting() is None
        True
    """
    return _FITTING.get()


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray | None, recipe_: Recipe, *, seed: int | None,
        verbose: Any, callbacks: list, variables: Mapping[str, Any] | None = None,
        batch_size: int | None = None, model_key: str | None = None) -> keras.callbacks.History:
    """``model.fit`` as ``recipe_`` trains: without augmentation exactly the array fit the
    experiments always ran (``batch_size``, ``shuffle=True``); with it the
    :func:`training_dataset` pipeline. The recipe's curriculum callbacks come first
    (``variables``: loss weight -> model attribute, ``Recipe.callbacks``). ``batch_size``
    overrides the recipe's (a WGAN-GP batch feeds several critic updates); ``model_key``
    (a key of :data:`MODELS`) is what :func:`fitting` reports meanwhile."""
    batch = recipe_.batch_size if batch_size is None else batch_size
    callbacks = [*recipe_.callbacks(variables), *callbacks]
    token = _FITTING.set((model_key, recipe_)) if model_key is not None else None
    try:
        if recipe_.augmentation is None:
            return model.fit(x, y, batch_size=batch, epochs=recipe_.epochs, shuffle=True, verbose=verbose,
                             callbacks=callbacks)
        ds = training_dataset(x, y, dataclasses.replace(recipe_, batch_size=batch), seed)
        # batch_size is ignored for a dataset; passed so a recorder of fits (the dry run) sees it
        return model.fit(ds, batch_size=batch, epochs=recipe_.epochs, shuffle=False, verbose=verbose,
                         callbacks=callbacks)
    finally:
        if token is not None:
            _FITTING.reset(token)

