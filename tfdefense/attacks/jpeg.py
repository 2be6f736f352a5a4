"""JPEG-Linf: an Linf attack on the JPEG coefficients of an image (Kang et al. 2019).

Kang, Sun, Hendrycks, Brown & Steinhardt, "Testing robustness against
unforeseen adversaries" (arXiv:1908.08016), attack "L-inf JPEG": the image is
taken to the space a JPEG encoder works in, perturbed there within an Linf
ball, and decoded::

    x_adv = JPEG^-1(JPEG(x) + delta),   ||delta||_inf <= eps

``JPEG`` here is, as in their code (``advex_uar/attacks/jpeg.py``, the one
CD-VAE runs through ``perceptual_advex.attacks.JPEGLinfAttack``):

1. RGB -> YCbCr (full-range JFIF matrix);
2. 4:2:0 chroma subsampling (Cb and Cr averaged over 2x2 pixels;
   ``chroma_subsampling=False`` keeps them at full resolution);
3. each channel cut into 8x8 blocks, each block through the orthonormal 2-D
   DCT-II, written as ``D @ block @ D.T`` with the 8x8 DCT matrix ``D``;
4. each coefficient divided by its step in the standard (quality 50) JPEG
   quantization table; there is no rounding, so the map is linear and
   differentiable end to end.

Units of ``eps`` (``quantization_table=True``, the default): advex-uar adds
``t / 2`` to the quantized coefficients with ``|t| <= eps``, so one unit of
``eps`` is half a quantization step on the 0-255 scale: coefficient (u, v) of
the orthonormal DCT of a [0, 1] channel moves by at most ``eps * Q[u, v] /
510``. With ``quantization_table=False`` ``eps`` bounds the orthonormal DCT
coefficients of the [0, 1] YCbCr channels directly. Greyscale images are one
luma channel (no colour conversion, the luminance table). Images whose height
or width is not a multiple of the block (8, or 16 with chroma subsampling) are
padded by repeating the last row / column and cropped after decoding
(advex-uar refuses them). The
decoded image is clipped to [0, 1] at every step, as advex-uar clamps to
[0, 255].

Note that with chroma subsampling even ``delta = 0`` blurs the chroma (2x2
averages); that is part of Kang et al.'s threat model.

The attack is PGD on ``delta``: a uniform random start in the eps ball
(advex-uar's default), ``steps`` sign steps of ``step_size`` on the
cross-entropy, projection onto the ball after each step. Whole batches run in
one compiled graph.

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.attacks.jpeg import jpeg_encode
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((32, 32, 3), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(0.4, 0.6, (2, 32, 32, 3)).astype("float32")
    >>> x_adv = get_attack("jpeg_linf", model=model, eps=0.05, steps=3).generate(x)
    >>> x_adv.shape
    (2, 32, 32, 3)
    >>> # mid-range images, nothing clipped: every coefficient moved by at most eps
    >>> moved = [np.abs(a - b).max() for a, b in zip(jpeg_encode(x_adv), jpeg_encode(x))]
    >>> bool(max(moved) <= 0.05 + 1e-4)
    True
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfdefense.attacks import losses
from tfdefense.attacks.base import CompiledAttack, register
from tfdefense.validation import check_images, check_number

BLOCK = 8
LOSSES = ("ce", "margin")

#: JPEG standard (ITU-T T.81) Annex K, Table K.1: luminance quantization table,
#: row = vertical frequency, column = horizontal frequency (quality 50)
LUMA_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float32,
)

#: Annex K, Table K.2: chrominance quantization table (99 outside the top-left 4x4)
CHROMA_TABLE = np.full((8, 8), 99.0, np.float32)
CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

#: full-range (JFIF) RGB -> YCbCr; Cb and Cr are offset by 0.5 on the [0, 1] scale
RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    np.float64,
)
YCBCR_OFFSET = np.array([0.0, 0.5, 0.5], np.float64)


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (``D @ D.T = I``): ``D[k, i] = a_k cos(pi (2i + 1) k / 2n)``.

    ``a_0 = sqrt(1 / n)``, ``a_k = sqrt(2 / n)``; the 2-D DCT of a block ``B`` is
    ``D @ B @ D.T``, its inverse ``D.T @ C @ D``.
    """
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_D = dct_matrix()


def to_blocks(x: tf.Tensor) -> tf.Tensor:
    """(N, H, W, K) with H, W multiples of 8 -> (N, H/8, W/8, K, 8, 8) blocks."""
    s = tf.shape(x)
    b = tf.reshape(x, tf.stack([s[0], s[1] // BLOCK, BLOCK, s[2] // BLOCK, BLOCK, s[3]]))
    return tf.transpose(b, [0, 1, 3, 5, 2, 4])


def from_blocks(b: tf.Tensor) -> tf.Tensor:
    """Inverse of ``to_blocks``: (N, Hb, Wb, K, 8, 8) -> (N, 8 Hb, 8 Wb, K)."""
    s = tf.shape(b)
    x = tf.transpose(b, [0, 1, 4, 2, 5, 3])
    return tf.reshape(x, tf.stack([s[0], s[1] * BLOCK, s[2] * BLOCK, s[3]]))


def block_dct(x: tf.Tensor) -> tf.Tensor:
    """Orthonormal 2-D DCT-II of every 8x8 block: (N, H, W, K) -> (N, H/8, W/8, K, 8, 8).

    The last two axes are (vertical, horizontal) frequency; a constant block of
    value ``c`` has only its DC coefficient, ``8 c``.
    """
    d = tf.constant(_D, x.dtype)
    return tf.einsum("ui,nabkij,vj->nabkuv", d, to_blocks(x), d)


def block_idct(c: tf.Tensor) -> tf.Tensor:
    """Inverse of ``block_dct``: (N, Hb, Wb, K, 8, 8) -> (N, 8 Hb, 8 Wb, K)."""
    d = tf.constant(_D, c.dtype)
    return from_blocks(tf.einsum("ui,nabkuv,vj->nabkij", d, c, d))


def rgb_to_ycbcr(x: tf.Tensor) -> tf.Tensor:
    """Full-range JFIF YCbCr of [0, 1] RGB (..., 3); Cb, Cr centred on 0.5."""
    m = tf.constant(RGB_TO_YCBCR.T, x.dtype)
    return tf.tensordot(x, m, 1) + tf.constant(YCBCR_OFFSET, x.dtype)


def ycbcr_to_rgb(x: tf.Tensor) -> tf.Tensor:
    """Exact inverse of ``rgb_to_ycbcr`` (the matrix inverse, not JFIF's rounded one)."""
    m = tf.constant(np.linalg.inv(RGB_TO_YCBCR).T, x.dtype)
    return tf.tensordot(x - tf.constant(YCBCR_OFFSET, x.dtype), m, 1)


def _scale(table: np.ndarray, quantization_table: bool, dtype) -> tf.Tensor:
    """Per-coefficient size of one unit of ``delta`` on the [0, 1] DCT scale."""
    return tf.constant(table / 510.0 if quantization_table else np.ones_like(table), dtype)


def _multiple(chroma_subsampling: bool, channels: int) -> int:
    return 2 * BLOCK if chroma_subsampling and channels == 3 else BLOCK


def _pad(x: tf.Tensor, multiple: int) -> tf.Tensor:
    """Repeat the last row / column until H and W are multiples of ``multiple``."""
    s = tf.shape(x)
    ph, pw = tf.math.floormod(-s[1], multiple), tf.math.floormod(-s[2], multiple)
    x = tf.concat([x, tf.repeat(x[:, -1:], ph, axis=1)], axis=1)
    return tf.concat([x, tf.repeat(x[:, :, -1:], pw, axis=2)], axis=2)


def _pool2(x: tf.Tensor) -> tf.Tensor:
    s = tf.shape(x)
    x = tf.reshape(x, tf.stack([s[0], s[1] // 2, 2, s[2] // 2, 2, s[3]]))
    return tf.reduce_mean(x, axis=[2, 4])


def _upsample2(x: tf.Tensor) -> tf.Tensor:
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def jpeg_encode(x, chroma_subsampling: bool = True, quantization_table: bool = True) -> list[tf.Tensor]:
    """The coefficients JPEG-Linf perturbs, in units of its ``eps``.

    Args:
        x: images (N, H, W, C), C = 1 (greyscale) or 3 (RGB), in [0, 1].
        chroma_subsampling: average Cb and Cr over 2x2 pixels first (4:2:0).
        quantization_table: divide each coefficient by its quantization step
            / 510 (``eps`` units of advex-uar); else plain orthonormal DCT
            coefficients of the [0, 1] channels.

    Returns:
        ``[luma]`` for greyscale, ``[luma, chroma]`` for RGB: luma (N, Hb, Wb,
        1, 8, 8) and chroma (N, Hc, Wc, 2, 8, 8) DCT blocks.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    channels = x.shape[-1]
    x = _pad(x, _multiple(chroma_subsampling, channels))
    if channels == 1:
        return [block_dct(x) / _scale(LUMA_TABLE, quantization_table, x.dtype)]
    ycc = rgb_to_ycbcr(x)
    luma, chroma = ycc[..., :1], ycc[..., 1:]
    if chroma_subsampling:
        chroma = _pool2(chroma)
    return [
        block_dct(luma) / _scale(LUMA_TABLE, quantization_table, x.dtype),
        block_dct(chroma) / _scale(CHROMA_TABLE, quantization_table, x.dtype),
    ]


def jpeg_decode(coefficients, size, chroma_subsampling: bool = True,
                quantization_table: bool = True) -> tf.Tensor:
    """Inverse of ``jpeg_encode``: images (N, H, W, C) cropped to ``size`` = (H, W), not clipped."""
    luma = block_idct(coefficients[0] * _scale(LUMA_TABLE, quantization_table, coefficients[0].dtype))
    if len(coefficients) == 1:
        return luma[:, : size[0], : size[1]]
    chroma = block_idct(coefficients[1] * _scale(CHROMA_TABLE, quantization_table, luma.dtype))
    if chroma_subsampling:
        chroma = _upsample2(chroma)
    rgb = ycbcr_to_rgb(tf.concat([luma, chroma], axis=-1))
    return rgb[:, : size[0], : size[1]]


@register("jpeg_linf")
class JPEGLinf(CompiledAttack):
    """JPEG-Linf of Kang et al. 2019, as CD-VAE Table 7 runs it (see the module docstring).

    Args:
        eps: Linf budget on the JPEG coefficients, in advex-uar units (half a
            quality-50 quantization step on the 0-255 scale); default 0.125,
            CD-VAE's Table 7 setting (``toolkits/adv_test_cifar.sh`` of the
            official code: ``JPEGLinfAttack(cd_vae, 'cifar', bound=0.125,
            num_iterations=100)``; perceptual_advex's own CIFAR default is
            0.25, Kang et al.'s CIFAR-10 calibration spans 0.03125-1).
        steps: PGD iterations; default 100 (CD-VAE, same line).
        step_size: sign-step size; default eps / sqrt(steps)
            (``perceptual_advex.attacks.UARAttack``).
        rand_init: start uniformly in the eps ball; default True (advex-uar
            ``JPEGAttack(rand_init=True)``).
        loss: "ce" (cross-entropy, advex-uar's) or "margin" (C&W f6, uncapped).
        chroma_subsampling: 4:2:0 chroma as advex-uar (default True).
        quantization_table: measure ``eps`` in quantization steps as
            advex-uar (default True); False bounds the orthonormal DCT
            coefficients of the [0, 1] YCbCr channels directly.
        targeted: move towards ``y``.
    """

    params = ("eps", "steps", "step_size", "rand_init", "loss", "chroma_subsampling",
              "quantization_table", "targeted")
    supported_norms = ("jpeg_linf",)
    supports_targeted = True

    def __init__(self, model=None, *, eps=0.125, steps=100, step_size=None, rand_init=True,
                 loss="ce", chroma_subsampling=True, quantization_table=True, targeted=False,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.eps = eps
        self.steps = steps
        self.step_size = step_size
        self.rand_init = rand_init
        self.loss = loss
        self.chroma_subsampling = chroma_subsampling
        self.quantization_table = quantization_table
        self.targeted = targeted
        self._check_params()

    @property
    def norm(self) -> str:
        """The threat model (JPEG-coefficient Linf; ``eps`` is not a pixel budget)."""
        return "jpeg_linf"

    def _check_params(self):
        super()._check_params()
        if self.step_size is not None:
            check_number(self.step_size, "step_size", low=0.0, low_inclusive=False)
        for name in ("rand_init", "chroma_subsampling", "quantization_table"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")

    @property
    def step(self) -> float:
        return self.eps / math.sqrt(self.steps) if self.step_size is None else float(self.step_size)

    def prepare(self, x, y=None, model=None):
        arr = check_images(x, "x")
        if arr.shape[-1] not in (1, 3):
            raise ValueError(
                f"x: JPEG-Linf needs greyscale (1 channel) or RGB (3 channels) images, "
                f"got {arr.shape[-1]} channels"
            )
        return super().prepare(arr, y, model)

    def _graph(self, model, x, y, seed):
        size = tf.shape(x)[1:3]
        kw = dict(chroma_subsampling=self.chroma_subsampling,
                  quantization_table=self.quantization_table)
        clean = jpeg_encode(x, **kw)
        eps = tf.constant(self.eps, x.dtype)
        if self.rand_init:
            delta = [
                tf.random.stateless_uniform(tf.shape(c), tf.random.experimental.stateless_fold_in(
                    seed, i), -1.0, 1.0, dtype=x.dtype) * eps
                for i, c in enumerate(clean)
            ]
        else:
            delta = [tf.zeros_like(c) for c in clean]

        def decode(delta):
            coefs = [c + d for c, d in zip(clean, delta)]
            return tf.clip_by_value(jpeg_decode(coefs, size, **kw), 0.0, 1.0)

        for _ in tf.range(self.steps):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                logits = model(decode(delta))
                if self.loss == "ce":
                    value = losses.cross_entropy(logits, y, self.targeted)
                else:
                    value = losses.margin(logits, y, targeted=self.targeted)
                value = tf.reduce_sum(value)
            grads = tape.gradient(value, delta)
            if any(g is None for g in grads):
                raise ValueError(
                    "model: no gradient flows from the logits to the images; wrap "
                    "non-differentiable steps with tfdefense.attacks.bpda"
                )
            delta = [tf.clip_by_value(d + self.step * tf.sign(g), -eps, eps)
                     for d, g in zip(delta, grads)]
        return decode(delta)
