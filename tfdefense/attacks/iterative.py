"""Gradient attacks of the cleverhans family: FGSM, BIM, PGD (Linf, L2), MIM.

The maths follow cleverhans 4 (``fast_gradient_method``,
``projected_gradient_descent``, ``momentum_iterative_method``): the same sign /
L2-normalized steps, the same ``clip_eta`` projection, the same MIM gradient
normalization. Two backends:

* ``backend="compiled"`` (default): our own version, the whole attack (random
  start, every step, projection) is one ``tf.function`` graph with a
  ``tf.while_loop`` over steps. Why not cleverhans itself: its random start
  draws from TensorFlow's global generator (no per-call seed, so results
  cannot be made to repeat per seed), and run as it is it executes step by
  step in Python (see ``bench/attacks.py`` for the speed difference).
* ``backend="cleverhans"``: calls the cleverhans function unchanged (eager),
  with ``sanity_checks=False`` because its asserts fail under numpy 2
  (``basic_iterative_method`` always asserts, so BIM is PGD with
  ``rand_init=False``, which is what cleverhans' BIM is). Kept as the reference
  the tests compare the compiled backend against; its random start is seeded
  through ``tf.random.set_seed(seed)`` per batch.

Defaults are CD-VAE's (§4.2 and the official ``advex/attacks.py``): Linf eps
8/255, L2 eps 1.0, 5 steps of size eps/sqrt(steps), random start for PGD.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import PGD
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    >>> x_adv = PGD(model, norm="l2", eps=1.0, steps=3).generate(x)
    >>> bool(np.sqrt(((x_adv - x) ** 2).sum(axis=(1, 2, 3))).max() <= 1.0 + 1e-4)
    True
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdefense.attacks import losses
from tfdefense.attacks.base import CompiledAttack, register
from tfdefense.validation import check_number

_TINY = 1e-12  # cleverhans' avoid_zero_div
_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
_REDUCE = (1, 2, 3)


def _l2(t: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.maximum(_TINY, tf.reduce_sum(tf.square(t), _REDUCE, keepdims=True)))


def steepest_step(grad: tf.Tensor, size, norm: str) -> tf.Tensor:
    """cleverhans ``optimize_linear``: the steepest ascent step of ``size`` in ``norm``."""
    if norm == "linf":
        return size * tf.sign(grad)
    return size * grad / _l2(grad)


def project(x_adv: tf.Tensor, x: tf.Tensor, eps, norm: str) -> tf.Tensor:
    """cleverhans ``clip_eta`` onto the ``eps`` ball around ``x``, then into [0, 1]."""
    eta = x_adv - x
    if norm == "linf":
        eta = tf.clip_by_value(eta, -eps, eps)
    else:
        eta = eta * tf.minimum(1.0, eps / _l2(eta))
    return tf.clip_by_value(x + eta, 0.0, 1.0)


def random_start(x: tf.Tensor, eps, norm: str, seed: tf.Tensor) -> tf.Tensor:
    """Uniform start in the ``eps`` ball (Madry et al. 2018; L2: uniform in the ball)."""
    shape = tf.shape(x)
    if norm == "linf":
        eta = tf.random.stateless_uniform(shape, seed, -1.0, 1.0) * eps
    else:
        direction = tf.random.stateless_normal(shape, seed)
        direction = direction / _l2(direction)
        dim = tf.cast(tf.reduce_prod(shape[1:]), x.dtype)
        u = tf.random.stateless_uniform(shape[:1], seed + 1)
        radius = tf.reshape(u ** (1.0 / dim), [-1, 1, 1, 1])
        eta = direction * radius * eps
    return project(x + eta, x, eps, norm)


def objective_gradient(model, x_adv, y, loss: str, kappa, targeted: bool) -> tf.Tensor:
    """Gradient of the summed per-example objective with respect to ``x_adv``."""
    with tf.GradientTape() as tape:
        tape.watch(x_adv)
        logits = model(x_adv)
        if loss == "ce":
            value = losses.cross_entropy(logits, y, targeted)
        else:
            value = losses.margin(logits, y, kappa, targeted)
        value = tf.reduce_sum(value)
    grad = tape.gradient(value, x_adv)
    if grad is None:
        raise ValueError(
            "model: no gradient flows from the logits to the images; wrap "
            "non-differentiable steps with tfdefense.attacks.bpda"
        )
    return grad


def iterative_attack(model, x, y, seed, *, eps, step, steps, norm, loss="ce", kappa=float("inf"),
                     targeted=False, rand_init=False, decay=None):
    """The shared graph of FGSM / BIM / PGD / MIM / C&W-Linf (one batch)."""
    x_adv = random_start(x, eps, norm, seed) if rand_init else x
    momentum = tf.zeros_like(x)
    for _ in tf.range(steps):
        grad = objective_gradient(model, x_adv, y, loss, kappa, targeted)
        if decay is not None:  # MIM (Dong et al. 2018), as cleverhans normalizes
            grad = grad / tf.maximum(_TINY, tf.reduce_mean(tf.abs(grad), _REDUCE, keepdims=True))
            momentum = decay * momentum + grad
            grad = momentum
        # clip into [0, 1] before the projection, as cleverhans' fast_gradient_method does
        stepped = tf.clip_by_value(x_adv + steepest_step(grad, step, norm), 0.0, 1.0)
        x_adv = project(stepped, x, eps, norm)
    return x_adv


def iterative_attack_early_stop(model, x, y, seed, *, eps, step, steps, norm, loss="ce",
                               kappa=float("inf"), targeted=False, rand_init=False, decay=None):
    """``iterative_attack`` that freezes each example at its first success.

    An example whose current iterate is already misclassified (untargeted) or
    classified as its target (targeted) keeps that iterate and leaves the
    batch: later steps run on the still-unbroken examples only. The success
    test reuses the logits of the gradient's forward pass, so it costs
    nothing. The result differs from the plain version only where the plain
    attack would walk back out of a successful point, so robust accuracy can
    only go down; the work shrinks with every success.
    """
    x_adv = random_start(x, eps, norm, seed) if rand_init else x
    momentum = tf.zeros_like(x)
    active = tf.range(tf.shape(x)[0])

    def body(i, x_adv, momentum, active):
        xa, xo, ya = (tf.gather(t, active) for t in (x_adv, x, y))
        with tf.GradientTape() as tape:
            tape.watch(xa)
            logits = model(xa)
            if loss == "ce":
                value = losses.cross_entropy(logits, ya, targeted)
            else:
                value = losses.margin(logits, ya, kappa, targeted)
            value = tf.reduce_sum(value)
        grad = tape.gradient(value, xa)
        if grad is None:
            raise ValueError("model: no gradient flows from the logits to the images; wrap "
                             "non-differentiable steps with tfdefense.attacks.bpda")
        pred = tf.argmax(logits, axis=-1, output_type=ya.dtype)
        done = tf.equal(pred, ya) if targeted else tf.not_equal(pred, ya)
        if decay is not None:
            ma = tf.gather(momentum, active)
            grad = grad / tf.maximum(_TINY, tf.reduce_mean(tf.abs(grad), _REDUCE, keepdims=True))
            ma = decay * ma + grad
            grad = ma
            momentum = tf.tensor_scatter_nd_update(momentum, active[:, None], ma)
        stepped = tf.clip_by_value(xa + steepest_step(grad, step, norm), 0.0, 1.0)
        new = tf.where(done[:, None, None, None], xa, project(stepped, xo, eps, norm))
        x_adv = tf.tensor_scatter_nd_update(x_adv, active[:, None], new)
        return i + 1, x_adv, momentum, tf.boolean_mask(active, tf.logical_not(done))

    _, x_adv, _, _ = tf.while_loop(
        lambda i, _x, _m, active: tf.logical_and(i < steps, tf.size(active) > 0),
        body,
        (tf.constant(0), x_adv, momentum, active),
        shape_invariants=(tf.TensorShape([]), x_adv.shape, momentum.shape, tf.TensorShape([None])),
    )
    return x_adv


class _GradientAttack(CompiledAttack):
    supported_norms = ("linf", "l2")
    supports_targeted = True
    backends = ("compiled", "cleverhans")

    def _check_params(self):
        super()._check_params()
        if self.backend not in self.backends:
            raise ValueError(
                f"backend: attack {self.name!r} supports backend in {self.backends}, "
                f"got {self.backend!r}"
            )

    @property
    def step(self) -> float:
        return self.eps

    def _attack_batch(self, model, x, y, seed):
        if self.backend == "cleverhans":
            tf.random.set_seed(int(seed[0]) * 100_003 + int(seed[1]))
            return self._cleverhans(model, x, y)
        return super()._attack_batch(model, x, y, seed)


@register("fgsm")
class FGSM(_GradientAttack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps.

    ``norm="l2"`` gives the fast gradient method with an L2-normalized step.

    Args:
        eps: perturbation budget; default 8/255 (Linf) / 1.0 (L2), CD-VAE §4.2.
            FM-Defense uses eps 0.3 on MNIST (``presets.fm_defense``).
        norm: "linf" or "l2".
        targeted: move towards ``y`` instead of away from it.
        backend: "compiled" or "cleverhans" (see module docstring).
    """

    params = ("eps", "norm", "targeted", "backend")

    def __init__(self, model=None, *, eps=None, norm="linf", targeted=False, backend="compiled",
                 **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.targeted = targeted
        self.backend = backend
        self._check_params()

    def _graph(self, model, x, y, seed):
        return iterative_attack(model, x, y, seed, eps=self.eps, step=self.eps, steps=1,
                                norm=self.norm, targeted=self.targeted)

    def _cleverhans(self, model, x, y):
        from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

        return fast_gradient_method(model, x, self.eps, _np_norm(self.norm), clip_min=0.0,
                                    clip_max=1.0, y=y, targeted=self.targeted)


@register("pgd_l2", norm="l2")
@register("pgd_linf", norm="linf")
@register("pgd")
class PGD(_GradientAttack):
    """Projected gradient descent (Madry et al. 2018) in Linf or L2.

    Args:
        eps: budget; default 8/255 (Linf) / 1.0 (L2), CD-VAE §4.2 and Table 6.
        steps: iterations; default 5 (CD-VAE detection, §4.2; defense uses 100).
        step_size: step; default eps/sqrt(steps) (CD-VAE ``advex/attacks.py``).
        norm: "linf" or "l2".
        rand_init: start uniformly in the eps ball (default True, CD-VAE).
        targeted: move towards ``y``.
        early_stop: freeze each example at its first success and drop it from
            the batch (faster; robust accuracy can only go down; off by default
            because the papers' examples are the last iterate, which matters
            for detection).
        backend: "compiled" or "cleverhans".
    """

    params = ("eps", "steps", "step_size", "norm", "rand_init", "targeted", "early_stop",
              "backend")
    _rand_init_default = True

    def __init__(self, model=None, *, eps=None, steps=5, step_size=None, norm="linf",
                 rand_init=None, targeted=False, early_stop=False, backend="compiled", **kwargs):
        super().__init__(model, **kwargs)
        self.early_stop = early_stop
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.steps = steps
        self.step_size = step_size
        self.rand_init = self._rand_init_default if rand_init is None else rand_init
        self.targeted = targeted
        self.backend = backend
        self._check_params()

    def _check_params(self):
        super()._check_params()
        if self.step_size is not None:
            check_number(self.step_size, "step_size", low=0.0, low_inclusive=False)
            if self.backend == "cleverhans" and self.step_size > self.eps:
                raise ValueError(
                    f"step_size: cleverhans needs step_size <= eps={self.eps}, got {self.step_size}"
                )
        if not isinstance(self.rand_init, bool):
            raise ValueError(f"rand_init: expected True or False, got {self.rand_init!r}")
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop: expected True or False, got {self.early_stop!r}")
        if self.early_stop and self.backend == "cleverhans":
            raise ValueError("early_stop: cleverhans has no early stop; use backend='compiled'")

    @property
    def step(self) -> float:
        return self.eps / math.sqrt(self.steps) if self.step_size is None else self.step_size

    def _run(self, model, x, y, seed, **kw):
        fn = iterative_attack_early_stop if self.early_stop else iterative_attack
        return fn(model, x, y, seed, eps=self.eps, step=self.step, steps=self.steps,
                  norm=self.norm, targeted=self.targeted, rand_init=self.rand_init, **kw)

    def _graph(self, model, x, y, seed):
        return self._run(model, x, y, seed)

    def _cleverhans(self, model, x, y):
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

        return projected_gradient_descent(
            model, x, self.eps, self.step, self.steps, _np_norm(self.norm), clip_min=0.0,
            clip_max=1.0, y=y, targeted=self.targeted, rand_init=self.rand_init,
            sanity_checks=False,
        )


@register("bim")
class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2017): PGD without the random start.

    Same arguments as ``PGD``; ``rand_init`` defaults to False. CD-VAE §4.2
    runs it for 5 steps of size eps/sqrt(5) at eps 8/255.
    """

    _rand_init_default = False


@register("mim")
class MIM(PGD):
    """Momentum iterative method (Dong et al. 2018), cleverhans' formulation.

    Args:
        decay: momentum decay factor mu; default 1.0 (Dong et al. 2018, cleverhans).
        other arguments as ``PGD``; ``rand_init`` defaults to False.
    """

    params = (*PGD.params, "decay")
    _rand_init_default = False

    def __init__(self, model=None, *, decay=1.0, **kwargs):
        self.decay = decay
        super().__init__(model, **kwargs)

    def _check_params(self):
        super()._check_params()
        check_number(self.decay, "decay", low=0.0)
        if self.rand_init and self.backend == "cleverhans":
            raise ValueError("rand_init: cleverhans' MIM has no random start, got True")

    def _graph(self, model, x, y, seed):
        return self._run(model, x, y, seed, decay=float(self.decay))

    def _cleverhans(self, model, x, y):
        from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method

        return momentum_iterative_method(
            model, x, self.eps, self.step, self.steps, _np_norm(self.norm), clip_min=0.0,
            clip_max=1.0, y=y, targeted=self.targeted, decay_factor=float(self.decay),
            sanity_checks=False,
        )


def _np_norm(norm: str):
    return np.inf if norm == "linf" else 2
