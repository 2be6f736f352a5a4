"""Certified l2 accuracy by randomized smoothing, plain and through CD-VAE's G (issue 22).

Certified accuracy against the l2 radius r (Cohen et al. 2019's curves and tables) at each σ
of ``certify_sigmas`` for four smoothed classifiers:

* (a) ``plain``: D̂, the classifier pre-trained on clean x (``cdvae_models.reference_classifier``);
* (b) ``noise``: the same network trained on x + N(0, σ²) (Cohen et al.'s base classifier,
  a Keras ``GaussianNoise`` layer, active in training only, in front of it);
* (c) ``g``: G then D̂: denoised smoothing (Salman et al. 2020) with the grey-box defense's
  G (the CD-VAE at ``defense_gamma``, ``cdvae_greybox``), as trained, and D̂ untouched;
* (d) ``g_stab``: the same G fine-tuned for noise σ by Salman et al.'s stability objective
  (``tfdefense.certify.StabilityTraining``, D̂ frozen), then D̂.

Each cell certifies the same test images (every ``certify_skip``-th, ``certify_images`` of
them; Cohen et al. take every 20th CIFAR-10 test image, 500) by CERTIFY with
``certify_n0`` / ``certify_n`` draws at ``certify_alpha``; per-image results are cached,
so an interrupted run resumes cell by cell.

The published CIFAR-10 numbers (Cohen et al. 2019, Salman et al. 2020) are not transcribed
here: the papers were not available when this was written, and no number is put in from
memory. The table says so beside our numbers.

Example:
    >>> import tempfile
    >>> from tfdefense.experiments import Context
    >>> from tfdefense.experiments.certified_l2 import setting
    >>> ctx = Context("paper", tempfile.mkdtemp())
    >>> setting(ctx, "certify_n"), setting(ctx, "certify_n0"), setting(ctx, "certify_alpha")
    (100000, 100, 0.001)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from scipy import stats

from tfdefense import data as data_lib
from tfdefense.certify import SmoothedClassifier, StabilityTraining, certified_accuracy
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.context import preset_setting
from tfdefense.experiments.registry import register
from tfdefense.experiments.result import Result

NAME = "certified_l2"
#: the radii of the table (Cohen et al. 2019 report CIFAR-10 at 0.25 steps)
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the four smoothed classifiers, in the table's order
VARIANTS = {
    "plain": "(a) D̂ smoothed",
    "noise": "(b) classifier trained with noise σ (Cohen et al.)",
    "g": "(c) G + D̂ (denoised, G as trained)",
    "g_stab": "(d) G fine-tuned by stability + D̂",
}
#: what the papers' cells say: nothing transcribed (module docstring)
NOT_TRANSCRIBED = "paper: not transcribed"

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "certify_sigmas": (0.25, 0.5),
        "certify_images": 32,  # test images certified per cell
        "certify_skip": 31,  # every 31st of the 1,000 mnist_5k test images
        # n = 400 draws: all 400 right bounds p_A at 0.001 ** (1/400) = 0.9829, r = 2.12 σ,
        # so r = 0.5 is reachable at σ = 0.25 (n = 300 would stop at 0.4998)
        "certify_n0": 10,
        "certify_n": 400,
        "certify_alpha": 0.001,  # Cohen et al. §4
        "certify_batch": 2000,  # noisy images per compiled pass
        "noise_epochs": 1,  # (b): epochs of the noise-trained classifier (None: D̂'s recipe)
        "noise_from_reference": True,  # (b) starts from D̂'s weights (Cohen et al.: from scratch)
        "stability_epochs": 1,  # (d): epochs of stability fine-tuning of G
        "stability_lr": 1e-3,  # (d): Adam learning rate of the fine-tuning
    },
    "paper": {
        "certify_sigmas": (0.25, 0.5),
        "certify_images": 500,  # Cohen et al. §4: every 20th CIFAR-10 test image
        "certify_skip": 20,
        "certify_n0": 100,  # Cohen et al. §4
        "certify_n": 100_000,
        "certify_alpha": 0.001,
        "certify_batch": 1000,
        "noise_epochs": None,  # D̂'s recipe (classifier_epochs)
        "noise_from_reference": False,  # from scratch, as Cohen et al. train
        "stability_epochs": 20,  # ours: Salman et al.'s schedule was not transcribed
        "stability_lr": 1e-4,
    },
}


def setting(ctx, key: str) -> Any:
    """``ctx.settings[key]`` if set, else this module's per-preset default (``paper`` for
    presets other than ``quick``)."""
    return preset_setting(ctx, SETTINGS, key)


def certify_images(ctx) -> tuple[np.ndarray, np.ndarray]:
    """Every ``certify_skip``-th test image, the first ``certify_images`` of them."""
    x, y = ctx.arrays("test")
    skip, n = int(setting(ctx, "certify_skip")), int(setting(ctx, "certify_images"))
    return x[::skip][:n], y[::skip][:n]


def _sigma_key(sigma: float) -> str:
    return f"sigma{float(sigma):g}"


# ---------------------------------------------------------------------------- models
def noisy_classifier(ctx, sigma: float) -> keras.Model:
    """(b): D̂'s network trained on x + N(0, σ²) by D̂'s recipe (``noise_epochs`` epochs if set),
    from scratch or, with ``noise_from_reference``, starting from D̂'s weights."""
    epochs = setting(ctx, "noise_epochs")
    fields = {} if epochs is None else {"epochs": (int(epochs), f"{NAME}: `noise_epochs` keeps the "
                                                   "quick run within its budget")}
    label = f"certified_l2: classifier trained with noise σ = {sigma:g}"

    def train() -> keras.Model:
        seed = ctx.settings["seed"]
        keras.utils.set_random_seed(seed)
        recipe = tr.recipe_for(ctx, "classifier", label=label, fields=fields)
        x, y = cm.train_arrays(ctx)
        network = cm.new_classifier(ctx, "classifier")
        if setting(ctx, "noise_from_reference"):
            network.set_weights(cm.reference_classifier(ctx).get_weights())
        model = keras.Sequential([keras.Input(data_lib.spec(ctx.dataset).shape),
                                  keras.layers.GaussianNoise(float(sigma), seed=seed), network],
                                 name=f"noisy_classifier_{_sigma_key(sigma)}".replace(".", "_"))
        model.compile(optimizer=tr.optimizer(recipe, len(x)),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        tr.fit(model, x, y, recipe, seed=seed, verbose=cm.fit_verbose(ctx), callbacks=[ctx.backup()],
               model_key="classifier")
        return model

    tr.recipe_for(ctx, "classifier", label=label, fields=fields)  # for the report, also when cached
    return ctx.cached_model(f"certify/noisy_classifier_{_sigma_key(sigma)}", train)


def grey_box_generator(ctx):
    """G: the CD-VAE of the grey-box defense (``defense_gamma``, CD-VAE §4.3)."""
    return cm.cdvae(ctx, cm.setting(ctx, "defense_gamma"))


def stability_generator(ctx, sigma: float):
    """(d): a copy of G fine-tuned for noise σ by the stability objective, D̂ frozen."""
    gamma = cm.setting(ctx, "defense_gamma")

    def train():
        seed = ctx.settings["seed"]
        keras.utils.set_random_seed(seed)
        generator = grey_box_generator(ctx)
        x, _ = cm.train_arrays(ctx)
        tuned = keras.models.clone_model(generator)
        tuned(x[:1])
        tuned.set_weights(generator.get_weights())
        trainer = StabilityTraining(tuned, cm.reference_classifier(ctx), sigma=float(sigma), seed=seed)
        trainer(x[:1])  # built before fit: the backup restores into it
        trainer.compile(optimizer=keras.optimizers.Adam(setting(ctx, "stability_lr")))
        trainer.fit(x, batch_size=ctx.settings["batch_size"], epochs=setting(ctx, "stability_epochs"),
                    shuffle=True, verbose=cm.fit_verbose(ctx), callbacks=[ctx.backup()])
        return tuned

    return ctx.cached_model(f"certify/cdvae_gamma{cm.gamma_key(gamma)}_stability_{_sigma_key(sigma)}",
                            train)


def smoothed(ctx, variant: str, sigma: float) -> SmoothedClassifier:
    """The smoothed classifier of one cell, with the run's CERTIFY settings."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    base = noisy_classifier(ctx, sigma) if variant == "noise" else cm.reference_classifier(ctx)
    denoiser = {"g": grey_box_generator, "g_stab": lambda c: stability_generator(c, sigma)}.get(variant)
    return SmoothedClassifier(base, float(sigma), denoiser=None if denoiser is None else denoiser(ctx),
                              n0=int(setting(ctx, "certify_n0")), n=int(setting(ctx, "certify_n")),
                              alpha=float(setting(ctx, "certify_alpha")),
                              batch_size=int(setting(ctx, "certify_batch")), seed=ctx.settings["seed"],
                              verbose=True)


def certify_cell(ctx, variant: str, sigma: float) -> dict[str, np.ndarray]:
    """Per-image CERTIFY results of one (variant, σ) cell, cached."""
    def compute() -> dict[str, np.ndarray]:
        x, y = certify_images(ctx)
        result = smoothed(ctx, variant, sigma).certify(x)
        return {"labels": result.labels, "radii": result.radii, "p_lower": result.p_lower,
                "counts": result.counts, "y": y}

    return ctx.cached_arrays(f"certify/{variant}_{_sigma_key(sigma)}", compute)


# ---------------------------------------------------------------------------- report
def plot_curves(curves: dict[float, dict[str, tuple[np.ndarray, np.ndarray]]], path: str) -> str:
    """Certified accuracy against r, one panel per σ, one line per variant (Cohen et al.'s plots)."""
    import matplotlib.pyplot as plt  # matplotlib only when a figure is drawn

    from tfdefense.plots import save_figure

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (sigma, lines) in zip(axes[0], curves.items()):
        for variant, (grid, accuracy) in lines.items():
            ax.plot(grid, 100 * accuracy, label=VARIANTS[variant])
        ax.set_title(f"σ = {sigma:g}")
        ax.set_xlabel("l2 radius r")
        ax.set_ylabel("certified accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def summarize(cell: dict[str, np.ndarray]) -> dict[str, Any]:
    """Certified accuracy (%) of one cell at each radius of ``RADII``, its abstentions and size."""
    accuracy = certified_accuracy(cell["radii"], cell["labels"] == cell["y"], RADII)
    return {"certified_accuracy": {f"{r:g}": 100 * float(a) for r, a in zip(RADII, accuracy)},
            "abstained": int(np.sum(cell["labels"] < 0)), "images": len(cell["y"])}


def table_rows(summaries: dict[tuple[str, float], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, σ) summary, by σ then variant, the paper's cell beside ours."""
    rows = []
    for sigma in sorted({s for _, s in summaries}):
        for variant, label in VARIANTS.items():
            if (variant, sigma) not in summaries:
                continue
            summary = summaries[(variant, sigma)]
            rows.append({"σ": f"{sigma:g}", "model": label,
                         **{f"r = {r}": a for r, a in summary["certified_accuracy"].items()},
                         "abstained": summary["abstained"], "paper": NOT_TRANSCRIBED})
    return rows


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give with n draws: every draw right, σ Φ⁻¹(α^(1/n))."""
    return float(sigma * stats.norm.ppf(alpha ** (1 / n)))


@register(NAME, order=95, datasets=("cifar10",), cost=126)
def certified_l2(ctx) -> Result:
    sigmas = [float(s) for s in setting(ctx, "certify_sigmas")]
    n0, n = int(setting(ctx, "certify_n0")), int(setting(ctx, "certify_n"))
    alpha = float(setting(ctx, "certify_alpha"))
    summaries, curves = {}, {}
    for sigma in sigmas:
        curves[sigma] = {}
        for variant in VARIANTS:
            cell = certify_cell(ctx, variant, sigma)
            summaries[(variant, sigma)] = summarize(cell)
            grid = np.linspace(0.0, max(1.0, float(cell["radii"].max(initial=0.0))), 201)
            curves[sigma][variant] = (grid, certified_accuracy(cell["radii"], cell["labels"] == cell["y"],
                                                               grid))
    rows = table_rows(summaries)
    at_half = {v: {s: summaries[(v, s)]["certified_accuracy"]["0.5"] for s in sigmas} for v in VARIANTS}
    images = len(certify_images(ctx)[1])
    largest = {s: max_radius(s, n, alpha) for s in sigmas}
    notes = [
        f"Certified accuracy (%) of {images} {ctx.dataset} test images (one in every "
        f"{setting(ctx, 'certify_skip')}): CERTIFY with n0 = {n0}, n = {n:,}, α = {alpha:g} "
        f"(Cohen et al. 2019 §4: n0 = 100, n = 100,000, α = 0.001, 500 CIFAR-10 images). With n = "
        f"{n:,} no radius can exceed σ Φ⁻¹(α^(1/n)): "
        + ", ".join(f"{r:.3f} at σ = {s:g}" for s, r in largest.items()) + ".",
        "Certified accuracy at r = 0.5: "
        + "; ".join(f"{VARIANTS[v]} " + ", ".join(f"{a:.1f} (σ = {s:g})" for s, a in at_half[v].items())
                    for v in VARIANTS) + ".",
        f"(a) D̂ as trained on clean x. (b) D̂'s network and recipe trained on x + N(0, σ²) "
        f"({setting(ctx, 'noise_epochs') or ctx.settings['classifier_epochs']} epoch(s), "
        + ("starting from D̂'s weights; Cohen et al. train from scratch). "
           if setting(ctx, "noise_from_reference") else "from scratch, as Cohen et al.). ")
        + "(c) G is "
        f"the grey-box defense's CD-VAE (γ = {cm.setting(ctx, 'defense_gamma'):g}), posterior mean, "
        "G(x + δ) clipped to [0, 1], then D̂ (noise added in pixel space before G, Salman et "
        f"al. 2020). (d) that G fine-tuned {setting(ctx, 'stability_epochs')} epoch(s) (Adam "
        f"{setting(ctx, 'stability_lr'):g}) by the stability objective CE(D̂(G(x + δ)), D̂(x)) "
        "at the cell's σ, D̂ frozen (Salman et al.'s Stab, starting from the CD-VAE's own "
        "training; no MSE stage of ours).",
        "Paper cells: Cohen et al. 2019 (CIFAR-10, ResNet-110 trained with noise: our (b)) and "
        "Salman et al. 2020 (CIFAR-10, a stability-trained denoiser before a query-access "
        "classifier: our (d)) are not transcribed: the papers were not available to copy "
        "their tables from, and no number is given from memory. "
        + ("The quick preset runs on mnist_5k, which neither paper reports."
           if ctx.dataset != "cifar10" else ""),
        cm.architecture_note(ctx),
    ]
    figures = {"Certified accuracy vs radius": plot_curves(curves, ctx.figure_path(NAME))}
    return Result(NAME, "Certified l2 accuracy: randomized smoothing, plain and through CD-VAE's G",
                  ctx.preset, ctx.dataset,
                  columns=["σ", "model", *[f"r = {r:g}" for r in RADII], "abstained", "paper"],
                  rows=rows, notes=notes, figures=figures,
                  measurements={"cells": {f"{v}/{_sigma_key(s)}": m for (v, s), m in summaries.items()},
                                "n0": n0, "n": n, "alpha": alpha, "images": images,
                                "certified_accuracy_at_0.5": at_half})
