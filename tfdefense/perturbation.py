"""Gradient perturbations of image batches in TensorFlow: the core attacks and training share.

Everything here is TensorFlow ops on NHWC images in [0, 1] and per-example logits, with no
attack classes, no registry and no Keras model of the library, so ``tfdefense.models``
(adversarial training) and ``tfdefense.baselines`` (Defense-GAN's BPDA) use it without
importing ``tfdefense.attacks``, which builds its attacks on it and re-exports its public
names (``tfdefense.attacks.iterative``, ``.losses``, ``.adaptive``):

* steps and balls, as cleverhans 4 computes them: ``steepest_step`` (``optimize_linear``),
  ``project`` (``clip_eta``, then into [0, 1]), ``random_start`` (uniform in the ball,
  Madry et al. 2018);
* objectives to maximize, per example: ``cross_entropy`` and the Carlini-Wagner ``margin``,
  and ``objective_gradient``, the gradient of their batch sum with respect to the images;
* ``iterative_attack``: the whole FGSM / BIM / PGD / MIM loop of one batch, traceable into
  one ``tf.function`` graph; ``iterative_attack_early_stop`` freezes each example at its
  first success;
* ``bpda`` and ``eot`` (Athalye, Carlini & Wagner 2018): make a non-differentiable or a
  random step attackable.

Example:
    >>> import tensorflow as tf
    >>> from tfdefense.perturbation import iterative_attack
    >>> model = lambda images: tf.reshape(images, (-1, 4)) * [1.0, -1.0, 2.0, 0.0]  # 4 logits
    >>> x = tf.fill((1, 2, 2, 1), 0.5)
    >>> x_adv = iterative_attack(model, x, tf.constant([0]), tf.constant([0, 0]), eps=0.25,
    ...                          step=0.1, steps=5, norm="linf")
    >>> (x_adv - x).numpy().ravel().round(2).tolist()  # away from class 0, within the ball
    [-0.25, -0.25, 0.25, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfdefense.validation import check_positive_int

__all__ = [
    "bpda",
    "cross_entropy",
    "eot",
    "iterative_attack",
    "iterative_attack_early_stop",
    "margin",
    "objective_gradient",
    "project",
    "random_start",
    "steepest_step",
]

_TINY = 1e-12  # cleverhans' avoid_zero_div
_REDUCE = (1, 2, 3)
_NO_GRADIENT = ("model: no gradient flows from the logits to the images; wrap "
                "non-differentiable steps with tfdefense.attacks.bpda")


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor, targeted: bool = False) -> tf.Tensor:
    """Softmax cross-entropy of ``labels``; negated when ``targeted`` (move towards them).

    Example:
        >>> import tensorflow as tf
        >>> round(float(cross_entropy(tf.constant([[0.0, 0.0]]), tf.constant([1]))[0]), 4)  # log 2
        0.6931
    """
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return -ce if targeted else ce


def margin(
    logits: tf.Tensor, labels: tf.Tensor, kappa: float = float("inf"), targeted: bool = False
) -> tf.Tensor:
    """Carlini-Wagner f6 margin, capped at ``kappa``.

    Untargeted: ``min(max_{j != y} Z_j - Z_y, kappa)``; targeted (y = target):
    ``min(Z_y - max_{j != y} Z_j, kappa)`` (Carlini & Wagner 2017, Eq. f6;
    the ``MarginLoss`` of the CD-VAE code's ``advex/attacks.py``).

    Example:
        >>> import tensorflow as tf
        >>> logits = tf.constant([[3.0, 1.0, 0.0]])
        >>> float(margin(logits, tf.constant([1]))[0]), float(margin(logits, tf.constant([1]), 1.0)[0])
        (2.0, 1.0)
    """
    num_classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    z_y = tf.reduce_sum(onehot * logits, axis=-1)
    z_other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
    value = z_y - z_other if targeted else z_other - z_y
    return tf.minimum(value, tf.cast(kappa, logits.dtype))


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


def _objective(logits, y, loss: str, kappa, targeted: bool) -> tf.Tensor:
    """The summed per-example objective ``loss`` ("ce" or "margin") of a batch."""
    if loss == "ce":
        return tf.reduce_sum(cross_entropy(logits, y, targeted))
    if loss == "margin":
        return tf.reduce_sum(margin(logits, y, kappa, targeted))
    raise ValueError(f"loss: expected 'ce' or 'margin', got {loss!r}")


def objective_gradient(model, x_adv, y, loss: str, kappa, targeted: bool) -> tf.Tensor:
    """Gradient of the summed per-example objective with respect to ``x_adv``."""
    with tf.GradientTape() as tape:
        tape.watch(x_adv)
        value = _objective(model(x_adv), y, loss, kappa, targeted)
    grad = tape.gradient(value, x_adv)
    if grad is None:
        raise ValueError(_NO_GRADIENT)
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
            value = _objective(logits, ya, loss, kappa, targeted)
        grad = tape.gradient(value, xa)
        if grad is None:
            raise ValueError(_NO_GRADIENT)
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


def _identity(x):
    return x


def bpda(fn: Callable, approximation: Callable | None = None) -> Callable:
    """Backward-pass differentiable approximation of ``fn``.

    Args:
        fn: any callable on a tensor (may be non-differentiable, e.g. rounding,
            JPEG through ``tf.numpy_function``, a sampling step).
        approximation: a differentiable callable with the same output shape
            whose gradient stands in for ``fn``'s; default identity (needs
            ``fn`` to map images to images).

    Returns:
        A callable with ``fn``'s outputs and ``approximation``'s gradients.

    Example:
        >>> import tensorflow as tf
        >>> floor = bpda(tf.floor, approximation=lambda t: 2.0 * t)
        >>> x = tf.constant([1.5, 2.5])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     total = tf.reduce_sum(floor(x))
        >>> float(total), tape.gradient(total, x).numpy().tolist()
        (3.0, [2.0, 2.0])
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {fn!r}")
    if approximation is not None and not callable(approximation):
        raise ValueError(f"approximation: expected a callable or None, got {approximation!r}")
    approx = _identity if approximation is None else approximation

    def wrapped(x):
        x = tf.convert_to_tensor(x)

        @tf.custom_gradient
        def inner(x):
            out = fn(x)

            def grad(dy, variables=None):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    a = approx(x)
                dx = tape.gradient(a, x, output_gradients=dy)
                if dx is None:
                    dx = tf.zeros_like(x)
                return (dx, [tf.zeros_like(v) for v in variables]) if variables else dx

            return tf.identity(out), grad

        return inner(x)

    wrapped.__name__ = f"bpda_{getattr(fn, '__name__', 'fn')}"
    return wrapped


def eot(fn: Callable, n: int = 10, average: str = "probs") -> Callable:
    """Expectation over transformation of a stochastic ``fn`` (images -> logits).

    The batch is repeated ``n`` times and run through ``fn`` once (each copy
    gets its own random draw); the result is averaged per image.

    Args:
        fn: a stochastic callable images -> logits.
        n: number of draws; Athalye et al. 2018 use tens (their §5: 10-30 per step).
        average: "probs" returns log of the mean softmax (logits of the
            expected prediction, Athalye et al. 2018 §4); "logits" returns the
            mean logits.

    Returns:
        A callable images -> logits.

    Example:
        >>> import tensorflow as tf
        >>> noisy = lambda images: tf.reshape(images, (-1, 1)) + tf.random.normal((tf.shape(images)[0], 1))
        >>> eot(noisy, n=4, average="logits")(tf.zeros((3, 1, 1, 1))).shape
        TensorShape([3, 1])
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {fn!r}")
    n = check_positive_int(n, "n")
    if average not in ("probs", "logits"):
        raise ValueError(f"average: expected 'probs' or 'logits', got {average!r}")

    def wrapped(x):
        x = tf.convert_to_tensor(x)
        batch = tf.shape(x)[0]
        logits = fn(tf.tile(x, tf.concat([[n], tf.ones_like(tf.shape(x)[1:])], 0)))
        logits = tf.reshape(logits, tf.stack([n, batch, -1]))
        if average == "logits":
            return tf.reduce_mean(logits, 0)
        return tf.reduce_logsumexp(tf.nn.log_softmax(logits), 0) - tf.math.log(float(n))

    wrapped.__name__ = f"eot_{getattr(fn, '__name__', 'fn')}"
    return wrapped
