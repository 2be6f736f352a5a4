"""evaluate_robustness: clean accuracy, accuracy under each attack, per-norm worst case, claim.

``evaluate_robustness(predict, dataset, attacks)`` attacks every example with
every attack (on the true labels) and scores ``predict`` on the result:
accuracy, attack success rate (clean-correct examples the attack turns into a
wrong, non-rejected answer), mean and max Linf and L2 perturbation, and the
generation time. ``predict`` is either a callable images -> logits (attacked
directly, white-box) or a ``Defense`` (labels with ``REJECTED`` = -1). For a
defense, a rejected adversarial example counts as defended in
``defense_accuracy`` (FM-Defense's final accuracy) but not in ``accuracy``.

**Attacking a Defense.** With no ``attack_model`` the attacks run through the
defense's own attack surface: ``defense.logits``, averaged over
``eot_samples`` draws (``attacks.eot``) when ``defense.stochastic``; an
``AutoAttack`` of the ``rand`` version gets the raw ``logits`` (it averages
gradients itself). A ``DetectorAwarePGD`` always gets the defense itself.
``attack_model`` (a callable) replaces the logits path for every other attack,
e.g. the bare classifier for a grey-box evaluation; an AutoAttack then judges
success by that model alone (the attacker does not query the defense) and its
examples are read by the defense in one row.

**Reading a set.** The defense's (labels, decisions) on each image set (the clean
images, each attack's examples) come from ``predict.predict_with_decisions``, or from
``read(label, images)`` when given: a defense whose reading is costly (FM-Defense's
morph search, Defense-GAN's projection) can then read each set once through a cache
the caller keeps (the evaluator knows no run or cache of the caller's). An AutoAttack
judged by the defense keeps the run's labels and reads its examples for the
decisions. ``targets`` gives a targeted attack its target classes (default the true
labels, an untargeted attack's); its row is scored on the true labels.

**Caching.** With ``cache_dir`` each attack's examples are stored under
``cache_dir/<label>`` with the attacked model's fingerprint and reused while
nothing changed: an ``AdversarialSet`` per batch, an AutoAttack run whole (its
components run on the points left standing). Every row keeps the per-image
labels (``AttackResult.labels``), so worst cases can be taken over the rows of
several evaluations on the same images.

**The adaptive evaluation** (``preset="adaptive"``, the default when neither
``attacks`` nor ``preset`` is given): PGD-Linf, PGD-L2 and C&W-Linf through the
logits, their detector-aware versions for a defense that detects, and
AutoAttack in Linf and L2 (the ``rand`` version for a stochastic defense); see
``presets``.

**Worst case per norm.** Every attack belongs to a norm group (``threat_norm``):
"linf" or "l2" for an eps-bounded attack of that norm, "other" for unbounded or
perceptual ones (DeepFool without eps, StAdv, ReColor, JPEG). An image counts
as robust for a group only if it was classified correctly clean and no attack
of that group fooled it (fooled = a wrong label that is not a rejection);
``worst_case[group]`` is the fraction of robust images, ``robust[group]`` the
per-image flags. ``worst_case_accuracy`` is the same over every attack whatever
its norm. ``claim(norm)`` gives one norm's result in RobustBench's claim format.

With ``strategy`` (or a current ``tf.distribute`` strategy) the attacks, cached
sets (``cache_dir``) included, run data-parallel over its replicas (see
``tfdefense.attacks.base``; the results do not depend on the number of
replicas), and so do the predictions of a callable ``predict``, which must then
be traceable by ``tf.function`` (TensorFlow ops, no numpy). A ``Defense``'s
``predict`` answers on its own.

Results are data: ``RobustnessResult.to_dict()/to_json()/to_markdown()/claim()``.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import evaluate_robustness, get_attack
    >>> from tfdefense.defend import ClassifierDefense
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> y = np.arange(8) % 10
    >>> result = evaluate_robustness(model, (x, y), [get_attack("fgsm", eps=0.1)], verbose=False)
    >>> [(row.attack, row.norm) for row in result.rows], sorted(result.worst_case)
    ([('fgsm', 'linf')], ['linf'])

    A ``Defense`` is attacked through its ``logits``; ``preset="adaptive"`` (the
    default) runs the full adaptive evaluation, here two of its attacks:

    >>> defense = ClassifierDefense(model)
    >>> attacks = [get_attack("pgd_linf", eps=0.3, steps=2), get_attack("pgd_l2", eps=2.0, steps=2)]
    >>> result = evaluate_robustness(defense, (x, y), attacks, verbose=False)
    >>> sorted(result.worst_case), len(result.robust["l2"])
    (['l2', 'linf'], 8)
    >>> claim = result.claim("linf")
    >>> claim["threat_model"], claim["eps"], claim["n"], sorted(claim["versions"])
    ('Linf', '0.3', 8, ['keras', 'tensorflow', 'tfdefense'])
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.attacks.adaptive import eot
from tfdefense.attacks.adversarial_set import (
    AdversarialSet,
    atomic_savez,
    atomic_write_json,
    data_fingerprint,
    model_fingerprint,
)
from tfdefense.attacks.autoattack import AutoAttack, AutoAttackRun
from tfdefense.attacks.base import (
    Attack,
    check_model_output,
    get_attack,
    predict_logits,
    replica_strategy,
)
from tfdefense.attacks.detector_aware import DetectorAwarePGD
from tfdefense.attacks.presets import PRESETS, get_preset
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.profiling import phase
from tfdefense.validation import check_images, check_labels, check_number, check_positive_int

#: the norm groups a worst case is taken over (``threat_norm``)
NORM_GROUPS = ("linf", "l2", "other")
#: RobustBench's names of the threat models
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "other": "other"}
#: EOT draws of a stochastic defense's logits (``eot_samples=None``; quick: ``QUICK_EOT``)
DEFAULT_EOT = 10
QUICK_EOT = 5


def threat_norm(attack: Attack) -> str:
    """The norm group of ``attack``: "linf" / "l2" for an eps-bounded attack of that norm,
    "other" for an unbounded or perceptual one (DeepFool without eps, StAdv, ReColor, JPEG).

    Example:
        >>> from tfdefense.attacks import get_attack
        >>> [threat_norm(get_attack(n)) for n in ("pgd_l2", "deepfool_linf", "stadv")]
        ['l2', 'other', 'other']
    """
    norm = getattr(attack, "norm", None)
    if norm in ("linf", "l2") and "eps" in attack.params and getattr(attack, "eps", None) is not None:
        return norm
    return "other"


def _percent(value: float | None) -> str | None:
    """RobustBench's accuracy text: a percentage with two decimals."""
    return None if value is None else f"{100 * value:.2f}"


def _eps_text(values: Sequence[float]) -> str:
    """RobustBench's eps text: "8/255" for multiples of 1/255 below 1, else the number."""
    texts = []
    for eps in sorted(set(values)):
        k = eps * 255
        texts.append(f"{round(k)}/255" if eps < 1 and round(k) >= 1 and abs(k - round(k)) < 1e-6
                     else f"{eps:g}")
    return ", ".join(texts)


def _versions() -> dict[str, str]:
    import keras

    from tfdefense import __version__

    return {"tfdefense": __version__, "tensorflow": tf.__version__, "keras": keras.__version__}


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
    #: the attack's norm group (``threat_norm``): "linf", "l2" or "other"
    norm: str = ""
    #: per image, the label ``predict`` gave its attacked version (``REJECTED`` = -1): the
    #: row's verdicts, for worst cases over rows of several evaluations
    labels: list[int] = field(default_factory=list)
    #: per image, what the defense did with the attacked version (``tfdefense.decisions``:
    #: 0 accepted, 1 purified, 2 rejected; all 0 for a plain model); empty for AutoAttack's
    #: component rows, which keep the labels of its run only
    decisions: list[int] = field(default_factory=list)


@dataclass
class RobustnessResult:
    """Clean accuracy, one ``AttackResult`` per attack, and the worst cases over them."""

    n: int
    clean_accuracy: float
    clean_rejection_rate: float
    rows: list[AttackResult] = field(default_factory=list)
    #: fraction of images no attack fooled, whatever its norm (see ``worst_case``)
    worst_case_accuracy: float | None = None
    #: AutoAttack: True when Square broke points every gradient attack failed on
    gradient_masking: bool | None = None
    #: AutoAttack: the standard per-component report table(s)
    autoattack_tables: list[str] = field(default_factory=list)
    #: what was evaluated: the defense's class name or the model's name
    model: str = ""
    #: per norm group: fraction of images correct clean that no attack of the group fooled
    worst_case: dict[str, float] = field(default_factory=dict)
    #: per norm group, per image: True when correct clean and no attack of the group fooled it
    robust: dict[str, list[bool]] = field(default_factory=dict)
    #: per norm group: the budgets (eps) of its attacks
    eps: dict[str, list[float]] = field(default_factory=dict)
    #: per AutoAttack label: its gradient-masking flag (None when no Square ran)
    gradient_masking_flags: dict[str, bool | None] = field(default_factory=dict)
    #: per norm group: the robust accuracy the paper reports, if given
    reported: dict[str, float] = field(default_factory=dict)
    #: per attack label: its seed
    seeds: dict[str, int] = field(default_factory=dict)
    #: tfdefense, tensorflow and keras versions of the run
    versions: dict[str, str] = field(default_factory=dict)
    #: per image, the label ``predict`` gave the clean image (``REJECTED`` = -1)
    clean_labels: list[int] = field(default_factory=list)
    #: per image, the defense's decision on the clean image (see ``AttackResult.decisions``)
    clean_decisions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1, default=str)
        if path is not None:
            Path(path).write_text(text)
        return text

    def norms(self) -> list[str]:
        """The norm groups evaluated, in ``NORM_GROUPS`` order."""
        return [g for g in NORM_GROUPS if g in self.worst_case]

    def autoattack_accuracy(self, norm: str) -> float | None:
        """Robust accuracy under the AutoAttack ensemble(s) of ``norm`` (the lowest if several),
        None when no AutoAttack of that norm ran."""
        values = [r.accuracy for r in self.rows
                  if r.attack == "autoattack" and not r.cumulative and r.norm == norm]
        return min(values) if values else None

    def claim(self, norm: str | None = None, reported: float | None = None,
              **fields: Any) -> dict[str, Any]:
        """One norm's result in RobustBench's claim format (``model_info/<data>/<threat>/``).

        Accuracies are percentages as text with two decimals, as RobustBench writes them.
        Beside RobustBench's ``clean_acc``, ``reported`` and ``autoattack_acc``:
        ``worst_case_acc`` (the per-image worst case over every attack of the norm),
        ``unreliable`` (True when the worst case is below AutoAttack's accuracy or
        AutoAttack flags gradient masking), ``gradient_masking``, ``attacks``, ``n``,
        ``seeds`` and ``versions``.

        Args:
            norm: "linf", "l2" or "other"; default the first evaluated of those.
            reported: the paper's robust accuracy (a fraction); default the one given to
                ``evaluate_robustness``, if any.
            **fields: more entries (``name``, ``dataset``, ``link``, ``venue``, ...); they
                override the computed ones.
        """
        norms = self.norms()
        if not norms:
            raise ValueError("claim: the result has no attack rows to claim")
        norm = norms[0] if norm is None else norm
        if norm not in norms:
            raise ValueError(f"norm: expected one of the evaluated norms {norms}, got {norm!r}")
        if reported is None:
            reported = self.reported.get(norm)
        else:
            check_number(reported, "reported", low=0.0, high=1.0)
        labels = [r.label for r in self.rows if r.norm == norm and not r.cumulative]
        flags = [self.gradient_masking_flags.get(label) for label in labels
                 if label in self.gradient_masking_flags]
        masking = None if all(f is None for f in flags) else any(bool(f) for f in flags)
        autoattack = self.autoattack_accuracy(norm)
        worst = self.worst_case[norm]
        out = {
            "name": self.model,
            "threat_model": THREAT_MODELS[norm],
            "eps": _eps_text(self.eps.get(norm, [])) or None,
            "n": self.n,
            "clean_acc": _percent(self.clean_accuracy),
            "reported": _percent(reported),
            "autoattack_acc": _percent(autoattack),
            "worst_case_acc": _percent(worst),
            "unreliable": bool(masking) or (autoattack is not None and worst < autoattack),
            "gradient_masking": masking,
            "attacks": labels,
            "seeds": {label: self.seeds[label] for label in labels if label in self.seeds},
            "versions": dict(self.versions),
        }
        out.update(fields)
        return out

    def claims(self, **fields: Any) -> dict[str, dict[str, Any]]:
        """``claim(norm)`` of every evaluated norm, keyed by RobustBench's threat model."""
        return {THREAT_MODELS[n]: self.claim(n, **fields) for n in self.norms()}

    def to_markdown(self) -> str:
        """A Markdown table: one row per attack, then the worst case of each norm."""
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        # a component that ran on no remaining point (all broken before it) has no speed
        speed = lambda r: f"{r.images_per_second:.1f}" if r.seconds >= 0.05 else "–"  # noqa: E731
        lines = [
            f"Clean accuracy: {pct(self.clean_accuracy)}% on {self.n} examples"
            + (f" (rejected {pct(self.clean_rejection_rate)}%)" if self.clean_rejection_rate else ""),
            "",
            "| attack | norm | accuracy (%) | defense acc. (%) | success rate (%) | Linf mean / max "
            "| L2 mean / max | time (s) | images/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.label}{' (cum.)' if r.cumulative else ''} | {r.norm} | {pct(r.accuracy)} | "
                f"{pct(r.defense_accuracy)} | "
                f"{pct(r.success_rate)} | {r.linf_mean:.4f} / {r.linf_max:.4f} | "
                f"{r.l2_mean:.3f} / {r.l2_max:.3f} | {r.seconds:.1f} | {speed(r)} |"
            )
        for norm in self.norms():
            lines.append(f"| **worst case ({norm})** | {norm} | {pct(self.worst_case[norm])} "
                         "| | | | | | |")
        if self.worst_case:
            lines += ["", "Worst case of a norm: an image counts as robust only if it is classified "
                          "correctly clean and no attack of that norm (the rows above, "
                          "detector-aware ones included) fooled it (a wrong label that is not a "
                          "rejection)."]
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


def _attacks(attacks, data: str, quick: bool, detects: bool, stochastic: bool) -> dict[str, Attack]:
    if isinstance(attacks, str):
        if attacks in PRESETS:
            return get_preset(attacks, data=data, quick=quick, detects=detects,
                              stochastic=stochastic)
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


def _targets(targets, attack_map: Mapping[str, Attack], num_classes: int,
             n: int) -> dict[str, np.ndarray]:
    """``targets`` checked: labels of targeted attacks of ``attack_map`` (no AutoAttack), each
    the classes of the first ``n`` images (``max_examples``)."""
    out = {}
    for label, value in (targets or {}).items():
        attack = attack_map.get(label)
        if attack is None or isinstance(attack, AutoAttack) or not getattr(attack, "targeted",
                                                                            False):
            raise ValueError(f"targets: {label!r} is not a targeted attack of the evaluation; "
                             f"expected labels of targeted attacks among {list(attack_map)}")
        out[label] = check_labels(np.asarray(value)[:n], num_classes, f"targets[{label!r}]", n=n)
    return out


def _canonical_keras(obj: Any) -> dict[str, Any]:
    """A Keras object as its registered name and ``get_config()`` (without the ``name`` Keras
    numbers per process, which does not change what the object computes)."""
    config = {k: v for k, v in obj.get_config().items() if k != "name"}
    return {"keras": keras.saving.get_registered_name(type(obj)), "config": config}


def _is_keras_object(value: Any) -> bool:
    """A Keras class's instance with a config: Keras' own or one registered for serialization."""
    cls = type(value)
    if not callable(getattr(value, "get_config", None)):
        return False
    return cls.__module__.startswith("keras") or \
        keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls


def _canonical(value: Any, where: str = "config") -> Any:
    """``value`` as plain JSON values that print the same in every process: numpy scalars as
    Python numbers, arrays and tensors as dtype, shape and SHA-256 of their bytes, tuples and
    sets as lists, Keras objects as ``_canonical_keras``, functions by module and qualified
    name. ``ValueError`` for anything else (whose ``repr`` could hold a memory address)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | tf.Tensor | tf.Variable | keras.Variable):
        arr = np.ascontiguousarray(np.asarray(value))
        return {"ndarray": str(arr.dtype), "shape": list(arr.shape),
                "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    if isinstance(value, tf.dtypes.DType):
        return value.name
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_canonical(v, where) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if _is_keras_object(value):
        return _canonical(_canonical_keras(value), where)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    raise ValueError(f"{where}: cannot fingerprint a {type(value).__name__} in a defense's "
                     "get_config(); give JSON values, arrays or Keras objects")


def defense_config_json(defense: Defense) -> str:
    """``defense.get_config()`` as canonical JSON (``_canonical``, keys sorted): the same text
    for the same configuration in every process."""
    return json.dumps(_canonical(defense.get_config()), sort_keys=True)


def defense_weights_fingerprint(defense: Defense) -> str:
    """SHA-256 of what a defense's answers are made from: its component weights, its fitted
    state and its configuration (``defense_config_json``); what its cached attack sets and
    readings are keyed by, so two defenses that differ in one hyperparameter (FM-Defense's ρ,
    η or EOT morphs, a grey-box defense's sampling) never share them."""
    arrays = [np.asarray(v) for _, v in sorted(defense.state().items())]
    weights = model_fingerprint(*defense.components().values(), *arrays)
    return hashlib.sha256(f"{weights}:{defense_config_json(defense)}".encode()).hexdigest()


def _model_name(predict) -> str:
    if isinstance(predict, Defense):
        return type(predict).__name__
    return str(getattr(predict, "name", None) or getattr(predict, "__name__", type(predict).__name__))


def evaluate_robustness(
    predict,
    dataset,
    attacks=None,
    *,
    preset: str | None = None,
    attack_model=None,
    max_examples: int | None = None,
    data: str | None = None,
    quick: bool = False,
    cache_dir: str | Path | None = None,
    fingerprint: str | None = None,
    verbose: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    eot_samples: int | None = None,
    reported: Mapping[str, float] | None = None,
    targets: Mapping[str, Any] | None = None,
    read: Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> RobustnessResult:
    """Score ``predict`` on clean and attacked examples; worst case per norm.

    Args:
        predict: a callable images -> logits, or a ``Defense`` (labels, REJECTED = -1).
        dataset: ``tf.data.Dataset`` of (images, labels), batched or not, or ``(x, y)``.
        attacks: a preset name (``adaptive``, ``cdvae_detection``, ``cdvae_defense``,
            ``fm_defense``, ``autoattack``, ``autoattack_quick``, ``autoattack_l2``,
            ``autoattack_rand``, ...), an attack name, an ``Attack``, a list of those, or
            ``{label: Attack}``. An ``AutoAttack`` adds one row per component (robust
            accuracy after it, marked ``cumulative``), one row for the ensemble, its report
            table and its gradient-masking flag. Default: ``preset``.
        preset: a preset name, the same as giving it as ``attacks``; with neither,
            ``"adaptive"``. The ``adaptive`` preset adapts to a ``Defense`` (its
            ``detects`` and ``stochastic``; see ``presets``).
        attack_model: the callable every attack but ``DetectorAwarePGD`` runs against;
            default ``predict`` for a callable, and for a ``Defense`` its ``logits``
            (with EOT when stochastic; see the module docstring).
        max_examples: evaluate on the first ``max_examples`` examples only.
        data: budget scale of a preset ("cifar10" or "mnist"); default "mnist"
            for 28x28x1 images, else "cifar10".
        quick: cheaper preset settings (see ``presets``) and ``QUICK_EOT`` EOT draws.
        cache_dir: store each attack's examples as an ``AdversarialSet`` under
            ``cache_dir/<label>`` and reuse them when nothing changed.
        fingerprint: the attacked model's fingerprint for the cache (needed when
            ``attack_model`` is a plain function; a ``Defense``'s own is its weights
            and state).
        verbose: tqdm progress over attacks and batches.
        strategy: a ``tf.distribute`` strategy to run the attacks and the
            predictions over (default the current one, if any; see above).
        eot_samples: draws of a stochastic defense's ``logits`` averaged per attack
            step (``attacks.eot``); default ``DEFAULT_EOT`` (``QUICK_EOT`` when quick);
            1: the logits themselves, one draw per call (e.g. ``FMDefense.logits``,
            which averages its own morphs).
        reported: the paper's robust accuracy per norm group (fractions), for ``claim``.
        targets: per attack label, the target classes (N,) of a targeted attack (not
            an AutoAttack); its row is still scored on the true labels.
        read: ``(label, images) -> (labels, decisions)`` in place of
            ``predict.predict_with_decisions`` for every set read ("clean" for the clean
            images), e.g. a cached reading of a costly defense (see above).
    """
    strategy = replica_strategy(strategy)
    if max_examples is not None:
        check_positive_int(max_examples, "max_examples")
    if attacks is not None and preset is not None:
        raise ValueError(f"preset: give attacks or a preset, not both (got attacks={attacks!r}, "
                         f"preset={preset!r})")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if attacks is None:
        attacks = preset or "adaptive"
    x, y = _arrays(dataset, max_examples)
    is_defense = isinstance(predict, Defense)
    if not is_defense and not callable(predict):
        raise ValueError(f"predict: expected a callable images -> logits or a Defense, got {predict!r}")
    reported = dict(reported or {})
    for norm, value in reported.items():
        if norm not in NORM_GROUPS:
            raise ValueError(f"reported: expected norms among {NORM_GROUPS}, got {norm!r}")
        check_number(value, f"reported[{norm!r}]", low=0.0, high=1.0)
    stochastic = bool(is_defense and predict.stochastic)
    if eot_samples is None:
        eot_samples = QUICK_EOT if quick else DEFAULT_EOT
    eot_samples = check_positive_int(eot_samples, "eot_samples")
    if data is None:
        data = "mnist" if x.shape[1:] == (28, 28, 1) else "cifar10"
    attack_map = _attacks(attacks, data, quick, bool(is_defense and predict.detects), stochastic)

    if is_defense:
        logits_fn = predict.logits  # one bound method: each attack compiles it once
        surface = eot(logits_fn, eot_samples) if stochastic and eot_samples > 1 else logits_fn
    else:
        logits_fn = surface = predict
    probe = attack_model if attack_model is not None else logits_fn
    num_classes = check_model_output(probe(tf.constant(x[:2])), min(2, len(x)))
    y = check_labels(y, num_classes, "dataset labels", n=len(x))
    targets = _targets(targets, attack_map, num_classes, len(x))

    def model_for(label: str, attack: Attack) -> Callable | Defense:
        if isinstance(attack, DetectorAwarePGD):
            if not is_defense:
                raise ValueError(f"attacks: {label!r} is detector-aware and needs a Defense to "
                                 f"attack, got {type(predict).__name__}")
            return predict
        if attack_model is not None:
            return attack_model
        if isinstance(attack, AutoAttack) and attack.version == "rand":
            return logits_fn  # its APGD averages eot_iter gradients itself
        return surface

    def fingerprint_for(model) -> str:
        if fingerprint is not None:
            return fingerprint
        # ``==``: an ``attack_model`` of ``defense.logits`` is another bound-method object
        if is_defense and (model is predict or model == logits_fn or model is surface):
            fp = defense_weights_fingerprint(predict)
            return f"{fp}:eot{eot_samples}" if model is surface and stochastic else fp
        return model_fingerprint(model)

    def labels_of(images: np.ndarray) -> np.ndarray:
        if is_defense:
            return predict.predict(images)
        logits = predict_logits(predict, images, 256, strategy)  # 256 per model call (replica)
        check_model_output(logits, len(images))
        return np.argmax(logits, axis=1).astype(np.int64)

    def read_set(label: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, decisions) of ``predict`` (or the ``read`` hook) on ``images``."""
        if read is not None:
            labels, decisions = read(label, images)
            return np.asarray(labels, np.int64), np.asarray(decisions, np.int64)
        if is_defense:
            labels, decisions = predict.predict_with_decisions(images)
            return np.asarray(labels, np.int64), np.asarray(decisions, np.int64)
        labels = labels_of(images)
        return labels, np.zeros(len(labels), np.int64)

    clean_pred, clean_decisions = read_set("clean", x)
    clean_correct = clean_pred == y
    result = RobustnessResult(
        n=len(x),
        clean_accuracy=float(clean_correct.mean()),
        clean_rejection_rate=float(np.mean(clean_pred == REJECTED)),
        model=_model_name(predict),
        reported=reported,
        versions=_versions(),
        clean_labels=np.asarray(clean_pred, np.int64).tolist(),
        clean_decisions=clean_decisions.tolist(),
    )
    robust_all = clean_correct.copy()
    robust: dict[str, np.ndarray] = {}
    for label, attack in tqdm(attack_map.items(), desc="attacks", disable=not verbose):
        norm = threat_norm(attack)
        model = model_for(label, attack)
        result.seeds[label] = int(attack.seed)
        if norm != "other" or getattr(attack, "eps", None) is not None:
            result.eps.setdefault(norm, [])
            if float(attack.eps) not in result.eps[norm]:
                result.eps[norm].append(float(attack.eps))
        start = time.perf_counter()
        if isinstance(attack, AutoAttack):
            # success is judged by what the attacker queries: the defense itself, or, with an
            # ``attack_model`` (a grey-box / transfer attacker), that model alone
            judge = None if attack_model is not None else labels_of
            if cache_dir is None:
                run = attack.run(x, y, model=model, labels_of=judge, verbose=verbose,
                                 strategy=strategy)
            else:
                run = _cached_autoattack(attack, model, x, y, judge, Path(cache_dir) / label,
                                         fingerprint_for(model), verbose, strategy)
            final = _autoattack_rows(result, label, attack, run, x, y, clean_correct, norm,
                                     functools.partial(read_set, label),
                                     judged=judge is not None, decide=is_defense)
            result.gradient_masking_flags[label] = run.gradient_masking
            fooled = (final != y) & (final != REJECTED)
        else:
            y_attack = targets.get(label, y)
            if cache_dir is not None:
                x_adv = AdversarialSet.create(attack, model, x, y_attack,
                                              path=Path(cache_dir) / label,
                                              fingerprint=fingerprint_for(model), verbose=verbose,
                                              strategy=strategy).x_adv
            else:
                _, xv, yv, _ = attack.prepare(x, y_attack, model)
                batches = attack.iter_batches(model, xv, yv, strategy=strategy, desc=label,
                                              verbose=verbose, leave=False)
                with phase("attack"):
                    x_adv = np.concatenate([adv for _, adv in batches])
            seconds = time.perf_counter() - start
            pred, decisions = read_set(label, x_adv)
            fooled = (pred != y) & (pred != REJECTED)
            result.rows.append(_row(label, attack, pred, y, x_adv, x, clean_correct, seconds,
                                    np.ones(len(x), bool), False, norm, decisions=decisions))
        robust_all &= ~fooled
        robust[norm] = robust.get(norm, clean_correct) & ~fooled
    result.worst_case_accuracy = float(robust_all.mean())
    for norm in NORM_GROUPS:
        if norm in robust:
            result.worst_case[norm] = float(robust[norm].mean())
            result.robust[norm] = robust[norm].tolist()
    return result


def _row(label: str, attack: Attack, pred: np.ndarray, y: np.ndarray, x_adv: np.ndarray,
         x: np.ndarray, clean_correct: np.ndarray, seconds: float, mask: np.ndarray,
         cumulative: bool, norm: str, name: str | None = None,
         decisions: np.ndarray | None = None) -> AttackResult:
    """One table row: ``pred`` the labels on ``x_adv``; norms over the images in ``mask``."""
    delta = (x_adv - x).reshape(len(x), -1)
    linf = np.abs(delta).max(axis=1)[mask]
    l2 = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=1))[mask]
    fooled = (pred != y) & (pred != REJECTED)
    n_correct = max(int(clean_correct.sum()), 1)
    return AttackResult(
        label=label,
        attack=name or attack.name,
        params={k: v for k, v in attack.get_config().items() if k != "verbose"},
        accuracy=float(np.mean(pred == y)),
        defense_accuracy=float(np.mean((pred == y) | (pred == REJECTED))),
        rejection_rate=float(np.mean(pred == REJECTED)),
        success_rate=float((fooled & clean_correct).sum() / n_correct),
        linf_mean=float(linf.mean()) if len(linf) else 0.0,
        linf_max=float(linf.max()) if len(linf) else 0.0,
        l2_mean=float(l2.mean()) if len(l2) else 0.0,
        l2_max=float(l2.max()) if len(l2) else 0.0,
        seconds=seconds,
        images_per_second=len(x) / seconds if seconds > 0 else float("inf"),
        cumulative=cumulative,
        norm=norm,
        labels=np.asarray(pred, np.int64).tolist(),
        decisions=[] if decisions is None else np.asarray(decisions, np.int64).tolist(),
    )


def _autoattack_rows(result, label, attack, run, x, y, clean_correct, norm, read,
                     judged: bool, decide: bool) -> np.ndarray:
    """Append an AutoAttack run to ``result`` and return the final labels: when the run
    ``judged`` success by ``predict`` itself, a row per component and one for the ensemble
    (with ``decide``, a defense's, its decisions from ``read`` on the examples; the labels
    stay the run's); else (a grey-box run judged by the attack model) one row, ``read``'s
    (labels, decisions) on its examples."""
    final = run.pred_after[-1] if run.components else run.clean_pred
    decisions = None
    if not judged:
        final, decisions = read(run.x_adv)
    else:
        for i, name in enumerate(run.components):
            result.rows.append(_row(f"{label}/{name}", attack, run.pred_after[i], y, run.x_adv, x,
                                    clean_correct, run.seconds[i], run.broken_by == i, True, norm,
                                    name=name))
        if decide:
            decisions = read(run.x_adv)[1]
    result.rows.append(_row(label, attack, final, y, run.x_adv, x, clean_correct,
                            sum(run.seconds), np.ones(len(x), bool), False, norm,
                            decisions=decisions))
    result.autoattack_tables.append(run.to_markdown())
    if run.gradient_masking is not None:
        result.gradient_masking = bool(result.gradient_masking) or run.gradient_masking
    return final


def _cached_autoattack(attack: AutoAttack, model, x: np.ndarray, y: np.ndarray, labels_of,
                       path: Path, fingerprint: str, verbose: bool, strategy) -> AutoAttackRun:
    """``attack.run`` stored whole in ``path`` (``run.npz`` + ``meta.json``: the attack's
    parameters, the model's and the data's fingerprints, who judged success) and reused
    while they match. AutoAttack runs each component on the points left standing, so it is
    cached as one run, not per batch as ``AdversarialSet`` does."""
    meta = json.loads(json.dumps({
        "attack": attack.name,
        "params": {k: v for k, v in attack.get_config().items() if k != "verbose"},
        "model_fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint(x, y),
        "judge": "attacked model" if labels_of is None else "predict",
    }))
    meta_path, arrays_path = path / "meta.json", path / "run.npz"
    if arrays_path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        with np.load(arrays_path) as f:
            k = json.loads(str(f["extra"]))
            return AutoAttackRun(
                attack.version, attack.norm, float(attack.eps), [str(c) for c in f["components"]],
                f["x_adv"], np.asarray(y), f["clean_pred"], list(f["pred_after"]), f["broken_by"],
                [float(s) for s in f["seconds"]], k["num_classes"], k["objectives"], k["targets"])
    run = attack.run(x, y, model=model, labels_of=labels_of, verbose=verbose, strategy=strategy)
    path.mkdir(parents=True, exist_ok=True)
    extra = {"num_classes": run.num_classes, "objectives": run.objectives, "targets": run.targets}
    pred_after = (np.stack(run.pred_after) if run.pred_after
                  else np.zeros((0, len(x)), np.int64))
    atomic_savez(arrays_path, x_adv=run.x_adv, clean_pred=run.clean_pred, pred_after=pred_after,
                 broken_by=run.broken_by, components=np.asarray(run.components, dtype=str),
                 seconds=np.asarray(run.seconds, np.float64), extra=json.dumps(extra))
    atomic_write_json(meta_path, meta)
    return run
