"""CD-VAE Table 6: the grey-box defense, and the white-box (adaptive) attack on it.

Paper protocol (CD-VAE §3.4, §4.3): the attacks are crafted on D̂, the
classifier pre-trained on clean x; the defense classifies G(x′) of a CD-VAE
trained at γ = 2e-3. The paper does not say whether G(x′) goes to D̂ itself or
to a classifier trained on G(x); both rows are reported.

Adaptive rows (not in the paper): the attacker knows the whole defense and
runs the same attacks through x → G(x) → classifier (``GreyBoxDefense.logits``,
exact gradients through the VAE; G uses its posterior mean, so the pipeline
is deterministic and differentiable and needs no BPDA). One more row attacks
the stochastic variant (G samples z) with EOT over posterior samples.

Attacks: ``attacks.presets`` ``cdvae_defense`` (PGD-Linf, PGD-L2, C&W-Linf,
C&W-L2, StAdv), MNIST-scaled budgets on MNIST (Linf 0.3, L2 2.0, StAdv flow
bound 0.05); the quick preset runs 20 steps instead of 100 and C&W-L2 with
5 x 100 Adam steps.
"""

from __future__ import annotations

import numpy as np

from tfdefense.attacks import eot
from tfdefense.attacks.presets import get_preset, preset_params
from tfdefense.defend import GreyBoxDefense
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments.registry import register
from tfdefense.experiments.result import Result, beside_paper

COLUMNS = {"clean": "clean", "pgd_linf": "PGD-Linf", "pgd_l2": "PGD-L2", "cw_linf": "C&W-Linf",
           "cw_l2": "C&W-L2", "stadv": "StAdv"}
#: CD-VAE Table 6 (CIFAR-10, WRN-28-10), accuracy (%)
PAPER_TABLE6 = {
    "normal": (96.01, 0.0, 0.0, 0.0, 0.0, 0.0),
    "CD-VAE": (86.81, 77.05, 78.02, 77.04, 78.29, 19.41),
}


def _attacks(ctx, model):
    attacks = get_preset("cdvae_defense", data=cm.attack_data(ctx), quick=ctx.preset == "quick",
                         model=model, seed=ctx.settings["seed"], verbose=True)
    steps = cm.setting(ctx, "defense_steps")
    if steps:  # smoke runs: fewer steps for every attack (and one C&W binary-search step)
        for attack in attacks.values():
            attack.steps = steps
            if hasattr(attack, "binary_search_steps"):
                attack.binary_search_steps = 1
    return attacks


def defenses(ctx) -> dict[str, GreyBoxDefense]:
    """The two grey-box defenses: G(x) read by D̂, and by a classifier trained on G(x)."""
    gamma = cm.setting(ctx, "defense_gamma")
    model = cm.cdvae(ctx, gamma)
    return {
        "same": GreyBoxDefense(model, cm.reference_classifier(ctx)),
        "g": GreyBoxDefense(model, cm.part_classifier(ctx, gamma, "g")),
    }


def greybox_examples(ctx) -> dict[str, np.ndarray]:
    """x′ of every defense attack crafted on D̂ (the grey-box attacker), cached per attack."""
    x, y = cm.eval_arrays(ctx, cm.setting(ctx, "defense_images"))
    out = {"x": x, "y": y}
    for label, attack in _attacks(ctx, cm.reference_classifier(ctx)).items():
        out[label] = ctx.cached_arrays(f"cdvae/greybox_{label}",
                                       lambda a=attack: {"x_adv": a.generate(x, y)})["x_adv"]
    return out


def whitebox_accuracy(ctx, name: str, defense, x, y) -> dict[str, float]:
    """Accuracy (%) of ``defense`` under every attack run through the defense itself."""
    out = {}
    for label, attack in _attacks(ctx, defense.logits).items():
        def compute(a=attack):
            return {"x_adv": a.generate(x, y)}

        x_adv = ctx.cached_arrays(f"cdvae/whitebox_{name}_{label}", compute)["x_adv"]
        out[label] = 100.0 * defense.accuracy(x_adv, y)
    return out


@register("cdvae_table6", order=30)
def table6(ctx) -> Result:
    grey = greybox_examples(ctx)
    x, y = grey["x"], grey["y"]
    attacks = [c for c in COLUMNS if c != "clean"]
    reference = cm.reference_classifier(ctx)
    defs = defenses(ctx)
    rows, meas = [], {}

    def add(name, accs, paper_key=None):
        paper = PAPER_TABLE6.get(paper_key)
        row = {"defense": name}
        for i, col in enumerate(COLUMNS):
            row[COLUMNS[col]] = beside_paper(accs.get(col), None if paper is None else paper[i])
        rows.append(row)
        meas[name] = accs

    normal = {"clean": cm.accuracy(reference, x, y)}
    normal.update({a: cm.accuracy(reference, grey[a], y) for a in attacks})
    add("normal (D̂ on x′)", normal, "normal")
    for key, label in (("same", "CD-VAE grey-box: D̂ on G(x′)"),
                       ("g", "CD-VAE grey-box: G-classifier on G(x′)")):
        d = defs[key]
        accs = {"clean": 100.0 * d.accuracy(x, y)}
        accs.update({a: 100.0 * d.accuracy(grey[a], y) for a in attacks})
        add(label, accs, "CD-VAE")

    n_white = cm.setting(ctx, "whitebox_images")
    xw, yw = x[:n_white], y[:n_white]
    for key, label in (("same", "white-box through G: D̂ on G(x′)"),
                       ("g", "white-box through G: G-classifier on G(x′)")):
        d = defs[key]
        accs = {"clean": 100.0 * d.accuracy(xw, yw), **whitebox_accuracy(ctx, key, d, xw, yw)}
        add(label, accs)

    n_eot = cm.setting(ctx, "eot_samples")
    sampling = GreyBoxDefense(defs["g"].cdvae, defs["g"].classifier, sample=True)
    eot_fn = eot(sampling.logits, n=n_eot)
    eot_attack = _attacks(ctx, eot_fn)["pgd_linf"]
    x_eot = ctx.cached_arrays("cdvae/whitebox_eot_pgd_linf",
                              lambda: {"x_adv": eot_attack.generate(xw, yw)})["x_adv"]
    eot_accs = {"clean": 100.0 * sampling.accuracy(xw, yw),
                "pgd_linf": 100.0 * sampling.accuracy(x_eot, yw)}
    add(f"white-box, sampling G + EOT ({n_eot} draws): G-classifier", eot_accs)

    params = preset_params("cdvae_defense", cm.attack_data(ctx), quick=ctx.preset == "quick")
    broken = [r["defense"] for r in rows if r["defense"].startswith("white-box")
              and min(v for k, v in meas[r["defense"]].items() if k != "clean") < 10.0]
    notes = [
        "Accuracy (%), ours (paper CIFAR-10, WRN-28-10; the paper's CD-VAE row is the grey-box "
        "defense, which does not say which classifier reads G(x′), so it stands beside both of ours).",
        f"Grey-box rows: {len(x)} test images, attacks crafted on D̂ (pre-trained on x, the attacker "
        f"does not know the CD-VAE). White-box rows: the first {len(xw)} of them, attacks crafted "
        "on x → G(x) → classifier with exact gradients through the VAE (posterior mean, "
        "deterministic; BPDA is not needed because every step is differentiable). The EOT row "
        f"attacks the sampling variant of G with PGD-Linf over {n_eot} posterior draws per step.",
        "Attack settings: " + "; ".join(f"{COLUMNS[k]} {v[0]} {v[1]}" for k, v in params.items()),
        ("Quick preset: 20 attack steps instead of the paper's 100 and C&W-L2 with 5 x 100 Adam "
         "steps, i.e. weaker attacks than the paper's." if ctx.preset == "quick" else
         "Paper preset: 100 attack steps."),
        f"CD-VAE γ = {cm.setting(ctx, 'defense_gamma'):g} (the paper's CIFAR-10 grey-box setting); "
        "G(x′) is clipped to [0, 1] before classification. " + cm.architecture_note(ctx),
        ("The defense BREAKS under the white-box attack: accuracy below 10% in "
         + "; ".join(broken) + ". It is a grey-box defense only." if broken else
         "Under the white-box attacks measured here the defense keeps at least 10% accuracy in "
         "every column; see the numbers for how much it loses against the grey-box rows."),
    ]
    return Result("cdvae_table6", "CD-VAE Table 6: grey-box defense by G(x′), and white-box attacks on it",
                  ctx.preset, ctx.dataset, columns=["defense", *COLUMNS.values()], rows=rows,
                  notes=notes, measurements=meas)
