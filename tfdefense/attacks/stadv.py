"""StAdv: spatially transformed adversarial examples (Xiao et al. 2018).

Each pixel moves by a flow vector; the image is resampled bilinearly at the
moved positions. The attacker maximizes the Carlini-Wagner margin minus
``tau`` times the flow loss of Xiao et al. Eq. 4 (sum over neighbouring pixels
of sqrt(|du|^2 + |dv|^2 + eps)), while the flow stays within an Linf
``bound``. This is the bounded StAdv that CD-VAE Tables 6 and 7 run through
``perceptual_advex.attacks.StAdvAttack``: flow in normalized image coordinates
([-1, 1] spans the image, so bound 0.05 moves a pixel at most
0.05 * (W - 1) / 2 pixels: 0.68 px on 28x28, 0.78 px on 32x32), flow-loss
weight tau = 0.0025 / bound, Adam with lr 0.01 from a zero flow, CD-VAE's
100 iterations. No kept TensorFlow library ships StAdv, so it is ours,
compiled into one graph.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import StAdv
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    >>> StAdv(model, steps=2).generate(x).shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

import tensorflow as tf

from tfdefense.attacks import losses
from tfdefense.attacks.base import CompiledAttack, register
from tfdefense.validation import check_number


def warp(x: tf.Tensor, flow: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling of ``x`` (N, H, W, C) at pixel + ``flow`` (N, H, W, 2: dy, dx).

    ``flow`` is in normalized coordinates; positions are clamped at the border.
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    hf, wf = tf.cast(h - 1, x.dtype), tf.cast(w - 1, x.dtype)
    gy, gx = tf.meshgrid(tf.range(h, dtype=x.dtype), tf.range(w, dtype=x.dtype), indexing="ij")
    sy = tf.clip_by_value(gy[None] + flow[..., 0] * hf / 2, 0.0, hf)
    sx = tf.clip_by_value(gx[None] + flow[..., 1] * wf / 2, 0.0, wf)
    y0, x0 = tf.floor(sy), tf.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, h - 1), tf.minimum(x0i + 1, w - 1)
    flat = tf.reshape(x, tf.stack([n, h * w, c]))

    def at(yi, xi):
        idx = tf.reshape(yi * w + xi, tf.stack([n, h * w]))
        return tf.reshape(tf.gather(flat, idx, batch_dims=1), shape)

    top = (1 - wx) * at(y0i, x0i) + wx * at(y0i, x1i)
    bottom = (1 - wx) * at(y1i, x0i) + wx * at(y1i, x1i)
    return (1 - wy) * top + wy * bottom


def flow_loss(flow: tf.Tensor, eps: float = 1e-8) -> tf.Tensor:
    """Xiao et al. 2018 Eq. 4 per image: sum over neighbour pairs of the flow-difference norm."""
    dy = flow[:, 1:, :, :] - flow[:, :-1, :, :]
    dx = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    return tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(dy), -1) + eps), [1, 2]) + tf.reduce_sum(
        tf.sqrt(tf.reduce_sum(tf.square(dx), -1) + eps), [1, 2]
    )


@register("stadv")
class StAdv(CompiledAttack):
    """Bounded StAdv, as CD-VAE runs it (perceptual_advex ``StAdvAttack``).

    Args:
        bound: Linf bound of the flow in normalized coordinates; default 0.05
            (CD-VAE §4.3, Table 6).
        steps: Adam iterations; default 100 (CD-VAE §4.3).
        learning_rate: Adam learning rate; default 0.01 (perceptual_advex).
        tau: flow-loss weight; default 0.0025 / bound (perceptual_advex).
        targeted: move towards ``y``.
    """

    params = ("bound", "steps", "learning_rate", "tau", "targeted")
    supported_norms = ("flow",)
    supports_targeted = True

    def __init__(self, model=None, *, bound=0.05, steps=100, learning_rate=0.01, tau=None,
                 targeted=False, **kwargs):
        super().__init__(model, **kwargs)
        self.bound = bound
        self.steps = steps
        self.learning_rate = learning_rate
        self.tau = tau
        self.targeted = targeted
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_number(self.bound, "bound", low=0.0, high=2.0, low_inclusive=False)
        check_number(self.learning_rate, "learning_rate", low=0.0, low_inclusive=False)
        if self.tau is not None:
            check_number(self.tau, "tau", low=0.0)

    @property
    def flow_weight(self) -> float:
        return 0.0025 / self.bound if self.tau is None else float(self.tau)

    def _graph(self, model, x, y, seed):
        del seed  # deterministic: zero initial flow
        shape = tf.shape(x)
        flow = tf.zeros(tf.concat([shape[:3], [2]], 0), x.dtype)
        m, v = tf.zeros_like(flow), tf.zeros_like(flow)
        beta1, beta2, tiny = 0.9, 0.999, 1e-8
        for t in tf.range(1, self.steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(flow)
                logits = model(warp(x, flow))
                objective = losses.margin(logits, y, targeted=self.targeted)
                objective = objective - self.flow_weight * flow_loss(flow)
                objective = tf.reduce_sum(objective)
            grad = tape.gradient(objective, flow)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * grad * grad
            tf_t = tf.cast(t, x.dtype)
            m_hat, v_hat = m / (1 - beta1**tf_t), v / (1 - beta2**tf_t)
            step = self.learning_rate * m_hat / (tf.sqrt(v_hat) + tiny)
            flow = tf.clip_by_value(flow + step, -self.bound, self.bound)
        return warp(x, flow)
