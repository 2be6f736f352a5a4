"""Figures of the FM-Defense Table II experiment, from cached resistance vectors.

* ``resistance_histograms``: the mean resistance over the selected codes, clean
  vs each adversarial set (FM-Defense Fig 1 / Fig 4 last row style);
* ``detection_curves``: detection accuracy (Adv = detected adversarial, Clean
  = clean judged clean, Overall) against a unified resistance threshold and
  against ρ of the per-code thresholds fitted on clean validation data
  (FM-Defense Fig 4, first two rows).

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
from tfdefense.plots import _save, plt

UNIFIED = np.round(np.linspace(0.0, 1.0, 21), 3)
RHOS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _flagged(r, theta):
    return np.any(r < np.asarray(theta)[None, :], axis=1)


def curves(r_val, resistances) -> dict:
    """Detection accuracies per adversarial set against the unified threshold and against ρ."""
    clean = resistances["clean"]
    out = {"unified": {"threshold": UNIFIED.tolist()}, "rho": {"rho": list(RHOS)}}
    thetas = {"unified": [np.full(clean.shape[1], t) for t in UNIFIED],
              "rho": [resistance_thresholds(r_val, rho) for rho in RHOS]}
    for kind, ths in thetas.items():
        out[kind]["clean"] = [float(1.0 - _flagged(clean, th).mean()) for th in ths]
        for key, r in resistances.items():
            if key == "clean":
                continue
            adv = [float(_flagged(r, th).mean()) for th in ths]
            n = min(len(r), len(clean))
            overall = [float((_flagged(r[:n], th).sum() + (~_flagged(clean[:n], th)).sum())
                             / (2 * n)) for th in ths]
            out[kind][key] = {"adv": adv, "overall": overall}
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
    _save(fig, path)
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
    _save(fig, path)
    return path
