"""The batched morph engine: same answers as a per-image loop, morphs inside normal ranges."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.detect.morphs import (
    MorphEngine,
    image_seeds,
    morph_latents,
    most_active_codes,
    stochastic_search,
)
from tfdefense.models import DGMM, ComboVAE
from tfdefense.nets import small_cnn


def test_stochastic_search_in_range_and_deterministic():
    center = np.array([[0.0, 2.0], [5.0, -0.5]], "float32")  # 5.0 lies outside code 0's range
    low, high = np.array([-1.0, 0.0], "float32"), np.array([1.0, 3.0], "float32")
    kw = dict(n_morphs=30, delta_r=0.1 * (high - low), samples_per_iteration=4,
              max_iterations=60)
    v, found = stochastic_search(center, low, high, seed=(1, 2), **kw)
    v = v.numpy()
    assert v.shape == (2, 2, 30)
    assert np.all(v >= low[None, :, None]) and np.all(v <= high[None, :, None])
    v2, _ = stochastic_search(center, low, high, seed=(1, 2), **kw)
    np.testing.assert_array_equal(v, v2.numpy())
    assert not np.array_equal(v, stochastic_search(center, low, high, seed=(1, 3), **kw)[0])
    # code 0 sits inside its range and every sample within radius 1 is valid, so the k-th
    # morph comes from iteration k // B + 1 and lies within that iteration's radius t·Δr
    assert found.numpy()[0, 0] == 30
    reach = 0.2 * (np.arange(20) // 4 + 1)
    assert np.all(np.abs(v[0, 0, :20]) <= reach + 1e-6)
    # code 0 of image 1 starts outside its range: still 30 in-range values


def test_per_image_seeds_draw_what_each_image_draws_alone():
    """An (N, 2) seed gives image i exactly the values a one-image batch with seed i gets, so
    an image's morphs do not depend on the batch around it."""
    center = np.array([[0.1, 2.0], [0.5, 1.0], [-0.3, 0.2]], "float32")
    low, high = np.array([-1.0, 0.0], "float32"), np.array([1.0, 3.0], "float32")
    kw = dict(n_morphs=8, delta_r=0.1 * (high - low), samples_per_iteration=3,
              max_iterations=6)
    seeds = np.array([[5, 7], [5, 8], [123, -4]], "int32")
    v, found = stochastic_search(center, low, high, seed=seeds, **kw)
    for i in range(3):
        vi, fi = stochastic_search(center[i:i + 1], low, high, seed=seeds[i], **kw)
        np.testing.assert_array_equal(v.numpy()[i], vi.numpy()[0])
        np.testing.assert_array_equal(found.numpy()[i], fi.numpy()[0])
    assert not np.array_equal(v.numpy()[0], v.numpy()[1])  # seeds differ in one int
    with pytest.raises(ValueError, match="seed"):
        stochastic_search(center, low, high, seed=np.zeros((3, 3), "int32"), **kw)


def test_image_seeds_follow_the_pixels_not_the_batch():
    x = np.random.default_rng(3).random((4, 5, 5, 1), dtype="float32")
    seeds = image_seeds(x, 0).numpy()
    np.testing.assert_array_equal(image_seeds(x[2:3], 0).numpy()[0], seeds[2])
    np.testing.assert_array_equal(image_seeds(x[::-1], 0).numpy()[::-1], seeds)
    assert len({tuple(s) for s in seeds}) == 4
    other = image_seeds(x, 1).numpy()
    np.testing.assert_array_equal(other[:, 0] ^ seeds[:, 0], np.ones(4, "int32"))  # seed XOR
    np.testing.assert_array_equal(other[:, 1], seeds[:, 1])
    x2 = x.copy()
    x2[1, 0, 0, 0] = np.nextafter(x2[1, 0, 0, 0], 2.0)  # one pixel, one ulp
    assert tuple(image_seeds(x2, 0).numpy()[1]) != tuple(seeds[1])


def test_morph_latents_moves_one_code_per_morph_by_hand():
    mean = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    z = morph_latents(mean, np.array([[0, 2], [1, 1]], "int32"),
                      tf.constant([[9.0, -1.0], [0.0, 7.0]])).numpy()
    np.testing.assert_array_equal(z, [[[9, 2, 3], [1, 2, -1]], [[4, 0, 6], [4, 7, 6]]])
    # the same codes for every image: (K,)
    z = morph_latents(mean, np.array([2], "int32"), tf.constant([[0.5], [0.25]])).numpy()
    np.testing.assert_array_equal(z, [[[1, 2, 0.5]], [[4, 5, 0.25]]])


@pytest.fixture(scope="module")
def engine(fm_models, mnist):
    xv, _ = mnist["validation"]
    codes = most_active_codes(fm_models["vae"], xv, 4)
    return MorphEngine(fm_models["vae"], fm_models["classifier"], codes=codes, n_morphs=10,
                       chunk_size=256, seed=0).fit(xv)


def test_ranges_are_validation_quantiles(engine, fm_models, mnist):
    xv, _ = mnist["validation"]
    values = engine.code_values(xv)[:, engine.codes]
    np.testing.assert_allclose(engine.low_, np.quantile(values, 0.005, axis=0), rtol=1e-5)
    np.testing.assert_allclose(engine.high_, np.quantile(values, 0.995, axis=0), rtol=1e-5)
    assert np.argsort(-values.var(0)).tolist() == [0, 1, 2, 3]  # most active first


def test_morphs_stay_within_normal_ranges(engine, mnist):
    xt, _ = mnist["test"]
    v = engine.morph_values(xt[:20])
    assert v.shape == (20, 4, 10)
    assert np.all(v >= engine.low_[None, :, None] - 1e-6)
    assert np.all(v <= engine.high_[None, :, None] + 1e-6)
    imgs = engine.morph_images(xt[:2])
    assert imgs.shape == (2, 4, 10, 28, 28, 1) and imgs.min() >= 0 and imgs.max() <= 1


def test_batched_engine_equals_naive_loop(engine, mnist):
    xt, _ = mnist["test"]
    x = xt[:3]
    r = engine.resistance(x, batch_size=3)
    assert r.shape == (3, 4) and np.all((r >= 0) & (r <= 1))
    np.testing.assert_allclose(r, engine.resistance_naive(x), atol=1e-6)


def test_resistance_does_not_depend_on_the_batch(engine, mnist):
    xt, _ = mnist["test"]
    x = xt[:7]
    r = engine.resistance(x, batch_size=7)
    np.testing.assert_array_equal(engine.resistance(x, batch_size=2), r)
    np.testing.assert_array_equal(engine.resistance(x[::-1], batch_size=3)[::-1], r)
    np.testing.assert_array_equal(engine.resistance(x[4:5], batch_size=1)[0], r[4])


def test_sampled_morphs_are_morphs_of_the_engine(engine, mnist):
    """The adaptive attacker's morphs (``sample_morph_latents``) are among the latents the
    engine's own search gives for the same seed: one copy of the morph drawing."""
    xt, _ = mnist["test"]
    mean = engine.combo_vae.encode(xt[:3])[0]
    seed = tf.constant([11, 12], tf.int32)
    sampled = engine.sample_morph_latents(mean, 6, seed).numpy()  # (3, 6, m)
    values, _ = engine.draw_morphs(mean, seed)
    grid = engine._morph_latents(mean, values).numpy().reshape(3, -1, sampled.shape[-1])
    for i in range(3):
        for k in range(6):
            assert np.any(np.all(grid[i] == sampled[i, k], axis=-1)), (i, k)
    assert len({tuple(z) for z in sampled[0]}) > 1  # not one morph repeated
    again = engine.sample_morph_latents(mean, 6, seed).numpy()
    np.testing.assert_array_equal(again, sampled)
    other = engine.sample_morph_latents(mean, 6, tf.constant([11, 13], tf.int32)).numpy()
    assert not np.array_equal(other, sampled)


def test_chunking_and_seed(engine, mnist):
    xt, _ = mnist["test"]
    x = xt[:6]
    r = engine.resistance(x, batch_size=6)
    small = MorphEngine(engine.combo_vae, engine.classifier, codes=engine.codes, n_morphs=10,
                        chunk_size=7, seed=0).set_ranges(engine.low_, engine.high_)
    np.testing.assert_array_equal(small.resistance(x, batch_size=6), r)
    np.testing.assert_array_equal(engine.resistance(x, batch_size=6), r)


def test_feature_map_morph_shifts_a_whole_channel(rng):
    """CelebA variant: one morph shifts every element of one channel by the same amount."""
    from tfdefense.nets import fm_face_decoder, fm_face_encoder

    dgmm = DGMM(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(4)]), num_classes=2, seed=0)
    vae = ComboVAE(fm_face_encoder((16, 16, 3), 5, filters=(4, 4, 4), residual_filters=8,
                                   residual_blocks=1),
                   fm_face_decoder((4, 4, 5), 4, 3, filters=(4, 4), residual_filters=8,
                                   residual_blocks=1), dgmm, None, seed=0)
    clf = small_cnn((16, 16, 3), 2, width=4, dense_units=8)
    x = rng.random((6, 16, 16, 3), dtype="float32")
    eng = MorphEngine(vae, clf, codes=[1, 3], n_morphs=4).fit(x)
    mean = vae.encode(x[:2])[0]
    values = tf.constant(eng.morph_values(x[:2]))
    z = eng._morph_latents(mean, values).numpy().reshape(2, 2, 4, 4, 4, 5)
    diff = z - mean.numpy()[:, None, None]
    assert np.allclose(diff[:, 0, :, :, :, [0, 2, 3, 4]], 0)
    per_channel = diff[:, 0, :, :, :, 1]
    assert np.allclose(per_channel, per_channel[:, :, :1, :1])  # same shift everywhere
    assert eng.resistance(x[:2]).shape == (2, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_morphs": 0}, "n_morphs"), ({"codes": [0, 20]}, "codes"), ({"codes": []}, "codes"),
    ({"codes": [1, 1]}, "codes"), ({"delta_r": 0.0}, "delta_r"),
    ({"samples_per_iteration": 2, "max_iterations": 3}, "max_iterations"),
    ({"range_quantile": 0.5}, "range_quantile"), ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_params(fm_models, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MorphEngine(fm_models["vae"], fm_models["classifier"], **kwargs)


def test_bad_inputs(fm_models, engine):
    with pytest.raises(ValueError, match="classes"):
        MorphEngine(fm_models["vae"], small_cnn((28, 28, 1), 7, width=4, dense_units=8))
    with pytest.raises(ValueError, match="ComboVAE"):
        MorphEngine(fm_models["dgmm"], fm_models["classifier"])
    with pytest.raises(ValueError, match="fit"):
        MorphEngine(fm_models["vae"], fm_models["classifier"]).resistance(
            np.zeros((1, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="NaN"):
        engine.resistance(np.full((2, 28, 28, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match="at least 2"):
        MorphEngine(fm_models["vae"], fm_models["classifier"]).fit(
            np.zeros((1, 28, 28, 1), "float32"))
