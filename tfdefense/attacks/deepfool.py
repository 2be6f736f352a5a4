"""DeepFool (Linf and L2) as one TensorFlow graph: Foolbox 3's algorithm, compiled.

A port of ``foolbox/attacks/deepfool.py`` (Foolbox 3.3, ``DeepFoolAttack.run``
with ``loss="logits"``, ``L2DeepFoolAttack`` / ``LinfDeepFoolAttack``). Foolbox
runs it eagerly, one forward and backward pass per candidate class per step
(each a Python round trip); here a step is one forward pass and the K-1
backward passes of the candidate differences in the same graph, and the steps
are a ``tf.while_loop`` that ``DeepFool`` traces once per model and image shape.
The arithmetic is Foolbox's, and so are the results, bit for bit in the tests
(``tests/attacks/test_deepfool_compiled.py``):

* candidates: the ``candidates`` classes with the highest clean logits, the
  first being the clean prediction ``i0``; losses ``Z_k - Z_i0`` for the others;
* a step: distances ``|loss_k| / ||grad_k||_q`` (q = 1 for Linf, 2 for L2, each
  norm + 1e-8), the nearest candidate, its distance + 1e-4 "for numerical
  stability", the step ``d * sign(grad)`` (Linf) or ``d * grad / ||grad||_2`` (L2)
  added to the running total ``p``; images not yet misclassified (w.r.t. the
  labels) move to ``clip(x0 + (1 + overshoot) * p, 0, 1)``, the others stay;
* stop when every image is misclassified or after ``steps`` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

_EPS = 1e-8  # Foolbox's guard in the norms
_STABILITY = 1e-4  # Foolbox's "for numerical stability" added to the distance


def _flat(t: tf.Tensor, keep: int = 1) -> tf.Tensor:
    return tf.reshape(t, tf.concat([tf.shape(t)[:keep], [-1]], axis=0))


def _expand(t: tf.Tensor, ndim: int) -> tf.Tensor:
    """Foolbox's ``atleast_kd``: trailing axes of length 1 up to ``ndim``."""
    return tf.reshape(t, tf.concat([tf.shape(t), tf.ones(ndim - t.shape.rank, tf.int32)], 0))


def candidate_classes(logits: tf.Tensor, candidates: int) -> tf.Tensor:
    """The ``candidates`` highest-scoring classes per row, highest first (Foolbox's sort)."""
    return tf.reverse(tf.argsort(logits, axis=-1), axis=[-1])[:, :candidates]


def candidate_losses(model: Callable, x: tf.Tensor, classes: tf.Tensor):
    """(logits, losses ``Z_k - Z_i0`` of shape (N, K-1), ``grads()``).

    ``grads()`` gives the losses' image gradients, shape (N, K-1, ...): one backward
    pass per candidate through the one forward pass (a persistent tape), each of the
    batch sum as Foolbox takes it, so they are Foolbox's gradients bit for bit. (A
    ``batch_jacobian`` is the same maths but was 1.8x slower here, its pfor overhead,
    and its batched kernels round differently, up to 7e-6 after 50 DeepFool steps.)
    Call it only when needed: Foolbox stops before computing them.
    """
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        logits = model(x)
        picked = tf.gather(logits, classes, axis=1, batch_dims=1)
        losses = picked[:, 1:] - picked[:, :1]
        sums = [tf.reduce_sum(losses[:, k]) for k in range(losses.shape[1])]
    return logits, losses, lambda: tf.stack([tape.gradient(s, x) for s in sums], axis=1)


def distances_and_steps(losses: tf.Tensor, grads: tf.Tensor, norm: str):
    """The step towards the nearest candidate's linearized boundary, per image."""
    if norm == "linf":
        distances = tf.abs(losses) / (tf.reduce_sum(tf.abs(_flat(grads, 2)), axis=-1) + _EPS)
    else:
        distances = tf.abs(losses) / (
            tf.sqrt(tf.reduce_sum(tf.square(_flat(grads, 2)), axis=-1)) + _EPS)
    best = tf.argmin(distances, axis=1)
    distance = tf.gather(distances, best, axis=1, batch_dims=1) + _STABILITY
    grad = tf.gather(grads, best, axis=1, batch_dims=1)
    if norm == "linf":
        return _expand(distance, grad.shape.rank) * tf.sign(grad)
    scale = distance / (tf.sqrt(tf.reduce_sum(tf.square(_flat(grad)), axis=-1)) + _EPS)
    return _expand(scale, grad.shape.rank) * grad


def deepfool(model: Callable, x: tf.Tensor, labels: tf.Tensor, *, norm: str = "linf",
             steps: int = 50, candidates: int = 10, overshoot: float = 0.02) -> tf.Tensor:
    """Untargeted DeepFool of one batch (TensorFlow ops; trace it in a ``tf.function``).

    The same algorithm and arithmetic as Foolbox's ``LinfDeepFoolAttack`` /
    ``L2DeepFoolAttack`` (see the module docstring), bounds (0, 1); ``candidates``
    is capped at the number of classes, as Foolbox does.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    x0 = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int64)
    logits = model(x0)
    classes = candidate_classes(logits, min(candidates, int(logits.shape[-1])))
    scale = 1.0 + overshoot

    def step(x, p_total, is_adv, losses, grads):
        p_total = p_total + distances_and_steps(losses, grads, norm)
        moved = x0 + scale * p_total
        x = tf.where(_expand(is_adv, x.shape.rank), x, moved)
        return tf.clip_by_value(x, 0.0, 1.0), p_total

    def body(i, x, p_total, done):
        logits, losses, grads = candidate_losses(model, x, classes)
        is_adv = tf.argmax(logits, axis=-1) != labels
        done = tf.reduce_all(is_adv)
        x, p_total = tf.cond(done, lambda: (x, p_total),
                             lambda: step(x, p_total, is_adv, losses, grads()))
        return i + 1, x, p_total, done

    out = tf.while_loop(lambda i, x, p, done: tf.logical_and(i < steps, tf.logical_not(done)),
                        body, (tf.constant(0), x0, tf.zeros_like(x0), tf.constant(False)))
    return out[1]


def clip_linf(x: tf.Tensor, x_adv: tf.Tensor, eps: float) -> tf.Tensor:
    """Foolbox's Linf ``clip_perturbation``: each pixel of ``x_adv - x`` into [-eps, eps]."""
    return x + tf.clip_by_value(x_adv - x, -eps, eps)
