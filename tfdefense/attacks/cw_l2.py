"""Carlini & Wagner's L2 attack as one TensorFlow graph: Foolbox 3's algorithm, compiled.

A line-by-line port of ``foolbox/attacks/carlini_wagner.py`` (Foolbox 3.3,
``L2CarliniWagnerAttack.run``, untargeted): Foolbox runs it eagerly, one Python
round trip per Adam step (9 x 10,000 of them at the paper's setting); here the
whole attack of a batch (the binary search over c, every Adam step, abort-early,
the best-L2 tracking) is ``tf.while_loop`` ops that ``CWL2`` traces once per
model and image shape. The arithmetic is Foolbox's, op for op and dtype for
dtype (Foolbox keeps c and its bounds in float64 numpy; so do we, in float64
tensors), so the two agree up to float rounding (``tests/attacks/test_cw_l2_compiled.py``):

* attack space: ``w = atanh(0.999999 * (2x - 1))``, images ``tanh(w + delta) / 2 + 1/2``;
* loss: ``sum_i c_i * max(0, Z_y - max_{j != y} Z_j + confidence) + ||x' - x_rec||^2``
  (``x_rec``: the clean image through the round trip, as Foolbox measures it);
* Adam on ``delta`` (Foolbox's ``AdamOptimizer``: betas 0.9, 0.999, epsilon 1e-8,
  the step ``lr * m_hat / (sqrt(v_hat) + epsilon)``), restarted at zero per search;
* abort-early: every ``ceil(steps / 10)`` steps (from step 0) the search stops
  unless the loss fell below 0.9999 times the loss at the previous check; the step
  that stops is not tracked;
* the best adversarial per image is the one of smallest L2 distance to ``x`` among
  the iterates classified adversarially (with ``confidence`` added to the true
  logit); images never fooled stay at Foolbox's starting value, the zero image;
* binary search: c starts at ``initial_const``, is multiplied by 10 while no
  success was found, then bisected between the largest failing and smallest
  successful c; with 10 or more searches the last uses the upper bound (capped at 1e10).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

#: Foolbox's ``AdamOptimizer`` defaults (the Adam paper's)
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
#: Foolbox's squeeze of [-1, 1] into the open interval before ``atanh``
_SQUEEZE = 0.999999


def to_attack_space(x: tf.Tensor) -> tf.Tensor:
    """Images in [0, 1] to the unbounded tanh space (Foolbox's ``_to_attack_space``)."""
    return tf.atanh(((x - 0.5) / 0.5) * _SQUEEZE)


def to_model_space(w: tf.Tensor) -> tf.Tensor:
    """The tanh space back to images in (0, 1) (Foolbox's ``_to_model_space``)."""
    return tf.tanh(w) * 0.5 + 0.5


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, (tf.shape(t)[0], -1))


def l2_norms(t: tf.Tensor) -> tf.Tensor:
    """Per-example L2 norm of a batch."""
    return tf.sqrt(tf.reduce_sum(tf.square(_flat(t)), axis=-1))


def best_other_classes(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The highest-scoring class other than ``labels``, per row."""
    mask = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    return tf.argmax(tf.where(mask, tf.constant(-math.inf, logits.dtype), logits), axis=-1)


def _pick(logits: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    return tf.gather(logits, classes, axis=1, batch_dims=1)


def eager_square(t: tf.Tensor) -> tf.Tensor:
    """``t**2`` rounded as eager TensorFlow (Foolbox) rounds it: the ``Pow`` kernel.

    In a graph Grappler rewrites ``pow(t, 2)`` with a constant exponent into ``Square``,
    which differs from ``Pow`` in the last bit; an exponent it cannot fold keeps ``Pow``,
    so Adam's second moment, and with it every step, matches Foolbox's bit for bit.
    """
    two = tf.compat.v1.placeholder_with_default(tf.constant(2.0, t.dtype), shape=())
    return tf.pow(t, two)


def adam_step(gradient: tf.Tensor, m: tf.Tensor, v: tf.Tensor, t: tf.Tensor,
              stepsize: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Foolbox's Adam update at step ``t`` (from 1): (step to subtract, new m, new v).

    The bias corrections ``1 - beta**t`` are float64, as Foolbox computes them in Python.
    """
    m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * gradient
    v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * eager_square(gradient)
    t64 = tf.cast(t, tf.float64)
    bc1 = tf.cast(1 - tf.pow(tf.constant(ADAM_BETA1, tf.float64), t64), gradient.dtype)
    bc2 = tf.cast(1 - tf.pow(tf.constant(ADAM_BETA2, tf.float64), t64), gradient.dtype)
    m_hat, v_hat = m / bc1, v / bc2
    return stepsize * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON), m, v


def is_adversarial(logits: tf.Tensor, labels: tf.Tensor, confidence: float) -> tf.Tensor:
    """Misclassified once ``confidence`` is added to the true class's logit (Foolbox's rule)."""
    if confidence != 0:
        logits = logits + confidence * tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.argmax(logits, axis=-1) != labels


def cw_loss(model: Callable, w: tf.Tensor, reconstructed: tf.Tensor, delta: tf.Tensor,
            labels: tf.Tensor, consts: tf.Tensor, confidence: float):
    """Foolbox's ``loss_fun``: (loss, images, logits, gradient of the loss in ``delta``)."""
    with tf.GradientTape() as tape:
        tape.watch(delta)
        images = to_model_space(w + delta)
        logits = model(images)
        other = best_other_classes(logits, labels)
        margin = _pick(logits, labels) - _pick(logits, other)
        hinge = tf.maximum(margin + confidence, 0.0) * consts  # Foolbox's order (ties)
        squared = tf.reduce_sum(tf.square(_flat(images - reconstructed)), axis=-1)
        loss = tf.reduce_sum(hinge) + tf.reduce_sum(squared)
    return loss, images, logits, tape.gradient(loss, delta)


def _search(model, x, labels, w, reconstructed, consts, best, best_norms, *, steps: int,
            stepsize: float, confidence: float, abort_early: bool):
    """One binary-search step: Adam from ``delta = 0`` with constants ``consts`` (float32).

    Returns (best, best_norms, found): the best adversarials so far and which images
    this search fooled at least once.
    """
    period = math.ceil(steps / 10)
    n = tf.shape(x)[0]

    def body(step, delta, m, v, previous, stopped, found, best, best_norms):
        loss, images, logits, gradient = cw_loss(model, w, reconstructed, delta, labels, consts,
                                                 confidence)
        update, m, v = adam_step(gradient, m, v, step + 1, stepsize)
        delta = delta - update
        check = tf.logical_and(abort_early, step % period == 0)
        threshold = tf.cast(0.9999 * previous, loss.dtype)
        stopped = tf.logical_and(check, tf.logical_not(loss <= threshold))
        previous = tf.where(tf.logical_and(check, tf.logical_not(stopped)),
                            tf.cast(loss, tf.float64), previous)
        fooled = tf.logical_and(is_adversarial(logits, labels, confidence),
                                tf.logical_not(stopped))
        found = tf.logical_or(found, fooled)
        norms = l2_norms(images - x)
        new_best = tf.logical_and(norms < best_norms, fooled)
        best = tf.where(tf.reshape(new_best, (-1, 1, 1, 1)), images, best)
        best_norms = tf.where(new_best, norms, best_norms)
        return step + 1, delta, m, v, previous, stopped, found, best, best_norms

    zeros = tf.zeros_like(w)
    state = (tf.constant(0), zeros, zeros, zeros, tf.constant(math.inf, tf.float64),
             tf.constant(False), tf.zeros((n,), tf.bool), best, best_norms)
    out = tf.while_loop(
        lambda step, *rest: tf.logical_and(step < steps, tf.logical_not(rest[4])),
        body, state)
    return out[7], out[8], out[6]


def carlini_wagner_l2(model: Callable, x: tf.Tensor, labels: tf.Tensor, *,
                      binary_search_steps: int = 9, steps: int = 10000, stepsize: float = 0.01,
                      confidence: float = 0.0, initial_const: float = 1e-3,
                      abort_early: bool = True) -> tf.Tensor:
    """Untargeted C&W-L2 of one batch (TensorFlow ops; trace it in a ``tf.function``).

    The same algorithm, defaults and arithmetic as Foolbox's ``L2CarliniWagnerAttack``
    (see the module docstring) with bounds (0, 1). Returns the best adversarial per
    image, or the zero image where none was found (as Foolbox returns).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int64)
    n = tf.shape(x)[0]
    w = to_attack_space(x)
    reconstructed = to_model_space(w)
    big = tf.fill((n,), tf.constant(math.inf, tf.float64))

    def body(i, consts, lower, upper, best, best_norms):
        if binary_search_steps >= 10:  # Foolbox repeats the search at the upper bound last
            consts = tf.where(i == binary_search_steps - 1, tf.minimum(upper, 1e10), consts)
        best, best_norms, found = _search(
            model, x, labels, w, reconstructed, tf.cast(consts, tf.float32), best, best_norms,
            steps=steps, stepsize=stepsize, confidence=confidence, abort_early=abort_early)
        upper = tf.where(found, consts, upper)
        lower = tf.where(found, lower, consts)
        consts = tf.where(tf.math.is_inf(upper), consts * 10, (lower + upper) / 2)
        return i + 1, consts, lower, upper, best, best_norms

    state = (tf.constant(0), tf.fill((n,), tf.constant(initial_const, tf.float64)),
             tf.zeros((n,), tf.float64), big, tf.zeros_like(x), tf.cast(big, tf.float32))
    out = tf.while_loop(lambda i, *_: i < binary_search_steps, body, state)
    return out[4]


def clip_l2(x: tf.Tensor, x_adv: tf.Tensor, eps: float) -> tf.Tensor:
    """Foolbox's L2 ``clip_perturbation``: scale ``x_adv - x`` down to norm ``eps``."""
    p = x_adv - x
    norms = tf.maximum(l2_norms(p), 1e-12)
    factor = tf.minimum(1.0, eps / norms)
    return x + tf.reshape(factor, (-1, 1, 1, 1)) * p
