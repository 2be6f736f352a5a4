"""Models and arrays the CD-VAE experiments share, trained or computed once per run.

Every CD-VAE experiment (Tables 1–4, 6, Fig 3, Fig 4) asks this module for
the same few things, cached in the ``Context`` (``out/cache``) so a
``reproduce`` run trains each of them once and an interrupted run resumes:

* ``reference_classifier(ctx)``: D̂, the classifier pre-trained on clean x
  (CD-VAE §3.2 footnote 1; the attacked model of the grey-box setting);
* ``cdvae(ctx, gamma)``: a CD-VAE trained at γ (β = 0.2, CD-VAE §5); with the
  ``generator`` setting ``"vq"`` (the ``paper_imagenet`` preset) a ``VQCDVAE``
  (VQ-VAE G, latent loss weight 0.1, CD-VAE §4 on restricted ImageNet);
* ``part_classifier(ctx, gamma, part)``: a classifier trained on R(x) or G(x)
  of a CD-VAE's training images (Table 3; Table 6's classifier on G(x));
* ``pgd_examples(ctx)``: PGD-Linf examples of the evaluation images against D̂
  (the empirical study of §3.2).

Per-preset sizes live in ``SETTINGS``; any key can be overridden through the
Context (``Context("quick", out, {"eval_images": 32, "latent_dim": 8})``). How each
model trains (optimizer, schedule, augmentation, mixup, curriculum, batch, epochs) is
its recipe, ``training_recipes.RECIPES[preset]["classifier" | "part_classifier" |
"cdvae"]``; ``classifier_epochs``, ``cdvae_epochs``, ``batch_size`` (and, under
``paper``, ``classifier_batch_size``) set in the run replace the recipe's values.
The quick preset scales the paper's CIFAR-10 settings to MNIST: ``small_cnn``
instead of WRN-28-10, the 28x28 VAE variant, PGD-Linf eps 0.3 instead of 8/255.
Experiments read a CD-VAE's latent z through ``model.latent(x)[0]``, the hook
both ``CDVAE`` (posterior mean) and ``VQCDVAE`` (flattened z_q) provide, so they
run unchanged on either generator.

Example:
    >>> import tempfile
    >>> from tfdefense.experiments import Context
    >>> from tfdefense.experiments.cdvae_models import setting
    >>> setting(Context("quick", tempfile.mkdtemp()), "pgd_eps")
    0.3
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense import data as data_lib
from tfdefense import data_imagenet, nets
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.context import preset_setting
from tfdefense.models import CDVAE, VQCDVAE
from tfdefense.models.vq import PAPER_VQ_WEIGHT
from tfdefense.profiling import timed
from tfdefense.recipes import Recipe

#: what a table says in place of our number for an ImageNet row that could not run
NEEDS_IMAGENET = "needs the data and a GPU"
#: the datasets CD-VAE's experiments reproduce (their roles in ``Context.ROLES``): CIFAR-10 (§5)
#: and restricted ImageNet (§4); the quick preset runs the CIFAR-10 ones on mnist_5k
DATASETS = ("cifar10", "restricted_imagenet")
#: generators a CD-VAE experiment can train (``generator`` setting)
GENERATORS = ("vae", "vq")
#: classifiers ``new_classifier`` builds (``classifier`` setting)
CLASSIFIERS = ("small_cnn", "wrn", "resnet50")

#: generator and classifier variants, the same defaults in every preset
#: (restricted ImageNet: "vq" + "resnet50", see imagenet_preset.PAPER_IMAGENET)
_VARIANTS: dict[str, Any] = {
    "generator": "vae",  # "vae": Gaussian VAE G; "vq": VQ-VAE G (models.VQCDVAE)
    "beta": None,  # latent loss weight; None: 0.2 for the Gaussian VAE (KL), 0.1 for VQ
    "num_codes": 128,  # VQ codebook size k (CD-VAE authors)
    "vq_ema": False,  # VQ codebook by EMA updates instead of the codebook loss
    "resnet_weights": None,  # path of ResNet-50 'notop' ImageNet weights, or None (random init)
    "wrn_depth": 28,  # classifier "wrn": WRN-depth-width
    "wrn_width": 10,
    "detection_attacks": None,  # None: all five of Table 4/5; else a subset of their labels
    "detection_min_images": 10,  # fewer successful attacks per half leaves a cell unmeasured
    "kd_bandwidth": None,  # None: Feinman et al.'s for the dataset, else 1.20
}

#: experiment sizes per preset; the Context's settings override any of them
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "train_images": None,  # all 3,500 mnist_5k training images
        "latent_dim": None,  # the 28x28 VAE's default (64)
        "width": None,  # d = 32
        "classifier": "small_cnn",
        "classifier_batch_size": None,  # None: batch_size (the classifier recipe binds batch_size)
        "gamma": 2.0,  # CD-VAE §4.1 sweet spot (Tables 1–4)
        "defense_gamma": 2e-3,  # CD-VAE §4.3 grey-box setting on CIFAR-10
        "pgd_eps": 0.3,  # Madry et al.'s MNIST Linf budget (8/255 on CIFAR-10)
        "pgd_steps": 20,
        "defense_images": 200,  # images attacked per Table 6 cell
        "whitebox_images": 100,  # images attacked per adaptive (white-box) cell
        "eot_samples": 4,  # posterior draws per EOT gradient (Athalye et al. use 10-30)
        "defense_steps": None,  # None: the attack preset's steps (quick 20, paper 100)
        "detection_train_images": 1000,  # clean training images the characteristics fit on
        "md_magnitudes": (0.0, 0.002, 0.0005),
        "lid_k": (10, 20, 40),
        "gamma_grid": (2e-3, 2e-1, 2.0, 20.0),
        "sweep_epochs": 2,
        "sweep_train_images": 1500,  # CD-VAEs of the γ sweep train on the first 1,500 images
        # the mixup ablation (cdvae_mixup_ablation): one CD-VAE per α; detection AUC and
        # grey-box accuracy on these attacks (None: all of Table 4's / Table 6's)
        "mixup_grid": (0.0, 2.0),
        "mixup_detection_attacks": ("pgd_linf",),
        "mixup_greybox_attacks": ("pgd_linf",),
        "verbose": 2,
        **_VARIANTS,
    },
    "paper": {
        "train_images": None,
        "latent_dim": None,  # official CIFAR VAE: 2048
        "width": None,
        "classifier": "wrn",  # WRN-28-10
        # D̂'s and the part classifiers' batch (bmsookim/wide-resnet.pytorch's 128; training_recipes)
        "classifier_batch_size": 128,
        "gamma": 2.0,
        "defense_gamma": 2e-3,
        "pgd_eps": 8 / 255,
        "pgd_steps": 20,
        "defense_images": 10000,
        "whitebox_images": 1000,
        "eot_samples": 16,
        "defense_steps": None,
        "detection_train_images": 10000,
        "md_magnitudes": (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005),
        "lid_k": (10, 20, 30, 40, 50, 60, 70, 80, 90),
        "gamma_grid": (2e-4, 2e-3, 2e-2, 2e-1, 2.0, 20.0),
        "sweep_epochs": 30,
        "sweep_train_images": None,
        "mixup_grid": (0.0, 0.2, 1.0, 2.0),  # issue 21: the official α = 2 and three below it
        "mixup_detection_attacks": None,
        "mixup_greybox_attacks": None,
        "verbose": 2,
        **_VARIANTS,
    },
}


def setting(ctx, key: str) -> Any:
    """``ctx.settings[key]`` if set, else this module's per-preset default.

    Presets other than ``quick`` and ``paper`` (e.g. ``paper_imagenet``) take
    the ``paper`` defaults; put any key in that preset's settings to change it.
    """
    return preset_setting(ctx, SETTINGS, key)


def is_imagenet(ctx) -> bool:
    """Whether the run is on restricted ImageNet (any resolution of ``data_imagenet.SIZES``)."""
    return ctx.dataset in data_imagenet.SIZES


def attack_data(ctx) -> str:
    """The ``attacks.presets`` data scale: "mnist" for 28x28x1 data, else "cifar10"."""
    return "mnist" if data_lib.spec(ctx.dataset).shape[-1] == 1 else "cifar10"


def train_arrays(ctx) -> tuple[np.ndarray, np.ndarray]:
    x, y = ctx.arrays("train")
    limit = setting(ctx, "train_images")
    return (x[:limit], y[:limit]) if limit else (x, y)


def eval_arrays(ctx, n: int | None = None, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` (default ``eval_images``) images of a split."""
    x, y = ctx.arrays(split)
    n = ctx.settings["eval_images"] if n is None else n
    return x[:n], y[:n]


def fit_verbose(ctx):
    return setting(ctx, "verbose")


# ---------------------------------------------------------------- classifiers
def new_classifier(ctx, name: str) -> keras.Model:
    """An untrained classifier of the ``classifier`` setting: small_cnn, WRN or ResNet-50."""
    spec = data_lib.spec(ctx.dataset)
    kind = _classifier_kind(ctx)
    if kind == "wrn":
        return nets.wide_resnet(spec.shape, spec.num_classes, depth=setting(ctx, "wrn_depth"),
                                width=setting(ctx, "wrn_width"), name=name)
    if kind == "resnet50":
        return nets.resnet50(spec.shape, spec.num_classes, weights=setting(ctx, "resnet_weights"),
                             name=name)
    return nets.small_cnn(spec.shape, spec.num_classes, name=name)


def _classifier_kind(ctx) -> str:
    kind = setting(ctx, "classifier")
    if kind not in CLASSIFIERS:
        raise ValueError(f"classifier setting: expected one of {CLASSIFIERS}, got {kind!r}")
    return kind


def train_classifier(ctx, x: np.ndarray, y: np.ndarray, name: str,
                     model_recipe: str = "classifier") -> keras.Model:
    """A classifier (logits) trained on (x, y) by its recipe (``training_recipes``; quick:
    Adam 1e-3 for ``classifier_epochs``), inside a ``cached_model`` trainer (its training
    backs up under that model: ``Context.backup``)."""
    keras.utils.set_random_seed(ctx.settings["seed"])
    recipe = tr.recipe_for(ctx, model_recipe)
    model = new_classifier(ctx, name)
    model.compile(
        optimizer=tr.optimizer(recipe, len(x)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tr.fit(model, x, y, recipe, seed=ctx.settings["seed"], verbose=fit_verbose(ctx),
           callbacks=[ctx.backup()], model_key=model_recipe)
    return model


def reference_classifier(ctx) -> keras.Model:
    """D̂: the classifier pre-trained on clean x (the grey-box attacker's target)."""
    tr.recipe_for(ctx, "classifier")  # recorded for the report, also when the model is cached
    return ctx.cached_model("classifier_x", lambda: train_classifier(
        ctx, *train_arrays(ctx), name="classifier_x"))


# ---------------------------------------------------------------------- CD-VAE
def gamma_key(gamma: float) -> str:
    return f"{gamma:g}".replace("+", "")


def latent_weight(ctx) -> float:
    """β, the latent loss weight: the ``beta`` setting, else the generator's default: for the
    Gaussian VAE the ``cdvae`` recipe's KL weight (quick 0.2, CD-VAE §4; paper 0.2/3, the
    official ``--kl 0.2`` on our per-latent mean KL), for the VQ-VAE 0.1 (codebook +
    commitment loss)."""
    generator = setting(ctx, "generator")
    if generator not in GENERATORS:
        raise ValueError(f"generator setting: expected one of {GENERATORS}, got {generator!r}")
    beta = setting(ctx, "beta")
    if beta is not None:
        return float(beta)
    return PAPER_VQ_WEIGHT if generator == "vq" else float(tr.recipe(ctx.preset, "cdvae").loss_weights["kl"])


def build_cdvae(ctx, gamma: float, beta: float | None = None, recipe: Recipe | None = None,
                steps_per_epoch: int = 1) -> CDVAE:
    """An untrained, compiled CD-VAE with the preset's architecture.

    The ``generator`` setting picks G: ``"vae"``, the Gaussian VAE (β = 0.2,
    CD-VAE §5), or ``"vq"``, the VQ-VAE of the restricted-ImageNet experiments
    (``VQCDVAE``: k = ``num_codes`` codes of dimension ``width``, latent loss
    codebook + 0.5·commitment weighted by 0.1, the CD-VAE authors' setting).
    ``beta`` (else the ``beta`` setting, else the generator's default) weights
    the latent loss; D is the ``classifier`` setting's network. With a ``recipe``
    the model takes its mixup α and reconstruction weight and compiles with its
    optimizer (schedules need ``steps_per_epoch``); without one, the model's
    defaults (no mixup, AdamW 1e-3, the γ sweep's CD-VAEs).
    """
    default_beta = latent_weight(ctx)  # also checks the generator setting
    generator = setting(ctx, "generator")
    beta = default_beta if beta is None else beta
    kind = _classifier_kind(ctx)
    common = {"gamma": gamma, "latent_dim": setting(ctx, "latent_dim"), "width": setting(ctx, "width"),
              "wrn_depth": setting(ctx, "wrn_depth"), "wrn_width": setting(ctx, "wrn_width"),
              "seed": ctx.settings["seed"]}
    if recipe is not None:
        common.update(mixup_alpha=recipe.mixup_alpha,
                      reconstruction_weight=recipe.loss_weights.get("re", 1.0))
    if generator == "vq":
        model = VQCDVAE.for_dataset(ctx.dataset, beta=beta,
                                    classifier=kind, num_codes=setting(ctx, "num_codes"),
                                    ema=bool(setting(ctx, "vq_ema")),
                                    resnet_weights=setting(ctx, "resnet_weights"), **common)
    else:
        classifier = new_classifier(ctx, "classifier") if kind == "resnet50" else kind
        model = CDVAE.for_dataset(ctx.dataset, beta=beta,
                                  classifier=classifier, **common)
    model.compile(None if recipe is None else recipe.build_optimizer(steps_per_epoch))
    return model


def mixup_key(ctx, mixup_alpha: float | None) -> str:
    """The cache-key suffix of a CD-VAE trained at mixup ``mixup_alpha``: "" for ``None`` or the
    ``cdvae`` recipe's own α (that model is ``cdvae(ctx)`` itself), else ``_mixup<α>``.

    Example:
        >>> import tempfile
        >>> from tfdefense.experiments import Context
        >>> ctx = Context("quick", tempfile.mkdtemp())
        >>> mixup_key(ctx, 0.0), mixup_key(ctx, None), mixup_key(ctx, 0.2)
        ('', '', '_mixup0.2')
    """
    if mixup_alpha is None or float(mixup_alpha) == tr.recipe(ctx.preset, "cdvae").mixup_alpha:
        return ""
    return f"_mixup{float(mixup_alpha):g}"


def cdvae(ctx, gamma: float | None = None, mixup_alpha: float | None = None) -> CDVAE:
    """The CD-VAE trained at ``gamma`` (default the preset's γ = 2) by the ``cdvae`` recipe
    (quick: AdamW 1e-3 for ``cdvae_epochs``; paper: the official augmentation, mixup,
    curriculum and cosine schedule). ``mixup_alpha`` (the mixup ablation,
    ``cdvae_mixup_ablation``) replaces the recipe's α; at the recipe's own α (or ``None``)
    it is the same model, under the same cache key."""
    gamma = setting(ctx, "gamma") if gamma is None else gamma
    suffix = mixup_key(ctx, mixup_alpha)
    key = f"cdvae_gamma{gamma_key(gamma)}{suffix}"
    label = "cdvae" if gamma == setting(ctx, "gamma") else f"cdvae at γ = {gamma:g}"
    fields = {}
    if suffix:
        label += f", mixup α = {float(mixup_alpha):g}"
        fields = {"mixup_alpha": (float(mixup_alpha), "the mixup ablation (`cdvae_mixup_ablation`) "
                                  f"trains one CD-VAE per α of `mixup_grid`; this one at α = "
                                  f"{float(mixup_alpha):g}")}

    def recipe() -> Recipe:  # recorded for the report, also when the model is cached
        return tr.recipe_for(ctx, "cdvae", label=label, fields=fields, ce=gamma)

    recipe()

    def train() -> CDVAE:
        keras.utils.set_random_seed(ctx.settings["seed"])
        x, y = train_arrays(ctx)
        recipe_ = recipe()
        # β: the beta setting, else the recipe's KL weight (or the VQ weight): latent_weight
        model = build_cdvae(ctx, gamma, recipe=recipe_, steps_per_epoch=tr.steps_per_epoch(len(x), recipe_))
        tr.fit(model, x, y, recipe_, seed=ctx.settings["seed"], verbose=fit_verbose(ctx),
               callbacks=[ctx.backup()], model_key="cdvae")
        return model

    return ctx.cached_model(key, train)


@timed("score")
def decompose_arrays(model: CDVAE, x: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """G(x), R(x) and the latent z of images, in compiled batches.

    z is ``model.latent(x)[0]`` at inference: the posterior mean of a Gaussian
    CD-VAE, the flattened quantized grid z_q of a ``VQCDVAE``.
    """
    fn = _compiled(model, "decompose", lambda b: _decompose_graph(model, b))
    parts = [fn(tf.constant(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in ("g", "r", "z")}


def _decompose_graph(model: CDVAE, x):
    z = model.latent(x, training=False, sample=False)[0]
    g = model.denormalize(tf.cast(model.decoder(z, training=False), tf.float32))
    return {"g": g, "r": x - g, "z": z}


def part_classifier(ctx, gamma: float, part: str) -> keras.Model:
    """A classifier trained on ``part`` ("r" or "g") of the γ CD-VAE's training images.

    G(x) is clipped to [0, 1] (an image); R(x) is signed and fed as it is,
    as the CD-VAE's own D sees it.
    """
    if part not in ("r", "g"):
        raise ValueError(f"part: expected 'r' or 'g', got {part!r}")
    model = cdvae(ctx, gamma)

    def train():
        x, y = train_arrays(ctx)
        parts = decompose_arrays(model, x)
        inputs = np.clip(parts["g"], 0.0, 1.0) if part == "g" else parts["r"]
        return train_classifier(ctx, inputs, y, name=f"classifier_{part}",
                                model_recipe="part_classifier")

    tr.recipe_for(ctx, "part_classifier")  # for the report, also when cached
    key = f"classifier_{part}_gamma{gamma_key(gamma)}"
    return ctx.cached_model(key, train)


# ----------------------------------------------------------------- attacks
def pgd_examples(ctx) -> dict[str, np.ndarray]:
    """PGD-Linf x′ of the evaluation images against D̂ (CD-VAE §3.2 empirical study)."""
    from tfdefense.attacks import get_attack

    def compute():
        x, y = eval_arrays(ctx)
        attack = get_attack("pgd_linf", model=reference_classifier(ctx), eps=setting(ctx, "pgd_eps"),
                            steps=setting(ctx, "pgd_steps"), seed=ctx.settings["seed"], verbose=True)
        return {"x": x, "y": y, "x_adv": attack.generate(x, y)}

    return ctx.cached_arrays("cdvae/pgd_linf_reference", compute)


# ----------------------------------------------------------------- helpers
_GRAPHS: dict[tuple[int, str], tuple[Any, Callable]] = {}


def _compiled(owner, name: str, fn: Callable) -> Callable:
    key = (id(owner), name)
    entry = _GRAPHS.get(key)
    if entry is None or entry[0] is not owner:
        entry = (owner, tf.function(fn, reduce_retracing=True))
        _GRAPHS[key] = entry
    return entry[1]


@timed("score")
def predict_logits(fn: Callable, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a callable images -> logits, in compiled batches."""
    graph = _compiled(fn, "logits", lambda b: fn(b))
    return np.concatenate([graph(tf.constant(x[i:i + batch_size])).numpy()
                           for i in range(0, len(x), batch_size)])


def top_k_accuracy(logits: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(100.0 * np.mean(np.any(top == np.asarray(y)[:, None], axis=1)))


def accuracy(fn: Callable, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (%) of a callable images -> logits."""
    return top_k_accuracy(predict_logits(fn, x), y, 1)


def restart_sampling(model: keras.Model, seed: int) -> None:
    """Set ``model``'s ``SeedGenerator`` to the state a new one seeded ``seed`` starts in, so
    the draws after it do not depend on what drew before (training in this process, or
    attacks that a second run reads from the cache)."""
    model.seed_generator.state.assign(keras.random.SeedGenerator(seed).state.value)


def architecture_note(ctx) -> str:
    spec = data_lib.spec(ctx.dataset)
    kind = setting(ctx, "classifier")
    classifier = {"wrn": f"WRN-{setting(ctx, 'wrn_depth')}-{setting(ctx, 'wrn_width')}",
                  "resnet50": "ResNet-50" + (" (ImageNet weights)" if setting(ctx, "resnet_weights")
                                             else "")}.get(kind, kind)
    beta = latent_weight(ctx)
    if setting(ctx, "generator") == "vq":
        d = setting(ctx, "width") or setting(ctx, "latent_dim") or 64
        ema = ", EMA codebook" if setting(ctx, "vq_ema") else ""
        generator = (f"VQ-VAE G (official ImageNet VQ-VAE, d {d}, k = {setting(ctx, 'num_codes')} "
                     f"codes{ema}), latent loss codebook + 0.5·commitment weighted {beta:g}")
    else:
        vae = "official CIFAR VAE" if spec.shape[-1] == 3 else "28x28 variant of the official VAE"
        generator = (f"{vae} (latent {setting(ctx, 'latent_dim') or 'default'}, "
                     f"d {setting(ctx, 'width') or 'default'}), β = {beta:.3g} on the per-latent "
                     "mean KL")
    paper = ("ResNet-50 + VQ-VAE, 60 restricted-ImageNet epochs" if is_imagenet(ctx)
             else "WRN-28-10, 300 CIFAR-10 epochs")
    clf, vae_recipe = tr.recipe(ctx.preset, "classifier"), tr.recipe(ctx.preset, "cdvae")
    return (f"Data {ctx.dataset} {spec.shape}; classifier {classifier} "
            f"({ctx.settings['classifier_epochs']} epochs, {_optimizer_note(clf)}), CD-VAE "
            f"{generator}, {_optimizer_note(vae_recipe)}, {ctx.settings['cdvae_epochs']} epochs "
            f"(paper: {paper}); each model's full recipe is in the report's recipe tables.")


def _optimizer_note(recipe: Recipe) -> str:
    """'Adam 1e-3' / 'AdamW 1e-3 / wd 1e-06, torch_cosine schedule, augmentation, mixup 2'."""
    name = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "torch_sgd": "SGD"}[recipe.optimizer]
    text = f"{name} {recipe.learning_rate:g}"
    if "weight_decay" in recipe.optimizer_kwargs:
        text += f" / wd {recipe.optimizer_kwargs['weight_decay']:g}"
    if recipe.lr_schedule != "constant":
        text += f", {recipe.lr_schedule} schedule"
    if recipe.augmentation is not None:
        text += ", augmented"
    if recipe.mixup_alpha:
        text += f", mixup α {recipe.mixup_alpha:g}"
    return text
