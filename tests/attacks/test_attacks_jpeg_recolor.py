"""JPEG-Linf and ReColor: hand cases, budgets, [0, 1] range, and sure-fire linear models.

The models are linear and built by hand, so whether an attack can flip a
prediction is known in advance: each test image sits at a chosen margin and
the largest change the attack's budget allows is computed on paper below.
The budget checks recompute the JPEG coefficients with scipy / numpy, not
with the module under test. No training, no MNIST fixture: the file runs in
well under 30 s.
"""

import doctest
import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.fft import dctn

from tfdefense.attacks import JPEGLinf, ReColor, available_attacks, get_attack
from tfdefense.attacks.jpeg import (
    CHROMA_TABLE,
    LUMA_TABLE,
    block_dct,
    block_idct,
    jpeg_decode,
    jpeg_encode,
)
from tfdefense.attacks.recolor import identity_grid, recolor, rgb_to_cieluv, smoothness

JFIF = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def linear_model(weights: np.ndarray, scale: float) -> keras.Model:
    """logits = scale * (d, -d, 0, ..., 0) with d = <weights, x - 0.5>: class 0 iff d > 0."""
    shape = weights.shape
    dense = np.zeros((weights.size, 10), "float32")
    dense[:, 0], dense[:, 1] = scale * weights.ravel(), -scale * weights.ravel()
    bias = np.zeros(10, "float32")
    bias[0], bias[1] = -scale * 0.5 * weights.sum(), scale * 0.5 * weights.sum()
    inputs = keras.Input(shape)
    layer = keras.layers.Dense(10)
    model = keras.Model(inputs, layer(keras.layers.Flatten()(inputs)))
    layer.set_weights([dense, bias])
    return model


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(model(x)), 1) == y))


def basis(u: int, v: int) -> np.ndarray:
    """The orthonormal 8x8 DCT-II basis image of vertical frequency u, horizontal v (textbook formula)."""
    i = np.arange(8)
    a = lambda k: np.sqrt((1.0 if k == 0 else 2.0) / 8)  # noqa: E731
    col = a(u) * np.cos(np.pi * (2 * i + 1) * u / 16)
    row = a(v) * np.cos(np.pi * (2 * i + 1) * v / 16)
    return np.outer(col, row)


def blocks(channel: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, H/8, W/8, 8, 8) orthonormal DCT blocks, by scipy."""
    n, h, w = channel.shape
    b = channel.reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
    return dctn(b, axes=(-2, -1), norm="ortho")


def numpy_jpeg_coefficients(x: np.ndarray, subsample: bool, quantized: bool) -> tuple:
    """Luma and chroma coefficients in the attack's eps units, computed independently."""
    ycc = x.astype(np.float64) @ JFIF.T
    luma, cb, cr = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    if subsample:
        pool = lambda c: c.reshape(c.shape[0], c.shape[1] // 2, 2, c.shape[2] // 2, 2).mean((2, 4))  # noqa: E731
        cb, cr = pool(cb), pool(cr)
    scale_y = LUMA_TABLE / 510.0 if quantized else 1.0
    scale_c = CHROMA_TABLE / 510.0 if quantized else 1.0
    return blocks(luma) / scale_y, blocks(cb) / scale_c, blocks(cr) / scale_c


# --- JPEG: the transform --------------------------------------------------------------------


def test_block_dct_hand_cases_and_inverse():
    const = np.full((1, 8, 8, 1), 0.3, "float32")
    c = np.array(block_dct(const))[0, 0, 0, 0]
    assert c[0, 0] == pytest.approx(8 * 0.3, abs=1e-5)  # orthonormal: DC = 8 * value
    c[0, 0] = 0.0
    np.testing.assert_allclose(c, 0.0, atol=1e-6)

    x = np.random.default_rng(0).uniform(size=(2, 16, 24, 3)).astype("float32")
    coefs = np.asarray(block_dct(x))  # (2, 2, 3, 3, 8, 8)
    ref = blocks(x[..., 1])
    np.testing.assert_allclose(coefs[:, :, :, 1], ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(block_idct(block_dct(x))), x, atol=1e-5)


def test_jpeg_round_trip_is_identity_and_subsampling_only_blurs_chroma():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 13, 21, 3)).astype("float32")  # not multiples of 8: pad + crop
    plain = jpeg_decode(jpeg_encode(x, False, False), (13, 21), False, False)
    np.testing.assert_allclose(np.asarray(plain), x, atol=1e-5)
    grey = x[..., :1]
    np.testing.assert_allclose(np.asarray(jpeg_decode(jpeg_encode(grey), (13, 21))), grey, atol=1e-5)

    x = rng.uniform(size=(2, 16, 32, 3)).astype("float32")
    out = np.asarray(jpeg_decode(jpeg_encode(x), (16, 32))).astype(np.float64) @ JFIF.T
    ycc = x.astype(np.float64) @ JFIF.T
    np.testing.assert_allclose(out[..., 0], ycc[..., 0], atol=1e-5)  # luma untouched
    pooled = ycc[..., 1:].reshape(2, 8, 2, 16, 2, 2).mean((2, 4))
    np.testing.assert_allclose(out[:, ::2, ::2, 1:], pooled, atol=1e-5)  # chroma: 2x2 means
    np.testing.assert_allclose(out[:, 1::2, 1::2, 1:], pooled, atol=1e-5)


def test_one_unit_of_delta_is_half_a_quantization_step_along_the_right_axis():
    # Luma coefficient (row frequency 0, column frequency 1) of the top-left block: the table
    # says 11 there (12 at (1, 0)); one eps unit = 11 / 510 on the [0, 1] scale, and the image
    # change is a horizontal cosine, constant down each column.
    for channels in (1, 3):
        coefs = [np.zeros((1, 2, 2, 1, 8, 8), "float32")]
        if channels == 3:
            coefs.append(np.zeros((1, 1, 1, 2, 8, 8), "float32"))
        coefs[0][0, 0, 0, 0, 0, 1] = 1.0
        base = jpeg_decode([np.zeros_like(c) for c in coefs], (16, 16))
        change = np.asarray(jpeg_decode(coefs, (16, 16))) - np.asarray(base)
        expected = np.zeros((16, 16))
        expected[:8, :8] = 11 / 510 * basis(0, 1)
        for c in range(channels):  # a luma change moves R, G and B alike
            np.testing.assert_allclose(change[0, :, :, c], expected, atol=1e-6)


# --- JPEG: the attack -----------------------------------------------------------------------

# The model reads d = sum over the 16 luma blocks of the (3, 5) DCT coefficient (weights: the
# basis image times the luma row (0.299, 0.587, 0.114), which the chroma directions of the
# inverse colour matrix are orthogonal to, so chroma cannot move d). The attack moves each of
# those coefficients by at most eps * Q[3, 5] / 510 = eps * 87 / 510, so |change of d| <= 16 *
# 87 / 510 * eps = 2.73 eps: 0.341 at eps 0.125, 0.273 at eps 0.1. The images sit at |d| = 0.3,
# so the first must flip every one and the second none. (A transposed table, Q[5, 3] = 64,
# allows only 0.251 at 0.125; forgetting the 1/2 allows 0.546 at 0.1.)
JPEG_D = 0.3


def jpeg_setup(channels: int = 3):
    rng = np.random.default_rng(2)
    pattern = np.tile(basis(3, 5), (4, 4))  # (32, 32)
    weights = pattern[..., None] * (JFIF[0] if channels == 3 else np.ones(1))
    y = np.arange(12) % 2
    sign = np.where(y == 0, 1.0, -1.0)
    base = rng.uniform(0.4, 0.6, (12, 1, 1, channels))
    # luma of (base + a * pattern on every channel) is base_Y + a * pattern: d = 16 a
    x = base + (sign * JPEG_D / 16)[:, None, None, None] * pattern[None, :, :, None]
    return linear_model(weights.astype("float32"), 10.0), x.astype("float32"), y


def test_jpeg_linf_flips_exactly_when_the_budget_allows_and_stays_in_budget():
    model, x, y = jpeg_setup()
    assert accuracy(model, x, y) == 1.0
    attack = get_attack("jpeg_linf", model=model, eps=0.125, steps=10)
    x_adv = attack.generate(x, y)
    assert accuracy(model, x_adv, y) == 0.0
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert 0.0 < x_adv.min() and x_adv.max() < 1.0  # no clipping, so the budget is exact
    for adv, clean in zip(numpy_jpeg_coefficients(x_adv, True, True),
                          numpy_jpeg_coefficients(x, True, True)):
        moved = np.abs(adv - clean).max()
        assert 0.124 < moved <= 0.125 + 1e-4  # at the boundary, not past it
    x_small = get_attack("jpeg_linf", model=model, eps=0.1, steps=10).generate(x, y)
    assert accuracy(model, x_small, y) == 1.0


def test_jpeg_linf_plain_dct_mode_budget_and_greyscale():
    # Plain orthonormal DCT of full-resolution YCbCr: d moves by at most 16 eps = 0.32 at 0.02.
    model, x, y = jpeg_setup()
    attack = JPEGLinf(model, eps=0.02, steps=10, chroma_subsampling=False, quantization_table=False)
    x_adv = attack.generate(x, y)
    assert accuracy(model, x_adv, y) == 0.0
    assert 0.0 < x_adv.min() and x_adv.max() < 1.0
    for adv, clean in zip(numpy_jpeg_coefficients(x_adv, False, False),
                          numpy_jpeg_coefficients(x, False, False)):
        assert np.abs(adv - clean).max() <= 0.02 + 1e-5

    # greyscale: one luma channel, no colour conversion; same margin, same 2.73 eps reach
    model, x, y = jpeg_setup(channels=1)
    x_adv = get_attack("jpeg_linf", model=model, eps=0.125, steps=10).generate(x, y)
    assert x_adv.shape == x.shape and accuracy(model, x_adv, y) == 0.0
    moved = np.abs(blocks(x_adv[..., 0]) - blocks(x[..., 0])) / (LUMA_TABLE / 510.0)
    assert 0.124 < moved.max() <= 0.125 + 1e-4


# --- ReColor --------------------------------------------------------------------------------


def test_cieluv_of_known_colours():
    # CIE L*u*v* (D65) of sRGB red, blue, white, mid grey: textbook values, scaled by the
    # attack's (L / 100, (u + 100) / 200, (v + 100) / 200)
    rgb = np.array([[1, 0, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5]], "float32")
    luv = np.array([[53.24, 175.02, 37.76], [32.30, -9.40, -130.35], [100, 0, 0], [53.39, 0, 0]])
    expected = np.stack([luv[:, 0] / 100, (luv[:, 1] + 100) / 200, (luv[:, 2] + 100) / 200], -1)
    np.testing.assert_allclose(np.asarray(rgb_to_cieluv(rgb)), expected, atol=2e-3)


def test_color_map_hand_cases():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 0.9, (2, 6, 5, 3)).astype("float32")
    for space in ("cieluv", "rgb"):  # zero displacement: the identity
        zero = np.zeros((2, 16, 32, 32, 3), "float32")
        np.testing.assert_allclose(np.asarray(recolor(x, zero, space)), x, atol=1e-4)
    shift = np.zeros((2, 4, 4, 4, 3), "float32") + np.array([0.05, 0.0, -0.05], "float32")
    np.testing.assert_allclose(np.asarray(recolor(x, shift, "rgb")), x + shift[0, 0, 0, 0], atol=1e-6)
    # on a 2x2x2 grid, moving only the white corner by d moves colour (r, g, b) by r g b d;
    # white itself (on the cube's faces) moves by all of d
    x[:, 0, 0] = 1.0
    x[:, 0, 1] = [1.0, 0.0, 1.0]
    corner = np.zeros((2, 2, 2, 2, 3), "float32")
    corner[:, 1, 1, 1] = [-0.1, -0.2, -0.05]
    weight = x.prod(axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(recolor(x, corner, "rgb")), x + weight * corner[0, 1, 1, 1],
                               atol=1e-6)
    np.testing.assert_allclose(identity_grid((2, 3, 2))[1, 2, 0], [1.0, 1.0, 0.0])


def test_smoothness_counts_each_neighbour_pair_from_both_ends():
    # a 3x3x3 grid has 3 * 18 neighbour pairs; each term is sqrt(|difference|^2 + 1e-10)
    flat = np.full((1, 3, 3, 3, 3), 0.04, "float32")
    assert float(smoothness(flat)[0]) == pytest.approx(2 * 54 * 1e-5, rel=1e-3)
    bump = flat.copy()
    bump[0, 1, 1, 1] += [0.3, 0.4, 0.0]  # |difference| = 0.5 to each of its 6 neighbours
    assert float(smoothness(bump)[0]) == pytest.approx(2 * (6 * 0.5 + 48 * 1e-5), rel=1e-4)


# The model reads d = mean(R) - mean(B). In RGB space a control-point displacement of at most
# eps moves every colour by at most eps per channel (trilinear weights sum to 1), so d moves
# by at most 2 eps: 0.12 at eps 0.06, 0.08 at eps 0.04. Images sit at |d| = 0.1. The logits
# are scaled (x 100) so the margin's gradient at each control point beats the smoothness
# penalty's (at most 12 * 0.0036 / eps).
RECOLOR_D = 0.1


def recolor_setup(n: int = 10):
    rng = np.random.default_rng(4)
    colours = rng.uniform(0.25, 0.75, (n, 2, 2, 3))  # four flat quadrants per image
    x = np.repeat(np.repeat(colours, 16, axis=1), 16, axis=2)
    y = np.arange(n) % 2
    d = x[..., 0].mean((1, 2)) - x[..., 2].mean((1, 2))
    fix = (np.where(y == 0, RECOLOR_D, -RECOLOR_D) - d) / 2
    x[..., 0] += fix[:, None, None]
    x[..., 2] -= fix[:, None, None]
    weights = np.zeros((32, 32, 3))
    weights[..., 0], weights[..., 2] = 1.0 / 1024, -1.0 / 1024
    return linear_model(weights.astype("float32"), 100.0), x.astype("float32"), y


def test_recolor_rgb_flips_exactly_when_the_budget_allows_and_stays_in_budget():
    model, x, y = recolor_setup()
    assert accuracy(model, x, y) == 1.0
    attack = get_attack("recolor", model=model, color_space="rgb", steps=12, learning_rate=0.01)
    x_adv = attack.generate(x, y)
    assert accuracy(model, x_adv, y) == 0.0
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() <= 0.06 + 1e-5
    maps = attack.color_maps(x, y)
    assert maps.shape == (10, 16, 32, 32, 3)
    assert np.abs(maps).max() == pytest.approx(0.06, abs=1e-5)  # on the boundary, not past it
    np.testing.assert_allclose(np.asarray(recolor(x, maps, "rgb")), x_adv, atol=1e-6)
    x_small = get_attack("recolor", model=model, eps=0.04, color_space="rgb", steps=12,
                         optimizer="sign").generate(x, y)
    assert accuracy(model, x_small, y) == 1.0


def test_recolor_smoothness_penalty_holds_the_map_back():
    # a heavy penalty keeps the control points near their (unmoved) neighbours: the map barely
    # moves and no image flips; the same run without it moves points to the bound
    model, x, y = recolor_setup(4)
    kw = dict(color_space="rgb", steps=6, learning_rate=0.01)
    stiff = ReColor(model, smoothness=100.0, **kw).color_maps(x, y)
    assert np.abs(stiff).max() < 0.03
    assert accuracy(model, np.asarray(recolor(x, stiff, "rgb")), y) == 1.0
    free = ReColor(model, smoothness=0.0, **kw).color_maps(x, y)
    assert np.abs(free).max() == pytest.approx(0.06, abs=1e-5)


def test_recolor_cieluv_default_lowers_accuracy_within_budget():
    model, x, y = recolor_setup(6)
    attack = ReColor(model, steps=12, learning_rate=0.01)  # CIELUV, Adam, CW margin
    maps = attack.color_maps(x, y)
    assert np.abs(maps).max() <= 0.06 + 1e-6
    x_adv = np.asarray(recolor(x, maps))
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    assert accuracy(model, x_adv, y) == 0.0


def test_recolor_refuses_greyscale_saying_why():
    model = linear_model(np.ones((8, 8, 1), "float32") / 64, 1.0)
    x = np.full((2, 8, 8, 1), 0.5, "float32")
    with pytest.raises(ValueError, match="ReColor needs 3 colour channels"):
        get_attack("recolor", model=model, steps=1).generate(x)


@pytest.mark.parametrize(
    "name, params",
    [("jpeg_linf", {"eps": 1.0}), ("recolor", {"color_space": "rgb", "learning_rate": 0.02})],
)
def test_the_model_only_ever_sees_images_in_the_unit_range(name, params):
    # near-black and near-white images: unclipped, the perturbed images would leave [0, 1]
    rng = np.random.default_rng(5)
    x = np.where(rng.uniform(size=(4, 16, 16, 3)) < 0.5, 0.01, 0.99).astype("float32")
    inner = linear_model(rng.normal(size=(16, 16, 3)).astype("float32"), 1.0)

    def checked(t):
        tf.debugging.assert_greater_equal(t, 0.0, message="below 0")
        tf.debugging.assert_less_equal(t, 1.0, message="above 1")
        return inner(t)

    x_adv = get_attack(name, model=checked, steps=3, **params).generate(x)
    assert np.abs(x_adv - x).max() > 0.005  # the attack did move the images


@pytest.mark.parametrize("name, setup, params", [
    ("jpeg_linf", jpeg_setup, {"eps": 0.125}),
    ("recolor", recolor_setup, {"color_space": "rgb", "optimizer": "sign"}),
])
def test_targeted_attacks_reach_their_targets(name, setup, params):
    model, x, y = setup()
    target = 1 - y  # the only other class these models can output
    x_adv = get_attack(name, model=model, steps=10, targeted=True, **params).generate(x, target)
    assert accuracy(model, x_adv, target) == 1.0


# --- parameters, registry, docs -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("jpeg_linf", {"eps": 0.0}, "eps"),
        ("jpeg_linf", {"eps": float("inf")}, "eps"),
        ("jpeg_linf", {"steps": 0}, "steps"),
        ("jpeg_linf", {"step_size": -0.1}, "step_size"),
        ("jpeg_linf", {"rand_init": 1}, "rand_init"),
        ("jpeg_linf", {"loss": "hinge"}, "loss"),
        ("jpeg_linf", {"chroma_subsampling": "yes"}, "chroma_subsampling"),
        ("jpeg_linf", {"quantization_table": None}, "quantization_table"),
        ("jpeg_linf", {"targeted": "no"}, "targeted"),
        ("recolor", {"eps": 0.0}, "eps"),
        ("recolor", {"eps": 1.5}, "eps"),
        ("recolor", {"steps": 2.5}, "steps"),
        ("recolor", {"color_space": "hsv"}, "color_space"),
        ("recolor", {"resolution": (16, 32)}, "resolution"),
        ("recolor", {"resolution": (1, 32, 32)}, "resolution"),
        ("recolor", {"smoothness": -1.0}, "smoothness"),
        ("recolor", {"optimizer": "sgd"}, "optimizer"),
        ("recolor", {"learning_rate": 0.0}, "learning_rate"),
        ("recolor", {"loss": "l2"}, "loss"),
        ("recolor", {"rand_init": "no"}, "rand_init"),
    ],
)
def test_bad_parameter_raises_value_error_naming_it(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_attack(name, **params)


def test_registered_with_paper_defaults():
    assert {"jpeg_linf", "recolor"} <= set(available_attacks())
    jpeg = get_attack("jpeg_linf")
    assert type(jpeg) is JPEGLinf and jpeg.label == "jpeg_linf"
    assert (jpeg.eps, jpeg.steps, jpeg.rand_init, jpeg.loss) == (0.125, 100, True, "ce")
    assert jpeg.step == pytest.approx(0.0125)
    recolor_attack = get_attack("recolor")
    assert type(recolor_attack) is ReColor
    assert (recolor_attack.eps, recolor_attack.steps, recolor_attack.color_space,
            recolor_attack.resolution) == (0.06, 100, "cieluv", (16, 32, 32))
    assert recolor_attack.smoothness_weight == pytest.approx(0.06)
    assert recolor_attack.step == pytest.approx(0.001)


@pytest.mark.parametrize("name", ["jpeg_linf", "recolor"])
def test_config_round_trips(name):
    attack = get_attack(name, steps=3, resolution=[4, 5, 6]) if name == "recolor" else get_attack(
        name, steps=3, quantization_table=False)
    config = attack.get_config()
    assert type(attack).from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(attack))
    assert type(restored) is type(attack) and restored.get_config() == config


@pytest.mark.parametrize("module", ["tfdefense.attacks.jpeg", "tfdefense.attacks.recolor"])
def test_docstring_example_runs(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
