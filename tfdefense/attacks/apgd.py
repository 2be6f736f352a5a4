"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", §3), compiled.

APGD is PGD without a step-size parameter: the step starts at 2·eps and is
halved at checkpoints w_j = ⌈p_j·N⌉ (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) when, since the previous
checkpoint, (1) fewer than ρ·(w_j − w_{j−1}) steps raised the objective
(ρ = 0.75), or (2) the step was not halved at the previous checkpoint and the
best objective did not change; after a halving the iterate restarts from the
best point so far. Steps carry momentum α = 0.75 (the first step has none):
x^(k+1) = P(x^(k) + α(z^(k+1) − x^(k)) + (1 − α)(x^(k) − x^(k−1))),
z^(k+1) = P(x^(k) + η^(k)·steepest(∇f(x^(k)))). Objectives: cross-entropy
(``apgd_ce``), the DLR loss (``apgd_dlr``, Eq. 3) and its targeted version
(``apgd_t``, Eq. 4, run against the 2nd ... (n_target_classes+1)-th most
likely classes of the clean image). Restarts and targets run only on the
points not yet broken. ``eot_iter > 1`` averages the objective and its
gradient over that many draws of a stochastic model (AutoAttack's "rand"
version).

Fewer than 4 classes (a binary attribute, say): the DLR losses read the 3rd
and 4th largest logit, so there APGD runs the targeted cross-entropy
−CE(z, t) instead (``losses.apgd_objective``): APGD-T on 2 or 3 classes
against the same targets, APGD-DLR on 2 classes against the other class;
``n_target_classes`` is capped at classes − 1 (with a warning when it was
set explicitly). ``loss_for(num_classes)`` says which objective runs.

Each run is one ``tf.function`` graph over a batch. Randomness is drawn per
*point*, from a counter-based hash of (seed, the point's index in the data,
restart, draw): a point gets the same random start whether it is attacked
alone, in any batch, or after other attacks inside the AutoAttack ensemble, so
a seed gives the same examples on CPU and the ensemble is never weaker on a
point than any of its components run alone with the same seed.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks.apgd import checkpoints
    >>> checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import tensorflow as tf

from tfdefense.attacks.base import Attack, predict_logits, register
from tfdefense.attacks.losses import APGD_OBJECTIVES, apgd_loss, apgd_objective, dlr, dlr_targeted
from tfdefense.validation import check_number, check_positive_int

_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
_REDUCE = (1, 2, 3)
LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The checkpoints w_j = ⌈p_j·steps⌉, j >= 1, of Croce & Hein 2020 §3.2 (distinct, <= steps).

    p_j is kept in exact hundredths (0.22, 0.03, 0.06 are), so no float
    rounding moves a ceiling.
    """
    steps = check_positive_int(steps, "steps")
    p_prev, p = 0, 22
    out: list[int] = []
    while p <= 100:
        w = -(-p * steps // 100)  # ceil(p/100 * steps)
        if w >= 1 and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return out


_MIX = (0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F)


def _mix(h: tf.Tensor) -> tf.Tensor:
    """The murmur3 32-bit finalizer (an invertible avalanche mix) on uint32."""
    xor, shift = tf.bitwise.bitwise_xor, tf.bitwise.right_shift
    h = xor(h, shift(h, tf.constant(16, tf.uint32))) * tf.constant(_MIX[1], tf.uint32)
    h = xor(h, shift(h, tf.constant(13, tf.uint32))) * tf.constant(_MIX[2], tf.uint32)
    return xor(h, shift(h, tf.constant(16, tf.uint32)))


def point_uniform(ids, key, salt, shape) -> tf.Tensor:
    """Uniform [0, 1) numbers of shape (len(ids), *shape), a pure function of each point's
    id, the run's ``key`` (2 ints), ``salt`` and the position: counter-mode hashing, so a
    point's draws do not depend on which other points share its batch."""
    u32 = lambda v: tf.cast(v, tf.uint32)  # noqa: E731
    shape = [int(d) for d in shape]
    size = int(np.prod(shape))
    base = _mix(u32(key[0]) * tf.constant(_MIX[0], tf.uint32) + _mix(u32(key[1]) + _mix(u32(salt))))
    row = _mix(tf.bitwise.bitwise_xor(base, u32(ids) * tf.constant(_MIX[3], tf.uint32)))
    bits = _mix(row[:, None] + u32(tf.range(size))[None, :] * tf.constant(_MIX[0], tf.uint32))
    u = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * 2.0**-24
    return tf.reshape(u, tf.concat([[-1], tf.constant(shape, tf.int32)], 0))


def point_normal(ids, key, salt, shape) -> tf.Tensor:
    """Standard normal numbers per point (Box-Muller on two ``point_uniform`` streams)."""
    u1 = 1.0 - point_uniform(ids, key, 2 * salt, shape)  # (0, 1]
    u2 = point_uniform(ids, key, 2 * salt + 1, shape)
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * np.pi * u2)


def _norm(t: tf.Tensor, norm: str) -> tf.Tensor:
    if norm == "linf":
        return tf.reduce_max(tf.abs(t), _REDUCE, keepdims=True)
    return tf.sqrt(tf.reduce_sum(tf.square(t), _REDUCE, keepdims=True))


def _project(x_adv, x, eps, norm):
    delta = x_adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -eps, eps)
    else:
        delta = delta * tf.minimum(1.0, eps / (_norm(delta, "l2") + 1e-12))
    return tf.clip_by_value(x + delta, 0.0, 1.0)


def _steepest(grad, norm):
    if norm == "linf":
        return tf.sign(grad)
    return grad / (_norm(grad, "l2") + 1e-12)


def objective(model, x_adv, y, target, loss: str, eot_iter: int = 1):
    """(per-example objective, its gradient, per-example misclassified) at ``x_adv``.

    ``loss`` is one of ``losses.APGD_OBJECTIVES`` ("ce", "ce_targeted", "dlr",
    "dlr_targeted"); the targeted ones read ``target``.

    With ``eot_iter > 1`` the batch is repeated and run once: objective and
    gradient are the means over the draws, the prediction is the argmax of
    the mean softmax.
    """
    n = tf.shape(x_adv)[0]
    with tf.GradientTape() as tape:
        tape.watch(x_adv)
        xs = tf.tile(x_adv, [eot_iter, 1, 1, 1]) if eot_iter > 1 else x_adv
        logits = tf.cast(model(xs), tf.float32)
        ys = tf.tile(y, [eot_iter]) if eot_iter > 1 else y
        ts = tf.tile(target, [eot_iter]) if eot_iter > 1 and target is not None else target
        value = apgd_loss(loss, logits, ys, ts)
        value = tf.reduce_mean(tf.reshape(value, [eot_iter, n]), 0)
        total = tf.reduce_sum(value)
    grad = tape.gradient(total, x_adv)
    if grad is None:
        raise ValueError(
            "model: no gradient flows from the logits to the images, so a gradient attack "
            "cannot run; wrap non-differentiable steps with tfdefense.attacks.bpda, or use "
            "the gradient-free 'square'"
        )
    probs = tf.reduce_mean(tf.reshape(tf.nn.softmax(logits), [eot_iter, n, -1]), 0)
    fooled = tf.not_equal(tf.argmax(probs, -1, output_type=y.dtype), y)
    return value, grad, fooled


def apgd_run(model, x, y, target, ids, key, *, eps, norm, steps, loss, rho=0.75, momentum=0.75,
             eot_iter=1, trace=False):
    """One APGD run on a batch (Croce & Hein 2020, Algorithm 1).

    ``ids`` (N,) identify the points and ``key`` (2,) the run for the random start;
    ``loss`` is one of ``losses.APGD_OBJECTIVES`` (the targeted ones need ``target``).

    Returns ``(x_adv, fooled)``: the last misclassified iterate where one was
    found (else the highest-objective point), and whether it was found. With
    ``trace=True`` also the step size of every iteration, shape (steps, N).
    """
    if loss not in APGD_OBJECTIVES:
        raise ValueError(f"loss: expected one of {APGD_OBJECTIVES}, got {loss!r}")
    shape = tf.shape(x)
    n = shape[0]
    if norm == "linf":
        t = 2.0 * point_uniform(ids, key, 0, x.shape[1:]) - 1.0
    else:
        t = point_normal(ids, key, 0, x.shape[1:])
    x_adv = tf.clip_by_value(x + eps * t / (_norm(t, norm) + 1e-12), 0.0, 1.0)
    value, grad, fooled = objective(model, x_adv, y, target, loss, eot_iter)
    ckpt = np.zeros(steps + 1, bool)
    length = np.ones(steps + 1, np.float32)
    prev = 0
    for w in checkpoints(steps):
        ckpt[w], length[w], prev = True, w - prev, w
    is_ckpt, interval = tf.constant(ckpt), tf.constant(length)
    col = lambda b: tf.reshape(b, [-1, 1, 1, 1])  # noqa: E731
    state = dict(
        x_adv=x_adv, x_prev=x_adv, grad=grad, x_best=x_adv, grad_best=grad, best=value,
        x_found=x_adv, fooled=fooled, last=value, step=tf.fill([n], 2.0 * eps),
        ups=tf.zeros([n]), best_at_ckpt=value, halved_at_ckpt=tf.zeros([n], tf.bool),
    )
    history = tf.TensorArray(tf.float32, size=steps)
    for i in tf.range(steps):
        s = state
        a = tf.where(i > 0, momentum, 1.0)
        z = _project(s["x_adv"] + col(s["step"]) * _steepest(s["grad"], norm), x, eps, norm)
        x_new = _project(s["x_adv"] + a * (z - s["x_adv"]) + (1.0 - a) * (s["x_adv"] - s["x_prev"]),
                         x, eps, norm)
        value, grad, fooled = objective(model, x_new, y, target, loss, eot_iter)
        x_found = tf.where(col(fooled), x_new, s["x_found"])
        ups = s["ups"] + tf.cast(value > s["last"], tf.float32)
        better = value > s["best"]
        x_best = tf.where(col(better), x_new, s["x_best"])
        grad_best = tf.where(col(better), grad, s["grad_best"])
        best = tf.where(better, value, s["best"])
        history = history.write(i, s["step"])
        # checkpoint after iterate i+1: conditions (1) and (2) of §3.2
        at = tf.gather(is_ckpt, i + 1)
        cond1 = ups < rho * tf.gather(interval, i + 1)
        cond2 = tf.logical_and(tf.logical_not(s["halved_at_ckpt"]), best <= s["best_at_ckpt"])
        halve = tf.logical_and(at, tf.logical_or(cond1, cond2))
        state = dict(
            x_adv=tf.where(col(halve), x_best, x_new),
            x_prev=s["x_adv"],
            grad=tf.where(col(halve), grad_best, grad),
            x_best=x_best, grad_best=grad_best, best=best,
            x_found=x_found, fooled=tf.logical_or(s["fooled"], fooled), last=value,
            step=tf.where(halve, s["step"] / 2.0, s["step"]),
            ups=tf.where(at, tf.zeros_like(ups), ups),
            best_at_ckpt=tf.where(at, best, s["best_at_ckpt"]),
            halved_at_ckpt=tf.where(at, halve, s["halved_at_ckpt"]),
        )
    out = tf.where(col(state["fooled"]), state["x_found"], state["x_best"])
    if trace:
        return out, state["fooled"], history.stack()
    return out, state["fooled"]


#: target classes of APGD-T and FAB-T when not set: AutoAttack standard's 9 (Croce & Hein
#: 2020 §4), capped at classes − 1 on smaller models
DEFAULT_TARGETS = 9


def warn_if_capped(requested: int | None, num_classes: int, who: str) -> None:
    """Warn that an explicitly requested ``n_target_classes`` above ``num_classes − 1`` is
    capped (a model has only ``num_classes − 1`` classes to target; None: silent)."""
    if requested is not None and requested > num_classes - 1:
        warnings.warn(
            f"n_target_classes: {who} asked for {requested} target classes, but the model has "
            f"{num_classes} classes, so at most {num_classes - 1}; running {num_classes - 1}",
            UserWarning, stacklevel=3)


class AutoAttackComponent(Attack):
    """Base of the attacks AutoAttack runs (APGD, APGD-T, FAB, Square): restarts (and target
    classes) run only on the points not yet broken, each point's randomness drawn from its id
    (``point_uniform``), so ``attack_points`` gives a point the same result in any batch.

    A subclass defines ``loss_for(num_classes)`` and the compiled run of one restart,
    ``_run(model, x, y, target, ids, key, first, loss) -> (x_adv, fooled)``.

    Example:
        >>> from tfdefense.attacks import APGDTargeted, FAB, Square
        >>> all(issubclass(c, AutoAttackComponent) for c in (APGDTargeted, FAB, Square))
        True
        >>> APGDTargeted().targets_for(10), APGDTargeted().targets_for(3)  # capped at classes - 1
        (9, 2)
    """

    supported_norms = ("linf", "l2")
    #: whether the runs go against the top target classes (APGD-T, FAB-T)
    targeted_runs: ClassVar[bool] = False
    n_target_classes: int | None = None
    replication = "points"  # per-point randomness: each run splits over replicas exactly

    def __init__(self, model=None, **kwargs):
        super().__init__(model, **kwargs)
        self._compiled: dict[tuple, tuple] = {}

    def targets_for(self, num_classes: int) -> int:
        """Target classes run on a model with ``num_classes`` classes (0: untargeted): the
        requested ``n_target_classes`` (default ``DEFAULT_TARGETS``) capped at classes − 1."""
        if not self.targeted_runs:
            return 0
        wanted = DEFAULT_TARGETS if self.n_target_classes is None else self.n_target_classes
        return min(wanted, num_classes - 1)

    def loss_for(self, num_classes: int) -> str:
        """The objective this attack runs on a model with ``num_classes`` classes."""
        raise NotImplementedError

    def _fn(self, model, restart: int, loss: str):
        """The compiled run for ``model`` (restart ``restart``, objective ``loss``), traced once
        and cached."""
        key = (id(model), restart > 0 and self._restarts_differ, loss)
        entry = self._compiled.get(key)
        if entry is None or entry[0] is not model:
            first = restart == 0
            fn = tf.function(lambda x, y, t, i, k: self._run(model, x, y, t, i, k, first, loss),
                             reduce_retracing=True)
            entry = (model, fn)
            self._compiled[key] = entry
        return self._split_points(entry[1], n_points=4)  # (x, y, target, ids) per point

    #: whether later restarts run a different graph (FAB: random start only after the first)
    _restarts_differ = False

    def _run(self, model, x, y, target, ids, key, first, loss):  # -> (x_adv, fooled)
        raise NotImplementedError

    def prepare(self, x, y=None, model=None):
        model, x, y, num_classes = super().prepare(x, y, model)
        if self.targeted_runs:
            warn_if_capped(self.n_target_classes, num_classes, repr(self.label))
        return model, x, y, num_classes

    def _attack_batch(self, model, x, y, seed):
        ids = int(seed[1]) * self.batch_size + np.arange(len(x))
        return self.attack_points(model, x.numpy(), y.numpy(), ids)

    def attack_points(self, model, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Attack validated points ``x`` whose indices in the data are ``ids`` (one batch).

        The objective and the number of targets follow the model's classes
        (``loss_for``, ``targets_for``).
        """
        logits = predict_logits(model, x, self.batch_size, self._replicas())
        num_classes = int(logits.shape[1])
        loss = self.loss_for(num_classes)
        n_targets = self.targets_for(num_classes)
        robust = np.argmax(logits, 1) == y
        x_adv = x.copy()
        order = np.argsort(-logits, axis=1, kind="stable")
        # untargeted runs on a targeted objective (APGD-DLR on 2 classes): the most likely
        # class other than y on the clean image, max_{i≠y} z_i of DLR fixed at the start
        runner_up = np.where(order[:, 0] == y, order[:, 1], order[:, 0])
        targets = range(2, n_targets + 2) if n_targets else [0]
        for k in targets:
            for r in range(self.restarts):
                idx = np.flatnonzero(robust)
                if not len(idx):
                    return x_adv
                t = order[idx, k - 1] if k else runner_up[idx] if loss.endswith("_targeted") else y[idx]
                key = tf.constant([self.seed % (2**31 - 1), k * 1009 + r], tf.int32)
                fn = self._fn(model, r, loss)
                adv, fooled = fn(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(t),
                                 tf.constant(np.asarray(ids)[idx], tf.int64), key)
                fooled = fooled.numpy()
                x_adv[idx[fooled]] = adv.numpy()[fooled]
                robust[idx[fooled]] = False
        return x_adv


@register("apgd_dlr", loss="dlr")
@register("apgd_ce", loss="ce")
@register("apgd")
class APGD(AutoAttackComponent):
    """Untargeted Auto-PGD on cross-entropy or DLR, Linf or L2 (Croce & Hein 2020).

    The DLR loss (Eq. 3) needs 3 classes: on a 2-class model ``loss="dlr"``
    runs the targeted cross-entropy −CE(z, t) against the other class
    (``losses.apgd_objective``; ``loss_for(num_classes)`` names it).

    Args:
        eps: budget; default 8/255 (Linf) / 1.0 (L2), the library's CD-VAE budgets.
        norm: "linf" or "l2".
        steps: iterations per restart; default 100 (AutoAttack standard).
        restarts: random restarts, each only on points not yet broken; default 1
            (AutoAttack standard).
        loss: "ce" or "dlr".
        rho: checkpoint threshold ρ; default 0.75 (§3.2).
        momentum: α; default 0.75 (§3.2).
        eot_iter: draws per step for stochastic models; default 1 (AutoAttack's
            "rand" version uses 20).
    """

    params = ("eps", "norm", "steps", "restarts", "loss", "rho", "momentum", "eot_iter")

    def __init__(self, model=None, *, eps=None, norm="linf", steps=100, restarts=1, loss="ce",
                 rho=0.75, momentum=0.75, eot_iter=1, **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.steps = steps
        self.restarts = restarts
        self.loss = loss
        self.rho = rho
        self.momentum = momentum
        self.eot_iter = eot_iter
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.restarts, "restarts")
        check_positive_int(self.eot_iter, "eot_iter")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        check_number(self.rho, "rho", low=0.0, high=1.0, low_inclusive=False)
        check_number(self.momentum, "momentum", low=0.0, high=1.0)

    def loss_for(self, num_classes: int) -> str:
        """"ce", "dlr", or "ce_targeted" where DLR needs more classes (``apgd_objective``)."""
        return apgd_objective(self.loss, num_classes)

    def _run(self, model, x, y, target, ids, key, first, loss):
        return apgd_run(model, x, y, target if loss.endswith("_targeted") else None, ids, key,
                        eps=float(self.eps), norm=self.norm, steps=self.steps, loss=loss,
                        rho=float(self.rho), momentum=float(self.momentum), eot_iter=self.eot_iter)


@register("apgd_t")
class APGDTargeted(APGD):
    """APGD-T: Auto-PGD on the targeted DLR loss against the top classes (Croce & Hein 2020).

    For k = 2 .. n_target_classes + 1 the target is the k-th most likely class
    of the clean image; each target runs ``restarts`` times on the points no
    earlier target broke.

    Fewer than 4 classes: the targeted DLR loss (Eq. 4) reads the 4th largest
    logit, so on 2 or 3 classes APGD-T runs the targeted cross-entropy
    −CE(z, t) against the same targets, the objective the official code's
    ``APGDAttack_targeted.ce_loss_targeted`` defines (``losses.apgd_objective``);
    ``loss_for(num_classes)`` names the one that runs.

    Args:
        n_target_classes: default None: 9 (AutoAttack standard), capped at
            classes − 1 (1 on 2 classes, 2 on 3); a number above classes − 1
            is capped with a warning.
        other arguments as ``APGD`` (``loss`` is fixed to "dlr").
    """

    params = (*(p for p in APGD.params if p != "loss"), "n_target_classes")
    targeted_runs = True

    def __init__(self, model=None, *, n_target_classes=None, **kwargs):
        if kwargs.get("loss", "dlr") != "dlr":
            raise ValueError(f"loss: apgd_t uses the targeted DLR loss, got {kwargs['loss']!r}")
        kwargs.pop("loss", None)
        self.n_target_classes = n_target_classes
        super().__init__(model, loss="dlr", **kwargs)

    def _check_params(self):
        super()._check_params()
        if self.n_target_classes is not None:
            check_positive_int(self.n_target_classes, "n_target_classes")

    def loss_for(self, num_classes: int) -> str:
        """"dlr_targeted", or "ce_targeted" on fewer than 4 classes (``apgd_objective``)."""
        return apgd_objective("dlr_targeted", num_classes)


__all__ = ["APGD", "APGDTargeted", "AutoAttackComponent", "DEFAULT_TARGETS", "apgd_run", "checkpoints", "dlr",
           "dlr_targeted", "objective", "point_normal", "point_uniform", "warn_if_capped"]
