"""The papers' attack settings, by name, with MNIST-scaled variants.

``get_preset(name, data="cifar10")`` returns ``{label: Attack}``:

* ``cdvae_detection`` (CD-VAE §4.2, Table 4): FGSM, BIM, C&W-Linf (margin
  PGD), PGD-Linf at eps 8/255 and PGD-L2 at eps 1.0; iterative attacks run 5
  steps of size eps/sqrt(5); PGD starts at random.
* ``cdvae_defense`` (CD-VAE §4.3, Table 6): 100-step PGD-Linf (8/255), PGD-L2
  (1.0), C&W-Linf (8/255), C&W-L2 and StAdv (bound 0.05).
* ``fm_defense`` (FM-Defense §4, Table II, MNIST): FGSM eps 0.3, DeepFool
  (Linf), C&W (L2), all through Foolbox in the paper.
* ``autoattack`` / ``autoattack_l2`` (Croce & Hein 2020, standard version;
  ``quick=True`` or ``autoattack_quick`` / ``autoattack_l2_quick``: the quick
  version), ``autoattack_rand`` (the EOT version for stochastic defenses):
  one ``AutoAttack`` at the Linf / L2 budget of ``data``.
* ``adaptive`` (the adaptive evaluation of any ``Defense``, issue 16): the
  gradient attacks of the CD-VAE protocol (100-step PGD-Linf, PGD-L2 and
  C&W-Linf margin PGD at the budgets of ``data``), run through the defense's
  ``logits``; for a defense that detects (``detects=True``) their
  detector-aware versions (``DetectorAwarePGD``: PGD-Linf and PGD-L2 on the
  cross-entropy, C&W-Linf on the margin with kappa 10), and AutoAttack in
  Linf and L2: the standard version, the ``rand`` (EOT) version for a
  stochastic defense (``stochastic=True``). ``quick=True``: 20 steps, the
  quick AutoAttack, and for a stochastic defense 5 EOT draws per step
  (AutoAttack rand: 20 steps, 5 draws).

``data="mnist"`` scales the CIFAR-10 budgets of the CD-VAE presets to the
budgets the MNIST literature uses, because 8/255 barely moves an MNIST
classifier: Linf 8/255 -> 0.3 (Madry et al. 2018's MNIST budget) and L2
1.0 -> 2.0 (the usual MNIST L2 budget, e.g. Croce & Hein 2020); the StAdv
bound stays 0.05 (it is relative to the image size). ``fm_defense`` is
already an MNIST setting; its CelebA numbers use the same attacks.

``quick=True`` keeps every budget and cuts the work for CPU smoke runs:
100 steps -> 20, C&W-L2 9 x 10000 -> 5 x 100 Adam steps (lr 0.05, c0 = 1).
Quick numbers are weaker attacks than the paper's; reports must say so.

Example:
    >>> from tfdefense.attacks.presets import get_preset
    >>> sorted(get_preset("fm_defense"))
    ['cw_l2', 'deepfool_linf', 'fgsm']
"""

from __future__ import annotations

from tfdefense.attacks.base import Attack, get_attack

PRESETS = ("cdvae_detection", "cdvae_defense", "fm_defense", "autoattack", "autoattack_quick",
           "autoattack_l2", "autoattack_l2_quick", "autoattack_rand", "adaptive")
DATA = ("cifar10", "mnist")

_EPS = {"cifar10": {"linf": 8 / 255, "l2": 1.0}, "mnist": {"linf": 0.3, "l2": 2.0}}


def preset_params(name: str, data: str = "cifar10", quick: bool = False, *,
                  detects: bool = False, stochastic: bool = False) -> dict[str, tuple]:
    """``{label: (attack name, params)}`` of a preset, without building attacks.

    ``detects`` and ``stochastic`` describe the defense the ``adaptive`` preset is for (its
    ``Defense.detects`` / ``Defense.stochastic``); other presets do not depend on them.
    """
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    if data not in DATA:
        raise ValueError(f"data: expected one of {', '.join(DATA)}, got {data!r}")
    for flag, value in (("quick", quick), ("detects", detects), ("stochastic", stochastic)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag}: expected True or False, got {value!r}")
    linf, l2 = _EPS[data]["linf"], _EPS[data]["l2"]
    if name == "adaptive":
        return _adaptive_params(linf, l2, quick, detects, stochastic)
    if name.startswith("autoattack"):
        norm = "l2" if "_l2" in name else "linf"
        version = "rand" if name.endswith("rand") else (
            "quick" if quick or name.endswith("quick") else "standard")
        return {"autoattack": ("autoattack", {"eps": l2 if norm == "l2" else linf, "norm": norm,
                                              "version": version})}
    if name == "cdvae_detection":
        it = {"steps": 5}  # step eps / sqrt(5) is every iterative attack's default
        return {
            "fgsm": ("fgsm", {"eps": linf}),
            "bim": ("bim", {"eps": linf, **it}),
            "cw_linf": ("cw_linf", {"eps": linf, **it}),
            "pgd_linf": ("pgd_linf", {"eps": linf, **it}),
            "pgd_l2": ("pgd_l2", {"eps": l2, **it}),
        }
    if name == "cdvae_defense":
        it = {"steps": 20 if quick else 100}
        cw = ({"binary_search_steps": 5, "steps": 100, "step_size": 0.05, "initial_const": 1.0}
              if quick else {})
        return {
            "pgd_linf": ("pgd_linf", {"eps": linf, **it}),
            "pgd_l2": ("pgd_l2", {"eps": l2, **it}),
            "cw_linf": ("cw_linf", {"eps": linf, **it}),
            "cw_l2": ("cw_l2", {"eps": l2, **cw}),
            "stadv": ("stadv", {"bound": 0.05, **it}),
        }
    cw = ({"binary_search_steps": 5, "steps": 100, "step_size": 0.05, "initial_const": 1.0}
          if quick else {})
    return {
        "fgsm": ("fgsm", {"eps": 0.3}),
        "deepfool_linf": ("deepfool_linf", {}),
        "cw_l2": ("cw_l2", cw),
    }


def _adaptive_params(linf: float, l2: float, quick: bool, detects: bool,
                     stochastic: bool) -> dict[str, tuple]:
    """The ``adaptive`` preset (see the module docstring)."""
    it = {"steps": 20 if quick else 100}
    out = {
        "pgd_linf": ("pgd_linf", {"eps": linf, **it}),
        "pgd_l2": ("pgd_l2", {"eps": l2, **it}),
        "cw_linf": ("cw_linf", {"eps": linf, **it}),
    }
    if detects:
        eot = {"eot_iter": 5} if stochastic and quick else {}
        out.update({
            "detector_aware_pgd_linf": ("detector_aware_pgd_linf",
                                        {"eps": linf, "loss": "ce", **it, **eot}),
            "detector_aware_pgd_l2": ("detector_aware_pgd_l2",
                                      {"eps": l2, "loss": "ce", **it, **eot}),
            "detector_aware_cw_linf": ("detector_aware_pgd_linf",
                                       {"eps": linf, "loss": "margin", "kappa": 10.0, **it, **eot}),
        })
    if stochastic:
        aa = {"version": "rand", **({"steps": 20, "eot_iter": 5} if quick else {})}
    else:
        aa = {"version": "quick" if quick else "standard"}
    out["autoattack_linf"] = ("autoattack", {"eps": linf, "norm": "linf", **aa})
    out["autoattack_l2"] = ("autoattack", {"eps": l2, "norm": "l2", **aa})
    return out


def get_preset(name: str, data: str = "cifar10", quick: bool = False, *, detects: bool = False,
               stochastic: bool = False, **common) -> dict[str, Attack]:
    """Build a preset's attacks; ``common`` (model, batch_size, seed, verbose) goes to each.

    ``detects`` / ``stochastic``: the defense the ``adaptive`` preset is for (see
    ``preset_params``).
    """
    return {
        label: get_attack(attack, **params, **common)
        for label, (attack, params) in preset_params(name, data, quick, detects=detects,
                                                     stochastic=stochastic).items()
    }
