"""evaluate_robustness: clean accuracy, accuracy under each attack, norms, time.

``evaluate_robustness(predict, dataset, attacks)`` attacks every example with
every attack (on the true labels) and scores ``predict`` on the result:
accuracy, attack success rate (clean-correct examples the attack turns into a
wrong, non-rejected answer), mean and max Linf and L2 perturbation, and the
generation time; plus the worst case over all attacks (an example counts as
robust only if no attack fooled it). ``predict`` is either a callable images
-> logits (attacked directly, white-box) or a ``Defense`` answering labels with
``REJECTED`` = -1, attacked through ``attack_model`` (e.g. the bare classifier
for grey-box, or ``bpda``/``eot`` compositions for adaptive attacks). For a
defense, a rejected adversarial example counts as defended in
``defense_accuracy`` (FM-Defense's final accuracy) but not in ``accuracy``.

With ``strategy`` (or a current ``tf.distribute`` strategy) the attacks, cached
sets (``cache_dir``) included, run data-parallel over its replicas (see
``tfdefense.attacks.base``; the results do not depend on the number of
replicas), and so do the predictions of a callable ``predict``, which must then
be traceable by ``tf.function`` (TensorFlow ops, no numpy). A ``Defense``'s
``predict`` answers on its own.

Results are data: ``RobustnessResult.to_dict()/to_json()/to_markdown()``.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import evaluate_robustness, get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> y = np.arange(8) % 10
    >>> result = evaluate_robustness(model, (x, y), [get_attack("fgsm", eps=0.1)], verbose=False)
    >>> [row.attack for row in result.rows]
    ['fgsm']
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.attacks.adversarial_set import AdversarialSet, model_fingerprint
from tfdefense.attacks.autoattack import AutoAttack
from tfdefense.attacks.base import (
    Attack,
    check_model_output,
    get_attack,
    predict_logits,
    replica_strategy,
)
from tfdefense.attacks.presets import PRESETS, get_preset
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.validation import check_images, check_labels, check_positive_int


@dataclass
class AttackResult:
    """One attack's row (fractions in [0, 1], norms in pixel units of [0, 1] images)."""

    label: str
    attack: str
    params: dict
    accuracy: float
    defense_accuracy: float
    rejection_rate: float
    success_rate: float
    linf_mean: float
    linf_max: float
    l2_mean: float
    l2_max: float
    seconds: float
    images_per_second: float
    #: AutoAttack component rows: ``accuracy`` is the robust accuracy after this
    #: component and the ones before it (the ensemble's standard log), not alone
    cumulative: bool = False


@dataclass
class RobustnessResult:
    """Clean accuracy, one ``AttackResult`` per attack, and the worst case over them."""

    n: int
    clean_accuracy: float
    clean_rejection_rate: float
    rows: list[AttackResult] = field(default_factory=list)
    worst_case_accuracy: float | None = None
    #: AutoAttack: True when Square broke points every gradient attack failed on
    gradient_masking: bool | None = None
    #: AutoAttack: the standard per-component report table(s)
    autoattack_tables: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_markdown(self) -> str:
        """A Markdown table: one row per attack, percentages with one decimal."""
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        # a component that ran on no remaining point (all broken before it) has no speed
        speed = lambda r: f"{r.images_per_second:.1f}" if r.seconds >= 0.05 else "–"  # noqa: E731
        lines = [
            f"Clean accuracy: {pct(self.clean_accuracy)}% on {self.n} examples"
            + (f" (rejected {pct(self.clean_rejection_rate)}%)" if self.clean_rejection_rate else ""),
            "",
            "| attack | accuracy (%) | defense acc. (%) | success rate (%) | Linf mean / max "
            "| L2 mean / max | time (s) | images/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.label}{' (cum.)' if r.cumulative else ''} | {pct(r.accuracy)} | "
                f"{pct(r.defense_accuracy)} | "
                f"{pct(r.success_rate)} | {r.linf_mean:.4f} / {r.linf_max:.4f} | "
                f"{r.l2_mean:.3f} / {r.l2_max:.3f} | {r.seconds:.1f} | {speed(r)} |"
            )
        if self.worst_case_accuracy is not None:
            lines.append(f"| worst case | {pct(self.worst_case_accuracy)} | | | | | | |")
        if any(r.cumulative for r in self.rows):
            lines += ["", "Rows marked (cum.) are AutoAttack components: robust accuracy after "
                          "that component and the ones before it."]
        for table in self.autoattack_tables:
            lines += ["", table]
        if self.gradient_masking and not self.autoattack_tables:
            lines += ["", "**Gradient masking suspected**: the gradient-free Square attack broke "
                          "points that every gradient attack failed on."]
        return "\n".join(lines)


def _arrays(dataset, max_examples):
    if isinstance(dataset, tuple | list) and len(dataset) == 2:
        x, y = dataset
    elif isinstance(dataset, tf.data.Dataset):
        spec = dataset.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"dataset: expected elements (images, labels), got {spec}")
        if spec[0].shape.rank == 3:
            dataset = dataset.batch(256)
        if max_examples is not None:
            dataset = dataset.unbatch().take(max_examples).batch(256)
        xs, ys = zip(*((a.numpy(), b.numpy()) for a, b in dataset), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
    else:
        raise ValueError(
            f"dataset: expected a tf.data.Dataset of (images, labels) or an (x, y) tuple, "
            f"got {type(dataset).__name__}"
        )
    if max_examples is not None:
        x, y = x[:max_examples], y[:max_examples]
    return check_images(x, "dataset images"), y


def _attacks(attacks, data: str, quick: bool) -> dict[str, Attack]:
    if isinstance(attacks, str):
        if attacks in PRESETS:
            return get_preset(attacks, data=data, quick=quick)
        attacks = [attacks]
    if isinstance(attacks, Attack):
        attacks = [attacks]
    if isinstance(attacks, Mapping):
        items = list(attacks.items())
    elif isinstance(attacks, Sequence):
        items = [(a if isinstance(a, str) else a.label, a) for a in attacks]
    else:
        raise ValueError(f"attacks: expected a preset name, attacks or names, got {attacks!r}")
    out: dict[str, Attack] = {}
    for label, a in items:
        a = get_attack(a) if isinstance(a, str) else a
        if not isinstance(a, Attack):
            raise ValueError(f"attacks: expected Attack objects or names, got {a!r}")
        key, k = label, 2
        while key in out:
            key, k = f"{label}_{k}", k + 1
        out[key] = a
    if not out:
        raise ValueError("attacks: expected at least one attack, got none")
    return out


def evaluate_robustness(
    predict,
    dataset,
    attacks,
    *,
    attack_model=None,
    max_examples: int | None = None,
    data: str | None = None,
    quick: bool = False,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    verbose: bool = True,
    strategy: tf.distribute.Strategy | None = None,
) -> RobustnessResult:
    """Score ``predict`` on clean and attacked examples.

    Args:
        predict: a callable images -> logits, or a ``Defense`` (labels, REJECTED = -1).
        dataset: ``tf.data.Dataset`` of (images, labels), batched or not, or ``(x, y)``.
        attacks: a preset name (``cdvae_detection``, ``cdvae_defense``, ``fm_defense``,
            ``autoattack``, ``autoattack_quick``, ``autoattack_l2``, ``autoattack_rand``, ...),
            an attack name, an ``Attack``, a list of those, or ``{label: Attack}``. An
            ``AutoAttack`` adds one row per component (robust accuracy after it, marked
            ``cumulative``), one row for the ensemble, its report table and the
            gradient-masking flag.
        attack_model: the callable the attacks run against; default ``predict``
            (required when ``predict`` is a ``Defense``).
        max_examples: evaluate on the first ``max_examples`` examples only.
        data: budget scale of a preset ("cifar10" or "mnist"); default "mnist"
            for 28x28x1 images, else "cifar10".
        quick: cheaper preset settings (see ``presets``).
        cache_dir: store each attack's examples as an ``AdversarialSet`` under
            ``cache_dir/<label>`` and reuse them when nothing changed.
        fingerprint: the attacked model's fingerprint for the cache (needed when
            ``attack_model`` is a plain function).
        verbose: tqdm progress over attacks and batches.
        strategy: a ``tf.distribute`` strategy to run the attacks and the
            predictions over (default the current one, if any; see above).
    """
    strategy = replica_strategy(strategy)
    if max_examples is not None:
        check_positive_int(max_examples, "max_examples")
    x, y = _arrays(dataset, max_examples)
    is_defense = isinstance(predict, Defense)
    if not is_defense and not callable(predict):
        raise ValueError(f"predict: expected a callable images -> logits or a Defense, got {predict!r}")
    if attack_model is None:
        if is_defense:
            raise ValueError(
                "attack_model: a Defense answers labels, not logits; pass the callable to "
                "attack (e.g. its classifier, or a bpda/eot composition of the whole defense)"
            )
        attack_model = predict
    if data is None:
        data = "mnist" if x.shape[1:] == (28, 28, 1) else "cifar10"
    attack_map = _attacks(attacks, data, quick)

    def labels_of(images: np.ndarray) -> np.ndarray:
        if is_defense:
            return predict.predict(images)
        logits = predict_logits(predict, images, 256, strategy)  # 256 per model call (replica)
        check_model_output(logits, len(images))
        return np.argmax(logits, axis=1).astype(np.int64)

    if not is_defense:
        num_classes = check_model_output(predict(tf.constant(x[:2])), min(2, len(x)))
        y = check_labels(y, num_classes, "dataset labels", n=len(x))
    else:
        y = check_labels(y, int(np.max(y)) + 1 if len(y) else 1, "dataset labels", n=len(x))
    clean_pred = labels_of(x)
    clean_correct = clean_pred == y
    result = RobustnessResult(
        n=len(x),
        clean_accuracy=float(clean_correct.mean()),
        clean_rejection_rate=float(np.mean(clean_pred == REJECTED)),
    )
    robust = clean_correct.copy()
    for label, attack in tqdm(attack_map.items(), desc="attacks", disable=not verbose):
        start = time.perf_counter()
        if isinstance(attack, AutoAttack) and cache_dir is None:
            run = attack.run(x, y, model=attack_model, labels_of=labels_of, verbose=verbose,
                             strategy=strategy)
            _autoattack_rows(result, label, attack, run, x, y, clean_correct)
            final = run.pred_after[-1] if run.components else run.clean_pred
            robust &= ~((final != y) & (final != REJECTED))
            continue
        if cache_dir is not None:
            fp = fingerprint or model_fingerprint(attack_model)
            x_adv = AdversarialSet.create(attack, attack_model, x, y, path=Path(cache_dir) / label,
                                          fingerprint=fp, verbose=verbose, strategy=strategy).x_adv
        else:
            _, xv, yv, _ = attack.prepare(x, y, attack_model)
            batches = attack.iter_batches(attack_model, xv, yv, strategy=strategy, desc=label,
                                          verbose=verbose, leave=False)
            x_adv = np.concatenate([adv for _, adv in batches])
        seconds = time.perf_counter() - start
        pred = labels_of(x_adv)
        delta = (x_adv - x).reshape(len(x), -1)
        linf = np.abs(delta).max(axis=1)
        l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))
        fooled = (pred != y) & (pred != REJECTED)
        robust &= ~fooled
        n_correct = max(int(clean_correct.sum()), 1)
        result.rows.append(AttackResult(
            label=label,
            attack=attack.name,
            params={k: v for k, v in attack.get_config().items() if k != "verbose"},
            accuracy=float(np.mean(pred == y)),
            defense_accuracy=float(np.mean((pred == y) | (pred == REJECTED))),
            rejection_rate=float(np.mean(pred == REJECTED)),
            success_rate=float((fooled & clean_correct).sum() / n_correct),
            linf_mean=float(linf.mean()),
            linf_max=float(linf.max()),
            l2_mean=float(l2.mean()),
            l2_max=float(l2.max()),
            seconds=seconds,
            images_per_second=len(x) / seconds if seconds > 0 else float("inf"),
        ))
    result.worst_case_accuracy = float(robust.mean())
    return result


def _autoattack_rows(result, label, attack, run, x, y, clean_correct) -> None:
    """Append an AutoAttack run to ``result``: a row per component, one for the ensemble."""
    n_correct = max(int(clean_correct.sum()), 1)
    delta = (run.x_adv - x).reshape(len(x), -1)
    linf = np.abs(delta).max(axis=1)
    l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))
    params = {k: v for k, v in attack.get_config().items() if k != "verbose"}

    def row(name, attack_name, pred, mask, seconds, cumulative):
        fooled = (pred != y) & (pred != REJECTED)
        return AttackResult(
            label=name, attack=attack_name, params=params,
            accuracy=float(np.mean(pred == y)),
            defense_accuracy=float(np.mean((pred == y) | (pred == REJECTED))),
            rejection_rate=float(np.mean(pred == REJECTED)),
            success_rate=float((fooled & clean_correct).sum() / n_correct),
            linf_mean=float(linf[mask].mean()) if mask.any() else 0.0,
            linf_max=float(linf[mask].max()) if mask.any() else 0.0,
            l2_mean=float(l2[mask].mean()) if mask.any() else 0.0,
            l2_max=float(l2[mask].max()) if mask.any() else 0.0,
            seconds=seconds,
            images_per_second=len(x) / seconds if seconds > 0 else float("inf"),
            cumulative=cumulative,
        )

    for i, name in enumerate(run.components):
        result.rows.append(row(f"{label}/{name}", name, run.pred_after[i], run.broken_by == i,
                               run.seconds[i], True))
    final = run.pred_after[-1] if run.components else run.clean_pred
    result.rows.append(row(label, attack.name, final, np.ones(len(x), bool), sum(run.seconds),
                           False))
    result.autoattack_tables.append(run.to_markdown())
    if run.gradient_masking is not None:
        result.gradient_masking = bool(result.gradient_masking) or run.gradient_masking
