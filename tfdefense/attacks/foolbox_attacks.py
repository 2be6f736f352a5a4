"""Foolbox 3 attacks: Carlini-Wagner L2 and DeepFool (Linf, L2), as FM-Defense uses.

FM-Defense (§4) generates FGSM, DeepFool (Linf) and C&W (L2) examples with
Foolbox, so these wrap ``foolbox.attacks.L2CarliniWagnerAttack`` and
``LinfDeepFoolAttack`` / ``L2DeepFoolAttack`` with Foolbox's (= the original
papers') defaults. cleverhans 4 also has C&W-L2, but it is broken under Keras 3:
it calls ``optimizer.variables()``, a property in Keras 3, and shimming that
call zeroes the learning rate with the other optimizer variables, silently
(cleverhans#1022, PR #1158), hence Foolbox.

Foolbox is the optional ``attacks`` extra (``pip install tfdefense[attacks]``).
Under numpy 2 its eagerpy backend calls the removed ``np.find_common_type``;
we install the equivalent ``np.result_type`` shim here, before Foolbox runs,
so the user never has to. The model is wrapped in a ``tf.function`` before
Foolbox sees it (Foolbox itself runs eagerly, step by step).

These are minimization attacks: with ``eps=None`` (default) they return the
smallest perturbation they find, unbounded; with ``eps`` the result is
clipped to the eps ball, as Foolbox does for a given epsilon.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    >>> get_attack("deepfool_l2", model=model, steps=2).generate(x).shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.attacks.base import Attack, register
from tfdefense.validation import check_number, check_positive_int


def import_foolbox():
    """Import foolbox with the numpy-2 shim, or ``ImportError`` saying how to install it."""
    if not hasattr(np, "find_common_type"):
        # eagerpy 0.30 calls np.find_common_type, removed in numpy 2.0
        np.find_common_type = lambda array_types, scalar_types: np.result_type(
            *array_types, *scalar_types
        )
    try:
        import foolbox
    except ImportError as exc:  # pragma: no cover - the extra is installed in dev
        raise ImportError(
            "this attack needs foolbox 3: pip install 'tfdefense[attacks]' (or foolbox>=3.3,<4)"
        ) from exc
    return foolbox


class _FoolboxAttack(Attack):
    def _check_params(self):
        super()._check_params()
        check_positive_int(self.steps, "steps")

    def _foolbox_attack(self, fb, num_classes: int):
        raise NotImplementedError

    def _attack_batch(self, model, x, y, seed):
        fb = import_foolbox()
        compiled = getattr(self, "_compiled_model", None)
        if compiled is None or compiled[0] is not model:
            self._compiled_model = (model, tf.function(model, reduce_retracing=True))
        fmodel = fb.TensorFlowModel(self._compiled_model[1], bounds=(0.0, 1.0))
        criterion = fb.criteria.Misclassification(tf.cast(y, tf.int64))
        num_classes = int(self._compiled_model[1](x[:1]).shape[-1])
        attack = self._foolbox_attack(fb, num_classes)
        _, clipped, _ = attack(fmodel, x, criterion, epsilons=self.eps)
        return clipped


@register("cw_l2")
class CWL2(_FoolboxAttack):
    """Carlini & Wagner (2017) L2 attack via Foolbox's ``L2CarliniWagnerAttack``.

    Args:
        binary_search_steps: searches over the constant c; default 9 (C&W 2017).
        steps: Adam steps per search; default 10000 (C&W 2017, Foolbox).
        step_size: Adam learning rate; default 0.01 (same).
        confidence: kappa of the margin; default 0 (same).
        initial_const: first c; default 1e-3 (same).
        abort_early: stop a search when the loss stalls; default True.
        eps: optional L2 bound the result is clipped to; default None (unbounded).
    """

    params = ("binary_search_steps", "steps", "step_size", "confidence", "initial_const",
              "abort_early", "eps", "norm")
    supported_norms = ("l2",)

    def __init__(self, model=None, *, binary_search_steps=9, steps=10000, step_size=0.01,
                 confidence=0.0, initial_const=1e-3, abort_early=True, eps=None, norm="l2",
                 **kwargs):
        super().__init__(model, **kwargs)
        self.binary_search_steps = binary_search_steps
        self.steps = steps
        self.step_size = step_size
        self.confidence = confidence
        self.initial_const = initial_const
        self.abort_early = abort_early
        self.eps = eps
        self.norm = norm
        self._check_params()

    def _check_params(self):
        if getattr(self, "norm", "l2") != "l2":
            raise ValueError(
                f"norm: attack 'cw_l2' supports norm in ('l2',), got {self.norm!r}; "
                "for Linf use 'cw_linf'"
            )
        super()._check_params()
        check_positive_int(self.binary_search_steps, "binary_search_steps")
        check_number(self.step_size, "step_size", low=0.0, low_inclusive=False)
        check_number(self.confidence, "confidence", low=0.0)
        check_number(self.initial_const, "initial_const", low=0.0, low_inclusive=False)

    def _foolbox_attack(self, fb, num_classes):
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps, steps=self.steps,
            stepsize=self.step_size, confidence=self.confidence,
            initial_const=self.initial_const, abort_early=self.abort_early,
        )


@register("deepfool_l2", norm="l2")
@register("deepfool_linf", norm="linf")
@register("deepfool")
class DeepFool(_FoolboxAttack):
    """DeepFool (Moosavi-Dezfooli et al. 2016) via Foolbox, Linf or L2.

    Args:
        norm: "linf" (FM-Defense §4) or "l2".
        steps: maximum iterations; default 50 (Foolbox).
        candidates: classes considered per step; default 10 (Foolbox), capped at
            the model's number of classes.
        overshoot: default 0.02 (DeepFool paper, Foolbox).
        eps: optional bound the result is clipped to; default None (unbounded,
            as FM-Defense reports DeepFool without a budget).
    """

    params = ("norm", "steps", "candidates", "overshoot", "eps")
    supported_norms = ("linf", "l2")

    def __init__(self, model=None, *, norm="linf", steps=50, candidates=10, overshoot=0.02,
                 eps=None, **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.steps = steps
        self.candidates = candidates
        self.overshoot = overshoot
        self.eps = eps
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.candidates, "candidates", minimum=2)
        check_number(self.overshoot, "overshoot", low=0.0)

    def _foolbox_attack(self, fb, num_classes):
        cls = fb.attacks.LinfDeepFoolAttack if self.norm == "linf" else fb.attacks.L2DeepFoolAttack
        # Foolbox refuses candidates > classes (e.g. FM-Defense's binary CelebA task)
        return cls(steps=self.steps, candidates=min(self.candidates, num_classes),
                   overshoot=self.overshoot)
