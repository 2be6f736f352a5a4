"""AutoAttack (Croce & Hein 2020, ICML): the field's standard robustness evaluation.

An ensemble of four parameter-free attacks, each run only on the points the
earlier ones left classified correctly, so the result is the worst case over
them at the cost of roughly one strong attack:

=============  ==========================================  =================================
version        attacks                                     budgets
=============  ==========================================  =================================
``standard``   APGD-CE, APGD-T (DLR), FAB-T, Square        100 iterations, 9 target classes,
                                                           1 restart, Square 5000 queries
``quick``      the same four                               20 iterations, 3 target classes,
                                                           Square 1000 queries (CPU smoke runs;
                                                           a weaker attack, reports must say so)
``rand``       APGD-CE, APGD-DLR with EOT                  100 iterations, 20 EOT draws per step
                                                           (for stochastic defenses)
=============  ==========================================  =================================

in Linf or L2. Objectives: APGD-CE cross-entropy, APGD-T the targeted DLR
loss (Eq. 4), APGD-DLR the DLR loss (Eq. 3), FAB-T the linearized
z_y − z_t, Square the margin z_y − max_{j≠y} z_j.

Fewer than 4 classes (e.g. a binary attribute): APGD-T and FAB-T run at most
classes − 1 targets (a version's 9 or 3 is capped silently, an explicit
``n_target_classes`` above it with a warning), and where a DLR loss needs
more classes than the model has (targeted: 4, untargeted: 3) APGD runs the
targeted cross-entropy −CE(z, t) instead (``losses.apgd_objective``, which
cites what the official fra31/auto-attack code does: it only warns, in
``checks.check_n_classes``, and its DLR losses then fail; ``ce_loss_targeted``
is the targeted objective it defines beside them):

=========  ==============================  =====================================
classes    APGD-T (targets)                rand's APGD-DLR
=========  ==============================  =====================================
>= 4       targeted DLR (min(n, C − 1))    DLR
3          −CE(z, t) (<= 2)                DLR
2          −CE(z, t) (1: the other class)  −CE(z, t), t the other class
=========  ==============================  =====================================

APGD-CE, FAB-T (<= C − 1 targets) and Square are unchanged. The run records
what ran (``AutoAttackRun.objectives``, ``.targets``, ``.objectives_text()``).

Every random draw of a component depends only on the seed and
the point's index in the data (see ``apgd``), so on every point the ensemble
is at least as strong as each component run alone with the same seed and
batch size. ``AutoAttack.run`` returns an ``AutoAttackRun``: the examples,
which component broke which point, robust accuracy after each component, and
the gradient-masking flag: Square (gradient-free) runs last, so any point it
breaks is one every gradient attack failed on, the usual sign that gradients
are masked (Croce & Hein 2020 §5; Athalye et al. 2018).

With a ``tf.distribute`` strategy (``run(..., strategy=)``, ``generate(...,
strategy=)`` or a current one) every component's compiled runs are split
point-wise over the replicas, ``replicas * batch_size`` points at a time; the
draws being per point, the result is the single-device one for any number of
replicas.

Example:
    >>> from tfdefense.attacks import get_attack
    >>> aa = get_attack("autoattack", eps=0.3, version="quick")
    >>> list(aa.components())
    ['apgd_ce', 'apgd_t', 'fab_t', 'square']
    >>> aa.objectives(2)
    {'apgd_ce': 'ce', 'apgd_t': 'ce_targeted', 'fab_t': 'logit_difference', 'square': 'margin'}
    >>> aa.targets(2), aa.targets(10)
    ({'apgd_t': 1, 'fab_t': 1}, {'apgd_t': 3, 'fab_t': 3})
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense import profiling
from tfdefense.attacks.apgd import APGD, APGDTargeted, warn_if_capped
from tfdefense.attacks.base import Attack, register, replica_strategy
from tfdefense.attacks.fab import FAB
from tfdefense.attacks.losses import MIN_CLASSES
from tfdefense.attacks.square import Square
from tfdefense.defend.base import REJECTED
from tfdefense.validation import check_positive_int

VERSIONS = ("standard", "quick", "rand")
_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
_BUDGETS = {  # version -> (steps, n_target_classes, queries, eot_iter)
    "standard": (100, 9, 5000, 1),
    "quick": (20, 3, 1000, 1),
    "rand": (100, 9, 5000, 20),
}


#: the objectives components run (``AutoAttackComponent.loss_for``), in words
OBJECTIVE_TEXT = {
    "ce": "cross-entropy",
    "ce_targeted": "targeted cross-entropy −CE(z, t)",
    "dlr": "DLR loss (Eq. 3)",
    "dlr_targeted": "targeted DLR loss (Eq. 4)",
    "logit_difference": "linearized z_y − z_t",
    "margin": "margin z_y − max_{j≠y} z_j",
}
#: the paper's objective of the components that fall back on too few classes
PAPER_OBJECTIVES = {"apgd_t": "dlr_targeted", "apgd_dlr": "dlr"}


def objectives_text(objectives: dict[str, str], targets: dict[str, int],
                    num_classes: int | None) -> str:
    """One line saying which objective each component ran (and against how many targets),
    and which replaced the paper's because the model has too few classes."""
    parts = []
    for name, loss in objectives.items():
        text = f"{name}: {OBJECTIVE_TEXT.get(loss, loss)}"
        if name in targets:
            text += f", {targets[name]} target class{'es' if targets[name] != 1 else ''}"
        paper = PAPER_OBJECTIVES.get(name)
        if paper is not None and loss != paper:
            text += (f" (the {OBJECTIVE_TEXT[paper]} needs at least {MIN_CLASSES[paper]} "
                     f"classes, the model has {num_classes}; the objective of the official "
                     "AutoAttack code's ce_loss_targeted)")
        parts.append(text)
    return "; ".join(parts)


def square_only_count(components: list[str], broken_by: np.ndarray) -> int:
    """Points the gradient-free Square broke after every gradient attack before it failed on
    them (``broken_by``: per point, the index in ``components`` of the attack that fooled it,
    -1 if none); more than zero is the usual sign of gradient masking."""
    if "square" not in components:
        return 0
    return int(np.sum(broken_by == components.index("square")))


@dataclass
class AutoAttackRun:
    """What one AutoAttack evaluation found (arrays over the evaluated points)."""

    version: str
    norm: str
    eps: float
    components: list[str]
    x_adv: np.ndarray
    y: np.ndarray
    clean_pred: np.ndarray
    #: labels after each component (the examples found so far)
    pred_after: list[np.ndarray]
    #: index into ``components`` of the attack that fooled the point, -1 if none
    broken_by: np.ndarray
    seconds: list[float] = field(default_factory=list)
    #: classes of the attacked model
    num_classes: int | None = None
    #: per component, the objective it ran (``OBJECTIVE_TEXT``; on fewer than 4 classes
    #: APGD's DLR losses are replaced by "ce_targeted", see the module docstring)
    objectives: dict[str, str] = field(default_factory=dict)
    #: per targeted component, the target classes it ran (at most num_classes − 1)
    targets: dict[str, int] = field(default_factory=dict)

    @property
    def fallbacks(self) -> dict[str, str]:
        """Components that ran another objective than the paper's (too few classes): name ->
        the objective that ran."""
        return {k: v for k, v in self.objectives.items()
                if k in PAPER_OBJECTIVES and v != PAPER_OBJECTIVES[k]}

    def objectives_text(self) -> str:
        """Which objective each component ran, for a report."""
        return objectives_text(self.objectives, self.targets, self.num_classes)

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_pred == self.y))

    def accuracy_after(self, i: int) -> float:
        """Robust accuracy after components 0..i (the standard AutoAttack log line)."""
        return float(np.mean(self.pred_after[i] == self.y))

    @property
    def robust_accuracy(self) -> float:
        return self.accuracy_after(len(self.components) - 1) if self.components else self.clean_accuracy

    @property
    def square_only(self) -> int:
        """Points Square broke after every gradient attack failed on them."""
        return square_only_count(self.components, self.broken_by)

    @property
    def gradient_masking(self) -> bool | None:
        """True when Square broke any point the gradient attacks could not (None: no Square)."""
        return None if "square" not in self.components else self.square_only > 0

    def to_markdown(self) -> str:
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        n = len(self.y)
        lines = [
            f"AutoAttack ({self.version}, {self.norm} eps={self.eps:.4g}) on {n} points; "
            f"clean accuracy {pct(self.clean_accuracy)}%",
            "",
            "| after attack | robust accuracy (%) | points broken | time (s) |",
            "|---|---|---|---|",
        ]
        for i, name in enumerate(self.components):
            lines.append(f"| {name} | {pct(self.accuracy_after(i))} | "
                         f"{int(np.sum(self.broken_by == i))} | {self.seconds[i]:.1f} |")
        if self.objectives:
            lines += ["", f"Objectives ({self.num_classes} classes): {self.objectives_text()}."]
        if self.gradient_masking:
            lines += ["", f"**Gradient masking suspected**: Square broke {self.square_only} "
                          "point(s) that every gradient attack failed on."]
        return "\n".join(lines)


@register("autoattack")
class AutoAttack(Attack):
    """The AutoAttack ensemble (Croce & Hein 2020) in Linf or L2.

    Args:
        eps: budget; default 8/255 (Linf) / 1.0 (L2).
        norm: "linf" or "l2".
        version: "standard", "quick" or "rand" (see the module docstring).
        steps, n_target_classes, queries, eot_iter: override the version's
            budgets (None keeps them). Targets are capped at classes − 1 (an
            explicit ``n_target_classes`` above that with a warning).
        restarts: restarts of every component; default 1 (AutoAttack standard).
        batch_size, seed, verbose: as every attack; component i uses seed + i.

    On 2 or 3 classes APGD-T (and on 2 the "rand" version's APGD-DLR) runs
    the targeted cross-entropy −CE(z, t) in place of the DLR loss that needs
    more classes (module docstring); ``objectives(num_classes)`` and the
    run's ``AutoAttackRun.objectives`` say which objective each component ran.
    """

    supported_norms = ("linf", "l2")
    params = ("eps", "norm", "version", "steps", "n_target_classes", "queries", "restarts",
              "eot_iter")
    replication = "points"

    def __init__(self, model=None, *, eps=None, norm="linf", version="standard", steps=None,
                 n_target_classes=None, queries=None, restarts=1, eot_iter=None, **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.version = version
        self.steps = steps
        self.n_target_classes = n_target_classes
        self.queries = queries
        self.restarts = restarts
        self.eot_iter = eot_iter
        self._check_params()
        self._built: tuple | None = None

    def _check_params(self):
        steps, self.steps = self.steps, (1 if self.steps is None else self.steps)
        try:
            super()._check_params()
        finally:
            self.steps = steps
        if self.version not in VERSIONS:
            raise ValueError(f"version: expected one of {VERSIONS}, got {self.version!r}")
        for name in ("n_target_classes", "queries", "eot_iter"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        check_positive_int(self.restarts, "restarts")

    def _build(self) -> dict[str, Attack]:
        steps, targets, queries, eot_iter = _BUDGETS[self.version]
        steps = steps if self.steps is None else self.steps
        targets = targets if self.n_target_classes is None else self.n_target_classes
        queries = queries if self.queries is None else self.queries
        eot_iter = eot_iter if self.eot_iter is None else self.eot_iter
        common = dict(eps=self.eps, norm=self.norm, restarts=self.restarts,
                      batch_size=self.batch_size, verbose=False)
        if self.version == "rand":
            return {
                "apgd_ce": APGD(loss="ce", steps=steps, eot_iter=eot_iter, seed=self.seed, **common),
                "apgd_dlr": APGD(loss="dlr", steps=steps, eot_iter=eot_iter, seed=self.seed + 1,
                                 **common),
            }
        return {
            "apgd_ce": APGD(loss="ce", steps=steps, eot_iter=eot_iter, seed=self.seed, **common),
            "apgd_t": APGDTargeted(n_target_classes=targets, steps=steps, eot_iter=eot_iter,
                                   seed=self.seed + 1, **common),
            "fab_t": FAB(n_target_classes=targets, steps=steps, seed=self.seed + 2, **common),
            "square": Square(steps=queries, seed=self.seed + 3, **common),
        }

    @property
    def _components(self) -> dict[str, Attack]:
        """Components for the current parameters (rebuilt, re-checked, if any changed)."""
        config = tuple(sorted(self.get_config().items()))
        if self._built is None or self._built[0] != config:
            self._check_params()
            self._built = (config, self._build())
        return self._built[1]

    def components(self) -> dict[str, Attack]:
        """The component attacks, in the order they run."""
        return dict(self._components)

    def objectives(self, num_classes: int) -> dict[str, str]:
        """Per component, the objective it runs on a model with ``num_classes`` classes
        (keys of ``OBJECTIVE_TEXT``)."""
        return {name: a.loss_for(num_classes) for name, a in self._components.items()}

    def targets(self, num_classes: int) -> dict[str, int]:
        """Per targeted component, the target classes it runs on ``num_classes`` classes."""
        return {name: a.targets_for(num_classes) for name, a in self._components.items()
                if a.targeted_runs}

    def objectives_text(self, num_classes: int) -> str:
        """``objectives`` and ``targets`` in words, with the fallbacks named (for notes)."""
        return objectives_text(self.objectives(num_classes), self.targets(num_classes),
                               num_classes)

    def prepare(self, x, y=None, model=None):
        model, x, y, num_classes = super().prepare(x, y, model)
        self.components()  # re-checks the parameters
        warn_if_capped(self.n_target_classes, num_classes, "autoattack")
        return model, x, y, num_classes

    @profiling.timed("attack")  # a profiled reproduction's attack time (else no cost)
    def run(self, x, y=None, model=None, labels_of: Callable | None = None,
            verbose: bool | None = None,
            strategy: tf.distribute.Strategy | None = None) -> AutoAttackRun:
        """Run the ensemble over all of ``x``; each component only on points not yet fooled.

        Args:
            x, y, model: as ``generate`` (``y`` the true labels).
            labels_of: images -> int labels used to judge success (default the
                model's argmax, over the replicas with a strategy); a defense's
                labels with ``REJECTED`` = -1 count a rejected example as not fooled.
            verbose: progress bars (default ``self.verbose``).
            strategy: split every component's runs over this strategy's replicas
                (default the current one, if any); same result for any number.
        """
        strategy = replica_strategy(strategy)
        model, x, y, num_classes = self.prepare(x, y, model)
        verbose = self.verbose if verbose is None else verbose
        if labels_of is None:
            labels_of = lambda images: self.predict_labels(model, images, strategy)  # noqa: E731
        chunk = self.batch_size * (1 if strategy is None else strategy.num_replicas_in_sync)
        clean = np.asarray(labels_of(x)).astype(np.int64)
        pred = clean.copy()
        x_adv = x.copy()
        broken_by = np.full(len(x), -1)
        out = AutoAttackRun(self.version, self.norm, float(self.eps), list(self._components),
                            x_adv, y, clean, [], broken_by, num_classes=num_classes,
                            objectives=self.objectives(num_classes),
                            targets=self.targets(num_classes))
        for j, (name, attack) in enumerate(self._components.items()):
            start = time.perf_counter()
            idx = np.flatnonzero(pred == y)  # still correct (rejected points are not attacked)
            starts = range(0, len(idx), chunk)
            for s in tqdm(starts, desc=name, disable=not verbose):
                sub = idx[s : s + chunk]
                with attack._on_replicas(strategy):
                    adv = np.clip(attack.attack_points(model, x[sub], y[sub], sub), 0.0, 1.0)
                new = np.asarray(labels_of(adv)).astype(np.int64)
                fooled = (new != y[sub]) & (new != REJECTED)
                x_adv[sub[fooled]] = adv[fooled]
                pred[sub[fooled]] = new[fooled]
                broken_by[sub[fooled]] = j
            out.seconds.append(time.perf_counter() - start)
            out.pred_after.append(pred.copy())
        return out

    def _attack_batch(self, model, x, y, seed):
        first = int(seed[1]) * self.batch_size  # index of this batch's first point in the data
        return self.attack_points(model, x.numpy(), y.numpy(), first + np.arange(len(x)))

    def attack_points(self, model, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The ensemble on validated points whose indices in the data are ``ids``."""
        strategy = self._replicas()
        pred = self.predict_labels(model, x, strategy)
        x_adv = x.copy()
        for attack in self._components.values():
            idx = np.flatnonzero(pred == y)
            if not len(idx):
                break
            adv = np.clip(attack.attack_points(model, x[idx], y[idx], ids[idx]), 0.0, 1.0)
            new = self.predict_labels(model, adv, strategy)
            fooled = new != y[idx]
            x_adv[idx[fooled]] = adv[fooled]
            pred[idx[fooled]] = new[fooled]
        return x_adv

    @contextlib.contextmanager
    def _on_replicas(self, strategy: tf.distribute.Strategy | None) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(super()._on_replicas(strategy))
            for attack in self._components.values():
                stack.enter_context(attack._on_replicas(strategy))
            yield
