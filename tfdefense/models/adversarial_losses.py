"""The loss maths of CD-VAE adversarial training (§3.4, Eq. 8–10), both objectives.

Pure functions of logits and per-example terms, used by ``AdversarialCDVAE``
(``models/adversarial.py``, whose docstring says what each objective is):

* ``"paper"``: Eq. 8's margin ``margin_to_wrong_class`` (≤ c), Eq. 10's
  ``disentangling_loss`` with the target ``most_likely_wrong_class`` (argmax_{y′≠y}).
* ``"official"`` (kai-wen-yang/CD-VAE ``tools/adv_train_cifar.py`` @0c92c65):
  ``official_selection`` (the strict margin set and the argmax-over-all-classes target
  from an inference-mode pass, :173-178, :191) and ``official_objective`` (the
  composition of :189-197).

Example:
    >>> import tensorflow as tf
    >>> logits = tf.constant([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    >>> y = tf.constant([0, 2], tf.int64)
    >>> margin_to_wrong_class(logits, y).numpy().tolist()
    [1.0, -2.0]
    >>> m, t = official_selection(logits, y, margin=1.0)
    >>> m.numpy().tolist(), t.numpy().tolist()
    ([False, True], [0, 1])
"""

from __future__ import annotations

import tensorflow as tf

from tfdefense import perturbation

__all__ = ["margin_to_wrong_class", "most_likely_wrong_class", "disentangling_loss",
           "official_selection", "official_objective", "global_count"]


def margin_to_wrong_class(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Z_y − max_{y′≠y} Z_{y′} per example (Eq. 8's margin, on logits as the official code)."""
    return -perturbation.margin(logits, labels)


def most_likely_wrong_class(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """argmax_{y′≠y} Z_{y′} per example (the target of D(R(x′)) in Eq. 10)."""
    onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.argmax(logits - onehot * 1e9, axis=-1, output_type=labels.dtype)


def disentangling_loss(generated_logits, residual_logits, labels) -> dict[str, tf.Tensor]:
    """Eq. 10 per example: −log D_G(G(x′))[y] − log D(R(x′))[argmax_{y′≠y} D_G(G(x′))].

    Returns the two cross-entropies and their sum (``"ce_generated"``,
    ``"ce_residual"``, ``"total"``).
    """
    wrong = tf.stop_gradient(most_likely_wrong_class(generated_logits, labels))
    ce_g = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=generated_logits)
    ce_r = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=wrong, logits=residual_logits)
    return {"ce_generated": ce_g, "ce_residual": ce_r, "total": ce_g + ce_r}


def official_selection(selection_logits, labels, margin: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(in-margin mask, D(R(x′)) target) as ``tools/adv_train_cifar.py`` picks them.

    From the logits Z of D_G(G(x′)) of a separate inference-mode pass (:173-178):
    m = Z_y − max_{y′≠y} Z_{y′} < c (``Incorrect_Logits``, :26-34, strict) and
    t = argmax_{y′} Z_{y′} over all classes (``adv_logits_g.argmax(1)``, :191), which is y
    itself where D_G(G(x′)) is still right (the paper's Eq. 10 excludes y).
    """
    in_margin = margin_to_wrong_class(selection_logits, labels) < margin
    target = tf.argmax(selection_logits, axis=-1, output_type=labels.dtype)
    return in_margin, target


def official_objective(reconstruction, kl, ce_generated, ce_residual, in_margin, *,
                       reconstruction_weight: float, beta: float, gamma: float,
                       in_margin_count=None, batch_size=None) -> tf.Tensor:
    """Per-example terms whose batch mean is the official loss (``adv_train_cifar.py:189-197``):

    re·mean(rec) + γ·mean(CE_r) + γ·Σ m·CE_g / Σ m + β·mean(KL), i.e. per example
    re·rec_i + β·KL_i + γ·CE_r,i + γ·(N / Σ m)·m_i·CE_g,i. ``in_margin_count`` and
    ``batch_size`` (default: this batch's) are the global Σ m and N when a replica holds
    part of the batch. An empty margin set gives CE_g weight 0 (the official mean is NaN).
    """
    mask = tf.cast(in_margin, ce_generated.dtype)
    count = tf.reduce_sum(mask) if in_margin_count is None else in_margin_count
    n = tf.cast(tf.shape(mask)[0], mask.dtype) if batch_size is None else batch_size
    share = mask * n / tf.maximum(count, 1.0)
    return (reconstruction_weight * reconstruction + beta * kl + gamma * ce_residual
            + gamma * share * ce_generated)


def global_count(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(Σ mask, N) over the global batch: summed over replicas under ``tf.distribute``."""
    count, n = tf.reduce_sum(mask), tf.cast(tf.shape(mask)[0], mask.dtype)
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        count, n = replica.all_reduce(tf.distribute.ReduceOp.SUM, [count, n])
    return count, n
