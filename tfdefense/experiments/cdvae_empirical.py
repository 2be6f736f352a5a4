"""CD-VAE §3.2 empirical study: Tables 1–3 and the Pearson correlation of z and z′ (Fig 3).

A CD-VAE at γ = 2 decomposes clean test images x and their PGD-Linf
examples x′ (crafted on D̂, a classifier pre-trained on clean x, as the paper
does) into G and R; the experiments measure how far the perturbation moves
each part:

* ``cdvae_table1``: cosine similarity (mean ± std over images) and Fréchet
  distance of G(x) vs G(x′) and R(x) vs R(x′), plus the x/G/R image grid;
* ``cdvae_table2``: ℓ1, ℓ2, ℓ∞ norms of x, G, R for clean and adversarial
  images and of δ, δ_G, δ_R, δ_z (Eq. 6);
* ``cdvae_fig3_pearson``: per latent dimension, Pearson's r of z and z′ over
  the images, with its p-value, as a histogram;
* ``cdvae_table3``: classifiers trained on x, R(x), G(x), each tested on all three.

The paper's Tables 1 and 2 and Fig 3 are on restricted ImageNet (VQ-VAE G,
ResNet-50 D), Table 3 on CIFAR-10 and restricted ImageNet. A run on other
data puts the paper's restricted-ImageNet rows in the tables as paper-only
rows ("needs the data and a GPU" where our number would be); a run on
restricted ImageNet (the ``paper_imagenet`` preset, or a downscaled variant)
measures them, and if the ImageNet archives are absent every row is
paper-only and the notes say what to download. z is ``model.latent(x)[0]``
(``cdvae_models.decompose_arrays``): the posterior mean of a Gaussian CD-VAE,
the flattened quantized grid z_q of a VQ CD-VAE.

The Fréchet distance needs a feature extractor. FID uses InceptionV3, whose
weights cannot be fetched here; ``frechet_features`` uses InceptionV3 only
when its ImageNet weights are already in the Keras cache and otherwise the
penultimate layer of D̂, and every table names the one used.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import scipy.linalg
import scipy.stats

from tfdefense import plots
from tfdefense.data_imagenet import ImageNetNotFoundError
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments.registry import register
from tfdefense.experiments.result import Result, beside_paper
from tfdefense.validation import check_number

INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: CD-VAE Table 1 (restricted ImageNet, PGD-Linf)
PAPER_TABLE1 = {"G": (0.9997, 0.0003, 0.90), "R": (0.9460, 0.0260, 22.31)}
#: CD-VAE Table 2 (restricted ImageNet): (ℓ1 × 1e-3, ℓ2, ℓ∞) means
PAPER_TABLE2 = {
    "x": (142.83, 427.99, 2.49), "G(x)": (133.68, 397.77, 2.08), "R(x)": (36.76, 127.95, 2.45),
    "x′": (142.74, 427.91, 2.53), "G(x′)": (133.52, 397.26, 2.08), "R(x′)": (38.13, 131.20, 2.46),
    "δ": (13.65, 39.09, 0.14), "δ_G": (4.15, 16.56, 0.39), "δ_R": (13.78, 40.97, 0.48),
}
#: CD-VAE Table 3, CIFAR-10 top-1 (%), rows trained on, columns tested on
PAPER_TABLE3 = {
    "x": {"x": 96.01, "R(x)": 92.68, "G(x)": 18.86},
    "R(x)": {"x": 95.81, "R(x)": 96.20, "G(x)": 18.12},
    "G(x)": {"x": 51.84, "R(x)": 25.67, "G(x)": 75.25},
}
#: CD-VAE Table 3, restricted ImageNet top-1 (%) (the paper's top-5 in PAPER_TABLE3_IMAGENET_TOP5)
PAPER_TABLE3_IMAGENET = {
    "x": {"x": 82.53, "R(x)": 11.17, "G(x)": 65.26},
    "R(x)": {"x": 63.33, "R(x)": 82.14, "G(x)": 5.36},
    "G(x)": {"x": 44.46, "R(x)": 1.71, "G(x)": 74.08},
}
PAPER_TABLE3_IMAGENET_TOP5 = {
    "x": {"x": 96.88, "R(x)": 25.61, "G(x)": 88.94},
    "R(x)": {"x": 82.14, "R(x)": 96.47, "G(x)": 12.01},
    "G(x)": {"x": 69.13, "R(x)": 5.02, "G(x)": 93.37},
}
#: label suffix of a paper-only restricted-ImageNet row
IMAGENET_ROW = " (restricted ImageNet)"


# ------------------------------------------------------------------ maths
def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image cosine similarity of two batches (N,) of flattened images."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"a and b: expected the same shape, got {a.shape} and {b.shape}")
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (N, D) (Heusel et al. 2017).

    ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½); identical sets give 0.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features: expected two (N, D) matrices with the same D, "
                         f"got shapes {f1.shape} and {f2.shape}")
    if min(len(f1), len(f2)) < 2:
        raise ValueError(f"features: expected at least 2 rows each, got {len(f1)} and {len(f2)}")
    if not (np.all(np.isfinite(f1)) and np.all(np.isfinite(f2))):
        raise ValueError("features: contain NaN or infinite values")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore")
        covmean = _sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):  # singular product: regularise as pytorch-fid does
        off = np.eye(len(s1)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = _sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(max(0.0, np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * covmean)))


def _sqrtm(m: np.ndarray) -> np.ndarray:
    out = scipy.linalg.sqrtm(m)
    return out[0] if isinstance(out, tuple) else out


def norms(t: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image ℓ1, ℓ2, ℓ∞ norms of a batch (N, ...)."""
    flat = np.abs(np.asarray(t, np.float64).reshape(len(t), -1))
    return {"l1": flat.sum(1), "l2": np.sqrt((flat ** 2).sum(1)), "linf": flat.max(1)}


def pearson_per_dimension(z: np.ndarray, z_adv: np.ndarray, min_std: float = 1e-6):
    """(r, p, active): Pearson r and p-value of z[:, d] vs z′[:, d] for active dimensions.

    A dimension whose posterior mean barely varies over the images (std below
    ``min_std``: a collapsed latent) has no correlation and is left out.
    """
    z, z_adv = np.asarray(z, np.float64), np.asarray(z_adv, np.float64)
    if z.shape != z_adv.shape or z.ndim != 2:
        raise ValueError(f"z and z_adv: expected two (N, latent) matrices of the same shape, "
                         f"got {z.shape} and {z_adv.shape}")
    check_number(min_std, "min_std", low=0.0)
    if len(z) < 3:
        raise ValueError(f"z: expected at least 3 images for a correlation, got {len(z)}")
    active = (z.std(0) > min_std) & (z_adv.std(0) > min_std)
    rs, ps = [], []
    for d in np.flatnonzero(active):
        res = scipy.stats.pearsonr(z[:, d], z_adv[:, d])
        rs.append(res.statistic)
        ps.append(res.pvalue)
    return np.asarray(rs), np.asarray(ps), active


# ------------------------------------------------------------ features
class FrechetFeatures:
    """The feature extractor behind the Fréchet distance, and its name for the tables."""

    def __init__(self, ctx):
        path = os.path.join(os.path.expanduser("~"), ".keras", "models", INCEPTION_WEIGHTS)
        if os.path.exists(path):  # pragma: no cover - the weights cannot be fetched here
            base = keras.applications.InceptionV3(include_top=False, weights=path, pooling="avg")
            self.name = "InceptionV3 pool features (FID)"

            def fn(x):
                x = keras.ops.image.resize(x, (299, 299))
                x = keras.ops.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
                return base(x * 2.0 - 1.0)
        else:
            clf = cm.reference_classifier(ctx)
            base = keras.Model(clf.inputs, clf.get_layer("penultimate").output)
            self.name = "penultimate layer of D̂ (InceptionV3 weights unavailable offline)"
            fn = base
        self._fn = fn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return cm.predict_logits(self._fn, np.asarray(x, np.float32))


# ---------------------------------------------------------- shared arrays
def study_arrays(ctx, mixup_alpha: float | None = None) -> dict[str, np.ndarray]:
    """x, y, x′ and the decompositions (g, r, z) of both, cached; by the CD-VAE of
    ``cm.cdvae(ctx, mixup_alpha=mixup_alpha)`` (default: the preset's)."""

    def compute():
        adv = cm.pgd_examples(ctx)
        model = cm.cdvae(ctx, mixup_alpha=mixup_alpha)
        clean = cm.decompose_arrays(model, adv["x"])
        attacked = cm.decompose_arrays(model, adv["x_adv"])
        return {**adv, **clean, **{f"{k}_adv": v for k, v in attacked.items()}}

    key = f"cdvae/study_gamma{cm.gamma_key(cm.setting(ctx, 'gamma'))}{cm.mixup_key(ctx, mixup_alpha)}"
    return ctx.cached_arrays(key, compute)


def part_distances(a: dict[str, np.ndarray], features: FrechetFeatures | None) -> dict[str, dict]:
    """Table 1's figures of ``study_arrays``: per part "G" and "R", the per-image cosine
    similarities of clean vs PGD (``cosine``, with their mean and std) and the Fréchet distance
    of their ``features`` (``frechet``; left out when ``features`` is None).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> g = rng.uniform(size=(4, 2, 2, 1))
        >>> a = {"g": g, "g_adv": g, "r": g, "r_adv": -g}
        >>> d = part_distances(a, None)
        >>> round(d["G"]["cosine_mean"], 6), round(d["R"]["cosine_mean"], 6), "frechet" in d["G"]
        (1.0, -1.0, False)
    """
    out = {}
    for part in ("G", "R"):
        clean, adv = a[part.lower()], a[f"{part.lower()}_adv"]
        cos = cosine_similarity(clean, adv)
        out[part] = {"cosine": cos, "cosine_mean": float(cos.mean()), "cosine_std": float(cos.std())}
        if features is not None:
            out[part]["frechet"] = frechet_distance(features(clean), features(adv))
    return out


def _study_notes(ctx) -> list[str]:
    return [
        f"x′: PGD-Linf eps {cm.setting(ctx, 'pgd_eps'):g}, {cm.setting(ctx, 'pgd_steps')} steps of "
        f"eps/sqrt(steps), random start, against D̂ (the classifier pre-trained on x), "
        f"{ctx.settings['eval_images']} test images (paper: ImageNet, eps 8/255-scale; on MNIST "
        "the literature's Linf budget is 0.3).",
        f"CD-VAE γ = {cm.setting(ctx, 'gamma'):g}; "
        + ("G decodes the quantized grid z_q (deterministic)." if cm.setting(ctx, "generator") == "vq"
           else "G uses the posterior mean at inference."),
        cm.architecture_note(ctx),
    ]


def _mean_std(v: np.ndarray, digits: int = 4) -> str:
    return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"


def imagenet_rows_note() -> str:
    """The note under a table whose restricted-ImageNet rows are paper-only."""
    return (f"Rows marked '{IMAGENET_ROW.strip()}' are the paper's (VQ-VAE G, ResNet-50 D, 224x224); "
            f"ours there {cm.NEEDS_IMAGENET}: `tfdefense reproduce --preset paper_imagenet` with the "
            "ImageNet archives (tfdefense.data_imagenet).")


def imagenet_absent(ctx, name: str, title: str, columns: list[str], rows: list[dict],
                    exc: Exception) -> Result:
    """A restricted-ImageNet run without the data: the paper's rows only, and what to download."""
    return Result(name, title, ctx.preset, ctx.dataset, columns=columns, rows=rows,
                  notes=[f"Not measured, {cm.NEEDS_IMAGENET}: {exc}", cm.architecture_note(ctx)],
                  measurements={"status": "needs_data", "error": f"{type(exc).__name__}: {exc}"})


def _table1_paper_rows(suffix: str) -> list[dict]:
    return [{"pair": f"{part}(x) vs {part}(x′){suffix}", "cosine similarity": cm.NEEDS_IMAGENET,
             "paper cosine": f"{PAPER_TABLE1[part][0]:.4f} ± {PAPER_TABLE1[part][1]:.4f}",
             "Fréchet distance": cm.NEEDS_IMAGENET, "paper FID": PAPER_TABLE1[part][2]}
            for part in ("G", "R")]


def _table2_paper_rows(suffix: str) -> list[dict]:
    return [{"part": f"{name}{suffix}", "ℓ1": cm.NEEDS_IMAGENET, "ℓ2": cm.NEEDS_IMAGENET,
             "ℓ∞": cm.NEEDS_IMAGENET, "paper ℓ1×1e-3 / ℓ2 / ℓ∞": " / ".join(map(str, paper))}
            for name, paper in PAPER_TABLE2.items()]


def _table3_paper_rows(suffix: str) -> list[dict]:
    top5 = PAPER_TABLE3_IMAGENET_TOP5
    return [{"train \\ test": f"{train}{suffix}",
             **{test: f"{cm.NEEDS_IMAGENET} (paper {v:.2f}, top-5 {top5[train][test]:.2f})"
                for test, v in row.items()}}
            for train, row in PAPER_TABLE3_IMAGENET.items()]


# ------------------------------------------------------------ Table 1
@register("cdvae_table1", order=10, datasets=cm.DATASETS, cost=65)
def table1(ctx) -> Result:
    title = "CD-VAE Table 1: cosine similarity and Fréchet distance, clean vs PGD"
    columns = ["pair", "cosine similarity", "paper cosine", "Fréchet distance", "paper FID"]
    try:
        a = study_arrays(ctx)
    except ImageNetNotFoundError as exc:
        return imagenet_absent(ctx, "cdvae_table1", title, columns, _table1_paper_rows(""), exc)
    features = FrechetFeatures(ctx)
    rows, meas = [], {"feature_extractor": features.name}
    for part, d in part_distances(a, features).items():
        p_mean, p_std, p_fid = PAPER_TABLE1[part]
        rows.append({"pair": f"{part}(x) vs {part}(x′)", "cosine similarity": _mean_std(d["cosine"]),
                     "paper cosine": f"{p_mean:.4f} ± {p_std:.4f}",
                     "Fréchet distance": f"{d['frechet']:.4f}", "paper FID": p_fid})
        meas[part] = {k: d[k] for k in ("cosine_mean", "cosine_std", "frechet")}
    if not cm.is_imagenet(ctx):
        rows += _table1_paper_rows(IMAGENET_ROW)
    grid = plots.decomposition_grid(
        np.concatenate([a["x"][:6], a["x_adv"][:6]]), np.concatenate([a["g"][:6], a["g_adv"][:6]]),
        np.concatenate([a["r"][:6], a["r_adv"][:6]]), ctx.figure_path("cdvae_decomposition"),
        title="x, G(x), R(x): 6 clean images, then their PGD examples x′")
    notes = [f"Fréchet distance on the {features.name}; the paper's FID uses InceptionV3 on "
             "restricted ImageNet, so absolute values are not comparable, the G-vs-R contrast is.",
             *([] if cm.is_imagenet(ctx) else [imagenet_rows_note()]), *_study_notes(ctx)]
    return Result("cdvae_table1", title, ctx.preset, ctx.dataset, columns=columns,
                  rows=rows, notes=notes, figures={"x / G(x) / R(x), clean and PGD": grid},
                  measurements=meas)


# ------------------------------------------------------------ Table 2
@register("cdvae_table2", order=11, datasets=cm.DATASETS)
def table2(ctx) -> Result:
    title = "CD-VAE Table 2: norms of δ, δ_G, δ_R, δ_z"
    columns = ["part", "ℓ1", "ℓ2", "ℓ∞", "paper ℓ1×1e-3 / ℓ2 / ℓ∞"]
    try:
        a = study_arrays(ctx)
    except ImageNetNotFoundError as exc:
        return imagenet_absent(ctx, "cdvae_table2", title, columns, _table2_paper_rows(""), exc)
    imagenet = cm.is_imagenet(ctx)
    if imagenet:  # the paper's scale: normalised images, ℓ1 × 1e-3
        a = _normalised_study(cm.cdvae(ctx), a)
    parts = {
        "x": a["x"], "G(x)": a["g"], "R(x)": a["r"],
        "x′": a["x_adv"], "G(x′)": a["g_adv"], "R(x′)": a["r_adv"],
        "δ": a["x"] - a["x_adv"], "δ_G": a["g"] - a["g_adv"], "δ_R": a["r"] - a["r_adv"],
        "δ_z": a["z"] - a["z_adv"],
    }
    rows, meas = [], {}
    for name, t in parts.items():
        n = norms(t)
        if imagenet:
            n["l1"] = n["l1"] * 1e-3
        paper = PAPER_TABLE2.get(name)
        rows.append({"part": name, "ℓ1": _mean_std(n["l1"], 2), "ℓ2": _mean_std(n["l2"], 3),
                     "ℓ∞": _mean_std(n["linf"], 3),
                     "paper ℓ1×1e-3 / ℓ2 / ℓ∞": "–" if paper is None else " / ".join(map(str, paper))})
        meas[name] = {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in n.items()}
    ratio = meas["δ_R"]["l2"]["mean"] / max(meas["δ_G"]["l2"]["mean"], 1e-12)
    meas["delta_R_over_delta_G_l2"] = ratio
    shape = "x".join(map(str, a["x"].shape[1:]))
    if imagenet:
        scale = (f"Our norms are on {shape} restricted-ImageNet images normalised with the "
                 "ImageNet mean and std, ℓ1 × 1e-3, as the paper's (224x224x3)")
    else:
        scale = (f"Our norms are on [0, 1] pixels of {shape} {ctx.dataset} (ℓ1 not scaled); the paper's "
                 "are on normalised 224x224 restricted-ImageNet images (ℓ1 × 1e-3)")
        rows += _table2_paper_rows(IMAGENET_ROW)
    notes = [f"{scale}, so compare the pattern: "
             f"paper ‖δ_R‖₂/‖δ_G‖₂ = {40.97 / 16.56:.2f}, ours {ratio:.2f}.",
             "δ_z = z − z′ on the latent z (posterior means, or z_q of a VQ-VAE; the paper defines "
             "δ_z but does not tabulate it).",
             *([] if imagenet else [imagenet_rows_note()]), *_study_notes(ctx)]
    return Result("cdvae_table2", title, ctx.preset, ctx.dataset, columns=columns, rows=rows,
                  notes=notes, measurements=meas)


def _normalised_study(model, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The study's images in the CD-VAE's normalised scale: (x − mean) / std, R and δ / std."""
    mean = np.asarray(model.normalization_mean, np.float32)
    std = np.asarray(model.normalization_std, np.float32)
    out = dict(a)
    for k in ("x", "g", "x_adv", "g_adv"):
        out[k] = (a[k] - mean) / std
    for k in ("r", "r_adv"):
        out[k] = a[k] / std
    return out


# ------------------------------------------------------ Fig 3 (Pearson)
@register("cdvae_fig3_pearson", order=12, datasets=cm.DATASETS)
def fig3_pearson(ctx) -> Result:
    title = "CD-VAE Fig 3: Pearson correlation of z and z′"
    try:
        a = study_arrays(ctx)
    except ImageNetNotFoundError as exc:
        rows = [{"statistic": s, "ours": cm.NEEDS_IMAGENET, "paper": v}
                for s, v in (("Pearson r, min", "≈ 0.965"), ("Pearson r, max", "1.0"),
                             ("largest p-value", "0.0"))]
        return imagenet_absent(ctx, "cdvae_fig3_pearson", title, ["statistic", "ours", "paper"], rows, exc)
    r, p, active = pearson_per_dimension(a["z"], a["z_adv"])
    path = ctx.figure_path("cdvae_pearson_z")
    _histogram(r, p, path)
    rows = [{"statistic": "active latent dimensions", "ours": f"{len(r)} of {active.size}",
             "paper": "–"}]
    if len(r):
        rows += [
            {"statistic": "Pearson r, min", "ours": float(r.min()), "paper": "≈ 0.965"},
            {"statistic": "Pearson r, median", "ours": float(np.median(r)), "paper": "≈ 0.99"},
            {"statistic": "Pearson r, max", "ours": float(r.max()), "paper": "1.0"},
            {"statistic": "largest p-value", "ours": f"{p.max():.2e}", "paper": "0.0"},
        ]
    if cm.setting(ctx, "generator") == "vq":
        latent = ("on the flattened quantized grids z_q of x (clean) and x′ (PGD); the paper's "
                  "histogram (Fig 3, ImageNet) spans 0.965–1.0 with p-value 0.0. A dimension that is "
                  "constant over the images (every image picks the same code there) is inactive.")
    else:
        latent = ("on the posterior means of z (clean) and z′ (PGD); the paper's histogram (Fig 3, "
                  "ImageNet) spans 0.965–1.0 with p-value 0.0. A dimension whose posterior mean is "
                  "constant (collapsed by the KL term) has no correlation and is counted as inactive.")
    notes = [f"r is computed per latent dimension over the evaluation images, {latent}",
             *_study_notes(ctx)]
    return Result("cdvae_fig3_pearson", title,
                  ctx.preset, ctx.dataset, columns=["statistic", "ours", "paper"], rows=rows,
                  notes=notes, figures={"Pearson r of z and z′ per latent dimension": path},
                  measurements={"r": r.tolist(), "p": p.tolist(), "active": int(active.sum()),
                                "latent_dim": int(active.size)})


def _histogram(r: np.ndarray, p: np.ndarray, path: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        if len(r):
            ax.hist(r, bins=30, color="tab:blue")
            ax.set_title(f"Pearson r of z and z′ (largest p-value {p.max():.1e})")
        else:
            ax.set_title("no active latent dimension")
        ax.set_xlabel("Pearson correlation coefficient")
        ax.set_ylabel("latent dimensions")
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------ Table 3
@register("cdvae_table3", order=13, datasets=cm.DATASETS, cost=36)
def table3(ctx) -> Result:
    title = "CD-VAE Table 3: train on one part, test on another (top-1 %)"
    columns = ["train \\ test", "x", "R(x)", "G(x)"]
    gamma = cm.setting(ctx, "gamma")
    imagenet = cm.is_imagenet(ctx)
    try:
        x, y = cm.eval_arrays(ctx)
    except ImageNetNotFoundError as exc:
        return imagenet_absent(ctx, "cdvae_table3", title, columns, _table3_paper_rows(""), exc)
    paper_table = PAPER_TABLE3_IMAGENET if imagenet else PAPER_TABLE3
    model = cm.cdvae(ctx, gamma)
    parts = cm.decompose_arrays(model, x)
    tests = {"x": x, "R(x)": parts["r"], "G(x)": np.clip(parts["g"], 0.0, 1.0)}
    classifiers = {"x": cm.reference_classifier(ctx), "R(x)": cm.part_classifier(ctx, gamma, "r"),
                   "G(x)": cm.part_classifier(ctx, gamma, "g")}
    rows, meas = [], {}
    for train_name, clf in classifiers.items():
        row = {"train \\ test": train_name}
        for test_name, inputs in tests.items():
            logits = cm.predict_logits(clf, inputs)
            top1, top5 = cm.top_k_accuracy(logits, y, 1), cm.top_k_accuracy(logits, y, 5)
            row[test_name] = beside_paper(top1, paper_table[train_name][test_name])
            meas[f"{train_name}->{test_name}"] = {"top1": top1, "top5": top5}
        rows.append(row)
    if not imagenet:
        rows += _table3_paper_rows(IMAGENET_ROW)
    paper_name = "restricted ImageNet" if imagenet else "CIFAR-10"
    notes = ["Top-1 accuracy (%) on the first "
             f"{len(x)} test images; ours (paper {paper_name}). Top-5 is in results.json.",
             *([] if imagenet else [imagenet_rows_note()]),
             f"CD-VAE γ = {gamma:g}; the classifier on R(x) sees the signed residual as it is, "
             "the one on G(x) sees G(x) clipped to [0, 1]; all three have the same architecture "
             "and training as D̂.", cm.architecture_note(ctx)]
    return Result("cdvae_table3", title, ctx.preset, ctx.dataset, columns=columns, rows=rows,
                  notes=notes, measurements=meas)
