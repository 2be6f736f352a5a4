"""Per-example attack objectives, written to be *maximized* by the attacker.

Pure functions of (logits, labels) so they can be tested against hand values
and reused inside compiled graphs. ``cross_entropy`` and the Carlini-Wagner
``margin``, which adversarial training uses too, live in ``tfdefense.perturbation``
and are importable from here as before; the APGD objectives are this module's own.

The DLR losses of AutoAttack (Croce & Hein 2020, Eq. 3 and 4) read the 3rd
(untargeted) and the 4th (targeted) largest logit, so they exist only for
3 and 4 or more classes. ``apgd_objective(loss, num_classes)`` names the
objective APGD runs instead on fewer classes (see ``FEWER_CLASSES``): the
targeted cross-entropy −CE(z, t), the other objective the official
AutoAttack code defines for its targeted APGD.

Example:
    >>> import tensorflow as tf
    >>> from tfdefense.attacks.losses import margin
    >>> logits = tf.constant([[3.0, 1.0, 0.0]])
    >>> float(margin(logits, tf.constant([0]), kappa=10.0)[0])  # 1 - 3
    -2.0
"""

from __future__ import annotations

import tensorflow as tf

from tfdefense.perturbation import cross_entropy, margin  # noqa: F401  (public here as before)

#: fewest classes each APGD objective is defined for
MIN_CLASSES = {"ce": 2, "ce_targeted": 2, "dlr": 3, "dlr_targeted": 4}
#: the APGD objectives; the targeted ones take a target class per point
APGD_OBJECTIVES = tuple(MIN_CLASSES)
#: what replaces a DLR loss on a model with too few classes for it
FEWER_CLASSES = {"dlr": "ce_targeted", "dlr_targeted": "ce_targeted"}


def apgd_objective(loss: str, num_classes: int) -> str:
    """The objective APGD runs for ``loss`` on a model with ``num_classes`` classes.

    ``loss`` itself where it is defined (``MIN_CLASSES``); on fewer classes
    the DLR losses fall back to the targeted cross-entropy ``ce_targeted``,
    −CE(z, t) (``FEWER_CLASSES``):

    * targeted DLR (APGD-T), C = 2 or 3: −CE(z, t) against the same targets,
      the 2nd ... (n_target_classes+1)-th most likely clean classes;
    * untargeted DLR (APGD-DLR of the "rand" version), C = 2: −CE(z, t) with
      t the most likely class other than y on the clean image (for two
      classes, the other one): max_{i≠y} z_i of Eq. 3 fixed at the start.
      For two classes its ascent direction is that of CE, p_y·∇(z_t − z_y)
      against CE's p_t·∇(z_t − z_y), but its factor does not vanish on a
      confidently classified point, the saturation DLR exists to avoid.

    The official AutoAttack (github.com/fra31/auto-attack) only warns here
    and then fails: ``autoattack/checks.py``, ``check_n_classes`` ("with only
    {n_cls} classes it is not possible to use the DLR loss!" for n_cls <= 2,
    "... the targeted DLR loss!" for n_cls == 3, and a warning when more
    target classes than n_cls − 1 are asked for), while
    ``autoattack/autopgd_base.py`` ``APGDAttack.dlr_loss`` indexes
    ``x_sorted[:, -3]`` and ``APGDAttack_targeted.dlr_loss_targeted``
    ``x_sorted[:, -4]`` (an index error on fewer classes; fra31/auto-attack
    issue #70, open, and the traceback in issue #76). The targeted objective
    that file also defines, ``APGDAttack_targeted.ce_loss_targeted`` =
    ``-F.cross_entropy(x, self.y_target)`` (loss ``'ce-targeted'``, reachable
    in ``attack_single_run``, commented out of ``perturb``'s assert), is the
    one used here.

    Example:
        >>> apgd_objective("dlr_targeted", 10), apgd_objective("dlr_targeted", 3)
        ('dlr_targeted', 'ce_targeted')
        >>> apgd_objective("dlr", 3), apgd_objective("dlr", 2), apgd_objective("ce", 2)
        ('dlr', 'ce_targeted', 'ce')
    """
    if loss not in MIN_CLASSES:
        raise ValueError(f"loss: expected one of {APGD_OBJECTIVES}, got {loss!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if num_classes >= MIN_CLASSES[loss]:
        return loss
    return FEWER_CLASSES[loss]


def _check_classes(logits: tf.Tensor, need: int, name: str) -> None:
    classes = logits.shape[-1]
    if classes is not None and classes < need:
        raise ValueError(f"logits: the {name} loss needs at least {need} classes, got {classes} "
                         "(apgd_objective names the fallback)")


def dlr(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """DLR loss (Croce & Hein 2020, Eq. 3), to maximize, for >= 3 classes:
    −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), π sorting z descending."""
    _check_classes(logits, MIN_CLASSES["dlr"], "DLR")
    top = tf.math.top_k(logits, 3).values
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    z_y = tf.reduce_sum(onehot * logits, -1)
    z_other = tf.reduce_max(logits - onehot * 1e9, -1)
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR loss (Croce & Hein 2020, Eq. 4), to maximize, for >= 4 classes:
    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)."""
    _check_classes(logits, MIN_CLASSES["dlr_targeted"], "targeted DLR")
    top = tf.math.top_k(logits, 4).values
    z_y = tf.gather(logits, y, batch_dims=1)
    z_t = tf.gather(logits, target, batch_dims=1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def apgd_loss(loss: str, logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None = None) -> tf.Tensor:
    """The APGD objective ``loss`` (one of ``APGD_OBJECTIVES``) per example, to maximize.

    "ce": CE(z, y); "ce_targeted": −CE(z, t); "dlr": Eq. 3; "dlr_targeted":
    Eq. 4 (Croce & Hein 2020). The targeted ones need ``target``.
    """
    if loss not in MIN_CLASSES:
        raise ValueError(f"loss: expected one of {APGD_OBJECTIVES}, got {loss!r}")
    if loss.endswith("_targeted") and target is None:
        raise ValueError(f"target: the {loss!r} objective needs a target class per point")
    if loss == "ce":
        return cross_entropy(logits, y)
    if loss == "ce_targeted":
        return cross_entropy(logits, target, targeted=True)
    if loss == "dlr":
        return dlr(logits, y)
    return dlr_targeted(logits, y, target)
