"""Figures of the FM-Defense Table II experiment, from cached resistance vectors.

* ``resistance_histograms``: the mean resistance over the selected codes, clean
  vs each adversarial set (FM-Defense Fig 1 / Fig 4 last row style);
* ``detection_curves``: detection accuracy (Adv = detected adversarial, Clean
  = clean judged clean, Overall) against a unified resistance threshold and
  against ρ of the per-code thresholds fitted on clean validation data
  (FM-Defense Fig 4, first two rows);
* ``rates``: the three accuracies (and the share of ADV that fools C and passes)
  at one threshold vector, what each point of those curves is;
* ``code_curves``: the same accuracies with per-code ρ thresholds on each
  selected code alone and on the first k codes (Fig 4, the choice of codes).

Example:
    >>> import numpy as np
    >>> from tfdefense.experiments.fm_figures import curves
    >>> rng = np.random.default_rng(0)
    >>> c = curves(rng.random((50, 4)), {"clean": rng.random((20, 4)), "fgsm": rng.random((20, 4)) / 2})
    >>> sorted(c), len(c["unified"]["threshold"]) == len(c["unified"]["fgsm"]["adv"])
    (['rho', 'unified'], True)
"""

from __future__ import annotations

import numpy as np

from tfdefense.detect.resistance import resistance_thresholds
from tfdefense.plots import plt, save_figure

UNIFIED = np.round(np.linspace(0.0, 1.0, 21), 3)
RHOS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def flagged(r, theta) -> np.ndarray:
    """Per image: is some code's resistance below its threshold (the detector's "suspicious";
    equality counts as clean, as in ``ResistanceDetector``)?"""
    return np.any(np.asarray(r) < np.asarray(theta, np.float64)[None, :], axis=1)


def rates(r_clean, r_adv, theta, fooled=None) -> dict[str, float]:
    """Fig 4's accuracies at thresholds ``theta`` (S,), from resistances (N, S).

    ``adv``: share of ADV flagged (true positives); ``clean``: share of CLE passed (true
    negatives); ``overall``: correct decisions on the first n of each, n the smaller set (the
    paper's CLE and ADV are equal, 5,000 each). With ``fooled`` (per ADV image: C is wrong on
    it), ``evades``: share of ADV that fools C and is not flagged.
    """
    fa, fc = flagged(r_adv, theta), flagged(r_clean, theta)
    n = min(len(fa), len(fc))
    out = {"adv": float(fa.mean()), "clean": float(1.0 - fc.mean()),
           "overall": float((fa[:n].sum() + (~fc[:n]).sum()) / (2 * n))}
    if fooled is not None:
        out["evades"] = float(np.mean(np.asarray(fooled, bool) & ~fa))
    return out


def _accuracies(clean, resistances, thetas, columns=None) -> dict:
    """{"clean": [...], key: {"adv": [...], "overall": [...]}} over ``thetas`` (one per point),
    reading only ``columns[i]`` of the resistances at point i when given."""
    cols = columns or [slice(None)] * len(thetas)
    out: dict = {"clean": [rates(clean[:, c], clean[:, c], th)["clean"]
                           for c, th in zip(cols, thetas)]}
    for key, r in resistances.items():
        if key == "clean":
            continue
        points = [rates(clean[:, c], r[:, c], th) for c, th in zip(cols, thetas)]
        out[key] = {"adv": [p["adv"] for p in points], "overall": [p["overall"] for p in points]}
    return out


def curves(r_val, resistances) -> dict:
    """Detection accuracies per adversarial set against the unified threshold and against ρ."""
    clean = np.asarray(resistances["clean"])
    thetas = {"unified": [np.full(clean.shape[1], t) for t in UNIFIED],
              "rho": [resistance_thresholds(r_val, rho) for rho in RHOS]}
    return {"unified": {"threshold": UNIFIED.tolist(),
                        **_accuracies(clean, resistances, thetas["unified"])},
            "rho": {"rho": list(RHOS), **_accuracies(clean, resistances, thetas["rho"])}}


def code_curves(r_val, resistances, rho: float) -> dict:
    """Accuracies with per-code ρ thresholds (fitted on ``r_val``) on subsets of the S selected
    codes: ``single`` (code i alone, i = 0..S-1) and ``first`` (codes 0..k-1, k = 1..S).

    Each part holds ``codes`` (the columns used at each point), ``clean`` and, per adversarial
    set, ``adv`` and ``overall``, as ``curves``. An image counts as flagged when one of the
    used codes is below its threshold; the other codes are ignored.
    """
    r_val = np.asarray(r_val, np.float64)
    clean = np.asarray(resistances["clean"])
    s = r_val.shape[1]
    out = {}
    for kind, subsets in (("single", [[i] for i in range(s)]),
                          ("first", [list(range(k)) for k in range(1, s + 1)])):
        thetas = [resistance_thresholds(r_val[:, c], rho) for c in subsets]
        out[kind] = {"codes": subsets, **_accuracies(clean, resistances, thetas, subsets)}
    return out


def resistance_histograms(resistances, path: str) -> str:
    """Histograms of mean resistance: clean vs every adversarial set, one panel each."""
    keys = [k for k in resistances if k != "clean"]
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, key in zip(axes.ravel(), keys):
        ax.hist(resistances["clean"].mean(1), bins, alpha=0.6, density=True, label="clean")
        ax.hist(resistances[key].mean(1), bins, alpha=0.6, density=True, label="adversarial")
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("mean resistance", fontsize=8)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def detection_curves(r_val, resistances, path: str) -> str:
    """Fig 4 rows 1–2: Adv / Clean / Overall detection accuracy vs unified θ and vs ρ."""
    c = curves(r_val, resistances)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, kind, xs, xlabel in ((axes[0], "unified", c["unified"]["threshold"],
                                  "unified resistance threshold"),
                                 (axes[1], "rho", list(range(len(RHOS))), "ρ (per-code thresholds)")):
        ax.plot(xs, c[kind]["clean"], "k-", lw=2, label="Clean")
        for key, v in c[kind].items():
            if isinstance(v, dict):
                line = ax.plot(xs, v["adv"], "-", label=f"Adv {key}")[0]
                ax.plot(xs, v["overall"], ":", color=line.get_color())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("detection accuracy (dotted: overall)")
        ax.set_ylim(-0.02, 1.02)
    axes[1].set_xticks(range(len(RHOS)), [str(r) for r in RHOS], rotation=45, fontsize=7)
    axes[1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    return path
