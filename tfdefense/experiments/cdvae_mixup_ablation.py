"""CD-VAE mixup ablation: the CD-VAE trained at several mixup α, measured as Tables 1, 4 and 6 do.

The official CIFAR-10 CD-VAE trains with mixup α = 2 (``tools/disentangle_cifar.py --alpha``);
the paper does not mention it. Asked about it (kai-wen-yang/CD-VAE issue #2), the authors
answered that mixup "can lead to better disentanglement, especially the classification
result for R(X)", without running the ablation. ``cdvae_mixup_ablation`` runs it: one CD-VAE
per α of the ``mixup_grid`` setting (quick: 0 and 2; paper: 0, 0.2, 1, 2), each by the
``cdvae`` recipe with its α (``cdvae_models.cdvae(ctx, mixup_alpha=α)``, cached as
``cdvae_gamma2_mixup<α>``; at the recipe's own α, quick's 0 or paper's 2, it is the preset's
CD-VAE itself, trained once for every experiment). Per α it reports, on the same images
and by the same code as the tables:

* D(R(x)) accuracy and the reconstruction accuracy 1 − ‖x − G(x)‖²/‖x‖² (CD-VAE §4.1) on the
  evaluation images;
* Table 1: cosine similarity and Fréchet distance of G(x) vs G(x′) and R(x) vs R(x′), x′ the
  PGD-Linf examples crafted on D̂ (``cdvae_empirical.study_arrays`` / ``part_distances``);
* Table 4: detection AUC of KD, LID and MD on R(x) (``cdvae_detection.evaluate_detectors``
  on the residual side), attacks of ``mixup_detection_attacks`` (quick: PGD-Linf);
* Table 6: grey-box accuracy, D̂ on G(x′) with x′ crafted on D̂
  (``cdvae_greybox.greybox_accuracies``: the same cached sets), attacks of
  ``mixup_greybox_attacks`` (quick: PGD-Linf).

It is registered last (after FM-Defense's experiments) so that adding it changes nothing an
earlier experiment of the same run computes; at the preset's own α it reads the caches the
tables made.

Example:
    >>> rows = {0.0: example_measurement(90.0), 2.0: example_measurement(92.0)}
    >>> "90.00 at α = 0, 92.00 at α = 2 (+2.00)" in findings(rows)[0]
    True
    >>> "as the authors claim" in findings(rows)[0], table_rows(rows)[1]["D(R(x)) accuracy"]
    (True, 92.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfdefense.defend import GreyBoxDefense
from tfdefense.experiments import cdvae_detection as cd
from tfdefense.experiments import cdvae_empirical as ce
from tfdefense.experiments import cdvae_greybox as cg
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.registry import register
from tfdefense.experiments.result import Result
from tfdefense.models.vae_losses import reconstruction_accuracy

NAME = "cdvae_mixup_ablation"
#: the authors' claim, quoted from kai-wen-yang/CD-VAE issue #2
CLAIM = ('mixup "can lead to better disentanglement, especially the classification result for '
         'R(X)" (the CD-VAE authors, kai-wen-yang/CD-VAE GitHub issue #2; not measured there)')
#: detection methods as Table 4 labels them on R(x)
METHODS = tuple(f"{m} (R(x))" for m in cd.METHODS.values())


def measure(ctx, alpha: float, features: ce.FrechetFeatures,
            attacks: list[str] | None) -> dict[str, Any]:
    """Every figure of the ablation for the CD-VAE trained at mixup ``alpha`` (JSON-able)."""
    model = cm.cdvae(ctx, mixup_alpha=alpha)
    study = ce.study_arrays(ctx, mixup_alpha=alpha)
    x, y = study["x"], study["y"]
    distances = ce.part_distances(study, features)
    detectors = cd.evaluate_detectors(ctx, sides=("residual",), mixup_alpha=alpha,
                                      only=cm.setting(ctx, "mixup_detection_attacks"))
    auc = {method: {attack: 100.0 * entry["metrics"]["auc"]
                    for attack, entry in detectors.get(method, {}).items() if "metrics" in entry}
           for method in METHODS}
    defense = GreyBoxDefense(model, cm.reference_classifier(ctx))
    return {
        "alpha": float(alpha),
        "cache_key": f"cdvae_gamma{cm.gamma_key(cm.setting(ctx, 'gamma'))}{cm.mixup_key(ctx, alpha)}",
        "d_r_accuracy": cm.accuracy(model, x, y),
        "reconstruction_accuracy": 100.0 * float(np.mean(reconstruction_accuracy(x, study["g"]))),
        **{part: {k: d[k] for k in ("cosine_mean", "cosine_std", "frechet")}
           for part, d in distances.items()},
        "detection_auc": auc,
        "detection_auc_mean": {m: float(np.mean(list(v.values()))) if v else None
                               for m, v in auc.items()},
        "detection_errors": {m: {a: e["error"] for a, e in d.items() if "error" in e}
                             for m, d in detectors.items()},
        "greybox": cg.greybox_accuracies(ctx, defense, attacks),
    }


def columns(per_alpha: dict[float, dict]) -> list[str]:
    """The table's columns: the grey-box ones follow the attacks measured."""
    first = next(iter(per_alpha.values()))
    grey = [f"grey-box {cg.COLUMNS[a]}" for a in first["greybox"]]
    return ["mixup α", "D(R(x)) accuracy", "reconstruction accuracy", "cosine G(x) vs G(x′)",
            "cosine R(x) vs R(x′)", "Fréchet G", "Fréchet R", *[f"AUC {m}" for m in METHODS], *grey]


def table_rows(per_alpha: dict[float, dict]) -> list[dict[str, Any]]:
    """One row per α (ascending), then the authors' claim in the columns it speaks to."""
    rows = []
    for alpha, m in sorted(per_alpha.items()):
        row = {"mixup α": f"{alpha:g}", "D(R(x)) accuracy": m["d_r_accuracy"],
               "reconstruction accuracy": m["reconstruction_accuracy"]}
        for part in ("G", "R"):
            d = m[part]
            row[f"cosine {part}(x) vs {part}(x′)"] = f"{d['cosine_mean']:.4f} ± {d['cosine_std']:.4f}"
            row[f"Fréchet {part}"] = f"{d['frechet']:.4f}"
        row.update({f"AUC {k}": v for k, v in m["detection_auc_mean"].items()})
        row.update({f"grey-box {cg.COLUMNS[a]}": v for a, v in m["greybox"].items()})
        rows.append(row)
    rows.append({"mixup α": "authors' claim (issue #2)",
                 "D(R(x)) accuracy": "higher with mixup (\"especially\")",
                 "cosine G(x) vs G(x′)": "\"better disentanglement\"", "Fréchet G": "(not quantified)"})
    return rows


def _change(per_alpha: dict[float, dict], get, digits: int = 2) -> str:
    base = get(per_alpha[0.0])
    parts = [f"{get(m):.{digits}f} at α = {a:g} ({get(m) - base:+.{digits}f})"
             for a, m in sorted(per_alpha.items()) if a != 0.0]
    return f"{base:.{digits}f} at α = 0, " + ", ".join(parts)


def findings(per_alpha: dict[float, dict]) -> list[str]:
    """What the ablation found against the authors' claim, in sentences computed from the rows."""
    if 0.0 not in per_alpha or len(per_alpha) < 2:
        return ["mixup_grid has no α = 0 model and another to compare it with: no finding."]
    base = per_alpha[0.0]
    gains = {a: m["d_r_accuracy"] - base["d_r_accuracy"] for a, m in per_alpha.items() if a != 0.0}
    if all(g > 0 for g in gains.values()):
        verdict = "higher at every α > 0, as the authors claim"
    elif all(g <= 0 for g in gains.values()):
        verdict = "not higher at any α > 0, against the claim (in this run)"
    else:
        verdict = "higher at some α and not at others: no consistent effect"
    out = [f'D(R(x)) accuracy, the claim\'s "especially": {_change(per_alpha, lambda m: m["d_r_accuracy"])} '
           f"(%, points vs α = 0): {verdict}."]
    out.append("Disentanglement, \"better\" meaning less class information in G and a G the attack "
               "moves less (the perturbation going into R, Table 1): D̂ on G(x) (the grey-box clean "
               f"column) {_change(per_alpha, lambda m: m['greybox']['clean'])}; Fréchet G "
               f"{_change(per_alpha, lambda m: m['G']['frechet'], 4)}; cosine G "
               f"{_change(per_alpha, lambda m: m['G']['cosine_mean'], 4)}; Fréchet R "
               f"{_change(per_alpha, lambda m: m['R']['frechet'], 4)}.")
    if all(_mean_auc(m) is not None for m in per_alpha.values()):
        out.append(f"Detection AUC on R(x), mean of KD, LID and MD: {_change(per_alpha, _mean_auc)}.")
    for attack in base["greybox"]:
        out.append(f"Grey-box accuracy (D̂ on G(x′)), {cg.COLUMNS[attack]}: "
                   f"{_change(per_alpha, lambda m, a=attack: m['greybox'][a])}.")
    out.append("One seed per α: a difference smaller than the spread over seeds (`tfdefense "
               f"reproduce --seeds N --only {NAME}`) is not a finding.")
    return out


def _mean_auc(m: dict[str, Any]) -> float | None:
    values = [v for v in m["detection_auc_mean"].values() if v is not None]
    return float(np.mean(values)) if values else None


def plot_ablation(per_alpha: dict[float, dict], path: str) -> str:
    """Accuracies and detection AUCs (%) against α, one line each; returns ``path``."""
    from tfdefense.plots import line_plot  # matplotlib only when a figure is drawn

    alphas = sorted(per_alpha)
    curves = {"D(R(x)) accuracy": lambda m: m["d_r_accuracy"],
              "reconstruction accuracy": lambda m: m["reconstruction_accuracy"]}
    for attack in per_alpha[alphas[0]]["greybox"]:
        curves[f"grey-box {cg.COLUMNS[attack]}"] = lambda m, a=attack: m["greybox"][a]
    for method in METHODS:
        curves[f"AUC {method}"] = lambda m, k=method: m["detection_auc_mean"].get(k)
    lines = {label: [get(per_alpha[a]) for a in alphas] for label, get in curves.items()}
    return line_plot(alphas, lines, path, xlabel="mixup α (Beta(α, α))", title="CD-VAE against mixup α",
                     dashed=[label for label in lines if label.startswith("AUC")])


def _notes(ctx, per_alpha: dict[float, dict], feature_name: str) -> list[str]:
    recipe_alpha = tr.recipe(ctx.preset, "cdvae").mixup_alpha
    det = cm.setting(ctx, "mixup_detection_attacks")
    det_text = ", ".join(cd.ATTACK_LABELS[a] for a in det) if det else "all five of Table 4"
    errors = [f"α = {a:g}, {m} / {cd.ATTACK_LABELS[k]}: {e}" for a, r in sorted(per_alpha.items())
              for m, d in r["detection_errors"].items() for k, e in d.items()]
    return [
        f"The claim: {CLAIM}. The official recipe trains at α = 2; `paper` follows it.",
        *findings(per_alpha),
        f"One CD-VAE per α of `mixup_grid` ({', '.join(f'{a:g}' for a in sorted(per_alpha))}), "
        f"γ = {cm.setting(ctx, 'gamma'):g}, each by the preset's `cdvae` recipe with its α (the "
        "report's recipe tables show each); at the recipe's own α "
        f"({recipe_alpha:g}) it is the CD-VAE of Tables 1-4 itself. Mixup mixes each batch with a "
        "shuffled copy by λ ~ Beta(α, α) and the cross-entropy by the same λ (official "
        "mixup_data); α = 0 trains without it.",
        f"Accuracies (%) on the first {ctx.settings['eval_images']} test images (posterior-mean G); "
        "cosine (mean ± std over images) and Fréchet distance of clean vs PGD-Linf x′ crafted on "
        f"D̂, as Table 1 (Fréchet on the {feature_name}).",
        f"AUC (%): Table 4's detectors on R(x) of each α's CD-VAE, attacks crafted on D∘R; attacks: "
        f"{det_text}, mean over them (per attack in results.json).",
        f"Grey-box: D̂ reads G(x′) of each α's CD-VAE, x′ crafted on D̂ (Table 6's grey-box row, on "
        f"its first {cm.setting(ctx, 'defense_images')} images). Table 6 itself uses a CD-VAE at "
        f"γ = {cm.setting(ctx, 'defense_gamma'):g}, whose G keeps more class information; the "
        f"ablation's CD-VAEs are at γ = {cm.setting(ctx, 'gamma'):g}, so this column compares "
        "α's, not Table 6's numbers.",
        *(["Not measured: " + "; ".join(errors)] if errors else []),
        cm.architecture_note(ctx),
    ]


@register(NAME, order=90, datasets=("cifar10",), cost=130)
def mixup_ablation(ctx) -> Result:
    grid = sorted({float(a) for a in cm.setting(ctx, "mixup_grid")})
    if not grid or any(a < 0 for a in grid):
        raise ValueError(f"mixup_grid setting: expected α >= 0, got {cm.setting(ctx, 'mixup_grid')}")
    features = ce.FrechetFeatures(ctx)
    attacks = cm.setting(ctx, "mixup_greybox_attacks")  # None: every Table 6 attack
    per_alpha = {alpha: measure(ctx, alpha, features, attacks) for alpha in grid}
    figure = plot_ablation(per_alpha, ctx.figure_path("cdvae_mixup_ablation"))
    return Result(NAME, "CD-VAE mixup ablation: D(R(x)), reconstruction, Tables 1, 4 and 6 against "
                  "mixup α", ctx.preset, ctx.dataset, columns=columns(per_alpha),
                  rows=table_rows(per_alpha), notes=_notes(ctx, per_alpha, features.name),
                  figures={"accuracy and detection AUC against mixup α": figure},
                  measurements={"claim": CLAIM, "per_alpha": [per_alpha[a] for a in grid],
                                "feature_extractor": features.name})


def example_measurement(d_r: float) -> dict[str, Any]:
    """A made-up ``measure`` result with D(R(x)) accuracy ``d_r`` (for examples and tests)."""
    part = {"cosine_mean": 0.9, "cosine_std": 0.05, "frechet": 2.0}
    return {"alpha": 0.0, "cache_key": "k", "d_r_accuracy": d_r, "reconstruction_accuracy": 40.0,
            "G": dict(part), "R": {**part, "frechet": 40.0},
            "detection_auc": {m: {"pgd_linf": 90.0} for m in METHODS},
            "detection_auc_mean": {m: 90.0 for m in METHODS}, "detection_errors": {},
            "greybox": {"clean": 60.0, "pgd_linf": 20.0}}
