"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020), compiled.

A score-based random search that never asks for a gradient, which is why
AutoAttack runs it last: where it breaks points the gradient attacks could
not, the gradients were masked. Every iteration proposes, per image, a change
of one random square window and keeps it if the margin
z_y − max_{j≠y} z_j went down; an image leaves the search once misclassified.

* Linf (Alg. 1 / §3.1): start from vertical stripes x ± eps; a proposal sets
  the window to x ± eps with one random sign per channel.
* L2 (Alg. 3 / §3.2): start from a grid of "meta-pseudo-Gaussian" blocks of
  side h/5 scaled to norm eps; a proposal moves L2 mass from a second window
  into the first, shaped as the same block pattern, keeping ||δ||_2 = eps.

The window side follows the paper's schedule: p = p_init (0.8) halved at
iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query
run (rescaled to ``steps``), side = round(sqrt(p·H·W)) (Linf >= 1, L2 >= 3 and
odd). Windows and signs are drawn per image from the point's own random
stream (the reference code draws one location per batch; per image keeps each
image's search independent of its batch).

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    >>> x_adv = get_attack("square", model=model, eps=0.1, steps=20).generate(x)
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.attacks.apgd import AutoAttackComponent, point_uniform
from tfdefense.attacks.base import register
from tfdefense.validation import check_number, check_positive_int

_DEFAULT_EPS = {"linf": 8 / 255, "l2": 1.0}
_REDUCE = (1, 2, 3)
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i, steps: int, p_init: float):
    """Fraction p of pixels in the window at iteration ``i`` (Andriushchenko et al. 2020, §A.2)."""
    it = tf.math.floor(tf.cast(i, tf.float32) / float(steps) * 10000.0)
    halvings = tf.reduce_sum(tf.cast(it > tf.constant(_P_BOUNDS, tf.float32), tf.float32))
    return p_init / tf.pow(2.0, halvings)


def margin(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """z_y − max_{j≠y} z_j: positive while ``y`` is predicted, to minimize."""
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    return tf.reduce_sum(onehot * logits, -1) - tf.reduce_max(logits - onehot * 1e9, -1)


def _window(ids, key, salt, h, w, size):
    """Per image a random size x size window: (mask (n, h, w, 1), top, left)."""
    u = point_uniform(ids, key, salt, [2])
    top = tf.minimum(tf.cast(u[:, 0] * tf.cast(h - size + 1, tf.float32), tf.int32), h - size)
    left = tf.minimum(tf.cast(u[:, 1] * tf.cast(w - size + 1, tf.float32), tf.int32), w - size)
    return _mask(top, left, size, h, w), top, left


def _mask(top, left, size, h, w):
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    in_r = tf.logical_and(rows >= top[:, None], rows < top[:, None] + size)
    in_c = tf.logical_and(cols >= left[:, None], cols < left[:, None] + size)
    return tf.cast(tf.logical_and(in_r[:, :, None], in_c[:, None, :]), tf.float32)[..., None]


def block_pattern(top, left, size, h, w, flip):
    """The paper's L2 block of side ``size`` at (top, left), zero elsewhere, unit L2 norm.

    The upper half is the nested-square pattern sum_{k>=m} 1/(k+1)^2 (m the
    Chebyshev distance to the half's centre), the lower half its negative;
    ``flip`` (per image) transposes the block. Shape (n, h, w, 1).
    """
    size = tf.cast(size, tf.int32)
    table = tf.constant(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 2 * max(h, w) + 2) ** 2)]),
                        tf.float32)  # table[k] = sum_{j=1..k} 1/j^2
    r = tf.range(h)[None, :, None] - top[:, None, None]
    c = tf.range(w)[None, None, :] - left[:, None, None]
    r, c = tf.where(flip[:, None, None], c, r), tf.where(flip[:, None, None], r, c)
    inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    half = size // 2
    upper = r < half
    rows = tf.where(upper, half, size - half)
    rr = tf.where(upper, r, r - half)
    big = tf.maximum(rows // 2 + 1, size // 2 + 1)
    m = tf.maximum(tf.abs(rr - rows // 2), tf.abs(c - size // 2))
    m = tf.clip_by_value(m, 0, tf.shape(table)[0] - 1)
    value = tf.gather(table, big) - tf.gather(table, m)
    value = tf.where(inside, value, 0.0)

    def unit(part):
        v = tf.where(part, value, 0.0)
        return v / (tf.sqrt(tf.reduce_sum(tf.square(v), (1, 2), keepdims=True)) + 1e-12)

    pattern = unit(inside & upper) - unit(inside & ~upper)
    pattern = pattern / (tf.sqrt(tf.reduce_sum(tf.square(pattern), (1, 2), keepdims=True)) + 1e-12)
    return pattern[..., None]


def _signs(ids, key, salt, shape):
    """±1 per point and entry of ``shape`` (the per-image shape, without the batch)."""
    return tf.where(point_uniform(ids, key, salt, shape) < 0.5, -1.0, 1.0)


def square_run(model, x, y, ids, key, *, eps, norm, steps, p_init=0.8):
    """One Square Attack run on a batch; returns ``(x_adv, fooled)``.

    ``ids`` (N,) identify the points and ``key`` (2,) the run: every random
    draw of a point depends only on them and the iteration.
    """
    n, h, w, c = (tf.shape(x)[i] for i in range(4))
    hs, ws, cs = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    l2 = lambda t: tf.sqrt(tf.reduce_sum(tf.square(t), _REDUCE, keepdims=True))  # noqa: E731
    if norm == "linf":
        x_best = tf.clip_by_value(x + eps * _signs(ids, key, 0, [1, ws, cs]), 0.0, 1.0)
    else:
        size = hs // 5
        start = (hs - 5 * size) // 2
        delta = tf.zeros_like(x)
        k = 0
        for top in range(start, start + 5 * size, size):
            for left in range(start, start + 5 * size, size):
                k += 1
                flip = _signs(ids, key, 2 * k, [1])[:, 0] > 0
                pattern = block_pattern(tf.fill([n], top), tf.fill([n], left), size, hs, ws, flip)
                delta += pattern * _signs(ids, key, 2 * k + 1, [1, 1, cs])
        x_best = tf.clip_by_value(x + eps * delta / (l2(delta) + 1e-12), 0.0, 1.0)
    best = margin(tf.cast(model(x_best), tf.float32), y)
    active = tf.boolean_mask(tf.range(n), best > 0)

    def body(i, x_best, best, active):
        salt = (i + 8) * 8  # salts below 64 belong to the start
        xa, xb, ya, ma, ida = (tf.gather(t, active) for t in (x, x_best, y, best, ids))
        p = p_schedule(i, steps, p_init)
        side = tf.cast(tf.round(tf.sqrt(p * float(hs * ws))), tf.int32)
        if norm == "linf":
            side = tf.clip_by_value(side, 1, hs - 1)
            mask, _, _ = _window(ida, key, salt, h, w, side)
            x_new = xb + mask * 2.0 * eps * _signs(ida, key, salt + 1, [1, 1, cs])
            x_new = tf.clip_by_value(tf.clip_by_value(x_new, xa - eps, xa + eps), 0.0, 1.0)
        else:
            side = tf.maximum(side, 3)
            side = tf.minimum(side + 1 - side % 2, hs - 1 if hs % 2 == 0 else hs - 2)
            mask1, top, left = _window(ida, key, salt, h, w, side)
            mask2, _, _ = _window(ida, key, salt + 1, h, w, side)
            d = xb - xa
            norm_w1 = tf.sqrt(tf.reduce_sum(tf.square(d * mask1), (1, 2), keepdims=True))
            norm_img = l2(d)
            norm_ws = l2(d * tf.maximum(mask1, mask2))
            flip = _signs(ida, key, salt + 2, [1])[:, 0] > 0
            new = block_pattern(top, left, side, hs, ws, flip) * _signs(ida, key, salt + 3, [1, 1, cs])
            new += d * mask1 / (norm_w1 + 1e-12)
            scale = tf.sqrt(tf.maximum(eps**2 - tf.square(norm_img), 0.0) / tf.cast(c, tf.float32)
                            + tf.square(norm_ws))
            new = new / (tf.sqrt(tf.reduce_sum(tf.square(new), (1, 2), keepdims=True)) + 1e-12) * scale
            d = d * (1.0 - mask2) * (1.0 - mask1) + new * mask1
            x_new = tf.clip_by_value(xa + eps * d / (l2(d) + 1e-12), 0.0, 1.0)
        m = margin(tf.cast(model(x_new), tf.float32), ya)
        improved = m < ma
        keep = tf.where(improved[:, None, None, None], x_new, xb)
        x_best = tf.tensor_scatter_nd_update(x_best, active[:, None], keep)
        best = tf.tensor_scatter_nd_update(best, active[:, None], tf.minimum(m, ma))
        return i + 1, x_best, best, tf.boolean_mask(active, tf.minimum(m, ma) > 0)

    _, x_best, best, _ = tf.while_loop(
        lambda i, _x, _b, active: tf.logical_and(i < steps - 1, tf.size(active) > 0),
        body,
        (tf.constant(0), x_best, best, active),
        shape_invariants=(tf.TensorShape([]), x_best.shape, best.shape, tf.TensorShape([None])),
    )
    return x_best, best <= 0


@register("square")
class Square(AutoAttackComponent):
    """Square Attack, Linf or L2, untargeted on the margin loss (Andriushchenko et al. 2020).

    Gradient-free: runs on any callable images -> logits, differentiable or not.

    Args:
        eps: budget; default 8/255 (Linf) / 1.0 (L2).
        norm: "linf" or "l2".
        steps: queries per restart (one model call per iteration); default
            5000 (AutoAttack standard).
        restarts: runs, each only on points not yet broken; default 1.
        p_init: initial fraction of pixels in the window; default 0.8 (paper, AutoAttack).
    """

    params = ("eps", "norm", "steps", "restarts", "p_init")

    def __init__(self, model=None, *, eps=None, norm="linf", steps=5000, restarts=1, p_init=0.8,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.norm = norm
        self.eps = _DEFAULT_EPS.get(norm, 8 / 255) if eps is None else eps
        self.steps = steps
        self.restarts = restarts
        self.p_init = p_init
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive_int(self.restarts, "restarts")
        check_number(self.p_init, "p_init", low=0.0, high=1.0, low_inclusive=False)

    def loss_for(self, num_classes: int) -> str:
        """"margin": z_y − max_{j≠y} z_j, to minimize (any number of classes >= 2)."""
        return "margin"

    def _run(self, model, x, y, target, ids, key, first, loss):
        return square_run(model, x, y, ids, key, eps=float(self.eps), norm=self.norm, steps=self.steps,
                          p_init=float(self.p_init))
