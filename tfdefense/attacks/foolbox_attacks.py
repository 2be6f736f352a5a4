"""Carlini-Wagner L2 and DeepFool (Linf, L2), as FM-Defense uses them: Foolbox 3's attacks.

FM-Defense (§4) generates FGSM, DeepFool (Linf) and C&W (L2) examples with
Foolbox, so these are Foolbox 3's ``L2CarliniWagnerAttack`` and
``LinfDeepFoolAttack`` / ``L2DeepFoolAttack`` with Foolbox's (= the original
papers') defaults. Two backends:

* ``backend="compiled"`` (default): our port of Foolbox's algorithm, the whole
  attack of a batch one ``tf.function`` graph with ``tf.while_loop`` steps,
  traced once per model and image shape (``tfdefense.attacks.cw_l2``, from
  ``foolbox/attacks/carlini_wagner.py``; ``tfdefense.attacks.deepfool``, from
  ``foolbox/attacks/deepfool.py``). Why our own: speed. Foolbox runs eagerly,
  one Python round trip per Adam step (C&W) or per candidate class per step
  (DeepFool); the algorithm and its arithmetic are Foolbox's, and the tests
  check that both backends fool the same images with the same examples (bit for
  bit on CPU, as measured there and by ``bench/attacks.py``). Being a graph it
  also runs over a strategy's replicas (``replication = "batches"``).
* ``backend="foolbox"``: Foolbox itself, kept as the reference to compare with
  (``bench/attacks.py`` times the two). The model is wrapped in a
  ``tf.function`` before Foolbox sees it; Foolbox itself runs step by step.

cleverhans 4 also has C&W-L2, but it is broken under Keras 3: it calls
``optimizer.variables()``, a property in Keras 3, and shimming that call zeroes
the learning rate with the other optimizer variables, silently (cleverhans#1022,
PR #1158), hence Foolbox's algorithm.

Foolbox is the optional ``attacks`` extra (``pip install tfdefense[attacks]``),
needed only for ``backend="foolbox"``. Under numpy 2 its eagerpy backend calls
the removed ``np.find_common_type``; ``import_foolbox`` installs the equivalent
``np.result_type`` shim before Foolbox runs, so the user never has to.

These are minimization attacks: with ``eps=None`` (default) they return the
smallest perturbation they find, unbounded; with ``eps`` the result is clipped
to the eps ball, as Foolbox does for a given epsilon. As in Foolbox, C&W returns
the zero image (before clipping) for an image it never fooled.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    >>> get_attack("deepfool_l2", model=model, steps=2).generate(x).shape
    (2, 28, 28, 1)
    >>> x_adv = get_attack("cw_l2", model=model, binary_search_steps=2, steps=5).generate(x)
    >>> bool(np.all((x_adv >= 0) & (x_adv <= 1)))
    True
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.attacks.base import CompiledAttack, register
from tfdefense.attacks.cw_l2 import carlini_wagner_l2, clip_l2
from tfdefense.attacks.deepfool import clip_linf, deepfool
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


def run_foolbox(attack, model, x: tf.Tensor, y: tf.Tensor, eps: float | None) -> tf.Tensor:
    """Run a Foolbox minimization ``attack`` on one batch; the result clipped to ``eps``.

    ``model``: the callable Foolbox sees (the caller wraps the attacked model in a
    ``tf.function`` once); Foolbox itself runs eagerly, step by step.
    """
    fb = import_foolbox()
    fmodel = fb.TensorFlowModel(model, bounds=(0.0, 1.0))
    criterion = fb.criteria.Misclassification(tf.cast(y, tf.int64))
    _, clipped, _ = attack(fmodel, x, criterion, epsilons=eps)
    return clipped


class _MinimizationAttack(CompiledAttack):
    """A compiled attack with Foolbox's version kept as ``backend="foolbox"``."""

    backends = ("compiled", "foolbox")
    trace_any_batch = True  # one trace per model and image shape, for every batch size

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.steps, "steps")

    def _foolbox_attack(self, fb, num_classes: int):
        raise NotImplementedError

    def _attack_batch(self, model, x, y, seed):
        if self.backend == "foolbox":
            return self._run_foolbox(model, x, y)
        return super()._attack_batch(model, x, tf.cast(y, tf.int64), seed)

    def _run_foolbox(self, model, x, y):
        fb = import_foolbox()
        compiled = getattr(self, "_compiled_model", None)
        if compiled is None or compiled[0] is not model:
            self._compiled_model = (model, tf.function(model, reduce_retracing=True))
        num_classes = int(self._compiled_model[1](x[:1]).shape[-1])
        return run_foolbox(self._foolbox_attack(fb, num_classes), self._compiled_model[1], x, y,
                           self.eps)


@register("cw_l2")
class CWL2(_MinimizationAttack):
    """Carlini & Wagner (2017) L2 attack: Foolbox's ``L2CarliniWagnerAttack``, compiled.

    Args:
        binary_search_steps: searches over the constant c; default 9 (C&W 2017).
        steps: Adam steps per search; default 10000 (C&W 2017, Foolbox).
        step_size: Adam learning rate; default 0.01 (same).
        confidence: kappa of the margin; default 0 (same).
        initial_const: first c; default 1e-3 (same).
        abort_early: stop a search when the loss stalls (checked every
            ceil(steps / 10) steps, Foolbox's rule); default True.
        eps: optional L2 bound the result is clipped to; default None (unbounded).
        backend: "compiled" (default) or "foolbox" (see the module docstring).
    """

    params = ("binary_search_steps", "steps", "step_size", "confidence", "initial_const",
              "abort_early", "eps", "norm", "backend")
    supported_norms = ("l2",)

    def __init__(self, model=None, *, binary_search_steps=9, steps=10000, step_size=0.01,
                 confidence=0.0, initial_const=1e-3, abort_early=True, eps=None, norm="l2",
                 backend="compiled", **kwargs):
        super().__init__(model, **kwargs)
        self.binary_search_steps = binary_search_steps
        self.steps = steps
        self.step_size = step_size
        self.confidence = confidence
        self.initial_const = initial_const
        self.abort_early = abort_early
        self.eps = eps
        self.norm = norm
        self.backend = backend
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
        if not isinstance(self.abort_early, bool | np.bool_):
            raise ValueError(f"abort_early: expected True or False, got {self.abort_early!r}")

    def _graph(self, model, x, y, seed):
        x_adv = carlini_wagner_l2(
            model, x, y, binary_search_steps=int(self.binary_search_steps), steps=int(self.steps),
            stepsize=float(self.step_size), confidence=float(self.confidence),
            initial_const=float(self.initial_const), abort_early=bool(self.abort_early))
        return x_adv if self.eps is None else clip_l2(x, x_adv, float(self.eps))

    def _foolbox_attack(self, fb, num_classes):
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps, steps=self.steps,
            stepsize=self.step_size, confidence=self.confidence,
            initial_const=self.initial_const, abort_early=self.abort_early,
        )


@register("deepfool_l2", norm="l2")
@register("deepfool_linf", norm="linf")
@register("deepfool")
class DeepFool(_MinimizationAttack):
    """DeepFool (Moosavi-Dezfooli et al. 2016), Linf or L2: Foolbox's, compiled.

    Args:
        norm: "linf" (FM-Defense §4) or "l2".
        steps: maximum iterations; default 50 (Foolbox).
        candidates: classes considered per step; default 10 (Foolbox), capped at
            the model's number of classes.
        overshoot: default 0.02 (DeepFool paper, Foolbox).
        eps: optional bound the result is clipped to; default None (unbounded,
            as FM-Defense reports DeepFool without a budget).
        backend: "compiled" (default) or "foolbox" (see the module docstring).
    """

    params = ("norm", "steps", "candidates", "overshoot", "eps", "backend")
    supported_norms = ("linf", "l2")

    def __init__(self, model=None, *, norm="linf", steps=50, candidates=10, overshoot=0.02,
                 eps=None, backend="compiled", **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.steps = steps
        self.candidates = candidates
        self.overshoot = overshoot
        self.eps = eps
        self.backend = backend
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.candidates, "candidates", minimum=2)
        check_number(self.overshoot, "overshoot", low=0.0)

    def _graph(self, model, x, y, seed):
        x_adv = deepfool(model, x, y, norm=self.norm, steps=int(self.steps),
                         candidates=int(self.candidates), overshoot=float(self.overshoot))
        if self.eps is None:
            return x_adv
        eps = float(self.eps)
        return clip_linf(x, x_adv, eps) if self.norm == "linf" else clip_l2(x, x_adv, eps)

    def _foolbox_attack(self, fb, num_classes):
        cls = fb.attacks.LinfDeepFoolAttack if self.norm == "linf" else fb.attacks.L2DeepFoolAttack
        # Foolbox refuses candidates > classes (e.g. FM-Defense's binary CelebA task)
        return cls(steps=self.steps, candidates=min(self.candidates, num_classes),
                   overshoot=self.overshoot)
