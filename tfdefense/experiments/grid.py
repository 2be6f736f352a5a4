"""Defense × attack grids for the experiment tables, through ``evaluate_robustness``.

A table cell is one defense read on one attack's examples. ``evaluate`` runs the
attacks of a row set against a defense with ``tfdefense.attacks.evaluate_robustness``
(through the defense's own ``logits``, or crafted on an ``attack_model`` for a
grey-box row), caching every attack's examples under the run's
``cache/grid/<key>/<attack>`` with the attacked model's fingerprint, so a set
crafted on one model is read by every defense that shares the key.
``accuracies`` turns a result into the table's percentages (on all images or the
first ``n``), ``robust`` gives the per-image verdicts, and ``worst_case`` takes
the per-image minimum over any rows of any results on the same images. No attack
code lives in the experiments: they choose defenses, attacks and images.

A defense whose reading of a set is costly (Defense-GAN's projection, FM-Defense's
morph search) reads each image set once: ``cached_reads`` is an
``evaluate_robustness`` ``read`` hook that keeps (labels, decisions) per (defense,
image set) in the run's cache, so a rerun, or another evaluation on the same images,
reads them from disk.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks.robustness import AttackResult, RobustnessResult, defense_weights_fingerprint
    >>> row = lambda label, labels: AttackResult(label, "x", {}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ...                                          labels=labels)
    >>> y = np.array([0, 1, 2, 3])
    >>> result = RobustnessResult(4, 1.0, 0.0, rows=[row("a", [0, 1, 9, 3]), row("b", [0, 9, 2, -1])],
    ...                           clean_labels=[0, 1, 2, 3])
    >>> accuracies(result, y)
    {'clean': 100.0, 'a': 75.0, 'b': 50.0}
    >>> accuracies(result, y, n=2)
    {'clean': 100.0, 'a': 100.0, 'b': 50.0}
    >>> robust(result, "b", y, rejected_ok=True).tolist()
    [True, False, True, True]
    >>> float(worst_case([robust(result, "a", y), robust(result, "b", y)]))
    25.0
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from tfdefense.attacks import AutoAttack, evaluate_robustness
from tfdefense.attacks.adversarial_set import data_fingerprint
from tfdefense.attacks.base import Attack
from tfdefense.attacks.robustness import AttackResult, RobustnessResult, defense_weights_fingerprint
from tfdefense.defend.base import REJECTED, Defense


def evaluate(ctx, key: str, defense, x: np.ndarray, y: np.ndarray,
             attacks: Mapping[str, Attack], *, attack_model=None,
             eot_samples: int | None = None, targets: Mapping[str, np.ndarray] | None = None,
             read=None, cache_result: bool | None = None) -> RobustnessResult:
    """``evaluate_robustness`` of ``defense`` under ``attacks`` on ``(x, y)``, cached under
    ``cache/grid/<key>``; ``attack_model``: craft on that model (grey-box) instead of the
    defense's ``logits``; ``eot_samples``: EOT draws for a stochastic defense; ``targets``
    and ``read``: as ``evaluate_robustness``'s (a targeted attack's classes; a reading
    hook such as ``cached_reads``). The sets crafted through the defense are keyed by its
    weights, fitted state and configuration (``defense_weights_fingerprint``: EOT morphs,
    projection steps, thresholds); a grey-box set (``attack_model``) by the attack model alone.

    A stochastic defense's labels depend on every random draw before them, the attacks'
    included, which a rerun reads from the cache instead of drawing: so its whole result
    (per-image labels and decisions) is cached too, under ``cache/grid/<key>/result``,
    made from the defense's weights, state and configuration, the attacks, the images and the
    EOT draws.
    ``cache_result`` overrides that (False for a defense whose logits draw but whose
    predictions do not, e.g. FM-Defense's image-seeded morphs: its rows are read again
    from the cached sets, through ``read``)."""
    def run() -> RobustnessResult:
        return evaluate_robustness(defense, (x, y), dict(attacks), attack_model=attack_model,
                                   cache_dir=os.path.join(ctx.cache_dir, "grid", key),
                                   eot_samples=eot_samples, verbose=True, targets=targets,
                                   read=read)

    if cache_result is None:
        cache_result = bool(getattr(defense, "stochastic", False))
    if not cache_result:
        return run()
    made_from = {"defense": defense_weights_fingerprint(defense),
                 "attacks": {k: a.get_config() for k, a in attacks.items()},
                 "data": data_fingerprint(np.asarray(x), np.asarray(y)),
                 "attack_model": attack_model is not None, "eot_samples": eot_samples}
    # (absent when not given: the results cached before this key existed stay valid)
    if targets:
        made_from["targets"] = {k: data_fingerprint(np.asarray(v), None)
                                for k, v in sorted(targets.items())}
    text = ctx.cached_arrays(f"grid/{key}/result", lambda: {"json": run().to_json()},
                             depends_on=made_from)["json"]
    fields = json.loads(str(text))
    return RobustnessResult(**{**fields, "rows": [AttackResult(**r) for r in fields["rows"]]})


def cached_reads(ctx, defense: Defense, name: str):
    """An ``evaluate_robustness`` ``read`` hook: ``defense``'s (labels, decisions) on each image
    set, computed once per (defense, set) and cached as ``cache/grid/reads/<name>/<the
    images' fingerprint>.npz`` (made from ``defense_weights_fingerprint``: weights, fitted
    state and configuration), whatever evaluation or row reads the set (the clean images of
    several evaluations, a rerun)."""
    depends_on = {"defense": defense_weights_fingerprint(defense)}

    def read(label: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = f"grid/reads/{name}/{data_fingerprint(np.asarray(images), None)[:32]}"
        arrays = ctx.cached_arrays(key, lambda: dict(zip(
            ("labels", "decisions"), defense.predict_with_decisions(images), strict=True)),
            depends_on=depends_on)
        return arrays["labels"], arrays["decisions"]

    return read


def attack_row(result: RobustnessResult, label: str) -> AttackResult:
    """The row of attack ``label`` in ``result`` (not an AutoAttack component's)."""
    rows = [r for r in result.rows if r.label == label and not r.cumulative]
    if not rows:
        raise ValueError(f"label: no attack row {label!r}; expected one of "
                         f"{[r.label for r in result.rows if not r.cumulative]}")
    return rows[0]


def _labels(result: RobustnessResult, label: str) -> np.ndarray:
    return np.asarray(attack_row(result, label).labels, np.int64)


def robust(result: RobustnessResult, label: str, y: np.ndarray, n: int | None = None,
           rejected_ok: bool = False) -> np.ndarray:
    """Per image (the first ``n``): the defense labelled attack ``label``'s example correctly
    ("clean": the clean image), or rejected it if ``rejected_ok``."""
    labels = np.asarray(result.clean_labels) if label == "clean" else _labels(result, label)
    labels, y = labels[:n], np.asarray(y)[:n]
    return (labels == y) | (rejected_ok & (labels == REJECTED))


def accuracies(result: RobustnessResult, y: np.ndarray, n: int | None = None,
               labels: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy (%) clean and under each attack row (or those in ``labels``), on the first
    ``n`` images (default all)."""
    names = labels if labels is not None else [r.label for r in result.rows if not r.cumulative]
    return {name: 100.0 * float(robust(result, name, y, n).mean()) for name in ("clean", *names)}


def survivors(verdicts: Sequence[np.ndarray]) -> np.ndarray:
    """Per image of the images every verdict array (True = withstood) covers (their common
    prefix): True where every one of them left it standing."""
    n = min(len(v) for v in verdicts)
    return np.logical_and.reduce([np.asarray(v, bool)[:n] for v in verdicts])


def worst_case(verdicts: Sequence[np.ndarray]) -> float:
    """Percent of images every verdict array (True = withstood) leaves standing, over the
    images they all cover (their common prefix; ``survivors``)."""
    return 100.0 * float(survivors(verdicts).mean())


def autoattack_summary(result: RobustnessResult, label: str, y: np.ndarray) -> dict:
    """JSON-able numbers of one AutoAttack row of ``result``: robust and clean accuracy (%),
    the points each component broke (fooled after every component before it failed), the
    points only Square broke, the gradient-masking flag, seconds and the parameters."""
    row = next(r for r in result.rows if r.label == label and not r.cumulative)
    parts = [r for r in result.rows if r.cumulative and r.label.startswith(f"{label}/")]
    broken, before = {}, np.asarray(result.clean_labels) == y
    for part in parts:  # components in the order they ran, each on the points left standing
        labels = np.asarray(part.labels)
        fooled = (labels != y) & (labels != REJECTED)
        broken[part.attack] = int(np.sum(before & fooled))
        before = before & ~fooled
    return {
        "n": result.n,
        "clean": 100.0 * float(robust(result, "clean", y).mean()),
        "robust": 100.0 * row.accuracy,
        "broken_by": broken,
        "square_only": broken.get("square", 0),
        "gradient_masking": result.gradient_masking_flags.get(label),
        "seconds": row.seconds,
        "params": {k: row.params.get(k) for k in ("version", "norm", "eps", "steps", "queries",
                                                   "eot_iter", "n_target_classes")},
    }


def autoattack(*, eps: float, norm: str, version: str, steps: int | None, queries: int | None,
               seed: int, batch_size: int, eot_samples: int,
               stochastic: bool = False) -> AutoAttack:
    """An experiment's AutoAttack at its preset's budget (``steps`` / ``queries`` None: the
    version's). ``stochastic``: the "rand" version for a randomized defense (APGD-CE +
    APGD-DLR averaging each step over draws of the defense); under the quick version it
    runs 20 steps and ``eot_samples`` draws (the standard rand version: 100 x 20)."""
    eot_iter = None
    if stochastic:
        quick = version == "quick"
        steps = steps or (20 if quick else None)
        eot_iter = eot_samples if quick else None
        version, queries = "rand", None
    return AutoAttack(eps=eps, norm=norm, version=version, steps=steps, queries=queries,
                      eot_iter=eot_iter, seed=seed, batch_size=batch_size)


def masking_text(flag: bool | None) -> str:
    """AutoAttack's gradient-masking flag in words (None: no Square ran)."""
    if flag is None:
        return "no Square run (no masking check)"
    if flag:
        return "GRADIENT MASKING suspected: Square broke points every gradient attack failed on"
    return "no sign of gradient masking (Square broke no point the gradient attacks missed)"


__all__ = ["accuracies", "attack_row", "autoattack", "autoattack_summary", "cached_reads",
           "evaluate", "masking_text", "robust", "survivors", "worst_case"]
