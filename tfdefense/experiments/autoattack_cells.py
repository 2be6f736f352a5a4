"""AutoAttack cells for the experiment tables (issue 10, item 3), run once and cached.

Every defense table (CD-VAE Table 6 and Table 7, FM-Defense Table II) puts an
AutoAttack number beside the paper's attack. ``run(ctx, key, model, x, y, ...)``
runs the ``AutoAttack`` ensemble once on ``model`` (images -> logits; a bare
classifier, a whole defense, or a ``bpda``/``eot`` surrogate of one), judging
success by ``labels_of`` (a defense's labels, ``REJECTED`` = -1 counting as not
fooled; default the model's argmax), caches the examples and labels under
``cache/<key>_<budget>.npz`` and returns an ``AutoAttackCell``.

Example:
    >>> from tfdefense.experiments.autoattack_cells import budget_tag
    >>> budget_tag({"version": "quick", "norm": "linf", "eps": 0.3, "steps": None})
    'eps0p3_normlinf_versionquick'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfdefense.attacks import AutoAttack
from tfdefense.attacks.autoattack import square_only_count
from tfdefense.defend.base import REJECTED


def budget_tag(params: dict) -> str:
    """A file-name-safe tag of the parameters that are set (None ones left out)."""
    parts = []
    for k, v in sorted(params.items()):
        if v is None:
            continue
        value = f"{v:g}" if isinstance(v, float) else str(v)
        parts.append(f"{k}{value}".replace(".", "p").replace("-", "m"))
    return "_".join(parts)


@dataclass
class AutoAttackCell:
    """One AutoAttack evaluation: per-image labels after the ensemble, and its log."""

    x_adv: np.ndarray
    y: np.ndarray
    clean_pred: np.ndarray
    #: labels after the whole ensemble (a point keeps its clean label unless fooled)
    pred: np.ndarray
    #: index into ``components`` of the attack that fooled the point, -1 if none
    broken_by: np.ndarray
    components: list[str]
    #: seconds per component when it was computed (kept in the cache)
    seconds: list[float]
    params: dict

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def correct(self) -> np.ndarray:
        """Per image: still labelled correctly after the ensemble."""
        return self.pred == self.y

    @property
    def not_fooled(self) -> np.ndarray:
        """Per image: labelled correctly or rejected (the detector-style score)."""
        return (self.pred == self.y) | (self.pred == REJECTED)

    @property
    def accuracy(self) -> float:
        """Robust accuracy (%) under the ensemble."""
        return 100.0 * float(np.mean(self.correct))

    @property
    def clean_accuracy(self) -> float:
        return 100.0 * float(np.mean(self.clean_pred == self.y))

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    @property
    def square_only(self) -> int:
        """Points Square broke after every gradient attack failed on them."""
        return square_only_count(self.components, self.broken_by)

    @property
    def gradient_masking(self) -> bool | None:
        """True when Square broke a point no gradient attack broke (None: no Square ran)."""
        return None if "square" not in self.components else self.square_only > 0

    def broken_counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.broken_by == i)) for i, c in enumerate(self.components)}

    def summary(self) -> dict:
        """JSON-able numbers for ``Result.measurements``."""
        return {
            "n": self.n,
            "clean": self.clean_accuracy,
            "robust": self.accuracy,
            "broken_by": self.broken_counts(),
            "gradient_masking": self.gradient_masking,
            "square_only": self.square_only,
            "seconds": self.total_seconds,
            "params": dict(self.params),
        }

    def masking_text(self) -> str:
        if self.gradient_masking is None:
            return "no Square run (no masking check)"
        if self.gradient_masking:
            return (
                f"GRADIENT MASKING suspected: Square broke {self.square_only} point(s) every "
                "gradient attack failed on"
            )
        return "no sign of gradient masking (Square broke no point the gradient attacks missed)"


def run(
    ctx,
    key: str,
    model: Callable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "quick",
    labels_of: Callable | None = None,
    steps: int | None = None,
    n_target_classes: int | None = None,
    queries: int | None = None,
    eot_iter: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
    depends_on: Any = None,
) -> AutoAttackCell:
    """AutoAttack on ``model`` over ``(x, y)``, cached under ``cache/<key>_<budget>_n<N>.npz``.

    Args:
        ctx: the experiment ``Context``.
        key: cache key of this cell (e.g. ``cdvae/aa_whitebox_g``).
        model: images -> logits to attack.
        x, y: images and true labels.
        eps, norm, version, steps, n_target_classes, queries, eot_iter: the
            ``AutoAttack`` parameters (None keeps the version's budget).
        labels_of: images -> labels judging success (default the model's argmax).
        seed, batch_size: as every attack.
        depends_on: what else the cached result depends on (``Context.cached_arrays``).
    """
    params = {
        "eps": float(eps),
        "norm": norm,
        "version": version,
        "steps": steps,
        "n_target_classes": n_target_classes,
        "queries": queries,
        "eot_iter": eot_iter,
    }

    def compute():
        attack = AutoAttack(seed=seed, batch_size=batch_size, **params)
        out = attack.run(x, y, model=model, labels_of=labels_of, verbose=False)
        final = out.pred_after[-1] if out.components else out.clean_pred
        return {
            "x_adv": out.x_adv,
            "clean_pred": out.clean_pred,
            "pred": final,
            "broken_by": out.broken_by,
            "components": np.asarray(out.components, dtype=str),
            "seconds": np.asarray(out.seconds, dtype=np.float64),
        }

    arrays = ctx.cached_arrays(f"{key}_{budget_tag(params)}_n{len(x)}", compute,
                               depends_on=depends_on)
    return AutoAttackCell(
        x_adv=arrays["x_adv"],
        y=np.asarray(y),
        clean_pred=arrays["clean_pred"],
        pred=arrays["pred"],
        broken_by=arrays["broken_by"],
        components=[str(c) for c in arrays["components"]],
        seconds=[float(s) for s in arrays["seconds"]],
        params=params,
    )


__all__ = ["AutoAttackCell", "budget_tag", "run"]
