"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, ICML,
"Minimally distorted adversarial examples with a fast adaptive boundary
attack"), compiled, Linf and L2.

FAB looks for the *smallest* perturbation that reaches the decision boundary
between the true class y and a target class t. At the iterate x^(i) it
linearizes f = z_y − z_t and projects onto the hyperplane
f(x^(i)) + ∇f·(z − x^(i)) = 0 within the box [0, 1] twice: from x^(i)
(δ^(i)) and from the original x (δ_orig) (Eq. 6). The step is the convex
combination (Eq. 7)
x^(i+1) = clip((1 − α)(x^(i) + η δ^(i)) + α(x + η δ_orig)),
α = min(||δ^(i)|| / (||δ^(i)|| + ||δ_orig||), α_max), with overshoot η = 1.05,
α_max = 0.1; on reaching the other side it steps back towards x by β = 0.9
(x^(i+1) ← x + β(x^(i+1) − x)) and remembers the smallest adversarial point.
Targets are the 2nd ... (n_target_classes+1)-th most likely classes of the
clean image, as in AutoAttack, at most classes − 1 of them (1 on a binary
task, where FAB-T is FAB against the other class). f = z_y − z_t needs no
more than 2 classes, so FAB-T runs unchanged on any model. A point counts as
broken only within ``eps``.

The projection onto {δ : w·δ = c, 0 <= x + δ <= 1} with minimal Linf or L2 norm
is solved exactly here by one sort per image: with a_i the room of pixel i in
the direction sign(w_i)·sign(c), the reachable w·δ at radius λ is
g(λ) = Σ v_i·min(λ, r_i), v_i = |w_i|, r_i = a_i (Linf) or v_i = w_i²,
r_i = a_i/|w_i| (L2), a concave, piecewise-linear function whose root is read
off the sorted breakpoints; δ_i = sign(w_i c)·min(λ, r_i)·(1 or |w_i|).

Example:
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from tfdefense.attacks.fab import project_hyperplane
    >>> t = tf.constant([[0.5, 0.5]]); w = tf.constant([[1.0, 1.0]])
    >>> [round(float(v), 3) for v in project_hyperplane(t, w, tf.constant([0.4]), "linf")[0]]
    [0.2, 0.2]
"""

from __future__ import annotations

import tensorflow as tf

from tfdefense.attacks.apgd import AutoAttackComponent, point_normal, point_uniform
from tfdefense.attacks.base import register
from tfdefense.validation import check_number, check_positive_int

_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
_REDUCE = (1, 2, 3)


def project_hyperplane(t: tf.Tensor, w: tf.Tensor, c: tf.Tensor, norm: str) -> tf.Tensor:
    """The minimal-norm δ with w·δ = c and 0 <= t + δ <= 1, per row (shapes (N, D), (N, D), (N,)).

    Where no δ in the box reaches the hyperplane, the δ that gets closest
    (every pixel pushed to its bound in the useful direction).
    """
    direction = tf.sign(w) * tf.where(c < 0, -1.0, 1.0)[:, None]
    room = tf.where(direction > 0, 1.0 - t, tf.where(direction < 0, t, 0.0))
    c_abs = tf.abs(c)
    aw = tf.abs(w)
    if norm == "linf":
        v, r = aw, room
    else:
        v = tf.square(w)
        r = tf.where(aw > 1e-12, room / tf.maximum(aw, 1e-12), 1e12)
    order = tf.argsort(r, axis=1, stable=True)
    r_s = tf.gather(r, order, batch_dims=1)
    v_s = tf.gather(v, order, batch_dims=1)
    below = tf.cumsum(v_s * r_s, axis=1)  # Σ_{j<=k} v_j r_j
    above = tf.cumsum(v_s, axis=1, exclusive=True, reverse=True)  # Σ_{j>k} v_j
    reach = below + r_s * above  # g(r_(k)), non-decreasing in k
    k = tf.reduce_sum(tf.cast(reach < c_abs[:, None], tf.int32), axis=1)  # first k with g >= c
    dim = tf.shape(t)[1]
    feasible = k < dim
    kc = tf.minimum(k, dim - 1)
    prev = tf.maximum(kc - 1, 0)
    s_prev = tf.where(kc > 0, tf.gather(below, prev, batch_dims=1), 0.0)
    v_rest = tf.gather(above, kc, batch_dims=1) + tf.gather(v_s, kc, batch_dims=1)
    lam = (c_abs - s_prev) / tf.maximum(v_rest, 1e-30)
    lam = tf.where(feasible, lam, tf.reduce_max(r, axis=1))
    amount = tf.minimum(lam[:, None], r)
    if norm == "l2":
        amount = amount * aw
    return direction * amount


def _lp(t: tf.Tensor, norm: str) -> tf.Tensor:
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), 1)
    return tf.sqrt(tf.reduce_sum(tf.square(flat), 1))


def fab_run(model, x, y, target, ids, key, *, eps, norm, steps, alpha_max=0.1, eta=1.05, beta=0.9,
            random_start=False):
    """One targeted FAB run on a batch; returns ``(x_adv, fooled within eps)``."""
    shape = tf.shape(x)
    n = shape[0]
    col = lambda b: tf.reshape(b, [-1, 1, 1, 1])  # noqa: E731
    flat = lambda t: tf.reshape(t, [n, -1])  # noqa: E731
    x1 = x
    if random_start:  # restarts after the first start at random, radius eps/2 (reference code)
        if norm == "linf":
            u = 2.0 * point_uniform(ids, key, 0, x.shape[1:]) - 1.0
        else:
            u = point_normal(ids, key, 0, x.shape[1:])
        x1 = tf.clip_by_value(x + 0.5 * eps * u / col(_lp(u, norm) + 1e-12), 0.0, 1.0)

    def body(i, x1, best, x_adv):
        with tf.GradientTape() as tape:
            tape.watch(x1)
            logits = tf.cast(model(x1), tf.float32)
            f = tf.gather(logits, y, batch_dims=1) - tf.gather(logits, target, batch_dims=1)
            total = tf.reduce_sum(f)
        g = tape.gradient(total, x1)
        if g is None:
            raise ValueError(
                "model: no gradient flows from the logits to the images, so FAB cannot run; wrap "
                "non-differentiable steps with tfdefense.attacks.bpda, or use 'square'")
        w = flat(g)
        d1 = project_hyperplane(flat(x1), w, -f, norm)
        d2 = project_hyperplane(flat(x), w, -f - tf.reduce_sum(w * flat(x - x1), 1), norm)
        a1 = tf.maximum(_lp(d1, norm), 1e-8)
        a2 = tf.maximum(_lp(d2, norm), 1e-8)
        alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, alpha_max)
        # reshaping by a dynamic shape drops the static one, which while_loop needs unchanged
        d1, d2 = (tf.ensure_shape(tf.reshape(d, shape), x.shape) for d in (d1, d2))
        x_new = tf.clip_by_value(
            (x1 + eta * d1) * col(1.0 - alpha) + (x + eta * d2) * col(alpha), 0.0, 1.0)
        pred = tf.argmax(model(x_new), -1, output_type=y.dtype)
        is_adv = tf.not_equal(pred, y)
        dist = _lp(x_new - x, norm)
        better = tf.logical_and(is_adv, dist < best)
        x_adv = tf.where(col(better), x_new, x_adv)
        best = tf.where(better, dist, best)
        x_new = tf.where(col(is_adv), x + beta * (x_new - x), x_new)
        # tf.where broadcasting over col(...) and dynamic reshapes lose the static batch size,
        # which while_loop needs unchanged (a batch of one remaining point failed)
        return (i + 1, tf.ensure_shape(x_new, x1.shape), tf.ensure_shape(best, [x.shape[0]]),
                tf.ensure_shape(x_adv, x.shape))

    _, _, best, x_adv = tf.while_loop(
        lambda i, *_: i < steps, body, (tf.constant(0), x1, tf.fill([n], 1e10), x))
    fooled = best <= eps * (1.0 + 1e-6)
    return tf.where(col(fooled), x_adv, x), fooled


@register("fab_t")
class FAB(AutoAttackComponent):
    """FAB-T: targeted minimal-perturbation attack, scored within eps (Croce & Hein 2020).

    Args:
        eps: budget at which a found point counts (and the radius of random
            restarts); default 8/255 (Linf) / 1.0 (L2).
        norm: "linf" or "l2".
        steps: iterations per target and restart; default 100 (AutoAttack standard).
        restarts: starts per target (the first at x, later ones at random);
            default 1 (AutoAttack standard).
        n_target_classes: default None: 9 (AutoAttack standard), capped at
            classes − 1 (1 on 2 classes, 2 on 3); a number above classes − 1
            is capped with a warning.
        alpha_max, eta, beta: 0.1, 1.05, 0.9 (the paper's §3 and AutoAttack's values).
    """

    params = ("eps", "norm", "steps", "restarts", "n_target_classes", "alpha_max", "eta", "beta")

    def __init__(self, model=None, *, eps=None, norm="linf", steps=100, restarts=1,
                 n_target_classes=None, alpha_max=0.1, eta=1.05, beta=0.9, **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.steps = steps
        self.restarts = restarts
        self.n_target_classes = n_target_classes
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.restarts, "restarts")
        if self.n_target_classes is not None:
            check_positive_int(self.n_target_classes, "n_target_classes")
        check_number(self.alpha_max, "alpha_max", low=0.0, high=1.0)
        check_number(self.eta, "eta", low=1.0)
        check_number(self.beta, "beta", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)

    _restarts_differ = True
    targeted_runs = True

    def loss_for(self, num_classes: int) -> str:
        """"logit_difference": FAB-T linearizes z_y − z_t (any number of classes >= 2)."""
        return "logit_difference"

    def _run(self, model, x, y, target, ids, key, first, loss):
        return fab_run(model, x, y, target, ids, key, eps=float(self.eps), norm=self.norm,
                       steps=self.steps, alpha_max=float(self.alpha_max), eta=float(self.eta),
                       beta=float(self.beta), random_start=not first)
