"""Detector-aware PGD: attack a whole ``Defense``, its classifier and its detector at once.

A defense that rejects inputs is not beaten by an example its classifier gets wrong if its
detector refuses that example. Carlini & Wagner (2017, "Adversarial examples are not easily
detected" and "MagNet and 'Efficient Defenses...' are not robust") attack both at once: one
loss that pushes the label away from the truth while it keeps the detector quiet. Every
``Defense`` that detects gives the detector's side as one differentiable number,
``detection_margin(x)`` (> 0 exactly where ``defend`` rejects), so one attack serves them all.

``DetectorAwarePGD`` runs PGD (Linf or L2) on a ``Defense`` and maximises, per image,

    min(L(defense.logits(x'), y), kappa) − c · relu(defense.detection_margin(x') + tau)

with L the Carlini-Wagner margin max_{j≠y} z_j − z_y (``loss="margin"``) or the
cross-entropy (``loss="ce"``), c = ``penalty`` and tau a safety offset (the penalty starts
``tau`` before the rejection threshold). Details:

* **Scale-free penalty** (``normalize=True``, default): the two terms' gradients are each
  scaled to unit L2 norm per image before they are combined, so ``penalty`` does not depend
  on the units of the margin (MagNet's is a mean squared error of order 1e-3, FM-Defense's a
  distance of order 1). With c > 1 an iterate that the detector (nearly) rejects moves more
  to be accepted than to be misclassified. ``normalize=False`` takes the gradient of the
  objective as written.
* **EOT** (Athalye et al. 2018): when ``defense.stochastic``, the classification term is the
  mean over ``eot_iter`` draws of ``defense.logits`` (one batch of ``eot_iter * N`` images),
  so its gradient is the average gradient. The margin is deterministic by the ``Defense``
  contract (only ``logits`` is random) and is computed once.
* **Best iterate**: after every step each iterate is judged by ``defense.defend``, the ops
  ``predict`` runs; an iterate succeeds when its label is wrong and it is not rejected. The
  attack returns, per image, the successful iterate with the largest objective value, or the
  last iterate when none succeeded.

A defense that does not detect (``detects = False``) has no penalty term: the attack is then
PGD on ``defense.logits`` (with EOT) that keeps the best successful iterate.

The whole attack of a batch (random start, steps, checks) is one ``tf.function`` graph.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import DetectorAwarePGD
    >>> from tfdefense.baselines import MagNet, magnet_autoencoder, MNIST_STRUCTURE_II
    >>> from tfdefense.nets import small_cnn
    >>> magnet = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
    ...                 magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=0.1)
    >>> x = np.random.default_rng(0).random((10, 28, 28, 1), dtype="float32")
    >>> _ = magnet.fit_thresholds(x)
    >>> attack = DetectorAwarePGD(magnet, eps=0.1, steps=3)
    >>> x_adv = attack.generate(x[:2], np.array([3, 7]))
    >>> bool(np.abs(x_adv - x[:2]).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdefense.attacks import losses
from tfdefense.attacks.base import CompiledAttack, check_model_output, predict_logits, register
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.perturbation import project, random_start, steepest_step
from tfdefense.validation import check_images, check_labels, check_number, check_positive_int

#: EOT draws per step on a stochastic defense when ``eot_iter`` is None (AutoAttack rand's)
DEFAULT_EOT_ITER = 20
LOSSES = ("margin", "ce")
_TINY = 1e-12


def _unit(grad: tf.Tensor) -> tf.Tensor:
    """``grad`` scaled to unit L2 norm per image (zero stays zero)."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=(1, 2, 3), keepdims=True))
    return grad / tf.maximum(norm, _TINY)


@register("detector_aware_pgd_l2", norm="l2")
@register("detector_aware_pgd_linf", norm="linf")
@register("detector_aware_pgd")
class DetectorAwarePGD(CompiledAttack):
    """PGD on a ``Defense`` that fools its classifier and keeps its detector quiet.

    See the module docstring for the objective. ``model`` (here or in ``generate``) is the
    ``Defense``, not a callable.

    Args:
        eps: budget; default 8/255 (Linf) / 1.0 (L2).
        steps: iterations; default 40.
        step_size: step; default 2.5 · eps / steps (Madry et al. 2018).
        norm: "linf" or "l2".
        rand_init: start uniformly in the eps ball (default True).
        loss: "margin" (Carlini-Wagner f6, default) or "ce" (cross-entropy).
        kappa: cap of the classification term (confidence); default 10 (the CD-VAE
            code's ``MarginLoss(kappa=10)``); ``float("inf")`` for no cap.
        penalty: c, the weight of the detection term; default 2 (with ``normalize``:
            a rejected iterate moves twice as much towards acceptance as towards
            misclassification). 0 turns the detection term off.
        tau: the penalty acts where ``detection_margin > -tau``; default 0 (only where
            rejected), in the units of the defense's margin.
        eot_iter: draws of ``defense.logits`` per step; default None: 20 on a stochastic
            defense (AutoAttack rand's), 1 otherwise.
        normalize: scale each term's gradient to unit norm per image before combining
            them (default True; see the module docstring).
        batch_size, seed, verbose: as every attack.
    """

    supported_norms = ("linf", "l2")
    params = ("eps", "steps", "step_size", "norm", "rand_init", "loss", "kappa", "penalty", "tau",
              "eot_iter", "normalize")

    def __init__(self, model: Defense | None = None, *, eps: float | None = None, steps: int = 40,
                 step_size: float | None = None, norm: str = "linf", rand_init: bool = True,
                 loss: str = "margin", kappa: float = 10.0, penalty: float = 2.0,
                 tau: float = 0.0, eot_iter: int | None = None, normalize: bool = True,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = {"linf": 8 / 255, "l2": 1.0}.get(norm, 8 / 255) if eps is None else eps
        self.steps = steps
        self.step_size = step_size
        self.rand_init = rand_init
        self.loss = loss
        self.kappa = kappa
        self.penalty = penalty
        self.tau = tau
        self.eot_iter = eot_iter
        self.normalize = normalize
        self._check_params()

    # -- parameters -------------------------------------------------------------------
    def _check_params(self) -> None:
        model, self.model = self.model, None  # a Defense is not callable; checked below
        try:
            super()._check_params()
        finally:
            self.model = model
        if model is not None and not isinstance(model, Defense):
            raise ValueError(f"model: the detector-aware attack runs on a tfdefense Defense, got "
                             f"{type(model).__name__}")
        if self.step_size is not None:
            check_number(self.step_size, "step_size", low=0.0, low_inclusive=False)
        for name in ("rand_init", "normalize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if (isinstance(self.kappa, bool) or not isinstance(self.kappa, int | float | np.number)
                or not self.kappa > 0 or math.isnan(self.kappa)):
            raise ValueError(f"kappa: expected a number > 0 (inf for no cap), got {self.kappa!r}")
        check_number(self.penalty, "penalty", low=0.0)
        check_number(self.tau, "tau")
        if self.eot_iter is not None:
            check_positive_int(self.eot_iter, "eot_iter")

    @property
    def step(self) -> float:
        """The step size: ``step_size`` or 2.5 · eps / steps."""
        return 2.5 * self.eps / self.steps if self.step_size is None else self.step_size

    def draws(self, defense: Defense) -> int:
        """EOT draws of ``defense.logits`` per step (``eot_iter`` or its default)."""
        if self.eot_iter is not None:
            return self.eot_iter
        return DEFAULT_EOT_ITER if defense.stochastic else 1

    # -- inputs ---------------------------------------------------------------------------
    def prepare(self, x, y=None, model=None):
        """Validate inputs; return (defense, x float32, y int64, num_classes).

        ``y`` defaults to the defense's deterministic labels (``serving_logits``' argmax).
        """
        defense = self.model if model is None else model
        if not isinstance(defense, Defense):
            raise ValueError(f"model: the detector-aware attack runs on a tfdefense Defense, got "
                             f"{type(defense).__name__}")
        x = check_images(x, "x", shape=defense.input_shape)
        if self.norm == "l2":
            limit = float(np.sqrt(np.prod(x.shape[1:])))
            if self.eps > limit:
                raise ValueError(f"eps: L2 eps above the data range: images of shape "
                                 f"{x.shape[1:]} are at most {limit:.4g} apart in L2, got {self.eps}")
        probe = defense.logits(tf.constant(x[: min(2, len(x))]))
        num_classes = check_model_output(probe, min(2, len(x)))
        if y is None:
            logits = predict_logits(defense.serving_logits, x, self.batch_size)
            y = np.argmax(logits, axis=1).astype(np.int64)
        y = check_labels(y, num_classes, "y", n=len(x))
        return defense, x, y, num_classes

    # -- the graph ------------------------------------------------------------------------
    def _classification_term(self, defense: Defense, x_adv: tf.Tensor, y: tf.Tensor,
                             draws: int) -> tf.Tensor:
        """(N,) min(L, kappa), averaged over ``draws`` draws of the logits."""
        if draws > 1:
            logits = defense.logits(tf.tile(x_adv, [draws, 1, 1, 1]))
            labels = tf.tile(y, [draws])
        else:
            logits, labels = defense.logits(x_adv), y
        if self.loss == "ce":
            value = losses.cross_entropy(logits, labels)
        else:
            value = losses.margin(logits, labels)
        value = tf.minimum(value, tf.cast(self.kappa, value.dtype))
        return tf.reduce_mean(tf.reshape(value, [draws, -1]), axis=0)

    def _uses_detector(self, defense: Defense) -> bool:
        return bool(defense.detects) and self.penalty > 0

    def _detection_term(self, defense: Defense, x_adv: tf.Tensor) -> tf.Tensor:
        """(N,) relu(detection_margin + tau), or zeros for a defense that does not detect."""
        if not self._uses_detector(defense):
            return tf.zeros(tf.shape(x_adv)[:1], tf.float32)
        margin = tf.cast(defense.detection_margin(x_adv), tf.float32)
        return tf.nn.relu(margin + tf.constant(self.tau, tf.float32))

    def _succeeded(self, defense: Defense, x_adv: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """(N,) bool: ``defend`` labels the iterate wrong and does not reject it."""
        labels, _ = defense.defend(x_adv)
        labels = tf.cast(labels, tf.int64)
        return tf.logical_and(tf.not_equal(labels, tf.cast(y, tf.int64)),
                              tf.not_equal(labels, tf.constant(REJECTED, tf.int64)))

    def _value_and_gradient(self, defense: Defense, x_adv: tf.Tensor, y: tf.Tensor,
                            draws: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-image objective value and the ascent direction at ``x_adv``."""
        both = self._uses_detector(defense) and self.normalize
        with tf.GradientTape(persistent=both) as tape:
            tape.watch(x_adv)
            cls = self._classification_term(defense, x_adv, y, draws)
            det = self._detection_term(defense, x_adv)
            value = cls - self.penalty * det
            sums = (tf.reduce_sum(cls), tf.reduce_sum(det), tf.reduce_sum(value))
        if both:
            g_cls = tape.gradient(sums[0], x_adv)
            g_det = tape.gradient(sums[1], x_adv)
            if g_det is None:
                raise ValueError(f"{type(defense).__name__}.detection_margin: no gradient flows "
                                 "to the images")
            grad = None if g_cls is None else _unit(g_cls) - self.penalty * _unit(g_det)
        else:
            grad = tape.gradient(sums[2], x_adv)
        if grad is None:
            raise ValueError(f"{type(defense).__name__}.logits: no gradient flows from the logits "
                             "to the images; wrap non-differentiable steps with "
                             "tfdefense.attacks.bpda")
        return value, grad

    def _graph(self, defense, x, y, seed):
        draws = self.draws(defense)
        x_adv = random_start(x, self.eps, self.norm, seed) if self.rand_init else x
        best = x_adv
        best_value = tf.fill(tf.shape(x)[:1], tf.constant(-np.inf, tf.float32))
        found = tf.zeros(tf.shape(x)[:1], tf.bool)

        def keep(x_adv, value, best, best_value, found):
            better = tf.logical_and(self._succeeded(defense, x_adv, y),
                                    tf.cast(value, tf.float32) > best_value)
            best = tf.where(better[:, None, None, None], x_adv, best)
            best_value = tf.where(better, tf.cast(value, tf.float32), best_value)
            return best, best_value, tf.logical_or(found, better)

        for _ in tf.range(self.steps):
            value, grad = self._value_and_gradient(defense, x_adv, y, draws)
            best, best_value, found = keep(x_adv, value, best, best_value, found)
            stepped = tf.clip_by_value(x_adv + steepest_step(grad, self.step, self.norm), 0.0, 1.0)
            x_adv = project(stepped, x, self.eps, self.norm)
        value = (self._classification_term(defense, x_adv, y, draws)
                 - self.penalty * self._detection_term(defense, x_adv))
        best, _, found = keep(x_adv, value, best, best_value, found)
        return tf.where(found[:, None, None, None], best, x_adv)
