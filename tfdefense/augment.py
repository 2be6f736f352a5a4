"""Training augmentation of the official CD-VAE CIFAR scripts, as Keras layers run in ``tf.data``.

The official train transform (kai-wen-yang/CD-VAE ``tools/disentangle_cifar.py:171-177``,
the same in ``tools/adv_train_cifar.py:85-90``) is::

    RandomCrop(32, padding=4), RandomHorizontalFlip(), RandAugmentMC(n=2, m=10), ToTensor()

followed by ``Normalize(CIFAR mean, std)`` in the disentangling script only; here the
model normalises inside itself (DESIGN.md), so the pipeline ends in [0, 1].
``RandAugmentMC`` is FixMatch's policy (``utils/randaugment4fixmatch.py:205-220``), *not*
torchvision's ``RandAugment``: ``n`` ops drawn with replacement from a 14-op pool
(lines 147-163), each applied with probability 0.5 at a magnitude ``v`` drawn uniformly
from {1, …, m − 1} out of ``PARAMETER_MAX = 10`` (line 17, 216), then always a
16-pixel grey cutout (``CutoutAbs(img, 16)``, line 219).

``keras.layers.RandAugment`` is not used: its op set differs (no identity, no cutout,
no 0.5 application probability), one ``factor`` sets every op's strength on scales
unlike FixMatch's (factor 0.9 allows rotations of up to 0.9·360°, FixMatch 27°), and it
picks its ops once per batch, as ``keras.layers.RandomCrop`` picks one offset per batch.
:class:`RandAugmentMC` and :class:`PaddedRandomCrop` below draw per image; the flip is
``keras.layers.RandomFlip`` (per image already). Remaining differences from the PIL
originals: values stay float (PIL rounds to uint8 after every op) and geometric ops use
TF's nearest-neighbour sampling with PIL's pixel-centre convention.

Every layer is seeded; :func:`augment_dataset` maps sequentially so a seed reproduces
the stream, and a second pass over the dataset draws new augmentations. Nothing here
belongs in a model: apply it to the training ``tf.data`` pipeline only.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    >>> ds = augment_dataset(tf.data.Dataset.from_tensors((x, np.zeros(4, "int64"))), seed=1)
    >>> a, _ = next(iter(ds))
    >>> a.dtype.name, a.shape, bool(tf.reduce_min(a) >= 0 and tf.reduce_max(a) <= 1)
    ('float32', TensorShape([4, 32, 32, 3]), True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from tfdefense.validation import check_positive_int

__all__ = ["AugmentSpec", "PaddedRandomCrop", "RandAugmentMC", "augmentation", "augment_dataset"]

#: FixMatch's pool in ``fixmatch_augment_pool()`` order (utils/randaugment4fixmatch.py:147-163)
OPS = (
    "auto_contrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
)  # fmt: skip
_PARAMETER_MAX = 10  # utils/randaugment4fixmatch.py:17
_GREY = 127.0 / 255.0  # CutoutAbs's color = (127, 127, 127), line 57


@dataclass(frozen=True)
class AugmentSpec:
    """What the training pipeline does to each image, with the official values as defaults.

    Args:
        crop_padding: zero padding before a random crop back to the input size; 4
            (``transforms.RandomCrop(32, padding=4)``, tools/disentangle_cifar.py:172). 0 = off.
        horizontal_flip: ``transforms.RandomHorizontalFlip()`` (p = 0.5, line 173).
        randaugment_ops: ``RandAugmentMC(n=2, ...)`` (line 174). 0 = off.
        randaugment_magnitude: ``RandAugmentMC(..., m=10)`` (line 174); magnitudes are drawn
            from {1, …, m − 1} (``np.random.randint(1, self.m)``).
        cutout: side of the grey square ``RandAugmentMC`` always pastes,
            16 (``CutoutAbs(img, 16)``, utils/randaugment4fixmatch.py:219). 0 = off.
    """

    crop_padding: int = 4
    horizontal_flip: bool = True
    randaugment_ops: int = 2
    randaugment_magnitude: int = 10
    cutout: int = 16

    def __post_init__(self) -> None:
        check_positive_int(self.crop_padding, "crop_padding", minimum=0)
        check_positive_int(self.randaugment_ops, "randaugment_ops", minimum=0)
        check_positive_int(self.cutout, "cutout", minimum=0)
        m = check_positive_int(self.randaugment_magnitude, "randaugment_magnitude", minimum=2)
        if m > _PARAMETER_MAX:
            raise ValueError(f"randaugment_magnitude: expected a value in [2, 10], got {m}")


@keras.saving.register_keras_serializable(package="tfdefense")
class PaddedRandomCrop(keras.layers.Layer):
    """Zero-pad by ``padding`` then crop back at a random offset drawn per image.

    torchvision's ``RandomCrop(size, padding=p)`` (constant fill 0, offsets uniform in
    {0, …, 2p}); ``keras.layers.RandomCrop`` would use one offset for the whole batch.
    """

    def __init__(self, padding: int = 4, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.padding = check_positive_int(padding, "padding", minimum=0)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        p = self.padding
        if not p:
            return images
        n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        oy = keras.random.randint((n,), 0, 2 * p + 1, seed=self.seed_generator)
        ox = keras.random.randint((n,), 0, 2 * p + 1, seed=self.seed_generator)
        rows = oy[:, None] + tf.range(h)[None]
        cols = ox[:, None] + tf.range(w)[None]
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(out, cols, axis=2, batch_dims=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfdefense")
class RandAugmentMC(keras.layers.Layer):
    """FixMatch's RandAugmentMC, as the official CD-VAE trains, drawn per image.

    For each of ``num_ops`` slots: an op uniformly from :data:`OPS`, a magnitude ``v`` from
    {1, …, magnitude − 1}, applied with probability 0.5; then a ``cutout``-pixel grey square.
    Op strengths follow ``fixmatch_augment_pool`` (max_v, bias): enhance factors
    ``0.9·v/10 + 0.05``, posterize to ``int(4v/10) + 4`` bits, rotate ±``int(30v/10)``°,
    shear ±``0.3v/10``, solarize above ``256 − int(256v/10)``, translate
    ±``int(0.3v/10 · size)`` pixels. Inputs and outputs are float images in [0, 1].
    """

    def __init__(
        self, num_ops: int = 2, magnitude: int = 10, cutout: int = 16, seed: int | None = None, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_ops = check_positive_int(num_ops, "num_ops", minimum=0)
        self.magnitude = check_positive_int(magnitude, "magnitude", minimum=2)
        self.cutout = check_positive_int(cutout, "cutout", minimum=0)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, n: tf.Tensor) -> tf.Tensor:
        return keras.random.uniform((n,), seed=self.seed_generator)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(images, tf.float32)
        n = tf.shape(x)[0]
        for _ in range(self.num_ops):
            op = keras.random.randint((n,), 0, len(OPS), seed=self.seed_generator)
            v = keras.random.randint((n,), 1, self.magnitude, seed=self.seed_generator)
            apply = self._uniform(n) < 0.5
            sign = tf.where(self._uniform(n) < 0.5, -1, 1)
            x = tf.where(apply[:, None, None, None], apply_op(x, op, v, sign), x)
        if self.cutout:
            x = self._cutout(x, n)
        return x

    def _cutout(self, x: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        """``CutoutAbs(img, v)`` (lines 47-60): PIL's rectangle includes both corners."""
        h, w = x.shape[1], x.shape[2]
        half = self.cutout / 2.0
        x0 = tf.floor(tf.maximum(0.0, self._uniform(n) * w - half))
        y0 = tf.floor(tf.maximum(0.0, self._uniform(n) * h - half))
        x1, y1 = tf.minimum(float(w), x0 + self.cutout), tf.minimum(float(h), y0 + self.cutout)
        cols = tf.range(w, dtype=tf.float32)[None, None, :]
        rows = tf.range(h, dtype=tf.float32)[None, :, None]
        inside = (
            (cols >= x0[:, None, None]) & (cols <= x1[:, None, None])
            & (rows >= y0[:, None, None]) & (rows <= y1[:, None, None])
        )  # fmt: skip
        return tf.where(inside[..., None], tf.constant(_GREY, x.dtype), x)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_ops": self.num_ops,
            "magnitude": self.magnitude,
            "cutout": self.cutout,
            "seed": self.seed,
        }


# --------------------------------------------------------------------------- the ops
def _gray(x: tf.Tensor) -> tf.Tensor:
    """PIL's ``convert("L")``: ITU-R 601-2 luma, shape (N, H, W, 1)."""
    if x.shape[-1] == 1:
        return x
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)


def _blend(degenerate: tf.Tensor, x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``Image.blend(degenerate, x, factor)``, what every ``ImageEnhance`` op does."""
    return tf.clip_by_value(degenerate + factor * (x - degenerate), 0.0, 1.0)


def _smooth(x: tf.Tensor) -> tf.Tensor:
    """``ImageFilter.SMOOTH`` (3×3 kernel 1,1,1/1,5,1/1,1,1 over 13); PIL keeps the border."""
    c = x.shape[-1]
    k = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], x.dtype) / 13.0
    kernel = tf.tile(k[:, :, None, None], [1, 1, c, 1])
    inner = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")
    inner = tf.pad(inner, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h, w = x.shape[1], x.shape[2]
    mask = tf.pad(tf.ones((h - 2, w - 2), tf.bool), [[1, 1], [1, 1]])
    return tf.where(mask[None, :, :, None], inner, x)


def _to_levels(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.int32)


def _auto_contrast(x: tf.Tensor) -> tf.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): stretch each channel to [0, 1]; flat channels kept."""
    lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
    span = hi - lo
    return tf.where(span > 0, (x - lo) / tf.where(span > 0, span, 1.0), x)


def _equalize(x: tf.Tensor) -> tf.Tensor:
    """``ImageOps.equalize``: per image and channel, PIL's LUT on 256 levels."""
    n, h, w, c = tf.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    q = tf.transpose(_to_levels(x), [0, 3, 1, 2])  # (N, C, H, W)
    offsets = tf.reshape(tf.range(n * c) * 256, [n, c, 1, 1])
    hist = tf.math.bincount(tf.reshape(q + offsets, [-1]), minlength=n * c * 256, maxlength=n * c * 256)
    hist = tf.reshape(hist, [n, c, 256])
    top = tf.reduce_max(q, axis=[2, 3])  # last non-empty bin
    last = tf.gather(hist, top, axis=2, batch_dims=2)
    step = (h * w - last) // 255
    safe = tf.maximum(step, 1)[..., None]
    lut = (step[..., None] // 2 + tf.cumsum(hist, axis=-1, exclusive=True)) // safe
    lut = tf.minimum(lut, 255)
    out = tf.gather(lut, tf.reshape(q, [n, c, h * w]), axis=2, batch_dims=2)
    out = tf.where(step[..., None] > 0, out, tf.reshape(q, [n, c, h * w]))
    out = tf.transpose(tf.reshape(out, [n, c, h, w]), [0, 2, 3, 1])
    return tf.cast(out, x.dtype) / 255.0


def _posterize(x: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """``ImageOps.posterize(img, bits)``: keep the top ``bits`` bits of each level."""
    drop = tf.bitwise.left_shift(1, 8 - bits)[:, None, None, None]
    return tf.cast(_to_levels(x) // drop * drop, x.dtype) / 255.0


def _solarize(x: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """``ImageOps.solarize(img, threshold)``: invert levels ≥ threshold."""
    above = x * 255.0 >= tf.cast(threshold, x.dtype)[:, None, None, None]
    return tf.where(above, 1.0 - x, x)


def _affine(x: tf.Tensor, pil: tf.Tensor) -> tf.Tensor:
    """``img.transform(size, AFFINE, (a, b, c, d, e, f))``, nearest, black fill.

    PIL maps an output pixel centre (x + ½, y + ½) to the input point A·p + t and takes the
    pixel it falls in; TF maps index p to A·p + t' and rounds, so t' = t + A·(½, ½) − ½.
    """
    a, b, c, d, e, f = tf.unstack(pil, axis=1)
    zeros = tf.zeros_like(a)
    transforms = tf.stack(
        [a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.shape(x)[1:3],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )


def _geometry(x: tf.Tensor, op: tf.Tensor, v: tf.Tensor, sign: tf.Tensor) -> tf.Tensor:
    """The five geometric ops as one per-image PIL affine matrix (identity for the others)."""
    h, w = x.shape[1], x.shape[2]
    vf, sf = tf.cast(v, tf.float32), tf.cast(sign, tf.float32)
    one, zero = tf.ones_like(vf), tf.zeros_like(vf)
    shear = sf * vf * 0.3 / _PARAMETER_MAX
    # rotate: PIL's Image.rotate(angle) about (w/2, h/2), angle = ±int(30·v/10)
    angle = -tf.cast(sign * (v * 30 // _PARAMETER_MAX), tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = w / 2.0, h / 2.0
    rotate = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    # translate: int(±0.3·v/10 · size) pixels, truncated toward zero
    tx = sf * tf.cast(v * 3 * w // 100, tf.float32)
    ty = sf * tf.cast(v * 3 * h // 100, tf.float32)
    table = {
        "rotate": rotate,
        "shear_x": [one, shear, zero, zero, one, zero],
        "shear_y": [one, zero, zero, shear, one, zero],
        "translate_x": [one, zero, tx, zero, one, zero],
        "translate_y": [one, zero, zero, zero, one, ty],
    }
    matrix = tf.stack([one, zero, zero, zero, one, zero], axis=1)
    for name, row in table.items():
        matrix = tf.where((op == OPS.index(name))[:, None], tf.stack(row, axis=1), matrix)
    return _affine(x, matrix)


def apply_op(x: tf.Tensor, op: tf.Tensor, v: tf.Tensor, sign: tf.Tensor) -> tf.Tensor:
    """Apply ``OPS[op[i]]`` at magnitude ``v[i]`` (and direction ``sign[i]``) to image ``i``.

    Example:
        >>> x = tf.fill((1, 4, 4, 3), 0.5)
        >>> op, v, sign = tf.constant([OPS.index("brightness")]), tf.constant([5]), tf.constant([1])
        >>> float(apply_op(x, op, v, sign)[0, 0, 0, 0])  # x * (0.9 * 5 / 10 + 0.05)
        0.25
    """
    factor = (tf.cast(v, x.dtype) * 0.9 / _PARAMETER_MAX + 0.05)[:, None, None, None]
    geometric = _geometry(x, op, v, sign)
    candidates = {
        "auto_contrast": _auto_contrast(x),
        "brightness": _blend(tf.zeros_like(x), x, factor),
        "color": _blend(_gray(x), x, factor),
        "contrast": _blend(tf.round(tf.reduce_mean(_gray(x), [1, 2, 3], True) * 255.0) / 255.0, x, factor),
        "equalize": _equalize(x),
        "identity": x,
        "posterize": _posterize(x, v * 4 // _PARAMETER_MAX + 4),
        "sharpness": _blend(_smooth(x), x, factor),
        "solarize": _solarize(x, 256 - v * 256 // _PARAMETER_MAX),
    }
    stacked = tf.stack([candidates.get(name, geometric) for name in OPS], axis=1)
    return tf.gather(stacked, op, axis=1, batch_dims=1)


# ----------------------------------------------------------------------- the pipeline
def _spec(recipe_or_params: Any) -> AugmentSpec | None:
    if recipe_or_params is None or isinstance(recipe_or_params, AugmentSpec):
        return recipe_or_params
    if isinstance(recipe_or_params, Mapping):
        unknown = set(recipe_or_params) - {f.name for f in dataclasses.fields(AugmentSpec)}
        if unknown:
            raise ValueError(f"recipe_or_params: unknown augmentation fields {sorted(unknown)}")
        return AugmentSpec(**recipe_or_params)
    if hasattr(recipe_or_params, "augmentation"):  # a recipes.Recipe
        return _spec(recipe_or_params.augmentation)
    raise ValueError(
        "recipe_or_params: expected an AugmentSpec, a dict of its fields, a Recipe or None, "
        f"got {type(recipe_or_params).__name__}"
    )


def augmentation(recipe_or_params: Any = None, seed: int | None = None) -> Callable[[tf.Tensor], tf.Tensor]:
    """The augmentation as a function of a float32 image batch (N, H, W, C) in [0, 1].

    ``recipe_or_params`` is an :class:`AugmentSpec`, a dict of its fields, a
    ``recipes.Recipe`` (its ``augmentation``) or ``None`` (identity). Order as the official
    transform: crop, flip, RandAugmentMC (+ cutout). The layers live in the closure only.

    Example:
        >>> f = augmentation({"crop_padding": 0, "horizontal_flip": False, "randaugment_ops": 0,
        ...                   "cutout": 0}, seed=0)
        >>> x = tf.random.stateless_uniform((2, 8, 8, 3), (1, 2))
        >>> bool(tf.reduce_all(f(x) == x))
        True
    """
    spec = _spec(recipe_or_params)
    layers: list[keras.layers.Layer] = []
    if spec is not None:
        derive = (lambda i: None) if seed is None else (lambda i: int(seed) * 3 + i)
        if spec.crop_padding:
            layers.append(PaddedRandomCrop(spec.crop_padding, seed=derive(0)))
        if spec.horizontal_flip:
            layers.append(keras.layers.RandomFlip("horizontal", seed=derive(1), dtype="float32"))
        if spec.randaugment_ops or spec.cutout:
            layers.append(
                RandAugmentMC(spec.randaugment_ops, spec.randaugment_magnitude, spec.cutout, seed=derive(2))
            )

    def augment(images: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(images)
        if x.dtype != tf.float32 or x.shape.rank != 4:
            raise ValueError(f"images: expected a float32 batch (N, H, W, C), got {x.dtype.name} {x.shape}")
        for layer in layers:
            x = layer(x, training=True) if isinstance(layer, keras.layers.RandomFlip) else layer(x)
        return tf.clip_by_value(tf.cast(x, tf.float32), 0.0, 1.0)

    return augment


def augment_dataset(ds: tf.data.Dataset, recipe_or_params: Any = AugmentSpec(), seed: int | None = None):
    """Augment the images of a batched dataset of ``images`` or ``(images, labels, ...)``.

    Maps sequentially (one shared layer state, so a fixed ``seed`` gives the same stream
    on every run; a second pass over the dataset gets fresh draws), on the CPU side of
    the input pipeline. Labels and any further components pass through unchanged.
    """
    spec = ds.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(first, tf.TensorSpec) or first.dtype != tf.float32 or first.shape.rank != 4:
        raise ValueError(
            "ds: expected batched float32 images (N, H, W, C) or tuples starting with them, "
            f"got element_spec {spec}"
        )
    augment = augmentation(recipe_or_params, seed)

    def _map(*element):
        if len(element) == 1:
            return augment(element[0])
        return (augment(element[0]), *element[1:])

    return ds.map(_map, num_parallel_calls=None)
