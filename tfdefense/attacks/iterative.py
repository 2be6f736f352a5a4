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
  step in Python (see ``bench/attacks.py`` for the speed difference). The
  graph, ``iterative_attack`` and its steps, lives in ``tfdefense.perturbation``
  (adversarial training runs it too) and is importable from here as before.
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

from tfdefense.attacks.base import CompiledAttack, register
from tfdefense.perturbation import (  # noqa: F401  (the compiled core; public here as before)
    iterative_attack,
    iterative_attack_early_stop,
    objective_gradient,
    project,
    random_start,
    steepest_step,
)
from tfdefense.validation import check_number

_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}


class _GradientAttack(CompiledAttack):
    supported_norms = ("linf", "l2")
    supports_targeted = True
    backends = ("compiled", "cleverhans")

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
