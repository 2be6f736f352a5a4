"""ReColorAdv: a functional attack on the colours of an image (Laidlaw & Feizi 2019).

Laidlaw & Feizi, "Functional adversarial attacks" (NeurIPS 2019). One
function ``f`` of colour space is applied to every pixel of an image:
``x_adv[i] = f(x[i])``. ``f`` is the identity plus a displacement defined on a
regular grid of control points over the colour cube and trilinearly
interpolated in between; each control point moves by at most ``eps`` in each
coordinate (Linf), so similar colours stay similar and no pixel moves
independently of the others of its colour. A smoothness penalty (the sum over
control points of the distances between their displacement and their grid
neighbours', each pair counted from both ends, as recoloradv
``norms.smoothness``) keeps ``f`` regular.

Settings are those of ``perceptual_advex.attacks.ReColorAdvAttack``, which
CD-VAE Table 7 runs (official ``toolkits/adv_test_cifar.sh``:
``ReColorAdvAttack(cd_vae, num_iterations=100)``): the CIELUV colour space
(L*, u*, v* scaled to [0, 1] as L/100, (u + 100)/200, (v + 100)/200, sRGB
with D65 white), a 16 x 32 x 32 grid (L x u x v), eps 0.06, smoothness weight
0.0036 / eps, the Carlini-Wagner margin loss (f6, no cap) maximized by Adam
with learning rate 0.001 for 100 steps from the identity. After every step the
control points are projected as recoloradv does: into the [0, 1] cube, into
the sRGB gamut (a round trip through RGB), then into the eps box around the
identity. ``color_space="rgb"`` runs the same attack on the RGB cube, and
``optimizer="sign"`` runs PGD with sign steps instead of Adam.

Deliberate differences from recoloradv: (1) the displacement (not the
absolute colour) is interpolated, and a colour outside the grid's cube (u* >
100 or v* < -100 occur in sRGB) takes the displacement of the nearest point of
the cube; recoloradv instead maps such colours onto the cube's face, which
changes them even with zero displacement. Here zero displacement is the
identity (up to float rounding of the colour conversions). (2) The identity is
not gamut-projected before the first step (recoloradv projects it before
every forward pass, including the first). (3) XYZ -> RGB uses the exact
inverse of the RGB -> XYZ matrix, not recoloradv's rounded one (they differ by
about 1e-4), so the colour round trip is exact. From the first step on, as in
recoloradv, the gamut projection itself moves the control points that lie
outside the sRGB gamut (about 72% of the CIELUV cube) by up to ``eps``, so
saturated colours whose grid cell touches the gamut's edge change even where
the loss has no gradient (within the budget: it bounds control points, not
pixels; 0.06 in CIELUV is 6 L* or 12 u*/v* units, up to ~0.16 of RGB range for
saturated colours).

ReColor needs RGB images: on greyscale data it raises ``ValueError``, since a
colour mapping of one channel is a different (and much weaker) threat model.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((32, 32, 3), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    >>> attack = get_attack("recolor", model=model, steps=3)
    >>> attack.generate(x).shape
    (2, 32, 32, 3)
    >>> bool(np.abs(attack.color_maps(x)).max() <= 0.06 + 1e-6)
    True
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdefense.attacks import losses
from tfdefense.attacks.base import CompiledAttack, batch_seed, register
from tfdefense.validation import check_images, check_number, check_positive_int

COLOR_SPACES = ("cieluv", "rgb")
OPTIMIZERS = ("adam", "sign")
LOSSES = ("margin", "ce")

#: linear sRGB -> CIE XYZ (D65), the matrix recoloradv's ``CIEXYZColorSpace`` uses
SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9504]], np.float64
)
#: chromaticity (u', v') of the D65 white point, with Y_white = 1
U_WHITE, V_WHITE = 0.1978, 0.4683
_TINY = 1e-10
_KAPPA3 = (29.0 / 3.0) ** 3  # CIE L* slope below the cube-root branch
_DELTA3 = (6.0 / 29.0) ** 3  # Y where L* switches to the cube root


def _srgb_to_linear(c: tf.Tensor) -> tf.Tensor:
    high = ((tf.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4
    return tf.where(c < 0.04045, c / 12.92, high)


def _linear_to_srgb(c: tf.Tensor) -> tf.Tensor:
    high = 1.055 * tf.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055
    return tf.where(c < 0.0031308, 12.92 * c, high)


def rgb_to_cieluv(x: tf.Tensor) -> tf.Tensor:
    """[0, 1] sRGB (..., 3) -> CIE L*u*v* scaled as (L / 100, (u + 100) / 200, (v + 100) / 200)."""
    x = tf.convert_to_tensor(x, tf.float32)
    xyz = tf.tensordot(_srgb_to_linear(x), tf.constant(SRGB_TO_XYZ.T, x.dtype), 1)
    big_x, big_y, big_z = tf.unstack(xyz, axis=-1)
    denom = big_x + 15.0 * big_y + 3.0 * big_z + _TINY
    up, vp = 4.0 * big_x / denom, 9.0 * big_y / denom
    cube_root = 116.0 * tf.maximum(big_y, _DELTA3) ** (1.0 / 3.0) - 16.0
    lightness = tf.where(big_y < _DELTA3, _KAPPA3 * big_y, cube_root)
    u = 13.0 * lightness * (up - U_WHITE)
    v = 13.0 * lightness * (vp - V_WHITE)
    return tf.stack([lightness / 100.0, (u + 100.0) / 200.0, (v + 100.0) / 200.0], axis=-1)


def cieluv_to_rgb(c: tf.Tensor) -> tf.Tensor:
    """Inverse of ``rgb_to_cieluv``, clipped to the sRGB gamut [0, 1] (XYZ to [0, 1.1] first)."""
    c = tf.convert_to_tensor(c, tf.float32)
    lightness = c[..., 0] * 100.0
    u, v = c[..., 1] * 200.0 - 100.0, c[..., 2] * 200.0 - 100.0
    up = u / (13.0 * lightness + _TINY) + U_WHITE
    vp = v / (13.0 * lightness + _TINY) + V_WHITE
    t = (lightness + 16.0) / 116.0
    big_y = tf.where(lightness <= 8.0, lightness / _KAPPA3, t * t * t)
    denom = 4.0 * vp + _TINY
    big_x = big_y * 9.0 * up / denom
    big_z = big_y * (12.0 - 3.0 * up - 20.0 * vp) / denom
    xyz = tf.clip_by_value(tf.stack([big_x, big_y, big_z], axis=-1), 0.0, 1.1)
    linear = tf.tensordot(xyz, tf.constant(np.linalg.inv(SRGB_TO_XYZ).T, c.dtype), 1)
    return tf.clip_by_value(_linear_to_srgb(linear), 0.0, 1.0)


def to_color_space(x: tf.Tensor, color_space: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x, tf.float32)
    return rgb_to_cieluv(x) if color_space == "cieluv" else x


def from_color_space(c: tf.Tensor, color_space: str) -> tf.Tensor:
    return cieluv_to_rgb(c) if color_space == "cieluv" else tf.clip_by_value(c, 0.0, 1.0)


def identity_grid(resolution) -> np.ndarray:
    """Control points of the identity map: (R0, R1, R2, 3), point (i, j, k) at (i, j, k) / (R - 1)."""
    axes = [np.linspace(0.0, 1.0, r, dtype=np.float32) for r in resolution]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _corners(c: tf.Tensor, resolution) -> tuple[tf.Tensor, tf.Tensor]:
    """Flat grid indices and trilinear weights of the 8 control points around each colour.

    ``c`` (N, H, W, 3) in colour-space coordinates; colours outside the cube
    use the nearest point of the cube. Returns indices (N, H*W*8) int32 and
    weights (N, H, W, 8, 1).
    """
    r0, r1, r2 = resolution
    top = tf.constant([r0 - 1, r1 - 1, r2 - 1], c.dtype)
    pos = tf.clip_by_value(c, 0.0, 1.0) * top
    low = tf.minimum(tf.floor(pos), top - 1.0)  # so that low + 1 is a grid point too
    frac = pos - low
    low = tf.cast(low, tf.int32)
    indices, weights = [], []
    for d0 in (0, 1):
        for d1 in (0, 1):
            for d2 in (0, 1):
                idx = ((low[..., 0] + d0) * r1 + (low[..., 1] + d1)) * r2 + (low[..., 2] + d2)
                w = 1.0
                for axis, d in enumerate((d0, d1, d2)):
                    w = w * (frac[..., axis] if d else 1.0 - frac[..., axis])
                indices.append(idx)
                weights.append(w)
    n = tf.shape(c)[0]
    indices = tf.reshape(tf.stack(indices, axis=-1), tf.stack([n, -1]))
    return indices, tf.stack(weights, axis=-1)[..., None]


def _interpolate(displacement: tf.Tensor, indices: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Trilinear interpolation of ``displacement`` (N, R0, R1, R2, 3) at precomputed corners."""
    n = tf.shape(displacement)[0]
    flat = tf.reshape(displacement, tf.stack([n, -1, 3]))
    values = tf.gather(flat, indices, batch_dims=1)
    values = tf.reshape(values, tf.concat([tf.shape(weights)[:-1], [3]], axis=0))
    return tf.reduce_sum(values * weights, axis=-2)


def recolor(x, displacement, color_space: str = "cieluv") -> tf.Tensor:
    """Apply the colour map with control-point ``displacement`` (N, R0, R1, R2, 3) to ``x``.

    Zero displacement is the identity (up to the rounding of the colour
    conversion); the result is clipped to [0, 1].
    """
    if color_space not in COLOR_SPACES:
        raise ValueError(f"color_space: expected one of {COLOR_SPACES}, got {color_space!r}")
    displacement = tf.convert_to_tensor(displacement, tf.float32)
    c = to_color_space(x, color_space)
    indices, weights = _corners(c, tuple(displacement.shape[1:4]))
    return from_color_space(c + _interpolate(displacement, indices, weights), color_space)


def smoothness(displacement: tf.Tensor) -> tf.Tensor:
    """Per-image smoothness norm of a grid (N, R0, R1, R2, 3), as recoloradv ``norms.smoothness``.

    Sum over control points of sqrt(|difference to a grid neighbour|^2 + 1e-10)
    for both neighbours along each axis, i.e. twice the sum over neighbour
    pairs (recoloradv's constant border terms are left out).
    """
    displacement = tf.convert_to_tensor(displacement, tf.float32)
    total = 0.0
    for kernel in _NEIGHBOUR_DIFFERENCES:
        # a 2-tap convolution: 3x faster on CPU than slicing the 5-D grid (gradients included)
        diff = tf.nn.conv3d(displacement, kernel, [1, 1, 1, 1, 1], "VALID")
        total += tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(diff), -1) + 1e-10), axis=[1, 2, 3])
    return 2.0 * total


def _difference_kernel(axis: int) -> np.ndarray:
    """conv3d kernel (next - this along ``axis``, per colour coordinate)."""
    shape = [1, 1, 1]
    shape[axis] = 2
    return np.stack([-np.eye(3), np.eye(3)]).reshape(*shape, 3, 3).astype(np.float32)


_NEIGHBOUR_DIFFERENCES = [_difference_kernel(axis) for axis in range(3)]


@register("recolor")
class ReColor(CompiledAttack):
    """ReColorAdv (Laidlaw & Feizi 2019) as CD-VAE Table 7 runs it (see the module docstring).

    Args:
        eps: Linf bound on each control point's displacement, in the [0, 1]
            coordinates of the colour space; default 0.06
            (``perceptual_advex.attacks.ReColorAdvAttack(bound=0.06)``, the
            bound of recoloradv's ``get_attack_from_name("recoloradv")`` too).
        steps: optimization steps; default 100 (CD-VAE
            ``toolkits/adv_test_cifar.sh``, ``num_iterations=100``).
        color_space: "cieluv" (default, perceptual_advex) or "rgb".
        resolution: control points per axis of the colour cube; default
            (16, 32, 32) (perceptual_advex ``resolution_x/y/z``).
        smoothness: weight of the smoothness penalty; default 0.0036 / eps
            (perceptual_advex ``perturbation_norm_loss=0.0036 / bound``); 0
            turns it off.
        optimizer: "adam" (default; perceptual_advex's ``MisterEdAttack``:
            Adam, unsigned steps) or "sign" (PGD sign steps).
        learning_rate: Adam's learning rate (default 0.001, perceptual_advex)
            or the sign-step size (default eps / sqrt(steps)).
        loss: "margin" (default; C&W f6 without cap, recoloradv
            ``CWLossF6(kappa=inf)``) or "ce".
        rand_init: start uniformly in the eps box (default False, as
            perceptual_advex).
        targeted: move towards ``y``.
    """

    params = ("eps", "steps", "color_space", "resolution", "smoothness", "optimizer",
              "learning_rate", "loss", "rand_init", "targeted")
    supported_norms = ("recolor_linf",)
    supports_targeted = True

    def __init__(self, model=None, *, eps=0.06, steps=100, color_space="cieluv",
                 resolution=(16, 32, 32), smoothness=None, optimizer="adam", learning_rate=None,
                 loss="margin", rand_init=False, targeted=False, **kwargs):
        super().__init__(model, **kwargs)
        self.eps = eps
        self.steps = steps
        self.color_space = color_space
        self.resolution = tuple(resolution) if isinstance(resolution, list | tuple) else resolution
        self.smoothness = smoothness
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.loss = loss
        self.rand_init = rand_init
        self.targeted = targeted
        self._check_params()

    def _check_params(self):
        super()._check_params()
        if self.color_space not in COLOR_SPACES:
            raise ValueError(f"color_space: expected one of {COLOR_SPACES}, got {self.color_space!r}")
        if not (isinstance(self.resolution, tuple) and len(self.resolution) == 3):
            raise ValueError(
                f"resolution: expected three integers >= 2 (control points per colour axis), "
                f"got {self.resolution!r}"
            )
        for r in self.resolution:
            check_positive_int(r, "resolution", minimum=2)
        if self.smoothness is not None:
            check_number(self.smoothness, "smoothness", low=0.0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.learning_rate is not None:
            check_number(self.learning_rate, "learning_rate", low=0.0, low_inclusive=False)
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if not isinstance(self.rand_init, bool):
            raise ValueError(f"rand_init: expected True or False, got {self.rand_init!r}")

    @property
    def smoothness_weight(self) -> float:
        return 0.0036 / self.eps if self.smoothness is None else float(self.smoothness)

    @property
    def step(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 0.001 if self.optimizer == "adam" else self.eps / math.sqrt(self.steps)

    def prepare(self, x, y=None, model=None):
        arr = check_images(x, "x")
        if arr.shape[-1] != 3:
            raise ValueError(
                f"x: ReColor needs 3 colour channels (RGB images), got {arr.shape[-1]} "
                f"channel{'s' if arr.shape[-1] != 1 else ''}; ReColorAdv perturbs a mapping of "
                "colour space, which greyscale images do not have"
            )
        return super().prepare(arr, y, model)

    # -- the attack ------------------------------------------------------------
    def _project(self, displacement: tf.Tensor, identity: tf.Tensor) -> tf.Tensor:
        """recoloradv ``FullSpatial.project_params``: cube, gamut, then the eps box."""
        points = tf.clip_by_value(identity + displacement, 0.0, 1.0)
        if self.color_space == "cieluv":
            points = rgb_to_cieluv(cieluv_to_rgb(points))
        return tf.clip_by_value(points - identity, -self.eps, self.eps)

    def _objective(self, model, c, indices, weights, y, displacement):
        x_adv = from_color_space(c + _interpolate(displacement, indices, weights), self.color_space)
        logits = model(x_adv)
        if self.loss == "margin":
            value = losses.margin(logits, y, targeted=self.targeted)
        else:
            value = losses.cross_entropy(logits, y, self.targeted)
        if self.smoothness_weight:
            value = value - self.smoothness_weight * smoothness(displacement)
        return tf.reduce_sum(value)

    def _optimize(self, model, x, y, seed):
        """The displacement of every image's control points (N, R0, R1, R2, 3)."""
        c = to_color_space(x, self.color_space)
        indices, weights = _corners(c, self.resolution)
        identity = tf.constant(identity_grid(self.resolution))[None]
        shape = tf.concat([tf.shape(x)[:1], tf.constant([*self.resolution, 3])], axis=0)
        if self.rand_init:
            start = tf.random.stateless_uniform(shape, seed, -self.eps, self.eps)
            displacement = self._project(start, identity)
        else:
            displacement = tf.zeros(shape)
        m, v = tf.zeros_like(displacement), tf.zeros_like(displacement)
        beta1, beta2, tiny = 0.9, 0.999, 1e-8
        for t in tf.range(1, self.steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(displacement)
                value = self._objective(model, c, indices, weights, y, displacement)
            grad = tape.gradient(value, displacement)
            if grad is None:
                raise ValueError("model: no gradient flows from the logits to the images; wrap "
                                 "non-differentiable steps with tfdefense.attacks.bpda")
            # the CIELUV inverse divides by L*; keep a 0 * inf at black from poisoning a step
            grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
            if self.optimizer == "adam":
                m = beta1 * m + (1 - beta1) * grad
                v = beta2 * v + (1 - beta2) * grad * grad
                tf_t = tf.cast(t, tf.float32)
                m_hat, v_hat = m / (1 - beta1**tf_t), v / (1 - beta2**tf_t)
                step = self.step * m_hat / (tf.sqrt(v_hat) + tiny)
            else:
                step = self.step * tf.sign(grad)
            displacement = self._project(displacement + step, identity)
        return displacement

    def _graph(self, model, x, y, seed):
        displacement = self._optimize(model, x, y, seed)
        c = to_color_space(x, self.color_space)
        indices, weights = _corners(c, self.resolution)
        return from_color_space(c + _interpolate(displacement, indices, weights), self.color_space)

    def color_maps(self, x, y=None, model=None) -> np.ndarray:
        """The control-point displacements ``generate`` would apply: (N, R0, R1, R2, 3).

        ``recolor(x, attack.color_maps(x), attack.color_space)`` equals
        ``attack.generate(x)`` (same seeds, batch by batch).
        """
        model, x, y, _ = self.prepare(x, y, model)
        fn = tf.function(lambda x, y, s: self._optimize(model, x, y, s), reduce_retracing=True)
        out = []
        for i, start in enumerate(range(0, len(x), self.batch_size)):
            sl = slice(start, start + self.batch_size)
            out.append(np.asarray(fn(tf.constant(x[sl]), tf.constant(y[sl]),
                                     batch_seed(self.seed, i))))
        return np.concatenate(out)
