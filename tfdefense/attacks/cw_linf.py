"""C&W-Linf as the CD-VAE code runs it: PGD on the Carlini-Wagner margin loss.

The official CD-VAE evaluation (``advex/attacks.py``, ``PGDAttack(loss="margin")``)
does not run Carlini & Wagner's original Linf attack; it runs PGD with a random
start on the f6 margin ``min(max_{j != y} Z_j - Z_y, kappa)`` with kappa = 10
and step eps/sqrt(steps). No kept library ships this (cleverhans 4 has only
C&W-L2, and that one is broken under Keras 3: it calls ``optimizer.variables()``,
a property in Keras 3), so it is ours, compiled like ``PGD``.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    >>> x_adv = get_attack("cw_linf", model=model, eps=0.1, steps=2, kappa=5.0).generate(x)
    >>> x_adv.shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

from tfdefense.attacks.base import register
from tfdefense.attacks.iterative import PGD
from tfdefense.validation import check_number


@register("cw_pgd_l2", norm="l2")
@register("cw_linf", norm="linf")
@register("cw_pgd")
class CWPGD(PGD):
    """PGD on the Carlini-Wagner margin loss (C&W-Linf of CD-VAE Tables 4, 6, 7).

    Args:
        kappa: cap of the margin (confidence); default 10 (CD-VAE code,
            ``MarginLoss(kappa=10)``).
        eps, steps, step_size, norm, rand_init, targeted, early_stop: as ``PGD`` (CD-VAE
            defaults: eps 8/255, eps/sqrt(steps), random start; 5 steps for
            detection, 100 for defense).
    """

    params = (*(p for p in PGD.params if p != "backend"), "kappa")
    backends = ("compiled",)

    def __init__(self, model=None, *, kappa=10.0, **kwargs):
        self.kappa = kappa
        super().__init__(model, **kwargs)

    def _check_params(self):
        super()._check_params()
        check_number(self.kappa, "kappa", low=0.0, low_inclusive=False)

    def _graph(self, model, x, y, seed):
        return self._run(model, x, y, seed, loss="margin", kappa=float(self.kappa))
