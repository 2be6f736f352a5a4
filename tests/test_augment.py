"""The official CD-VAE augmentation in tf.data: seeded, per image, in range, PIL-faithful."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.augment import (
    OPS,
    PaddedRandomCrop,
    RandAugmentMC,
    apply_op,
    augment_dataset,
    augmentation,
)


def _images(n=8, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 32, 32, 3)).astype("float32")


def _dataset(x):
    return tf.data.Dataset.from_tensor_slices((x, np.arange(len(x), dtype="int64"))).batch(4)


def _collect(ds):
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_augment_dataset_is_reproducible_changes_images_and_stays_in_range():
    x = _images()
    a, labels = _collect(augment_dataset(_dataset(x), seed=7))
    b, _ = _collect(augment_dataset(_dataset(x), seed=7))
    c, _ = _collect(augment_dataset(_dataset(x), seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert all(not np.allclose(a[i], x[i]) for i in range(len(x)))  # cutout alone changes every image
    np.testing.assert_array_equal(labels, np.arange(len(x)))


def test_each_pass_draws_new_augmentations():
    ds = augment_dataset(_dataset(_images()), seed=3)
    first, _ = _collect(ds)
    second, _ = _collect(ds)
    assert not np.array_equal(first, second)


def test_images_only_dataset():
    ds = augment_dataset(tf.data.Dataset.from_tensors(_images(2)), seed=1)
    out = next(iter(ds))
    assert out.shape == (2, 32, 32, 3)


@pytest.mark.parametrize(
    "ds",
    [
        tf.data.Dataset.from_tensor_slices(np.zeros((2, 8, 8, 3), "float32")),  # unbatched
        tf.data.Dataset.from_tensors(np.zeros((2, 8, 8, 3), "uint8")),
    ],
)
def test_augment_dataset_rejects_what_it_cannot_augment(ds):
    with pytest.raises(ValueError, match="ds: expected batched float32"):
        augment_dataset(ds, seed=0)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"randaugment_magnitude": 11}, "randaugment_magnitude"),
        ({"randaugment_magnitude": 1}, "randaugment_magnitude"),
        ({"crop_padding": -1}, "crop_padding"),
        ({"bogus": 1}, "unknown augmentation fields"),
    ],
)
def test_bad_augmentation_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        augmentation(params, seed=0)


def test_no_augmentation_is_identity():
    x = tf.constant(_images(2))
    np.testing.assert_array_equal(augmentation(None)(x), x)


def test_padded_random_crop_draws_an_offset_per_image():
    # torchvision RandomCrop(32, padding=4): zero padding, offsets uniform in {0, ..., 8} per image
    x = np.arange(16 * 32 * 32 * 3, dtype="float32").reshape(16, 32, 32, 3) + 1.0
    out = PaddedRandomCrop(4, seed=0)(x).numpy()
    padded = np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)])
    offsets = []
    for i in range(16):
        hits = [(oy, ox) for oy in range(9) for ox in range(9)
                if np.array_equal(out[i], padded[i, oy:oy + 32, ox:ox + 32])]  # fmt: skip
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # not one offset for the whole batch (keras.layers.RandomCrop)


def test_cutout_is_one_grey_square_as_pil_draws_it():
    # CutoutAbs(img, 16): x0 = int(max(0, U(0, 32) - 8)) in {0..23}, x1 = min(32, x0 + 16), and PIL's
    # rectangle includes both corners: 17 pixels wide when x0 <= 15, else 32 - x0 (9..16), clipped.
    out = RandAugmentMC(num_ops=0, cutout=16, seed=1)(np.zeros((32, 32, 32, 3), "float32")).numpy()
    for image in out:
        grey = np.isclose(image[..., 0], 127 / 255)
        rows, cols = np.nonzero(grey)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert grey.sum() == height * width  # one filled rectangle
        assert 9 <= height <= 17 and 9 <= width <= 17
        np.testing.assert_array_equal(image[~grey], 0.0)


def test_randaugment_layers_round_trip_their_config():
    for layer in (RandAugmentMC(3, 7, 8, seed=2), PaddedRandomCrop(2, seed=5)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert restored.get_config() == layer.get_config()


# ------------------------------------------------------------------ parity with PIL
def _pil_reference(image, name, v, sign):
    """The official op (utils/randaugment4fixmatch.py, fixmatch_augment_pool) on a PIL image."""
    from PIL import Image, ImageEnhance, ImageOps

    img = Image.fromarray(image)
    f = v * 0.9 / 10 + 0.05
    s = sign * v * 0.3 / 10
    t = int(sign * v * 0.3 / 10 * 32)
    calls = {
        "auto_contrast": lambda: ImageOps.autocontrast(img),
        "brightness": lambda: ImageEnhance.Brightness(img).enhance(f),
        "color": lambda: ImageEnhance.Color(img).enhance(f),
        "contrast": lambda: ImageEnhance.Contrast(img).enhance(f),
        "equalize": lambda: ImageOps.equalize(img),
        "identity": lambda: img,
        "posterize": lambda: ImageOps.posterize(img, int(v * 4 / 10) + 4),
        "rotate": lambda: img.rotate(sign * int(v * 30 / 10)),
        "sharpness": lambda: ImageEnhance.Sharpness(img).enhance(f),
        "shear_x": lambda: img.transform(img.size, Image.AFFINE, (1, s, 0, 0, 1, 0)),
        "shear_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, s, 1, 0)),
        "solarize": lambda: ImageOps.solarize(img, 256 - int(v * 256 / 10)),
        "translate_x": lambda: img.transform(img.size, Image.AFFINE, (1, 0, t, 0, 1, 0)),
        "translate_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, t)),
    }
    return np.asarray(calls[name](), dtype="float32")


GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


@pytest.mark.parametrize("name", OPS)
def test_ops_match_pil(name):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((4, 4, 1)))  # structure for equalize/sharpness
    image = (blocks * 0.7 + rng.uniform(0, 76, (32, 32, 3))).clip(0, 255).astype("uint8")
    cases = [(v, sign) for v in (1, 5, 9) for sign in (1, -1)]
    ours = apply_op(
        tf.constant(np.repeat(image[None] / 255.0, len(cases), 0), tf.float32),
        tf.fill([len(cases)], OPS.index(name)),
        tf.constant([v for v, _ in cases]),
        tf.constant([s for _, s in cases]),
    ).numpy()
    for i, (v, sign) in enumerate(cases):
        diff = np.abs(ours[i] * 255.0 - _pil_reference(image, name, v, sign))
        # PIL rounds to uint8 after each op, we keep floats: at most 1.5 levels apart; geometry exact
        assert diff.max() <= (1e-3 if name in GEOMETRIC else 1.5), (name, v, sign, diff.max())


def test_each_op_is_applied_with_probability_one_half():
    # RandAugmentMC.__call__ (utils/randaugment4fixmatch.py:214-218), one op slot, random 32x32 images:
    # unchanged = not applied (1/2) + applied but a no-op: identity (1/14) or a translation by
    # int(0.3 * 1 / 10 * 32) = 0 pixels (v = 1 of 9, 2 ops of 14) -> 1/2 + 1/2 * (1/14 + 2/126) = 0.5437
    x = _images(1000, seed=2)
    out = RandAugmentMC(num_ops=1, magnitude=10, cutout=0, seed=4)(x).numpy()
    unchanged = np.all(out == x, axis=(1, 2, 3)).mean()
    assert abs(unchanged - 0.5437) < 0.05  # 3 standard deviations at n = 1000


def test_magnitudes_are_one_to_nine_of_ten():
    # v = np.random.randint(1, m) with m = 10 -> {1, ..., 9}; brightness scales by 0.9 v / 10 + 0.05.
    # On a constant 0.5 image only brightness gives a constant image darker than 0.45.
    out = RandAugmentMC(num_ops=1, magnitude=10, cutout=0, seed=5)(np.full((2000, 16, 16, 3), 0.5, "float32"))
    out = out.numpy().reshape(2000, -1)
    flat = (out.max(axis=1) == out.min(axis=1)) & (out[:, 0] > 0.01) & (out[:, 0] < 0.45)
    factors = set(np.round(out[flat, 0].astype("float64") / 0.5, 4).tolist())
    assert factors == {round(0.09 * v + 0.05, 4) for v in range(1, 10)}
